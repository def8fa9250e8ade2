package oauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// docServer is a TLS server of metadata documents that counts requests
// per path.
type docServer struct {
	*httptest.Server
	mu     sync.Mutex
	routes map[string]http.HandlerFunc
	hits   map[string]int
	accept []string
}

func newDocServer(t *testing.T) *docServer {
	t.Helper()
	s := &docServer{routes: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		s.accept = append(s.accept, r.Header.Get("Accept"))
		h := s.routes[r.URL.Path]
		s.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	// Refused dials and handshakes are what several tests are about.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// handle serves h at path and returns the document URL for it.
func (s *docServer) handle(path string, h http.HandlerFunc) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[path] = h
	return s.URL + path
}

func (s *docServer) hitsOf(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *docServer) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return pool
}

// serveJSON answers with body as JSON, after setting the extra headers.
func serveJSON(body []byte, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Write(body)
	}
}

// docFor is a valid document for id with fields changed by set (a nil
// value deletes the field).
func docFor(id string, set map[string]any) []byte {
	doc := map[string]any{
		"client_id":     id,
		"client_name":   "Example MCP client",
		"redirect_uris": []string{"https://app.example/callback", "http://127.0.0.1/callback"},
		"logo_uri":      "https://app.example/logo.png", // unknown here: ignored
	}
	for k, v := range set {
		if v == nil {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testDocs trusts srv and treats its address as allowed (httptest listens
// on 127.0.0.1), as the operator's allow list would.
func testDocs(srv *docServer, clock *testClock, allow ...string) *ClientDocuments {
	if allow == nil {
		allow = []string{"127.0.0.1"}
	}
	var now func() time.Time
	if clock != nil {
		now = clock.now
	}
	return newClientDocuments(allow, nil, now, srv.roots(), 5*time.Second)
}

func TestClientDocumentValid(t *testing.T) {
	srv := newDocServer(t)
	clock := newTestClock()
	docs := testDocs(srv, clock)

	full := srv.URL + "/full.json"
	srv.handle("/full.json", serveJSON(docFor(full, map[string]any{
		"scope":                      "openid profile files:read",
		"grant_types":                []string{"authorization_code"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
		"redirect_uris":              []string{"https://app.example/callback", "com.example.app:/callback"},
	})))
	c, err := docs.Client(t.Context(), full)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != full || c.Name != "Example MCP client" || !c.Public || c.Source != ClientFromDocument ||
		c.AuthMethod() != AuthNone || c.SecretHash != "" || !c.CreatedAt.Equal(clock.now()) {
		t.Fatalf("client = %+v", c)
	}
	if want := []string{"https://app.example/callback", "com.example.app:/callback"}; !slices.Equal(c.RedirectURIs, want) {
		t.Errorf("RedirectURIs = %q, want %q", c.RedirectURIs, want)
	}
	if want := []string{"openid", "profile", "files:read"}; !slices.Equal(c.Scopes, want) || c.AnyScope() {
		t.Errorf("Scopes = %q (any %v), want %q", c.Scopes, c.AnyScope(), want)
	}
	if want := []string{GrantAuthorizationCode}; !slices.Equal(c.GrantTypes, want) {
		t.Errorf("GrantTypes = %q, want %q", c.GrantTypes, want)
	}
	// No application_type: the rules from before it was read, and native
	// for its private-use scheme.
	if c.ApplicationType != "" || c.AppType() != AppNative {
		t.Errorf("ApplicationType = %q, AppType() = %q; want none declared, native", c.ApplicationType, c.AppType())
	}
	again, err := docs.Client(t.Context(), full)
	if err != nil || again != c {
		t.Fatalf("second call = %p, %v; want the cached %p", again, err, c)
	}
	if n := srv.hitsOf("/full.json"); n != 1 {
		t.Errorf("%d requests, want 1 (the second call is served from the cache)", n)
	}
	srv.mu.Lock()
	if !slices.Equal(srv.accept, []string{"application/json"}) {
		t.Errorf("Accept headers = %q", srv.accept)
	}
	srv.mu.Unlock()

	// The least a document may say: client_id and redirect_uris.
	minimal := srv.URL + "/minimal.json"
	srv.handle("/minimal.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/oauth-client+json")
		w.Write(docFor(minimal, map[string]any{"client_name": nil, "logo_uri": nil}))
	})
	c, err = docs.Client(t.Context(), minimal)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	if c.Name != host {
		t.Errorf("Name = %q, want the host %q", c.Name, host)
	}
	if c.Scopes != nil || !c.AnyScope() {
		t.Errorf("Scopes = %q, want nil (any scope)", c.Scopes)
	}
	if want := []string{GrantAuthorizationCode, GrantRefreshToken}; !slices.Equal(c.GrantTypes, want) {
		t.Errorf("GrantTypes = %q, want %q", c.GrantTypes, want)
	}

	// A document of the 2026-07-28 revision says what it is.
	native := srv.URL + "/native.json"
	srv.handle("/native.json", serveJSON(docFor(native, map[string]any{
		"application_type": "native", "redirect_uris": []string{"http://127.0.0.1/callback", "com.example.app:/callback"},
	})))
	if c, err = docs.Client(t.Context(), native); err != nil || c.ApplicationType != AppNative || !c.MatchRedirectURI("http://127.0.0.1:49152/callback") {
		t.Errorf("a native client's document: %+v, %v", c, err)
	}

	// Exactly the size limit is still accepted.
	exact := srv.URL + "/exact.json"
	body := docFor(exact, map[string]any{"pad": ""})
	body = docFor(exact, map[string]any{"pad": strings.Repeat("x", clientDocMaxBody-len(body))})
	if len(body) != clientDocMaxBody {
		t.Fatalf("test document is %d bytes", len(body))
	}
	srv.handle("/exact.json", serveJSON(body))
	if _, err := docs.Client(t.Context(), exact); err != nil {
		t.Errorf("a %d-byte document: %v", len(body), err)
	}
}

func TestClientDocumentRefused(t *testing.T) {
	const marker = "BODY-MARKER" // must never reach an error message
	srv := newDocServer(t)
	docs := testDocs(srv, nil)
	srv.handle("/target.json", serveJSON([]byte(`{}`)))

	tests := []struct {
		name  string
		serve func(id string) http.HandlerFunc
		want  string
	}{
		{"client_id mismatch", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"client_id": "https://other.example/" + marker}))
		}, "its client_id is not the URL"},
		{"client_id with trailing slash", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"client_id": id + "/"}))
		}, "its client_id is not the URL"},
		{"missing redirect_uris", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"redirect_uris": nil}))
		}, "redirect_uris is missing"},
		{"empty redirect_uris", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"redirect_uris": []string{}}))
		}, "redirect_uris is missing"},
		{"client_secret_basic", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"token_endpoint_auth_method": "client_secret_basic"}))
		}, "needs a shared secret"},
		{"client_secret_post", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"token_endpoint_auth_method": "client_secret_post"}))
		}, "needs a shared secret"},
		{"unknown auth method", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"token_endpoint_auth_method": marker}))
		}, "token_endpoint_auth_method is not supported"},
		{"client_credentials", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"grant_types": []string{"authorization_code", "client_credentials"}}))
		}, "grant_types may hold only"},
		{"response type token", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"response_types": []string{"code", "token"}}))
		}, "response_types must be"},
		{"bad redirect URI", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"redirect_uris": []string{"javascript:" + marker}}))
		}, "a redirect URI is not acceptable"},
		{"native with an https redirect", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"application_type": "native"}))
		}, "a redirect URI is not acceptable for its application_type"},
		{"web with a private-use scheme", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"application_type": "web", "redirect_uris": []string{"com.example.app:/cb"}}))
		}, "a redirect URI is not acceptable for its application_type"},
		{"unknown application_type", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"application_type": marker}))
		}, "its application_type must be native or web"},
		{"bad scope", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"scope": "openid openid " + marker}))
		}, "its scope is not a valid list"},
		{"long client_name", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"client_name": strings.Repeat("n", 129)}))
		}, "client_name is longer than 128"},
		{"redirect_uris of the wrong type", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"redirect_uris": marker}))
		}, "redirect_uris has the wrong type"},
		{"bad JSON", func(id string) http.HandlerFunc {
			return serveJSON([]byte(`{"client_id": "` + id + `", ` + marker))
		}, "not valid JSON"},
		{"trailing data", func(id string) http.HandlerFunc {
			return serveJSON(append(docFor(id, nil), []byte(" {"+marker)...))
		}, "not valid JSON"},
		{"array", func(id string) http.HandlerFunc { return serveJSON([]byte(`["` + marker + `"]`)) }, "not a JSON object"},
		{"null", func(id string) http.HandlerFunc { return serveJSON([]byte(`null`)) }, "not a JSON object"},
		{"oversize", func(id string) http.HandlerFunc {
			return serveJSON(docFor(id, map[string]any{"pad": strings.Repeat("x", clientDocMaxBody)}))
		}, "larger than 64 KiB"},
		{"oversize, declared", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "70000")
				w.Write(docFor(id, map[string]any{"pad": strings.Repeat("x", 70000)})[:70000])
			}
		}, "larger than 64 KiB"},
		{"not JSON", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Write(docFor(id, nil))
			}
		}, "is not JSON"},
		{"404", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { http.Error(w, marker, http.StatusNotFound) }
		}, "the server answered 404"},
		{"500 with a document", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write(docFor(id, nil))
			}
		}, "the server answered 500"},
		{"redirect", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/target.json", http.StatusFound) }
		}, "redirects are not followed"},
		{"permanent redirect", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/target.json", http.StatusPermanentRedirect)
			}
		}, "redirects are not followed"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/case/" + strconv.Itoa(i) + ".json"
			id := srv.URL + path
			srv.handle(path, tt.serve(id))
			c, err := docs.Client(t.Context(), id)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("error %v does not wrap ErrNotFound", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, marker) {
				t.Errorf("error %q, want it to say %q and nothing of the body", msg, tt.want)
			}
			if n := srv.hitsOf(path); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
	if n := srv.hitsOf("/target.json"); n != 0 {
		t.Errorf("a redirect was followed (%d requests to its target)", n)
	}
}

