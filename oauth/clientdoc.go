package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/authagent/caddy-authagent/internal/cache"
	"github.com/authagent/caddy-authagent/internal/safedial"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
// MCP 2025-11-25): a client_id that is an https URL names the client's RFC
// 7591 metadata, which this server fetches. Anyone can make us fetch any
// URL this way, so the fetch is the SSRF surface of the server: every limit
// below is there for that.
const (
	clientDocMaxURL       = 2048
	clientDocMaxBody      = 64 << 10
	clientDocTimeout      = 5 * time.Second
	clientDocDefaultTTL   = 5 * time.Minute
	clientDocMaxTTL       = 24 * time.Hour
	clientDocFailureTTL   = 30 * time.Second
	clientDocCacheEntries = 1000
	// clientDocMaxFetches bounds the fetches running at once, whoever
	// asks: a flood of distinct URLs holds at most this many connections
	// (and 64 KiB each), and is answered "busy" beyond it.
	clientDocMaxFetches = 8
)

// IsClientIDURL reports whether id is meant as a metadata document URL
// (starts with "https://"); whether it is an acceptable one is for Client
// to say.
func IsClientIDURL(id string) bool { return strings.HasPrefix(id, "https://") }

// ClientDocuments fetches, validates and caches client metadata documents.
// It is safe for concurrent use.
type ClientDocuments struct {
	allow map[string]bool // lower-case host names exempt from the address check
	log   *zap.Logger
	now   func() time.Time

	// guarded dials only public addresses; open serves the allow-listed
	// hosts. Two clients rather than one with a per-request switch, so a
	// pooled connection can never carry a request it was not checked for.
	guarded *http.Client
	open    *http.Client
	timeout time.Duration

	cache *cache.Cache[string, clientDocResult]
	group singleflight.Group
	slots chan struct{} // one per fetch running
}

// clientDocResult is a cached outcome: a client, or the error a failed fetch
// gave (cached too, briefly, so a burst for a bad URL fetches once).
type clientDocResult struct {
	client *Client
	err    error
}

// NewClientDocuments returns the fetcher. allowHosts are host names (no
// port) whose documents may be fetched even when they resolve to private,
// loopback or link-local addresses. now may be nil (time.Now).
func NewClientDocuments(allowHosts []string, log *zap.Logger, now func() time.Time) *ClientDocuments {
	return newClientDocuments(allowHosts, log, now, nil, clientDocTimeout)
}

// newClientDocuments is NewClientDocuments with the trust roots (nil: the
// system's) and the fetch timeout, which tests replace.
func newClientDocuments(allowHosts []string, log *zap.Logger, now func() time.Time, roots *x509.CertPool, timeout time.Duration) *ClientDocuments {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	allow := make(map[string]bool, len(allowHosts))
	for _, h := range allowHosts {
		allow[strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))] = true
	}
	return &ClientDocuments{
		allow:   allow,
		log:     log,
		now:     now,
		guarded: newClientDocHTTPClient(roots, timeout, safedial.Control),
		open:    newClientDocHTTPClient(roots, timeout, nil),
		timeout: timeout,
		cache:   cache.New[string, clientDocResult](clientDocCacheEntries, now),
		slots:   make(chan struct{}, clientDocMaxFetches),
	}
}

// newClientDocHTTPClient builds a client of its own: Go's default client
// follows redirects, reads proxies from the environment and has no
// timeout, each of which would undo a rule here.
func newClientDocHTTPClient(roots *x509.CertPool, timeout time.Duration, control func(network, address string, c syscall.RawConn) error) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: control}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxIdleConns:           16,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
			// Compression would let a small body expand; documents are
			// small, so ask for them plain.
			DisableCompression: true,
			ForceAttemptHTTP2:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
}

// checkClientIDURL checks that id is a URL a metadata document may live at:
// https, a host, a path other than "/", no query, fragment, credentials or
// dot segments, at most 2048 bytes. It must also be written the way Go
// writes it back, so the URL fetched is id byte for byte and the
// document's client_id comparison means what it says.
func checkClientIDURL(id string) (*url.URL, error) {
	if len(id) > clientDocMaxURL {
		return nil, fmt.Errorf("longer than %d characters", clientDocMaxURL)
	}
	if !IsClientIDURL(id) {
		return nil, errors.New("it must start with https://")
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, errors.New("it is not a URL")
	}
	switch {
	case u.Opaque != "" || u.Hostname() == "":
		return nil, errors.New("it has no host")
	case u.User != nil || strings.Contains(u.Host, "@"):
		return nil, errors.New("it must not carry credentials")
	case u.Fragment != "" || strings.Contains(id, "#"):
		return nil, errors.New("it must not have a fragment")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("it must not have a query")
	case u.Path == "" || u.Path == "/":
		return nil, errors.New("it must have a path")
	case !validDocumentHost(u):
		return nil, errors.New("its host must be a DNS name or an IP address, with a port from 1 to 65535 if any")
	}
	// u.Path is decoded, so %2e%2e counts as ".." as a server would take it.
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, errors.New("it must not have . or .. path segments")
		}
	}
	if u.String() != id {
		return nil, errors.New("it is not in canonical form (characters that must be percent-encoded, or an upper-case scheme)")
	}
	return u, nil
}

