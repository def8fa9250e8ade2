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

// allowedImports is the shape of STYLE.md: caddymodule → oauth, agents,
// storage; storage → oauth, agents; oauth → agents; agents → nothing.
// Only caddymodule imports Caddy and only storage imports Badger.
var allowedImports = map[string][]string{
	"caddymodule": {"oauth", "agents", "storage"},
	"storage":     {"oauth", "agents"},
	"oauth":       {"agents"},
	"agents":      {},
}

var exclusiveImports = map[string]string{
	"github.com/caddyserver/caddy": "caddymodule",
	"github.com/dgraph-io/badger":  "storage",
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
