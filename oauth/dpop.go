package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/authagent/caddy-authagent/internal/cache"
)

// DPoP (RFC 9449): a client proves, request by request, that it holds the
// private key its tokens are bound to. Each proof is a JWT it signs with
// that key, naming the method and URL of the request, when it was made,
// and, at a resource server, the hash of the access token it accompanies.
// The token endpoint binds the tokens it issues to the proof's key (the
// access token's cnf.jkt); the guard accepts a bound token only with a
// proof by that key.

// DPoP names.
const (
	DPoPHeader      = "DPoP"
	DPoPNonceHeader = "DPoP-Nonce"
	DPoPProofType   = "dpop+jwt"
	// TokenTypeDPoP is the token_type of a bound access token, and the
	// Authorization scheme it is sent with.
	TokenTypeDPoP   = "DPoP"
	TokenTypeBearer = "Bearer"
)

// DPoPAlgs are the algorithms proofs may be signed with (the asymmetric
// ones assertions take).
var DPoPAlgs = AssertionAlgs

// DefaultDPoPLeeway is how far a proof's iat may be from now.
const DefaultDPoPLeeway = 60 * time.Second

const (
	maxProofBytes = 8 << 10
	maxProofJTI   = 256
	// dpopKeysMax bounds the cache of proof keys (by the header that
	// carries them: a client sends the same header with every proof).
	dpopKeysMax = 10000
	// dpopKeyCacheTime is how long a parsed proof key is kept.
	dpopKeyCacheTime = 10 * time.Minute
)

// ErrInvalidDPoPProof is the 400 of a bad proof at the token endpoint
// (the guard answers it 401 with its challenge).
func ErrInvalidDPoPProof(desc string) *Error {
	return newError("invalid_dpop_proof", 400, desc)
}

// ErrUseDPoPNonce asks the client to sign its proof again with nonce.
func ErrUseDPoPNonce(nonce string) *Error {
	return newError("use_dpop_nonce", 400, "the DPoP proof must carry the server's nonce from the DPoP-Nonce header").WithHeader(DPoPNonceHeader, nonce)
}

// DPoPProof is what a verified proof says.
type DPoPProof struct {
	// JKT is the RFC 7638 thumbprint of the proof's key: what tokens are
	// bound to (cnf.jkt).
	JKT      string
	IssuedAt time.Time
	// jti is the proof's, recorded by Spend.
	jti string
}

// DPoPRequest is what a proof must match: the request's method and the
// URLs it may have been sent to (compared without query and fragment),
// and, at a resource server, the access token it comes with.
type DPoPRequest struct {
	Method      string
	URLs        []string
	AccessToken string
}

// Replays records values used once (ReplayStore's UseOnce).
type Replays interface {
	UseOnce(ctx context.Context, key string, until time.Time) error
}

// DPoPVerifier checks proofs. One serves the token endpoint, the agent API
// and every guard of a Caddy, so a proof used at one is refused at all.
type DPoPVerifier struct {
	leeway time.Duration
	// notBefore refuses proofs made before it: with replay records kept
	// in this process only, proofs made before the process started may
	// have been used in the one before it.
	notBefore time.Time
	replays   Replays
	// durable, with records kept in this process, also records the proofs
	// a restarted process could not otherwise refuse: those dated ahead
	// of this server's clock, and every one in the first leeway after
	// notBefore (when one dated ahead may come from the process before).
	durable Replays
	nonces  *DPoPNonces // nil: no nonces
	now     func() time.Time
	keys    *cache.Cache[string, dpopKey]
	parser  *jwt.Parser
}

// DPoPConfig configures a DPoPVerifier.
type DPoPConfig struct {
	// Leeway bounds |iat - now|; 0 means DefaultDPoPLeeway.
	Leeway time.Duration
	// Replays records the jti of every accepted proof until it could no
	// longer be accepted.
	Replays Replays
	// NotBefore, when set, refuses proofs with an earlier iat.
	NotBefore time.Time
	// Durable, with Replays kept in this process only (and NotBefore its
	// start), is the store the process after a restart reads: see
	// DPoPVerifier.durable.
	Durable Replays
	// Nonces, when set, requires every proof to carry a current nonce.
	Nonces *DPoPNonces
	Now    func() time.Time
}

