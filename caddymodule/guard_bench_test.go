package caddymodule

import (
	"context"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchWriter is a ResponseWriter whose header map is reused, so that
// what a run allocates is the handler's, not the harness's.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkGuardServeHTTP is the guard's whole work on a request that
// passes (a cached token): CORS, bearer parsing, verification, audience,
// scopes and revocation, the api budget and its X-RateLimit-* headers,
// the X-Agent-* headers and the placeholders, with a next handler that
// does nothing. Each iteration gets what Caddy's server gives every
// request: its own header map (as parsed) and its own replacer, already
// holding the server's providers. "direct" is that harness alone, calling
// next without the guard: the guard's cost is the difference.
func BenchmarkGuardServeHTTP(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	noProvider := func(string) (any, bool) { return nil, false }
	run := func(b *testing.B, api, origin string, guarded bool) {
		tg := newTestGuard(b, api)
		g, token := tg.guard, tg.token(b, "load-agent")
		r, _ := http.NewRequest(http.MethodGet, "http://api.example.com/data", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("User-Agent", "wrk")
		r.Header.Set("Accept", "*/*")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		header := r.Header
		w := &benchWriter{h: http.Header{}}
		// The context as the server prepares it (vars, original request),
		// once; each request gets a fresh replacer in it below.
		ctx := caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil).Context()
		req := r.WithContext(ctx)
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			repl := caddy.NewReplacer()
			repl.Map(noProvider) // where the server's HTTP placeholders go
			rc := *req
			rc.Header = header.Clone()
			rr := rc.WithContext(context.WithValue(ctx, caddy.ReplacerCtxKey, repl))
			var err error
			if guarded {
				err = g.ServeHTTP(w, rr, next)
			} else {
				err = next.ServeHTTP(w, rr)
			}
			if err != nil || w.status != 0 {
				b.Fatalf("refused: %v %d", err, w.status)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, "off", "", false) })
	b.Run("limiter-off", func(b *testing.B) { run(b, "off", "", true) })
	b.Run("limiter-memory", func(b *testing.B) { run(b, "1000000000/h", "", true) })
	b.Run("limiter-memory/origin", func(b *testing.B) { run(b, "1000000000/h", "https://inspector.example", true) })
}