func TestClientDocumentSlowServer(t *testing.T) {
	srv := newDocServer(t)
	release := make(chan struct{})
	// Closed before the server (cleanups run last first), so Close does
	// not wait for the handler.
	t.Cleanup(func() { close(release) })
	id := srv.handle("/slow.json", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	docs := newClientDocuments([]string{"127.0.0.1"}, nil, nil, srv.roots(), 50*time.Millisecond)
	_, err := docs.Client(t.Context(), id)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("err = %v, want a timeout wrapping ErrNotFound", err)
	}
}

func TestClientDocumentCallerGivesUp(t *testing.T) {
	srv := newDocServer(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	started := make(chan struct{}, 1)
	id := srv.handle("/held.json", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	})
	docs := testDocs(srv, nil)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	_, err := docs.Client(ctx, id)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrNotFound and context.Canceled", err)
	}
}

func TestClientDocumentURLRefused(t *testing.T) {
	srv := newDocServer(t)
	docs := testDocs(srv, nil)
	base := srv.URL
	tests := []struct{ id, want string }{
		{"http://" + strings.TrimPrefix(base, "https://") + "/doc.json", "must start with https://"},
		{"HTTPS://" + strings.TrimPrefix(base, "https://") + "/doc.json", "must start with https://"},
		{base + "/doc.json#frag", "fragment"},
		{base + "/doc.json#", "fragment"},
		{base, "must have a path"},
		{base + "/", "must have a path"},
		{base + "/a/../doc.json", ". or .. path segments"},
		{base + "/./doc.json", ". or .. path segments"},
		{base + "/a/%2e%2e/doc.json", ". or .. path segments"},
		{base + "/doc.json/..", ". or .. path segments"},
		{base + "/doc.json?x=1", "query"},
		{base + "/doc.json?", "query"},
		{"https://user:pw@" + strings.TrimPrefix(base, "https://") + "/doc.json", "credentials"},
		{"https://@" + strings.TrimPrefix(base, "https://") + "/doc.json", "credentials"},
		{"https:///doc.json", "no host"},
		{"https://:443/doc.json", "no host"},
		{base + "/a b.json", "canonical"},
		{base + "/" + strings.Repeat("a", clientDocMaxURL), "longer than 2048"},
		{"https://%zz/doc.json", "not a URL"},
		{"https://app.example.com:/doc.json", "DNS name or an IP address"},
		{"https://app.example.com:0/doc.json", "DNS name or an IP address"},
		{"https://app.example.com:99999/doc.json", "DNS name or an IP address"},
		{"https://app.example.com:0443/doc.json", "DNS name or an IP address"},
		{"https://app_example.com/doc.json", "DNS name or an IP address"},
		{"https://-app.example.com/doc.json", "DNS name or an IP address"},
		{"https://app..example.com/doc.json", "DNS name or an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.id[:min(len(tt.id), 60)], func(t *testing.T) {
			_, err := docs.Client(t.Context(), tt.id)
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrNotFound saying %q", err, tt.want)
			}
		})
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.hits) != 0 {
		t.Errorf("refused URLs were fetched: %v", srv.hits)
	}
}