// NewDPoPVerifier returns a verifier for cfg.
func NewDPoPVerifier(cfg DPoPConfig) *DPoPVerifier {
	if cfg.Leeway <= 0 {
		cfg.Leeway = DefaultDPoPLeeway
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &DPoPVerifier{
		leeway: cfg.Leeway, notBefore: cfg.NotBefore.Truncate(time.Second), replays: cfg.Replays, durable: cfg.Durable, nonces: cfg.Nonces, now: cfg.Now,
		keys: cache.New[string, dpopKey](dpopKeysMax, cfg.Now),
		// The keyfunc checks the alg against the allow-list and the key.
		parser: jwt.NewParser(jwt.WithoutClaimsValidation()),
	}
}

// Nonce is the nonce to send in DPoP-Nonce, or "" when nonces are off.
func (v *DPoPVerifier) Nonce() string {
	if v == nil || v.nonces == nil {
		return ""
	}
	return v.nonces.Current()
}

// dpopKey is a proof key parsed from a proof's header.
type dpopKey struct {
	method jwt.SigningMethod
	key    any
	jkt    string
}

type dpopClaims struct {
	ID       string           `json:"jti"`
	Method   string           `json:"htm"`
	URL      string           `json:"htu"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	ATH      string           `json:"ath"`
	Nonce    string           `json:"nonce"`
}

func (dpopClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (c dpopClaims) GetIssuedAt() (*jwt.NumericDate, error)     { return c.IssuedAt, nil }
func (dpopClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (dpopClaims) GetIssuer() (string, error)                   { return "", nil }
func (dpopClaims) GetSubject() (string, error)                  { return "", nil }
func (dpopClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// Verify checks the proof of a request (Check) and spends it (Spend).
func (v *DPoPVerifier) Verify(ctx context.Context, header []string, q DPoPRequest) (*DPoPProof, error) {
	proof, err := v.Check(ctx, header, q)
	if proof == nil || err != nil {
		return nil, err
	}
	if err := v.Spend(ctx, proof); err != nil {
		return nil, err
	}
	return proof, nil
}

// Check checks the proof of a request (the values of its DPoP header)
// without recording it: none is (nil, nil); more than one, or a proof
// failing any check of RFC 9449 §4.3, is invalid_dpop_proof; one without
// the current nonce while nonces are on is use_dpop_nonce. The token
// endpoint spends the proof once the caller authenticated, so that
// nobody records values without credentials.
func (v *DPoPVerifier) Check(ctx context.Context, header []string, q DPoPRequest) (*DPoPProof, error) {
	switch {
	case len(header) == 0:
		return nil, nil
	case len(header) > 1:
		return nil, ErrInvalidDPoPProof("send one DPoP header")
	case len(header[0]) > maxProofBytes:
		return nil, ErrInvalidDPoPProof("the DPoP proof is too large")
	}
	key, claims, err := v.parse(header[0])
	if err != nil {
		return nil, ErrInvalidDPoPProof(proofFailure(err))
	}
	now := v.now()
	switch {
	case claims.ID == "" || len(claims.ID) > maxProofJTI:
		return nil, ErrInvalidDPoPProof("the DPoP proof needs a jti of at most 256 characters")
	case claims.Method != q.Method:
		return nil, ErrInvalidDPoPProof("the DPoP proof's htm is not the request's method")
	case !htuMatches(claims.URL, q.URLs):
		return nil, ErrInvalidDPoPProof("the DPoP proof's htu is not the URL of this request")
	case claims.IssuedAt == nil:
		return nil, ErrInvalidDPoPProof("the DPoP proof needs an iat")
	}
	iat := claims.IssuedAt.Time
	if iat.Before(now.Add(-v.leeway)) || iat.After(now.Add(v.leeway)) {
		return nil, ErrInvalidDPoPProof("the DPoP proof's iat is too far from the server's time; make a new proof")
	}
	if iat.Before(v.notBefore) {
		return nil, ErrInvalidDPoPProof("the DPoP proof was made before the server started; make a new proof")
	}
	if q.AccessToken != "" && claims.ATH != AccessTokenHash(q.AccessToken) {
		return nil, ErrInvalidDPoPProof("the DPoP proof's ath is not the hash of the access token")
	}
	if v.nonces != nil && !v.nonces.Valid(claims.Nonce) {
		return nil, ErrUseDPoPNonce(v.nonces.Current())
	}
	return &DPoPProof{JKT: key.jkt, IssuedAt: iat, jti: claims.ID}, nil
}

// Spend records a checked proof's jti until no clock could accept it any
// more; a proof spent before is invalid_dpop_proof.
func (v *DPoPVerifier) Spend(ctx context.Context, p *DPoPProof) error {
	var replays Replays = v.replays
	if now := v.now(); v.durable != nil && (p.IssuedAt.After(now.Add(time.Second)) || now.Before(v.notBefore.Add(v.leeway+time.Second))) {
		replays = SharedReplays{Local: v.replays, Shared: v.durable}
	}
	err := replays.UseOnce(ctx, proofReplayKey(p.JKT, p.jti), p.IssuedAt.Add(v.leeway+time.Second))
	if errors.Is(err, ErrExists) {
		return ErrInvalidDPoPProof("the DPoP proof was used before; make a new proof for each request")
	}
	return err
}

// parse verifies a proof's signature and decodes its claims. A client
// sends the same header (typ, alg, jwk) with every proof: when the key
// cache holds that header, it passed every check of proofKey before, and
// only the claims and the signature are new, so they are all that is
// decoded; any other proof takes golang-jwt's full parse.
func (v *DPoPVerifier) parse(raw string) (dpopKey, dpopClaims, error) {
	var claims dpopClaims
	head, rest, _ := strings.Cut(raw, ".")
	payload, sig, ok := strings.Cut(rest, ".")
	if k, hit := v.keys.Get(head); hit && ok && !strings.Contains(sig, ".") {
		body, err1 := base64.RawURLEncoding.DecodeString(payload)
		signature, err2 := base64.RawURLEncoding.DecodeString(sig)
		if err1 != nil || err2 != nil || json.Unmarshal(body, &claims) != nil {
			return dpopKey{}, dpopClaims{}, jwt.ErrTokenMalformed
		}
		if err := k.method.Verify(raw[:len(head)+1+len(payload)], signature, k.key); err != nil {
			return dpopKey{}, dpopClaims{}, jwt.ErrTokenSignatureInvalid
		}
		return k, claims, nil
	}
	var key dpopKey
	_, err := v.parser.ParseWithClaims(raw, &claims, func(tok *jwt.Token) (any, error) {
		k, err := v.proofKey(tok)
		key = k
		return k.key, err
	})
	return key, claims, err
}

// proofKey checks a proof's header (typ, an allowed alg, a public jwk
// for that alg) and returns its key, cached by the header's text.
func (v *DPoPVerifier) proofKey(tok *jwt.Token) (dpopKey, error) {
	head, _, _ := strings.Cut(tok.Raw, ".")
	typ, _ := tok.Header["typ"].(string)
	if !strings.EqualFold(typ, DPoPProofType) {
		return dpopKey{}, errProofType
	}
	jwk, ok := tok.Header["jwk"].(map[string]any)
	if !ok {
		return dpopKey{}, errProofKey
	}
	for _, m := range privateMembers {
		if _, ok := jwk[m]; ok {
			return dpopKey{}, errProofKey
		}
	}
	alg := tok.Method.Alg()
	if !slices.Contains(DPoPAlgs, alg) {
		return dpopKey{}, errProofAlg
	}
	pk, err := ParseJWK(jwk)
	if err != nil {
		return dpopKey{}, errProofKey
	}
	_, hasAlg := jwk["alg"]
	if alg != pk.Alg && !(pk.Alg == AlgRS256 && alg == AlgPS256 && !hasAlg) {
		return dpopKey{}, errProofAlg
	}
	jkt, err := JWKThumbprint(jwk)
	if err != nil {
		return dpopKey{}, errProofKey
	}
	k := dpopKey{method: tok.Method, key: pk.Key, jkt: jkt}
	v.keys.Put(strings.Clone(head), k, v.now().Add(dpopKeyCacheTime))
	return k, nil
}

var (
	errProofType = errors.New("the DPoP proof's typ must be dpop+jwt")
	errProofKey  = errors.New("the DPoP proof's jwk must be a public EC P-256, Ed25519 or RSA signing key")
	errProofAlg  = errors.New("the DPoP proof's alg must be one of " + strings.Join(DPoPAlgs, ", ") + " and fit its jwk")
)

// proofFailure says why a proof did not parse or verify.
func proofFailure(err error) string {
	for _, e := range []error{errProofType, errProofKey, errProofAlg} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		return "the DPoP proof's signature does not verify with its jwk"
	}
	if errors.Is(err, jwt.ErrTokenUnverifiable) || errors.Is(err, jwt.ErrTokenMalformed) {
		return "the DPoP header is not a signed JWT with an allowed alg (" + strings.Join(DPoPAlgs, ", ") + ")"
	}
	return "the DPoP proof is invalid"
}

// proofReplayKey is the replay record of a proof: its jti within its key.
func proofReplayKey(jkt, jti string) string {
	sum := sha256.Sum256([]byte(jkt + "\x00" + jti))
	return "dpop:" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// AccessTokenHash is a proof's ath for token: base64url(SHA-256(token)).
func AccessTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// JWKThumbprint is the RFC 7638 thumbprint of a public JWK: the SHA-256 of
// its required members in lexicographic order, base64url.
func JWKThumbprint(jwk map[string]any) (string, error) {
	str := func(k string) string { s, _ := jwk[k].(string); return s }
	var members []string
	switch str("kty") {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	default:
		return "", errors.New("unsupported key type")
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		v := str(m)
		if v == "" || strings.ContainsAny(v, "\"\\") {
			return "", errors.New("the key lacks " + m)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + m + `":"` + v + `"`)
	}
	b.WriteByte('}')
	sum := sha256.Sum256([]byte(b.String()))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// ValidThumbprint reports whether s can be a JWK SHA-256 thumbprint
// (a dpop_jkt): 43 base64url characters.
func ValidThumbprint(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// htuMatches compares a proof's htu with the URLs the request may have been
// made to, both without query and fragment, after RFC 3986 syntax-based
// normalization (case of scheme and host, default port).
func htuMatches(htu string, urls []string) bool {
	got, ok := NormalizeHTU(htu)
	if !ok {
		return false
	}
	for _, u := range urls {
		if want, ok := NormalizeHTU(u); ok && want == got {
			return true
		}
	}
	return false
}

// NormalizeHTU is u as proofs are compared: scheme and host lower-case,
// no default port, no user info, query or fragment, path "/" when empty.
func NormalizeHTU(u string) (string, bool) {
	p, err := url.Parse(u)
	// url.Parse lower-cases the scheme.
	if err != nil || p.Opaque != "" || p.User != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
		return "", false
	}
	scheme := p.Scheme
	host, port := strings.ToLower(p.Hostname()), p.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" && !(scheme == "https" && port == "443") && !(scheme == "http" && port == "80") {
		host += ":" + port
	}
	path := p.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// DPoPNonces are server nonces (RFC 9449 §8): an HMAC of the current time
// window under a key every process sharing the store holds, so any process
// accepts any other's nonce, and none is stored. A nonce is good in its
// window and the next.
type DPoPNonces struct {
	key    []byte
	window time.Duration
	now    func() time.Time
	cur    atomic.Pointer[dpopNonce]
}

type dpopNonce struct {
	window int64
	value  string
}

// DPoPNonceKeyName is the SecretStore name of the nonces' key.
const DPoPNonceKeyName = "dpop-nonce-key"

// DPoPNonceWindow is how often the nonce changes.
const DPoPNonceWindow = time.Minute

// NewDPoPNonces returns nonces derived from key; now may be nil.
func NewDPoPNonces(key []byte, now func() time.Time) *DPoPNonces {
	if now == nil {
		now = time.Now
	}
	return &DPoPNonces{key: key, window: DPoPNonceWindow, now: now}
}

func (n *DPoPNonces) windowAt(t time.Time) int64 { return t.UnixNano() / int64(n.window) }

func (n *DPoPNonces) make(w int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(w))
	mac := hmac.New(sha256.New, n.key)
	mac.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(append(b[:], mac.Sum(nil)[:16]...))
}

