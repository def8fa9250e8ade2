package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/authagent/caddy-authagent/api"
)

// The contract: every request the tests send to a Caddy's auth_agent
// endpoints or its admin API, and every answer, is checked against
// api/openapi.yaml or api/admin-openapi.yaml. An answer whose status,
// header or field the document does not describe is a violation, as is a
// request the document calls invalid that the server accepted. TestMain
// fails the run when there is any, listing them.

// contractHost is the server the documents are routed with; requests are
// rewritten to it before routing.
const contractHost = "http://contract.test"

// contractDoc is one document, routed.
type contractDoc struct {
	name   string
	doc    *openapi3.T
	router routers.Router
	// prefixes are the paths the document owns: anything under them that
	// it does not list must be the 404 error.
	prefixes []string
}

// contractChecker validates the traffic to the ports it knows.
type contractChecker struct {
	docs map[string]*contractDoc // by kind: "api", "admin"

	mu         sync.Mutex
	ports      map[string]string // host:port → kind
	violations []string
	exercised  map[string]int // "kind operationId" → requests
	checked    int
}

var contract *contractChecker

// loadContract reads the documents and puts the checker in front of
// http.DefaultTransport, which every client in the tests uses unless it
// brings its own transport (those wrap theirs with contract.wrap).
func loadContract() error {
	c, err := newContractChecker()
	if err != nil {
		return err
	}
	// The sign-in and error pages are HTML: a string to the document.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	contract = c
	http.DefaultTransport = c.wrap(http.DefaultTransport)
	return nil
}

// newContractChecker loads and routes the documents.
func newContractChecker() (*contractChecker, error) {
	c := &contractChecker{docs: map[string]*contractDoc{}, ports: map[string]string{}, exercised: map[string]int{}}
	for kind, spec := range map[string]struct {
		yaml     []byte
		prefixes []string
	}{
		"api":   {api.OpenAPIYAML(), []string{"/api/", "/oauth2/"}},
		"admin": {api.AdminOpenAPIYAML(), []string{"/auth_agent/"}},
	} {
		doc, err := openapi3.NewLoader().LoadFromData(spec.yaml)
		if err != nil {
			return nil, fmt.Errorf("%s document: %w", kind, err)
		}
		if err := doc.Validate(context.Background()); err != nil {
			return nil, fmt.Errorf("%s document: %w", kind, err)
		}
		doc.Servers = openapi3.Servers{{URL: contractHost}}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			return nil, fmt.Errorf("%s document: %w", kind, err)
		}
		c.docs[kind] = &contractDoc{name: kind, doc: doc, router: router, prefixes: spec.prefixes}
	}
	return c, nil
}

// watch makes the checker validate requests to hostport against the
// document of kind ("api" or "admin").
func (c *contractChecker) watch(hostport, kind string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ports[hostport] = kind
}

// wrap returns a transport that sends through next and checks what it sees.
func (c *contractChecker) wrap(next http.RoundTripper) http.RoundTripper {
	if c == nil {
		return next
	}
	return &contractTransport{c: c, next: next}
}

