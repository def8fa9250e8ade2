package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/authagent/caddy-authagent/api"
)

func TestYAMLToJSON(t *testing.T) {
	for _, doc := range [][]byte{api.OpenAPIYAML(), api.AdminOpenAPIYAML()} {
		b, err := api.YAMLToJSON(doc)
		var v map[string]any
		if err != nil || json.Unmarshal(b, &v) != nil || v["openapi"] != "3.1.0" {
			t.Fatalf("%v %.80s", err, b)
		}
	}
	// An unquoted status code is an integer key in YAML: refused, named.
	_, err := api.YAMLToJSON([]byte("paths:\n  /x:\n    get:\n      responses:\n        200: {description: ok}\n"))
	if err == nil || !strings.Contains(err.Error(), "$.paths./x.get.responses") {
		t.Fatalf("unquoted status: %v", err)
	}
	if _, err := api.YAMLToJSON([]byte("a: [")); err == nil {
		t.Fatal("malformed YAML accepted")
	}
}

func TestDocumentAndCollectionNameTheIssuer(t *testing.T) {
	const issuer = "https://auth.example.com"
	b, err := api.Document(issuer)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Servers []struct{ URL string } `json:"servers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Servers) != 1 || doc.Servers[0].URL != issuer {
		t.Fatalf("servers %+v %v", doc.Servers, err)
	}
	b, err = api.Collection(issuer)
	if err != nil || !strings.Contains(string(b), `"value":"`+issuer+`"`) {
		t.Fatalf("collection: %v", err)
	}
}