// Current is the nonce of the current window.
func (n *DPoPNonces) Current() string {
	w := n.windowAt(n.now())
	if c := n.cur.Load(); c != nil && c.window == w {
		return c.value
	}
	c := &dpopNonce{window: w, value: n.make(w)}
	n.cur.Store(c)
	return c.value
}

// Valid reports whether nonce is the current window's or the last one's.
func (n *DPoPNonces) Valid(nonce string) bool {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false
	}
	w := int64(binary.BigEndian.Uint64(b[:8]))
	now := n.windowAt(n.now())
	if w != now && w != now-1 {
		return false
	}
	return hmac.Equal([]byte(n.make(w)), []byte(nonce))
}

// CheckBinding checks that a verified access token came the way it must
// (RFC 9449 §7): a bound token with the DPoP scheme and a proof by its key
// for this request, its ath included; an unbound one as Bearer, never
// with the DPoP scheme. Every error is a 401 (invalid_token for a token
// sent the wrong way or with another key's proof, invalid_dpop_proof for a
// missing or bad proof, use_dpop_nonce); the caller adds the challenge.
func (v *DPoPVerifier) CheckBinding(ctx context.Context, scheme, token string, claims *AccessClaims, proofs []string, method string, urls []string) error {
	jkt := claims.BoundKey()
	switch {
	case jkt == "" && claims.Cnf != nil:
		// Bound by a method this server does not check (an mTLS
		// certificate's x5t#S256): never as good as a bearer token.
		return DPoPRefusal("the access token is bound by a confirmation method this server does not check")
	case jkt == "" && scheme == TokenTypeDPoP:
		return DPoPRefusal("the access token is not DPoP-bound; send it with the Bearer scheme")
	case jkt == "":
		return nil
	case scheme != TokenTypeDPoP:
		return DPoPRefusal("the access token is DPoP-bound; send it with the DPoP scheme and a DPoP proof")
	case v == nil:
		return DPoPRefusal("DPoP-bound tokens are not accepted here")
	case len(proofs) == 0:
		return resourceError(ErrInvalidDPoPProof("a DPoP-bound token needs a DPoP proof in the DPoP header"))
	}
	proof, err := v.Verify(ctx, proofs, DPoPRequest{Method: method, URLs: urls, AccessToken: token})
	if err != nil {
		return resourceError(err)
	}
	if proof.JKT != jkt {
		return DPoPRefusal("the DPoP proof is not signed by the key the token is bound to")
	}
	return nil
}

