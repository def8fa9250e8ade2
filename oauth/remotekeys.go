package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/internal/cache"
	"github.com/authagent/caddy-authagent/internal/safedial"
)

// A client may publish its keys at a jwks_uri instead of registering them:
// the server fetches the set, keeps it a while, and fetches it again when
// an assertion names a kid it does not hold (the client rotated), at most
// once a minute so that made-up kids cannot turn it into a fetch loop.
const (
	remoteKeysTTL        = 5 * time.Minute
	remoteKeysRefetch    = time.Minute
	remoteKeysFailureTTL = 30 * time.Second
	remoteKeysEntries    = 1000
)

// RemoteKeySets fetches and caches the key sets clients publish. A set an
// operator named is fetched like a webhook (https, or http on loopback); one
// a client registered itself only from public addresses (or the hosts the
// operator allows for client metadata documents), as those documents are.
type RemoteKeySets struct {
	allow   map[string]bool
	guarded *http.Client
	open    *http.Client
	log     *zap.Logger
	now     func() time.Time
	cache   *cache.Cache[string, remoteKeySet]
	group   singleflight.Group
}

// remoteKeySet is a fetched set, or why the fetch failed.
type remoteKeySet struct {
	keys    ClientKeys
	err     error
	fetched time.Time
}

// NewRemoteKeySets returns the fetcher; allowHosts are the hosts a
// self-registered client's set may be fetched from although they resolve
// to private or loopback addresses.
func NewRemoteKeySets(allowHosts []string, log *zap.Logger, now func() time.Time) *RemoteKeySets {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	allow := make(map[string]bool, len(allowHosts))
	for _, h := range allowHosts {
		allow[strings.ToLower(strings.Trim(h, "[]"))] = true
	}
	return &RemoteKeySets{
		allow:   allow,
		guarded: newClientDocHTTPClient(nil, clientDocTimeout, safedial.Control),
		open:    newClientDocHTTPClient(nil, clientDocTimeout, nil),
		log:     log,
		now:     now,
		cache:   cache.New[string, remoteKeySet](remoteKeysEntries, now),
	}
}

// CheckJWKSURI checks a client's jwks_uri: an operator's like a webhook
// URL, a self-registered client's like a metadata document's.
func CheckJWKSURI(uri string, operator bool) error {
	if operator {
		if err := events.ValidateWebhookURL(uri); err != nil {
			return fmt.Errorf("jwks_uri: %v", err)
		}
		return nil
	}
	if _, err := checkClientIDURL(uri); err != nil {
		return fmt.Errorf("jwks_uri %s", err)
	}
	return nil
}

// Keys returns the set at uri, fetched again when it holds no key kid
// names and the last fetch is more than a minute old.
func (r *RemoteKeySets) Keys(ctx context.Context, uri string, operator bool, kid string) (ClientKeys, error) {
	// An operator's set and a self-registered client's are fetched by
	// different rules: never one from the other's cache (a client that
	// registered an operator's URL must not make its fetch fail).
	key := "client:" + uri
	if operator {
		key = "operator:" + uri
	}
	set, ok := r.cache.Get(key)
	stale := !ok || (kid != "" && set.err == nil && !set.has(kid) && r.now().Sub(set.fetched) >= remoteKeysRefetch)
	if stale {
		v, _, _ := r.group.Do(key, func() (any, error) {
			s := r.fetch(ctx, uri, operator)
			ttl := remoteKeysTTL
			if s.err != nil {
				ttl = remoteKeysFailureTTL
				r.log.Warn("fetching a client's key set", zap.String("jwks_uri", uri), zap.Error(s.err))
			}
			r.cache.Put(key, s, r.now().Add(ttl))
			return s, nil
		})
		set = v.(remoteKeySet)
	}
	return set.keys, set.err
}

func (s remoteKeySet) has(kid string) bool {
	for _, k := range s.keys {
		if k.kid == kid {
			return true
		}
	}
	return false
}

// fetch gets and parses the set: 200, JSON, at most 16 KiB, 5 s, no
// redirects.
func (r *RemoteKeySets) fetch(ctx context.Context, uri string, operator bool) remoteKeySet {
	out := remoteKeySet{fetched: r.now()}
	hc := r.open
	if !operator {
		u, err := url.Parse(uri)
		if err != nil {
			out.err = errors.New("the jwks_uri is not a URL")
			return out
		}
		if !r.allow[strings.ToLower(u.Hostname())] {
			hc = r.guarded
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clientDocTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		out.err = err
		return out
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := hc.Do(req)
	if err != nil {
		out.err = fmt.Errorf("fetching the key set: %w", err)
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		out.err = fmt.Errorf("the key set answered %d", resp.StatusCode)
		return out
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" && mt != "application/jwk-set+json" {
		out.err = fmt.Errorf("the key set is %q, not JSON", mt)
		return out
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		out.err = fmt.Errorf("reading the key set: %w", err)
		return out
	}
	out.keys, out.err = ParseClientKeys(body)
	return out
}
