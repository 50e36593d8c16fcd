package server

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestAPIDocumented: every operation in docs/api.yaml is served (an unknown path would
// get the mux's plain-text 404, a documented one JSON or a stream), and every route the
// server registers is documented.
func TestAPIDocumented(t *testing.T) {
	raw, err := os.ReadFile("../docs/api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	s := w.server()
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			method = strings.ToUpper(method)
			documented[method+" "+path] = true
			url := strings.ReplaceAll(strings.ReplaceAll(path, "{id}", "no-such-run"), "{name}", "no-such-experiment")
			req, _ := http.NewRequest(method, s.URL()+url, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == 404 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("%s %s is documented but not served", method, path)
			}
		}
	}
	for _, route := range s.routes {
		if strings.HasPrefix(route, "GET /assets") || route == "GET /{$}" {
			continue
		}
		if !documented[route] {
			t.Errorf("route %s is not in docs/api.yaml", route)
		}
	}
}
