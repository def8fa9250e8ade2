package oauth

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/authagent/caddy-authagent/api"
)

// TestEveryRouteIsDocumented: the handler serves exactly what
// api/openapi.yaml lists, path by path and method by method.
func TestEveryRouteIsDocumented(t *testing.T) {
	doc, err := api.YAMLToJSON(api.OpenAPIYAML())
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		t.Fatal(err)
	}
	operations := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	var documented, served []string
	for path, item := range parsed.Paths {
		for method := range item {
			if slices.Contains(operations, method) {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	s := NewServer(Config{Issuer: "https://auth.example.com"}, Deps{})
	for path, rt := range s.routes {
		for _, m := range rt.methods {
			served = append(served, m+" "+path)
		}
	}
	sort.Strings(documented)
	sort.Strings(served)
	for _, op := range served {
		if !slices.Contains(documented, op) {
			t.Errorf("%s is served but api/openapi.yaml does not list it", op)
		}
	}
	for _, op := range documented {
		if !slices.Contains(served, op) {
			t.Errorf("api/openapi.yaml lists %s, which the handler does not serve", op)
		}
	}
	for path := range parsed.Paths {
		if !s.Handles(path) {
			t.Errorf("the handler does not claim %s", path)
		}
	}
	if len(served) < 20 {
		t.Fatalf("only %d operations served", len(served))
	}
}
