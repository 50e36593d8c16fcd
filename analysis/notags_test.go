package analysis

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestNoJSONNames: analysis is statistics only; how its results are stored and printed is
// the engine's schema (engine/schema.go), so no struct field here carries a JSON name.
func TestNoJSONNames(t *testing.T) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if fld, ok := n.(*ast.Field); ok && fld.Tag != nil && strings.Contains(fld.Tag.Value, "json:") {
				t.Errorf("%s: field with a JSON name %s; the engine's schema names stored fields", fset.Position(fld.Pos()), fld.Tag.Value)
			}
			return true
		})
	}
}