// DPoPRefusal is a resource's invalid_token about DPoP (a token sent the
// wrong way), challenged with the DPoP scheme.
func DPoPRefusal(desc string) *Error {
	e := newError("invalid_token", 401, desc)
	e.dpop = true
	return e
}

// resourceError is a token-endpoint DPoP error as a resource answers it:
// 401 (RFC 9449 §7.1); other errors are returned unchanged.
func resourceError(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.Status >= 500 {
		return err
	}
	c := *e
	c.Status, c.dpop = 401, true
	return &c
}

// IsDPoPError reports whether e is CheckBinding's: its challenge is the
// DPoP one.
func IsDPoPError(e *Error) bool { return e.dpop }

type originKey struct{}

// WithRequestOrigin records the origin (scheme://host[:port]) a request
// was made to as the client saw it — behind trusted proxies, the one they
// forwarded — for the htu of DPoP proofs.
func WithRequestOrigin(ctx context.Context, origin string) context.Context {
	return context.WithValue(ctx, originKey{}, origin)
}

// RequestOrigin is the origin WithRequestOrigin recorded, or else the one
// the connection shows: https with TLS, and the Host header.
func RequestOrigin(r *http.Request) string {
	if o, ok := r.Context().Value(originKey{}).(string); ok && o != "" {
		return o
	}
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// dpopURLs are the URLs a proof sent to this server's endpoint at path may
// name: the issuer's (what discovery publishes) and the one the request
// was made to.
func (p *provider) dpopURLs(r *http.Request, path string) []string {
	return []string{p.cfg.Issuer + path, RequestOrigin(r) + r.URL.EscapedPath()}
}

// checkProof checks the DPoP proof a token request carries, if any (nil,
// nil without one), and sends the current nonce when nonces are on. The
// caller spends it (spendProof) once the client authenticated.
func (p *provider) checkProof(w http.ResponseWriter, r *http.Request, path string) (*DPoPProof, error) {
	if n := p.dpop.Nonce(); n != "" {
		w.Header().Set(DPoPNonceHeader, n)
	}
	proofs := r.Header.Values(DPoPHeader)
	if len(proofs) == 0 {
		return nil, nil // most token requests: no URLs to build
	}
	return p.dpop.Check(r.Context(), proofs, DPoPRequest{Method: r.Method, URLs: p.dpopURLs(r, path)})
}

// spendProof records a checked proof (none: nothing to do).
func (p *provider) spendProof(ctx context.Context, proof *DPoPProof) error {
	if proof == nil {
		return nil
	}
	return p.dpop.Spend(ctx, proof)
}

// errDPoPRequired refuses a token request without a proof where the
// configuration, the client or the agent requires one.
var errDPoPRequired = ErrInvalidDPoPProof("a DPoP proof is required: this server, client or agent only gets DPoP-bound tokens")

// requireDPoP applies the DPoP policies to a token request: the server's,
// then the client's or, for an agent acting as its own client, the
// agent's.
func (p *provider) requireDPoP(proof *DPoPProof, c caller) error {
	if proof != nil {
		return nil
	}
	if p.cfg.DPoPRequired || c.client != nil && c.client.RequireDPoP || c.agent != nil && c.agent.RequireDPoP {
		return errDPoPRequired
	}
	return nil
}

// jkt is the thumbprint tokens issued with proof are bound to.
func (p *DPoPProof) jkt() string {
	if p == nil {
		return ""
	}
	return p.JKT
}

// Paths of the endpoints that take DPoP proofs for tokens they issue.
const (
	TokenPath     = "/oauth2/token"
	AgentAuthPath = "/api/agent-auth"
)
