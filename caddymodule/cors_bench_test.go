package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkGuardCORS is what the CORS layer in front of every guarded
// request costs, against calling the handler directly in the same run:
// without an Origin (servers, CLI clients) and with one (browsers).
func BenchmarkGuardCORS(b *testing.B) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	c := newCORS(nil)
	run := func(b *testing.B, origin string, serve func(w http.ResponseWriter, r *http.Request)) {
		r := httptest.NewRequest(http.MethodPost, "http://api.example.com/mcp", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		b.ReportAllocs()
		for b.Loop() {
			serve(httptest.NewRecorder(), r)
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, "", next) })
	guarded := func(w http.ResponseWriter, r *http.Request) { c.ServeHTTP(w, r, next) }
	b.Run("no-origin", func(b *testing.B) { run(b, "", guarded) })
	b.Run("origin", func(b *testing.B) { run(b, "https://inspector.example", guarded) })
}