type contractTransport struct {
	c    *contractChecker
	next http.RoundTripper
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on to the
// transport it wraps (a reload closes the old server's connections).
func (t *contractTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (t *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.c.mu.Lock()
	kind := t.c.ports[req.URL.Host]
	t.c.mu.Unlock()
	if kind == "" {
		return t.next.RoundTrip(req)
	}
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = &replayBody{Reader: bytes.NewReader(respBody), err: readErr}
	if readErr == nil {
		t.c.check(t.c.docs[kind], req, reqBody, resp, respBody)
	}
	return resp, nil
}

// replayBody is a read response body, ending with the error reading it
// ended with (if any).
type replayBody struct {
	*bytes.Reader
	err error
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *replayBody) Close() error { return nil }

// genericHeaders may come with any answer without being described:
// transport, CORS and caching hygiene.
var genericHeaders = []string{
	"Date", "Content-Length", "Content-Type", "Server", "Vary", "Connection", "Keep-Alive",
	"Transfer-Encoding", "Alt-Svc", "Cache-Control", "X-Content-Type-Options", "X-Frame-Options",
	"Referrer-Policy", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
	"Access-Control-Expose-Headers",
	// The cluster test's mark of the instance that answered (its
	// Caddyfile adds it), not the handler's.
	"X-Instance",
}

func (c *contractChecker) check(d *contractDoc, req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	where := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), resp.StatusCode)
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if len(respBody) > 0 && len(respBody) < 600 {
			msg += "\n\t\tbody: " + string(respBody)
		}
		c.mu.Lock()
		c.violations = append(c.violations, where+": "+msg)
		c.mu.Unlock()
	}
	// A CORS preflight is answered before any endpoint; it is not an
	// operation.
	if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
		return
	}
	vreq := req.Clone(context.Background())
	vreq.URL.Scheme, vreq.URL.Host, vreq.Host = "http", strings.TrimPrefix(contractHost, "http://"), ""
	vreq.RequestURI = ""
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := d.router.FindRoute(vreq)
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			fail("a documented path called with an undocumented method must answer 405 with Allow")
			return
		}
		c.checkError(d, respBody, fail)
		c.count(d, "(405)")
		return
	case err != nil:
		owned := false
		for _, p := range d.prefixes {
			owned = owned || strings.HasPrefix(req.URL.Path, p)
		}
		if !owned {
			return // not the handler's: another handler of the site
		}
		if resp.StatusCode != http.StatusNotFound {
			fail("a path the document does not list must answer 404")
			return
		}
		c.checkError(d, respBody, fail)
		c.count(d, "(404)")
		return
	}
	c.count(d, route.Operation.OperationID)
	opts := &openapi3filter.Options{
		MultiError:                 true,
		IncludeResponseStatus:      true,
		AuthenticationFunc:         openapi3filter.NoopAuthenticationFunc,
		SkipSettingDefaults:        true,
		ExcludeReadOnlyValidations: true,
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)
	if reqErr != nil && resp.StatusCode < 300 {
		fail("the server accepted a request the document calls invalid: %v", reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(respBody)), Options: opts,
	}
	if req.Method == http.MethodHead {
		out.Options = &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true, ExcludeResponseBody: true}
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		fail("the answer is not as documented: %v", err)
	}
	if rr := route.Operation.Responses.Status(resp.StatusCode); rr != nil && rr.Value != nil {
		for name := range resp.Header {
			if slices.Contains(genericHeaders, name) {
				continue
			}
			if !hasHeader(rr.Value.Headers, name) {
				fail("header %s is not documented for this answer", name)
			}
		}
	}
}

func hasHeader(h openapi3.Headers, name string) bool {
	for k := range h {
		if http.CanonicalHeaderKey(k) == name {
			return true
		}
	}
	return false
}

// checkError validates an answer against the document's Error schema.
func (c *contractChecker) checkError(d *contractDoc, body []byte, fail func(string, ...any)) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		fail("the error is not JSON: %v", err)
		return
	}
	schema := d.doc.Components.Schemas["Error"]
	if schema == nil || schema.Value == nil {
		fail("the %s document has no Error schema", d.name)
		return
	}
	if err := schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		fail("the error is not in the error shape: %v", err)
	}
}

func (c *contractChecker) count(d *contractDoc, op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exercised[d.name+" "+op]++
	c.checked++
}