func TestClientDocumentAddressCheck(t *testing.T) {
	srv := newDocServer(t)
	id := srv.URL + "/doc.json"
	srv.handle("/doc.json", serveJSON(docFor(id, nil)))
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
	localhost := "https://localhost:" + port + "/doc.json"
	srv.handle("/doc.json", serveJSON(docFor(id, nil)))

	tests := []struct {
		name  string
		allow []string
		id    string
		ok    bool
	}{
		{"loopback literal, not listed", []string{"example.com"}, id, false},
		{"loopback literal, listed", []string{"127.0.0.1"}, id, true},
		{"localhost resolves to loopback", []string{"127.0.0.1"}, localhost, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.hitsOf("/doc.json")
			docs := newClientDocuments(tt.allow, nil, nil, srv.roots(), 5*time.Second)
			c, err := docs.Client(t.Context(), tt.id)
			fetched := srv.hitsOf("/doc.json") - before
			if tt.ok {
				if err != nil || c.ID != tt.id || fetched != 1 {
					t.Fatalf("Client = %v, %v after %d requests; want the client", c, err, fetched)
				}
				return
			}
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "address is not public") {
				t.Errorf("err = %v, want a refusal of the address", err)
			}
			if fetched != 0 {
				t.Errorf("%d requests reached the server", fetched)
			}
		})
	}

	docs := NewClientDocuments([]string{"Docs.Example", "[::1]"}, nil, nil)
	if !docs.allow["docs.example"] || !docs.allow["::1"] {
		t.Errorf("allow list %v: want host names lower-cased, IPv6 without brackets", docs.allow)
	}
}