// validDocumentHost reports whether u names a host a fetch can go to: a
// DNS name of letters, digits, hyphens and dots, or an IP literal, and a
// port in range when one is written. The host is quoted in messages a
// person reads, so nothing else may pass.
func validDocumentHost(u *url.URL) bool {
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '0' {
			return false
		}
	}
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validateDocumentClientID is NewClient's id check for ClientFromDocument.
func validateDocumentClientID(id string) error {
	if _, err := checkClientIDURL(id); err != nil {
		return ErrInvalidRequest("client_id is not a valid metadata document URL: " + err.Error())
	}
	return nil
}

// Client returns the public client the document at id describes, from the
// cache or fetched now. Every failure wraps ErrNotFound, with a
// description that is safe to show to the person.
func (d *ClientDocuments) Client(ctx context.Context, id string) (*Client, error) {
	u, err := checkClientIDURL(id)
	if err != nil {
		// Only fixed text: the id is whatever a link put there.
		return nil, fmt.Errorf("%w: the client_id is not a valid client metadata document URL: %v", ErrNotFound, err)
	}
	if r, ok := d.cache.Get(id); ok {
		return r.client, r.err
	}
	ch := d.group.DoChan(id, func() (any, error) {
		// The fetch outlives a caller who gives up: others may be waiting
		// on it, and its result is cached; the timeout still bounds it.
		select {
		case d.slots <- struct{}{}:
			defer func() { <-d.slots }()
		default:
			// Not cached: the URL may be fine, the server is only busy.
			return clientDocResult{err: fmt.Errorf("%w: too many client metadata documents are being fetched right now; try again in a moment", ErrNotFound)}, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
		defer cancel()
		r, ttl := d.fetch(fctx, u, id)
		if ttl > 0 {
			d.cache.Put(id, r, d.now().Add(ttl))
		}
		return r, nil
	})
	select {
	case res := <-ch:
		r := res.Val.(clientDocResult)
		return r.client, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the client's metadata document at %s could not be fetched in time: %w", ErrNotFound, u.Host, ctx.Err())
	}
}

// fetch gets and validates the document, returning the result and how long
// to cache it (0: not at all).
func (d *ClientDocuments) fetch(ctx context.Context, u *url.URL, id string) (clientDocResult, time.Duration) {
	host := u.Host
	fail := func(format string, args ...any) (clientDocResult, time.Duration) {
		err := fmt.Errorf("%w: the client's metadata document at %s "+format, append([]any{ErrNotFound, host}, args...)...)
		return clientDocResult{err: err}, clientDocFailureTTL
	}
	debug := func(msg string, fields ...zap.Field) {
		if ce := d.log.Check(zap.DebugLevel, msg); ce != nil {
			ce.Write(append([]zap.Field{zap.String("client_id", id)}, fields...)...)
		}
	}

	hc := d.guarded
	if d.allow[strings.ToLower(u.Hostname())] {
		hc = d.open
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return fail("could not be fetched")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "caddy-authagent (client metadata document)")
	resp, err := hc.Do(req)
	if err != nil {
		debug("client metadata document fetch failed", zap.Error(err))
		var ne net.Error
		switch {
		case errors.Is(err, safedial.ErrNotPublic):
			return fail("could not be fetched: the host's address is not public")
		case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
			return fail("could not be fetched: the server did not answer in time")
		}
		return fail("could not be fetched")
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		debug("client metadata document redirected", zap.Int("status", resp.StatusCode))
		return fail("could not be fetched: the server redirected (redirects are not followed)")
	case resp.StatusCode != http.StatusOK:
		debug("client metadata document fetch failed", zap.Int("status", resp.StatusCode))
		return fail("could not be fetched: the server answered %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !isJSONMediaType(ct) {
		debug("client metadata document is not JSON", zap.String("content_type", ct))
		return fail("is not JSON (its Content-Type is not application/json)")
	}
	if resp.ContentLength > clientDocMaxBody {
		return fail("is larger than %d KiB", clientDocMaxBody>>10)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, clientDocMaxBody+1))
	if err != nil {
		debug("client metadata document read failed", zap.Error(err))
		if errors.Is(err, context.DeadlineExceeded) {
			return fail("could not be fetched: the server did not answer in time")
		}
		return fail("could not be fetched")
	}
	if len(body) > clientDocMaxBody {
		return fail("is larger than %d KiB", clientDocMaxBody>>10)
	}

	c, err := d.parseDocument(body, u, id)
	if err != nil {
		debug("client metadata document refused", zap.Error(err))
		return fail("is not valid: %s", err)
	}
	debug("client metadata document fetched", zap.Int("bytes", len(body)))
	return clientDocResult{client: c}, freshness(resp.Header, d.now())
}

// clientDocument is the part of RFC 7591 metadata read here; other fields
// are ignored, as the draft asks.
type clientDocument struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	Scope                   *string  `json:"scope"`
	ApplicationType         string   `json:"application_type"`
}