// report prints what was checked and every violation; it returns false
// when there is any.
func (c *contractChecker) report() bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	total := 0
	for kind, d := range c.docs {
		for path, item := range d.doc.Paths.Map() {
			for method, op := range item.Operations() {
				total++
				if c.exercised[kind+" "+op.OperationID] == 0 {
					missing = append(missing, fmt.Sprintf("%s %s %s (%s)", kind, method, path, op.OperationID))
				}
			}
		}
	}
	sort.Strings(missing)
	fmt.Fprintf(os.Stderr, "contract: %d requests checked against the OpenAPI documents; %d of %d operations exercised\n",
		c.checked, total-len(missing), total)
	if len(missing) > 0 && testing.Verbose() {
		fmt.Fprintf(os.Stderr, "contract: not exercised by the tests run:\n\t%s\n", strings.Join(missing, "\n\t"))
	}
	if len(c.violations) == 0 {
		return true
	}
	fmt.Fprintf(os.Stderr, "contract: %d violations of api/openapi.yaml or api/admin-openapi.yaml:\n", len(c.violations))
	for _, v := range c.violations {
		fmt.Fprintf(os.Stderr, "\t%s\n", v)
	}
	return false
}

// contractProxy starts an HTTP forward proxy that sends every request it
// is given through the contract checker: a tool running in another
// process (newman) is checked too when its HTTP_PROXY names it.
func contractProxy(t *testing.T) string {
	t.Helper()
	transport := contract.wrap(&http.Transport{})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "a forward proxy takes absolute URLs", http.StatusBadRequest)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.Header.Del("Proxy-Connection")
		resp, err := transport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL
}

// TestContractCheckerCatches: the checker flags an undocumented field,
// status and header, a path the handler should not answer, and a request
// the server should have refused; a documented answer passes.
func TestContractCheckerCatches(t *testing.T) {
	c, err := newContractChecker()
	if err != nil {
		t.Fatal(err)
	}
	answers := map[string]func(w http.ResponseWriter){
		"GET /.well-known/jwks.json": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/jwk-set+json")
			_, _ = w.Write([]byte(`{"keys":[]}`))
		},
		"HEAD /.well-known/jwks.json": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/jwk-set+json")
		},
		"GET /.well-known/openid-configuration": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"issuer":"http://x"}`))
		},
		"GET /api/check-status": func(w http.ResponseWriter) { w.WriteHeader(http.StatusTeapot) },
		"GET /oauth2/userinfo": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Debug", "1")
			_, _ = w.Write([]byte(`{"sub":"a"}`))
		},
		"GET /api/nothing-here":         func(w http.ResponseWriter) { _, _ = w.Write([]byte("ok")) },
		"DELETE /.well-known/jwks.json": func(w http.ResponseWriter) { w.WriteHeader(http.StatusMethodNotAllowed) },
		"POST /api/register-agent": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"success":true,"data":{"agent_id":"abc","model_name":"m","owner_name":"","owner_email":"a@b.c","permissions":[],"created_at":"2026-12-07T10:00:00Z","updated_at":"2026-12-07T10:00:00Z"}}`))
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answers[r.Method+" "+r.URL.Path](w)
	}))
	defer srv.Close()
	c.watch(strings.TrimPrefix(srv.URL, "http://"), "api")
	hc := &http.Client{Transport: c.wrap(&http.Transport{})}
	send := func(method, path, body string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send("GET", "/.well-known/jwks.json", "")
	send("HEAD", "/.well-known/jwks.json", "")
	if len(c.violations) != 0 {
		t.Fatalf("documented answers flagged: %v", c.violations)
	}
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "/.well-known/openid-configuration", "", "GET /.well-known/openid-configuration → 200: the answer is not as documented"},
		{"GET", "/api/check-status?request_id=x", "", "→ 418: the answer is not as documented"},
		{"GET", "/oauth2/userinfo", "", "header X-Debug is not documented"},
		{"GET", "/api/nothing-here", "", "a path the document does not list must answer 404"},
		{"POST", "/api/register-agent", `{"agent_id":"abc"}`, "the server accepted a request the document calls invalid"},
		{"DELETE", "/.well-known/jwks.json", "", "must answer 405 with Allow"},
	} {
		before := len(c.violations)
		send(tc.method, tc.path, tc.body)
		if len(c.violations) == before || !strings.Contains(strings.Join(c.violations[before:], "\n"), tc.want) {
			t.Errorf("%s %s: want a violation %q, got %v", tc.method, tc.path, tc.want, c.violations[before:])
		}
	}
}
