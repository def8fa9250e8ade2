package authagent_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/authagent/caddy-authagent/"

// allowedImports is the shape of the README's Architecture section:
// caddymodule (Caddy glue) → every room; storage → the interfaces it
// implements (oauth, agents, events); guard (the resource server) → oauth
// for the shared types; oauth (the authorization server) → agents,
// ratelimit, events, api (the documents it serves); agents, ratelimit,
// events and internal/… → nothing of ours but internal/…, api → nothing. Only caddymodule imports Caddy, only storage
// imports Badger, and only ratelimit imports the limiter and Redis.
var allowedImports = map[string][]string{
	"caddymodule": {"oauth", "agents", "storage", "guard", "ratelimit", "events", "internal"},
	"storage":     {"oauth", "agents", "events"},
	"guard":       {"oauth", "internal"},
	"oauth":       {"agents", "ratelimit", "events", "internal", "api"},
	"agents":      {"internal"},
	"ratelimit":   {"internal"},
	"events":      {"internal"},
	"internal":    {"internal"},
	"client":      {}, // the Go SDK: the standard library only
	"api":         {}, // the API's documents (and their generator)
}

var exclusiveImports = map[string]string{
	"github.com/caddyserver/caddy": "caddymodule",
	"github.com/dgraph-io/badger":  "storage",
	"github.com/ulule/limiter":     "ratelimit",
	"github.com/redis/go-redis":    "ratelimit",
	"github.com/jackc/pgx":         "storage",
}

func TestImportArrows(t *testing.T) {
	for pkg, allowed := range allowedImports {
		err := filepath.WalkDir(pkg, func(path string, d os.DirEntry, err error) error {
			// Tests may use a real backend from storage (external test
			// packages do not change the import graph users build).
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p := strings.Trim(imp.Path.Value, `"`)
				if internal, ok := strings.CutPrefix(p, module); ok {
					target := strings.Split(internal, "/")[0]
					if target != pkg && !contains(allowed, target) {
						t.Errorf("%s imports %s: %s may import only %v", path, p, pkg, allowed)
					}
				}
				for prefix, owner := range exclusiveImports {
					if strings.HasPrefix(p, prefix) && owner != pkg {
						t.Errorf("%s imports %s: only %s may", path, p, owner)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestEveryPackageHasARoom fails on a package the arrows above do not
// know, so a new room gets its arrows written down.
func TestEveryPackageHasARoom(t *testing.T) {
	others := map[string]bool{"cmd": true, "e2e": true, "bench": true, "scripts": true}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") || others[name] || name == "testdata" {
			continue
		}
		if _, ok := allowedImports[name]; !ok {
			if files, _ := filepath.Glob(filepath.Join(name, "*.go")); len(files) > 0 {
				t.Errorf("package %s/ has no entry in allowedImports", name)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