func TestClientDocumentCaching(t *testing.T) {
	date := "Tue, 01 Dec 2026 12:00:00 GMT"
	tests := []struct {
		name   string
		header []string
		fresh  time.Duration // still cached this long after the fetch
		stale  time.Duration // fetched again by then; 0: never cached
	}{
		{"no headers: 5 minutes", nil, 5*time.Minute - time.Second, 5 * time.Minute},
		{"max-age", []string{"Cache-Control", "public, max-age=60"}, 59 * time.Second, 60 * time.Second},
		{"max-age less Age", []string{"Cache-Control", "max-age=60", "Age", "50"}, 9 * time.Second, 10 * time.Second},
		{"max-age capped at 24 h", []string{"Cache-Control", "max-age=31536000"}, 24*time.Hour - time.Second, 24 * time.Hour},
		{"max-age beats Expires", []string{"Cache-Control", "max-age=30", "Date", date, "Expires", "Tue, 01 Dec 2026 13:00:00 GMT"}, 29 * time.Second, 30 * time.Second},
		{"Expires against Date", []string{"Date", date, "Expires", "Tue, 01 Dec 2026 12:02:00 GMT"}, 119 * time.Second, 120 * time.Second},
		{"Expires capped at 24 h", []string{"Date", date, "Expires", "Tue, 01 Dec 2027 12:00:00 GMT"}, 24*time.Hour - time.Second, 24 * time.Hour},
		{"no-store", []string{"Cache-Control", "no-store"}, 0, 0},
		{"no-cache", []string{"Cache-Control", "max-age=600, no-cache"}, 0, 0},
		{"max-age=0", []string{"Cache-Control", "max-age=0"}, 0, 0},
		{"Expires in the past", []string{"Date", date, "Expires", "Tue, 01 Dec 2026 11:00:00 GMT"}, 0, 0},
	}
	srv := newDocServer(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newTestClock()
			docs := testDocs(srv, clock)
			path := "/cache/" + string(rune('a'+i)) + ".json"
			id := srv.URL + path
			srv.handle(path, serveJSON(docFor(id, nil), tt.header...))
			get := func(wantHits int) {
				t.Helper()
				if _, err := docs.Client(t.Context(), id); err != nil {
					t.Fatal(err)
				}
				if n := srv.hitsOf(path); n != wantHits {
					t.Fatalf("after %v: %d requests, want %d", clock.now().Sub(newTestClock().now()), n, wantHits)
				}
			}
			get(1)
			if tt.stale == 0 {
				get(2) // not cached: every call fetches
				return
			}
			clock.advance(tt.fresh)
			get(1)
			clock.advance(tt.stale - tt.fresh)
			get(2)
		})
	}
}

