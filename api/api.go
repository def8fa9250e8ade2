// Package api holds the documents that describe the HTTP API: the OpenAPI
// 3.1 documents of the endpoints (openapi.yaml) and of the admin API
// (admin-openapi.yaml), written by hand as the source of truth, and the
// Postman collection made from the first (postman_collection.json, by
// `go generate ./api`). The server serves the first and the collection for
// its own issuer.
package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

//go:generate go run ./internal/postmangen -o postman_collection.json openapi.yaml

var (
	//go:embed openapi.yaml
	openAPI []byte
	//go:embed admin-openapi.yaml
	adminOpenAPI []byte
	//go:embed postman_collection.json
	postmanCollection []byte
)

// OpenAPIYAML is the endpoints' document as written.
func OpenAPIYAML() []byte { return openAPI }

// AdminOpenAPIYAML is the admin API's document as written.
func AdminOpenAPIYAML() []byte { return adminOpenAPI }

// Document is the endpoints' OpenAPI document as JSON, with
// servers[0].url the issuer (and no other server).
func Document(issuer string) ([]byte, error) {
	doc, err := YAMLToJSON(openAPI)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	m["servers"] = []map[string]string{{"url": issuer, "description": "This server."}}
	return json.Marshal(m)
}

// Collection is the Postman collection with its baseUrl variable set to
// the issuer.
func Collection(issuer string) ([]byte, error) {
	var c map[string]any
	if err := json.Unmarshal(postmanCollection, &c); err != nil {
		return nil, fmt.Errorf("the embedded Postman collection: %w", err)
	}
	vars, _ := c["variable"].([]any)
	found := false
	for _, v := range vars {
		if v, ok := v.(map[string]any); ok && v["key"] == "baseUrl" {
			v["value"], found = issuer, true
		}
	}
	if !found {
		return nil, errors.New("the embedded Postman collection has no baseUrl variable")
	}
	return json.Marshal(c)
}

// YAMLToJSON converts a YAML document whose mappings have string keys
// (as OpenAPI's do) to JSON.
func YAMLToJSON(y []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		return nil, err
	}
	if err := checkStringKeys(v, "$"); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// checkStringKeys refuses a mapping key that is not a string (an unquoted
// status code such as 200: is an integer in YAML), which JSON cannot hold.
func checkStringKeys(v any, at string) error {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if err := checkStringKeys(e, at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := checkStringKeys(e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case map[any]any:
		return fmt.Errorf("%s: a mapping key is not a string (quote status codes)", at)
	}
	return nil
}