// parseDocument validates the document and builds the client. Its errors
// are shown to the person, so they name fields but never repeat the
// document's values: whoever wrote the document would choose that text.
func (d *ClientDocuments) parseDocument(body []byte, u *url.URL, id string) (*Client, error) {
	trimmed := strings.TrimLeft(string(body), " \t\r\n")
	if !strings.HasPrefix(trimmed, "{") {
		return nil, errors.New("it is not a JSON object")
	}
	var doc clientDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("%s has the wrong type", te.Field) // a field path of ours, not the document's text
		}
		return nil, errors.New("it is not valid JSON")
	}
	if doc.ClientID != id {
		return nil, errors.New("its client_id is not the URL it was fetched from")
	}
	if len(doc.RedirectURIs) == 0 {
		return nil, errors.New("redirect_uris is missing")
	}
	switch doc.TokenEndpointAuthMethod {
	case "", AuthNone:
	case AuthSecretBasic, AuthSecretPost, "client_secret_jwt":
		return nil, errors.New("its token_endpoint_auth_method needs a shared secret, which a metadata document cannot have")
	default:
		return nil, errors.New("its token_endpoint_auth_method is not supported (only none)")
	}
	for _, g := range doc.GrantTypes {
		if g != GrantAuthorizationCode && g != GrantRefreshToken {
			return nil, errors.New("grant_types may hold only authorization_code and refresh_token")
		}
	}
	if len(doc.ResponseTypes) > 0 && !slices.Equal(doc.ResponseTypes, []string{"code"}) {
		return nil, errors.New(`response_types must be ["code"]`)
	}
	if len(doc.ClientName) > 128 {
		return nil, errors.New("client_name is longer than 128 characters")
	}
	if doc.ApplicationType != "" && doc.ApplicationType != AppNative && doc.ApplicationType != AppWeb {
		return nil, errors.New("its application_type must be native or web")
	}
	name := doc.ClientName
	if name == "" {
		name = u.Host
	}
	spec := ClientSpec{ID: id, Name: name, Public: true, RedirectURIs: doc.RedirectURIs, GrantTypes: doc.GrantTypes, ApplicationType: doc.ApplicationType}
	if doc.Scope != nil {
		spec.Scopes = strings.Fields(*doc.Scope)
	}
	spec.AnyScope = len(spec.Scopes) == 0
	c, _, err := NewClient(spec, ClientFromDocument, d.now())
	if err != nil {
		// NewClient's descriptions quote the values; keep them for the log.
		if ce := d.log.Check(zap.DebugLevel, "client metadata document refused"); ce != nil {
			ce.Write(zap.String("client_id", id), zap.Error(err))
		}
		var oe *Error
		if errors.As(err, &oe) && oe.Code == "invalid_redirect_uri" {
			return nil, errors.New("a redirect URI is not acceptable for its application_type (web: https or http on a loopback host; native: http on a loopback host or a private-use scheme; at most 20)")
		}
		if doc.Scope != nil {
			return nil, errors.New("its scope is not a valid list of scopes (at most 64, none twice)")
		}
		return nil, errors.New("its metadata is not acceptable")
	}
	return c, nil
}

// isJSONMediaType accepts application/json and any +json type, with any
// parameters; a type that does not parse is judged by what precedes ";".
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// freshness is how long a response may be cached (RFC 9111 §4.2.1, as a
// cache that never revalidates): 0 for no-store and no-cache, else
// max-age or Expires less Age, 5 minutes without either, at most 24 hours.
func freshness(h http.Header, now time.Time) time.Duration {
	var (
		maxAge    time.Duration
		hasMaxAge bool
	)
	for _, v := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				n, ok := parseDeltaSeconds(arg)
				if !ok {
					return 0 // an invalid max-age means stale
				}
				maxAge, hasMaxAge = n, true
			}
		}
	}
	var ttl time.Duration
	switch {
	case hasMaxAge:
		ttl = maxAge
	case h.Get("Expires") != "":
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0 // an invalid Expires means already expired
		}
		// Measured against the server's own Date, so a skewed clock on
		// either side does not stretch or cut the lifetime.
		date, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			date = now
		}
		ttl = exp.Sub(date)
	default:
		return clientDocDefaultTTL
	}
	if age, ok := parseDeltaSeconds(h.Get("Age")); ok {
		ttl -= age
	}
	return max(0, min(ttl, clientDocMaxTTL))
}

// parseDeltaSeconds reads an RFC 9111 delta-seconds (optionally quoted);
// a value too large for an int is as good as forever here.
func parseDeltaSeconds(s string) (time.Duration, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > int64(clientDocMaxTTL/time.Second) {
		return clientDocMaxTTL, true
	}
	return time.Duration(n) * time.Second, true
}