func TestClientDocumentFailureCachedBriefly(t *testing.T) {
	srv := newDocServer(t)
	clock := newTestClock()
	docs := testDocs(srv, clock)
	var mu sync.Mutex
	healthy := false
	id := srv.URL + "/flaky.json"
	srv.handle("/flaky.json", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := healthy
		mu.Unlock()
		if !ok {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		serveJSON(docFor(id, nil))(w, r)
	})
	for range 5 {
		if _, err := docs.Client(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	}
	if n := srv.hitsOf("/flaky.json"); n != 1 {
		t.Fatalf("%d requests for a burst of 5 failing calls, want 1", n)
	}
	mu.Lock()
	healthy = true
	mu.Unlock()
	clock.advance(clientDocFailureTTL - time.Second)
	if _, err := docs.Client(t.Context(), id); err == nil {
		t.Fatal("the failure was forgotten before 30 s")
	}
	clock.advance(time.Second)
	if _, err := docs.Client(t.Context(), id); err != nil {
		t.Fatalf("after 30 s: %v", err)
	}
	if n := srv.hitsOf("/flaky.json"); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestClientDocumentSharedFetch(t *testing.T) {
	srv := newDocServer(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	id := srv.URL + "/shared.json"
	// no-store, so a caller that came late would fetch again rather than
	// find the answer cached: only sharing keeps the count at one.
	srv.handle("/shared.json", func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		serveJSON(docFor(id, nil), "Cache-Control", "no-store")(w, r)
	})
	docs := testDocs(srv, nil)
	const callers = 8
	errs := make(chan error, callers)
	go func() {
		_, err := docs.Client(t.Context(), id)
		errs <- err
	}()
	<-started
	var ready sync.WaitGroup
	for range callers - 1 {
		ready.Add(1)
		go func() {
			ready.Done()
			_, err := docs.Client(t.Context(), id)
			errs <- err
		}()
	}
	ready.Wait()
	time.Sleep(20 * time.Millisecond) // let them reach the shared fetch; a late one only weakens the test
	close(release)
	for range callers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.hitsOf("/shared.json"); n != 1 {
		t.Errorf("%d requests for %d concurrent callers, want 1", n, callers)
	}
}

func TestFreshness(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header []string
		want   time.Duration
	}{
		{nil, clientDocDefaultTTL},
		{[]string{"Cache-Control", "max-age=120"}, 120 * time.Second},
		{[]string{"Cache-Control", `max-age="120"`}, 120 * time.Second},
		{[]string{"Cache-Control", "MAX-AGE=120, must-revalidate"}, 120 * time.Second},
		{[]string{"Cache-Control", "max-age=99999999999999999999999"}, clientDocMaxTTL},
		{[]string{"Cache-Control", "max-age=-1"}, 0},
		{[]string{"Cache-Control", "max-age=soon"}, 0},
		{[]string{"Cache-Control", "max-age"}, 0},
		{[]string{"Cache-Control", `no-cache="Set-Cookie"`}, 0},
		{[]string{"Cache-Control", "private, no-store"}, 0},
		{[]string{"Cache-Control", "max-age=60", "Age", "90"}, 0},
		{[]string{"Cache-Control", "max-age=60", "Age", "junk"}, 60 * time.Second},
		{[]string{"Expires", "0"}, 0},
		{[]string{"Expires", "Tue, 01 Dec 2026 12:10:00 GMT"}, 10 * time.Minute}, // no Date: against now
		{[]string{"Cache-Control", "public", "Expires", "Tue, 01 Dec 2026 12:10:00 GMT"}, 10 * time.Minute},
	}
	for _, tt := range tests {
		h := http.Header{}
		for i := 0; i+1 < len(tt.header); i += 2 {
			h.Set(tt.header[i], tt.header[i+1])
		}
		if got := freshness(h, now); got != tt.want {
			t.Errorf("freshness(%v) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestIsJSONMediaType(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json":                true,
		"application/json; charset=utf-8": true,
		"Application/JSON":                true,
		"application/json;charset=utf-8;": true, // does not parse, still JSON
		"application/oauth-client+json":   true,
		"application/json-patch":          false,
		"text/json":                       false,
		"text/html":                       false,
		"text/plain; charset=utf-8":       false,
		"":                                false,
	} {
		if got := isJSONMediaType(ct); got != want {
			t.Errorf("isJSONMediaType(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestNewClientDocumentSource(t *testing.T) {
	spec := ClientSpec{ID: "https://app.example/client.json", Public: true, RedirectURIs: []string{"https://app.example/cb"}, AnyScope: true}
	if _, _, err := NewClient(spec, ClientFromDocument, time.Now()); err != nil {
		t.Errorf("a URL id from a document: %v", err)
	}
	if _, _, err := NewClient(spec, ClientFromDynamic, time.Now()); err == nil {
		t.Error("a URL id accepted from dynamic registration")
	}
	spec.ID = "plain-id"
	if _, _, err := NewClient(spec, ClientFromDocument, time.Now()); err == nil {
		t.Error("a document client with an id that is not its URL")
	}
}

func FuzzCheckClientIDURL(f *testing.F) {
	for _, s := range []string{
		"https://app.example/client.json", "https://app.example", "https://app.example/", "http://app.example/x",
		"https://app.example/a/../b", "https://app.example/%2E/b", "https://u@app.example/x", "https://app.example/x?y",
		"https://app.example/x#y", "https://[::1]:8443/x", "https://app.example/caf%C3%A9", "https://app.example/a b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		u, err := checkClientIDURL(id)
		if err != nil {
			return
		}
		if !IsClientIDURL(id) || len(id) > clientDocMaxURL || u.Scheme != "https" || u.Hostname() == "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(id, "#?") ||
			u.Path == "" || u.Path == "/" || u.String() != id {
			t.Fatalf("accepted %q: %#v", id, u)
		}
		for _, seg := range strings.Split(u.Path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q with a dot segment", id)
			}
		}
		again, err := url.Parse(u.String())
		if err != nil || again.Host != u.Host || again.Path != u.Path {
			t.Fatalf("%q does not survive a round trip", id)
		}
	})
}

// Beyond clientDocMaxFetches fetches at once the answer is "busy", and
// that answer is not cached: the URL works once a slot is free.
func TestClientDocumentFetchesBounded(t *testing.T) {
	srv := newDocServer(t)
	docs := testDocs(srv, newTestClock())
	id := srv.URL + "/busy.json"
	srv.handle("/busy.json", serveJSON(docFor(id, nil)))
	for range clientDocMaxFetches {
		docs.slots <- struct{}{}
	}
	if _, err := docs.Client(t.Context(), id); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("with every slot taken: %v", err)
	}
	if n := srv.hitsOf("/busy.json"); n != 0 {
		t.Fatalf("fetched %d times while busy", n)
	}
	<-docs.slots
	if _, err := docs.Client(t.Context(), id); err != nil {
		t.Fatalf("once a slot is free: %v", err)
	}
}
