package oauth_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// TestAPIDocumentsServed: the OpenAPI document and the Postman collection
// name this issuer, carry an ETag that a conditional request matches, and
// refuse what they do not take in the error shape.
func TestAPIDocumentsServed(t *testing.T) {
	s := newServer(t, cheapParams)
	get := func(method, target, ifNoneMatch string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, nil)
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct {
		path  string
		check func(t *testing.T, body map[string]any)
	}{
		{"/api/openapi.json", func(t *testing.T, doc map[string]any) {
			servers, _ := doc["servers"].([]any)
			if doc["openapi"] != "3.1.0" || len(servers) != 1 || servers[0].(map[string]any)["url"] != issuer {
				t.Fatalf("openapi %v, servers %v", doc["openapi"], doc["servers"])
			}
			if paths, _ := doc["paths"].(map[string]any); paths["/api/register-agent"] == nil {
				t.Fatal("the document lists no /api/register-agent")
			}
		}},
		{"/api/postman-collection.json", func(t *testing.T, c map[string]any) {
			vars, _ := c["variable"].([]any)
			for _, v := range vars {
				if v := v.(map[string]any); v["key"] == "baseUrl" && v["value"] == issuer {
					return
				}
			}
			t.Fatalf("no baseUrl %s in %v", issuer, c["variable"])
		}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec := get("GET", tc.path, "")
			etag := rec.Header().Get("ETag")
			var body map[string]any
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || etag == "" || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
				t.Fatalf("GET: %d %v", rec.Code, rec.Header())
			}
			tc.check(t, body)
			if again := get("GET", tc.path, ""); again.Header().Get("ETag") != etag || again.Body.String() != rec.Body.String() {
				t.Fatal("a second GET differs")
			}
			for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				if rec := get("GET", tc.path, inm); rec.Code != 304 || rec.Body.Len() != 0 || rec.Header().Get("ETag") != etag {
					t.Fatalf("If-None-Match %s: %d %q", inm, rec.Code, rec.Body)
				}
			}
			if rec := get("GET", tc.path, `"other"`); rec.Code != 200 {
				t.Fatalf("another version: %d", rec.Code)
			}
			if head := get("HEAD", tc.path, ""); head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("ETag") != etag {
				t.Fatalf("HEAD: %d %q", head.Code, head.Body)
			}
			for _, bad := range []struct {
				method, target string
				status         int
			}{
				{"POST", tc.path, 405},
				{"DELETE", tc.path, 405},
				{"GET", tc.path + "?format=yaml", 400},
				{"GET", tc.path + "?", 200},
				{"GET", tc.path + "?%zz", 400},
			} {
				rec := get(bad.method, bad.target, "")
				if rec.Code != bad.status {
					t.Fatalf("%s %s: %d, want %d", bad.method, bad.target, rec.Code, bad.status)
				}
				if bad.status != 200 {
					checkShape(t, rec)
				}
				if bad.status == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
					t.Fatalf("Allow %q", rec.Header().Get("Allow"))
				}
			}
		})
	}
}
