package client

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DPoP (RFC 9449) binds tokens to a key the agent holds: the issuer puts
// the key's thumbprint in the token (cnf.jkt, token_type "DPoP") and every
// use of the token carries a proof signed by the key for that one request.
// A token read from a log or a proxy is useless without the key, and so is
// a proof: it names one method and URL, is used once and is short-lived.

// DPoP makes DPoP proofs with one key. Set it in Credentials or ClientAuth
// and the client sends a proof with each token request; the tokens it gets
// carry it (Token.DPoP) and HTTPClient signs a proof for each API call.
// It is safe for concurrent use.
type DPoP struct {
	key crypto.Signer
	alg string
	jwk map[string]string // the public key's RFC 7638 members: no private ones, no alg
	jkt string
}

// NewDPoP returns the proof maker of key: ES256 for an ECDSA P-256 key,
// EdDSA for Ed25519, PS256 for RSA of 2048 bits or more.
func NewDPoP(key crypto.Signer) (*DPoP, error) {
	return NewDPoPWithAlg(key, "")
}

// NewDPoPWithAlg is NewDPoP signing with alg: RS256 for an RSA signer that
// does only PKCS #1 v1.5 (some KMS keys); "" is NewDPoP's choice.
func NewDPoPWithAlg(key crypto.Signer, alg string) (*DPoP, error) {
	if key == nil {
		return nil, errors.New("client: DPoP needs a key")
	}
	members, keyAlg, err := jwkMembers(key.Public())
	if err != nil {
		return nil, err
	}
	if keyAlg == "RS256" && alg == "" {
		alg = "PS256"
	}
	switch {
	case alg == "" || alg == keyAlg:
		alg = keyAlg
	case keyAlg == "RS256" && alg == "PS256":
	default:
		return nil, fmt.Errorf("client: a %s key cannot sign DPoP proofs with %s", members["kty"], alg)
	}
	return &DPoP{key: key, alg: alg, jwk: members, jkt: thumbprint(members)}, nil
}

// Thumbprint is the key's RFC 7638 thumbprint, the cnf.jkt of the tokens
// bound to it (and the dpop_jkt of an authorization request).
func (d *DPoP) Thumbprint() string { return d.jkt }

// Proof signs a proof for one request: method and url are the request's
// (the query and fragment are left out of htu), accessToken the token it
// carries to a resource ("" at the token endpoint: no ath) and nonce the
// one the server asked for ("" for none). Each call makes a new proof:
// servers accept a proof once.
func (d *DPoP) Proof(method, url, accessToken, nonce string) (string, error) {
	return d.proof(method, url, accessToken, nonce, time.Now())
}

func (d *DPoP) proof(method, rawURL, accessToken, nonce string, now time.Time) (string, error) {
	htu, err := proofURL(rawURL)
	if err != nil {
		return "", err
	}
	if method == "" {
		method = http.MethodGet
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": htu, "iat": now.Unix()}
	if accessToken != "" {
		claims["ath"] = tokenHash(accessToken)
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	return signJWT(d.key, d.alg, map[string]any{"typ": "dpop+jwt", "alg": d.alg, "jwk": d.jwk}, claims)
}

// proofURL is htu: the URL without its query and fragment (RFC 9449 §4.2).
func proofURL(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("client: DPoP needs an absolute URL, not %q", rawURL)
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
	if u.Path == "" {
		u.Path, u.RawPath = "/", ""
	}
	return u.String(), nil
}

// origin is the scheme://host[:port] a server's nonce holds for.
func origin(u *url.URL) string { return strings.ToLower(u.Scheme + "://" + u.Host) }

// nonce is the latest DPoP-Nonce the server at u gave, "" for none.
func (c *Client) nonce(u *url.URL) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nonces[origin(u)]
}

// rememberNonce keeps the DPoP-Nonce an answer from u carries: a server
// may send a new one with any answer.
func (c *Client) rememberNonce(u *url.URL, h http.Header) string {
	n := h.Get("DPoP-Nonce")
	if n == "" {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nonces == nil {
		c.nonces = map[string]string{}
	}
	c.nonces[origin(u)] = n
	return n
}

// boundToken is the key of a DPoP-bound token the client got, until the
// token expires.
type boundToken struct {
	dpop   *DPoP
	expiry time.Time
}

// rememberBinding notes the key of a DPoP-bound token this client got, so
// that Profile and UpdateProfile, which take the token alone, send it with
// proofs; tokens past their expiry are forgotten.
func (c *Client) rememberBinding(t *Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, b := range c.bound {
		if now.After(b.expiry) {
			delete(c.bound, k)
		}
	}
	if c.bound == nil {
		c.bound = map[string]boundToken{}
	}
	c.bound[tokenHash(t.AccessToken)] = boundToken{t.DPoP, t.Expiry}
}

// boundKey is the key a token this client got is bound to, nil for none.
func (c *Client) boundKey(accessToken string) *DPoP {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bound[tokenHash(accessToken)].dpop
}

// tokenHash is a token's SHA-256, base64url: a proof's ath, and how the
// client keeps tokens in memory without keeping them.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// send sends the request newRequest makes to the issuer, with
// accessToken (if any) and, when dp is set, a proof by dp: the token then
// goes with the DPoP scheme. An answer asking for a DPoP nonce is tried
// once more, with a new request (new assertion, new proof) that carries
// the nonce.
func (c *Client) send(dp *DPoP, accessToken string, newRequest func() (*http.Request, error)) (*http.Response, error) {
	for retried := false; ; retried = true {
		req, err := newRequest()
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, e
			}
			return nil, &Error{Code: "invalid_request", Description: err.Error()}
		}
		switch {
		case dp != nil:
			proof, err := dp.proof(req.Method, req.URL.String(), accessToken, c.nonce(req.URL), c.now())
			if err != nil {
				return nil, &Error{Code: "invalid_request", Description: err.Error()}
			}
			req.Header.Set("DPoP", proof)
			if accessToken != "" {
				req.Header.Set("Authorization", "DPoP "+accessToken)
			}
		case accessToken != "":
			req.Header.Set("Authorization", "Bearer "+accessToken)
		}
		resp, err := c.do(req)
		if err != nil {
			return nil, err
		}
		fresh := c.rememberNonce(req.URL, resp.Header)
		if dp == nil || retried || fresh == "" {
			return resp, nil
		}
		again, err := askedForNonce(resp)
		if err != nil {
			return nil, &Error{Code: ErrorNetwork, Status: resp.StatusCode, Err: err}
		}
		if !again {
			return resp, nil
		}
	}
}

