package gitops

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiffAndRender(t *testing.T) {
	src := tf("good/locals.tf", "local.traffic_split.use1")
	src.Keys = map[string]string{"o-squirtle": "squirtle", "snorlax": "snorlax", "staryu": "staryu"}
	d, err := Read(src)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]float64{"o-squirtle": 0.33, "snorlax": 0.5, "staryu": 0.17, "other": 1}
	p := Diff(d, live)
	if p.InSync() || len(p.Changes) != 2 || p.Changes[0].Origin != "snorlax" || p.Changes[1].Origin != "staryu" {
		t.Fatalf("changes = %+v", p.Changes)
	}
	if strings.Join(p.Unchanged, ",") != "o-squirtle" || strings.Join(p.Undeclared, ",") != "other" {
		t.Errorf("unchanged %v undeclared %v", p.Unchanged, p.Undeclared)
	}
	var toFile, toPool strings.Builder
	if err := p.Render(&toFile, ToFile); err != nil {
		t.Fatal(err)
	}
	_ = p.Render(&toPool, ToPool)
	js, _ := json.MarshalIndent(p, "", "  ")
	got := toFile.String() + "---\n" + toPool.String() + "---\n" + string(js) + "\n"
	golden := filepath.Join("testdata", "golden", "plan.golden")
	if *update {
		_ = os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("render differs from %s:\n%s", golden, got)
	}
	if !strings.Contains(toFile.String(), "~ snorlax: 0.33 -> 0.50") || !strings.Contains(toPool.String(), "~ snorlax: 0.50 -> 0.33") {
		t.Errorf("arrows:\n%s\n%s", toFile.String(), toPool.String())
	}
}

func TestDiffGranularity(t *testing.T) {
	d := &Declared{Source: tf("a.tf", "local.x"), Weights: map[string]float64{"a": 0.33, "b": 0.67, "c": 0.1}, Keys: map[string]string{"a": "a", "b": "b", "c": "c"}}
	p := Diff(d, map[string]float64{"a": 0.3300000001, "b": 0.674, "c": 0.2})
	if len(p.Changes) != 1 || p.Changes[0].Origin != "c" {
		t.Errorf("changes = %+v", p.Changes)
	}
	p = Diff(d, map[string]float64{"a": 0.33, "b": 0.67})
	if len(p.Changes) != 1 || p.Changes[0].Action != NotInPool {
		t.Errorf("changes = %+v", p.Changes)
	}
	if !strings.Contains(p.String(), "! c:") || !strings.Contains(p.String(), "1 declared origins not in the pool") {
		t.Errorf("render:\n%s", p)
	}
	p = Diff(d, map[string]float64{"a": 0.33, "b": 0.67, "c": 0.1})
	if !p.InSync() || !strings.Contains(p.String(), "matches the live pool (3 origins)") {
		t.Errorf("in sync render:\n%s", p)
	}
}
