package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docPath and collectionPath are the committed files (this test runs in
// api/internal/postmangen).
var (
	docPath        = filepath.Join("..", "..", "openapi.yaml")
	collectionPath = filepath.Join("..", "..", "postman_collection.json")
)

func readDoc(t *testing.T) []byte {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestCommittedCollection: the committed collection is what the generator
// makes from the committed document.
func TestCommittedCollection(t *testing.T) {
	want, err := generate(readDoc(t), flow)
	if err != nil {
		t.Fatalf("generating the collection from api/openapi.yaml: %v", err)
	}
	got, err := os.ReadFile(collectionPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("api/postman_collection.json is not what api/openapi.yaml makes: run go generate ./api")
	}
}

// TestDeterministic: two runs make the same bytes.
func TestDeterministic(t *testing.T) {
	doc := readDoc(t)
	a, err := generate(doc, flow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := generate(doc, flow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two runs made different collections")
	}
	if !bytes.HasSuffix(a, []byte("}\n")) || !bytes.HasPrefix(a, []byte("{\n  \"info\"")) {
		t.Fatal("the collection is not JSON indented by two spaces with a final newline")
	}
}

// TestShape checks what Postman and newman rely on: the v2.1 schema, the
// flow's requests in folders, and every variable the scripts set declared
// with baseUrl first.
func TestShape(t *testing.T) {
	out, err := generate(readDoc(t), flow)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Info struct {
			Name, Schema string
		}
		Item []struct {
			Name string
			Item []struct {
				ID, Name string
				Request  struct {
					Method string
					URL    struct{ Raw string }
				}
			}
		}
		Variable []struct{ Key, Value string }
	}
	if err := json.Unmarshal(out, &c); err != nil {
		t.Fatal(err)
	}
	if c.Info.Schema != schemaURL || c.Info.Name == "" {
		t.Fatalf("info: %+v", c.Info)
	}
	var ids []string
	for _, f := range c.Item {
		for _, it := range f.Item {
			ids = append(ids, it.ID)
			if !strings.HasPrefix(it.Request.URL.Raw, "{{baseUrl}}/") {
				t.Errorf("%s: url %q", it.ID, it.Request.URL.Raw)
			}
		}
	}
	wantOrder := []string{
		"registerAgent", "authenticateAgent-self", "getAgentProfile", "updateAgentProfile", "userinfo-agentToken",
		"authorize-json", "authenticateAgent-approve", "checkStatus", "token-authorizationCode", "userinfo-siteToken",
		"token-refresh", "introspect-agentToken", "revoke-refreshToken", "token-refresh-revoked",
		"getOpenIDConfiguration", "getJwks",
	}
	if strings.Join(ids, " ") != strings.Join(wantOrder, " ") {
		t.Fatalf("requests %v, want %v", ids, wantOrder)
	}
	if len(c.Variable) == 0 || c.Variable[0].Key != "baseUrl" || c.Variable[0].Value != "http://localhost:8080" {
		t.Fatalf("variables %+v: baseUrl first, the document's server", c.Variable)
	}
	declared := map[string]bool{}
	for _, v := range c.Variable[1:] {
		if v.Value != "" {
			t.Errorf("variable %s has a value %q; only baseUrl has one", v.Key, v.Value)
		}
		declared[v.Key] = true
	}
	for _, name := range []string{"agent_id", "agent_secret", "access_token", "request_id", "code", "code_verifier", "refresh_token", "site_access_token"} {
		if !declared[name] {
			t.Errorf("variable %s is not declared", name)
		}
	}
}

// TestRefusesIncompleteDocument: an operation or example the flow names,
// missing from the document, is an error that says which.
func TestRefusesIncompleteDocument(t *testing.T) {
	doc := string(readDoc(t))
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"operation", "operationId: introspect\n", "operationId: introspectRenamed\n", `operation "introspect"`},
		{"example", "              authorizationCode:\n", "              authorizationCodeRenamed:\n", `no example "authorizationCode"`},
		{"parameter", "    Nonce:\n      name: nonce\n", "    Nonce:\n      name: nonceRenamed\n", `"nonce"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(doc, c.old) {
				t.Fatalf("the document no longer has %q: update the test", c.old)
			}
			_, err := generate([]byte(strings.Replace(doc, c.old, c.new, 1)), flow)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one naming %s", err, c.want)
			}
		})
	}
	// A step naming an operation the document lacks.
	bad := []folder{{name: "x", steps: []step{{id: "x", op: "noSuchOperation"}}}}
	if _, err := generate([]byte(doc), bad); err == nil || !strings.Contains(err.Error(), `"noSuchOperation"`) {
		t.Fatalf("err = %v", err)
	}
	// A step using a variable no script sets before it.
	bad = []folder{{name: "x", steps: []step{{id: "x", op: "getAgentProfile", bearer: "never_set"}}}}
	if _, err := generate([]byte(doc), bad); err == nil || !strings.Contains(err.Error(), "{{never_set}}") {
		t.Fatalf("err = %v", err)
	}
}