// askedForNonce reports whether resp asks for a proof with the server's
// nonce: a token endpoint's 400 use_dpop_nonce (RFC 9449 §8), a
// resource's 401 with the DPoP challenge's error use_dpop_nonce (§9). A
// body it reads is put back for the caller, or drained when it asks.
func askedForNonce(resp *http.Response) (bool, error) {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if challengeError(resp.Header, "DPoP") != "use_dpop_nonce" {
			return false, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		return true, nil
	case http.StatusBadRequest:
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return false, err
		}
		var shape struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &shape) == nil && shape.Error == "use_dpop_nonce" {
			return true, nil
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return false, nil
}

// HTTPClient returns an http.Client that calls APIs behind agent_guard
// with tok. A DPoP-bound token (TokenType "DPoP") goes as
// "Authorization: DPoP" with a new proof by tok.DPoP for each request —
// never as Bearer, which a guard refuses for such a token — and a request
// answered 401 use_dpop_nonce is sent once more with the guard's nonce
// (its body again: from GetBody, or read into memory first when the
// request has none). Any other token goes as Bearer.
//
// It uses the transport and timeout of WithHTTPClient's client, and
// follows redirects only within the origin of the request, so the token
// goes nowhere else.
func (c *Client) HTTPClient(tok *Token) *http.Client {
	return &http.Client{
		Transport: &apiTransport{c: c, tok: tok, base: c.http.Transport},
		Timeout:   c.http.Timeout,
		Jar:       c.http.Jar,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("client: stopped after 10 redirects")
			}
			if origin(req.URL) != origin(via[0].URL) {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// apiTransport adds the token (and proofs) to requests for an API.
type apiTransport struct {
	c    *Client
	tok  *Token
	base http.RoundTripper
}

func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if t.tok == nil || t.tok.AccessToken == "" {
		return fail(errors.New("client: no access token"))
	}
	if !strings.EqualFold(t.tok.TokenType, "DPoP") {
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", "Bearer "+t.tok.AccessToken)
		return base.RoundTrip(r)
	}
	if t.tok.DPoP == nil {
		return fail(errors.New("client: a DPoP-bound token without its key (Token.DPoP)"))
	}
	// The request may go twice: its body must be there the second time.
	hasBody, buffered, getBody := req.Body != nil && req.Body != http.NoBody, false, req.GetBody
	if hasBody && getBody == nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		buffered, getBody = true, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	for retried := false; ; retried = true {
		r := req.Clone(req.Context())
		if hasBody && (retried || buffered) {
			body, err := getBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		proof, err := t.tok.DPoP.proof(r.Method, r.URL.String(), t.tok.AccessToken, t.c.nonce(r.URL), t.c.now())
		if err != nil {
			if r.Body != nil {
				r.Body.Close()
			}
			return nil, err
		}
		r.Header.Set("Authorization", "DPoP "+t.tok.AccessToken)
		r.Header.Set("DPoP", proof)
		resp, err := base.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		fresh := t.c.rememberNonce(r.URL, resp.Header)
		if retried || fresh == "" || resp.StatusCode != http.StatusUnauthorized {
			return resp, nil
		}
		if again, err := askedForNonce(resp); err != nil || !again {
			return resp, err
		}
	}
}

// challengeError is the error parameter of the scheme's challenge in the
// WWW-Authenticate headers (RFC 9110 §11.6.1): challenges may share a
// header line, separated by commas like their parameters.
func challengeError(h http.Header, scheme string) string {
	for _, line := range h.Values("WWW-Authenticate") {
		current := ""
		for s := line; s != ""; {
			s = strings.TrimLeft(s, " \t,")
			end := strings.IndexAny(s, " \t,=")
			if end < 0 {
				end = len(s)
			}
			name := s[:end]
			s = strings.TrimLeft(s[end:], " \t")
			if !strings.HasPrefix(s, "=") {
				current = name // a scheme name starts a challenge
				continue
			}
			s = strings.TrimLeft(s[1:], " \t")
			var value string
			if strings.HasPrefix(s, `"`) {
				var b strings.Builder
				i := 1
				for ; i < len(s) && s[i] != '"'; i++ {
					if s[i] == '\\' && i+1 < len(s) {
						i++
					}
					b.WriteByte(s[i])
				}
				value, s = b.String(), s[min(i+1, len(s)):]
			} else {
				end := strings.IndexAny(s, " \t,")
				if end < 0 {
					end = len(s)
				}
				value, s = s[:end], s[end:]
			}
			if strings.EqualFold(current, scheme) && strings.EqualFold(name, "error") {
				return value
			}
		}
	}
	return ""
}
