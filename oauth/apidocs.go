package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"

	"github.com/authagent/caddy-authagent/api"
)

// apiDocs are the API's description for this issuer: the OpenAPI document
// and the Postman collection, each made once and served with an ETag.
type apiDocs struct {
	issuer     string
	openAPI    func() (servedDoc, error)
	collection func() (servedDoc, error)
}

// servedDoc is a document's bytes and their entity tag.
type servedDoc struct {
	body []byte
	etag string
}

func newAPIDocs(issuer string) *apiDocs {
	made := func(make func(string) ([]byte, error)) func() (servedDoc, error) {
		return sync.OnceValues(func() (servedDoc, error) {
			body, err := make(issuer)
			if err != nil {
				return servedDoc{}, err
			}
			sum := sha256.Sum256(body)
			return servedDoc{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}, nil
		})
	}
	return &apiDocs{issuer: issuer, openAPI: made(api.Document), collection: made(api.Collection)}
}

// handleOpenAPI is GET|HEAD /api/openapi.json.
func (s *metadata) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	return serveDoc(w, r, s.docs.openAPI)
}

// handlePostmanCollection is GET|HEAD /api/postman-collection.json.
func (s *metadata) handlePostmanCollection(w http.ResponseWriter, r *http.Request) error {
	return serveDoc(w, r, s.docs.collection)
}

// serveDoc answers with the document, or 304 when the caller holds this
// version. The documents take no parameters: a query is a mistake worth
// telling (a client expecting a filter or another format gets none).
func serveDoc(w http.ResponseWriter, r *http.Request, doc func() (servedDoc, error)) error {
	if r.URL.RawQuery != "" {
		return ErrInvalidRequest("this document takes no query parameters")
	}
	d, err := doc()
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("ETag", d.etag)
	// Revalidated on every use: a new release changes the document.
	h.Set("Cache-Control", "no-cache")
	if etagMatches(r.Header.Get("If-None-Match"), d.etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(d.body)
	}
	return nil
}

// etagMatches applies If-None-Match (RFC 9110 §13.1.2: weak comparison).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
