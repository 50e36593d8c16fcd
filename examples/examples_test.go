// Package examples holds realistic experiment files; this test keeps every one of them valid
// and plannable against its pool.
package examples

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/traffic"
)

// pools says which pool file each example experiment runs on.
var pools = map[string]string{
	"karpenter-on-snorlax":        "pools/use1.json",
	"graviton-m7g-on-pikachu":     "pools/euw1.json",
	"hpa-rps-on-psyduck":          "pools/use2.json",
	"ewma-routing-on-staryu":      "pools/use1.json",
	"fast-readiness-on-eevee":     "pools/apse1.json",
	"k8s-1-32-snorlax-ramp-back":  "pools/use1.json",
	"cilium-on-squirtle":          "pools/use1.json",
	"cilium-on-bulbasaur":         "pools/euw1.json",
	"jigglypuff-federated-probes": "pools/apse1.json",
}

// phases says how each example brings its variant in: every shape of spec.canary.apply is
// shown by at least one example, and one keeps the old, undeclared form.
var phases = map[string][]string{
	"karpenter-on-snorlax":        {"baseline", "apply", "ready", "ramp"},
	"k8s-1-32-snorlax-ramp-back":  {"baseline", "apply", "ready", "ramp"}, // drained while applied
	"ewma-routing-on-staryu":      {"baseline", "apply", "ramp"},
	"hpa-rps-on-psyduck":          {"baseline", "ready", "ramp"},
	"graviton-m7g-on-pikachu":     {"baseline (before appliedAt 2026-12-01T06:00:00Z)", "ramp"},
	"cilium-on-squirtle":          {"baseline (before appliedAt 2026-11-24T14:00:00Z)", "ramp"},
	"cilium-on-bulbasaur":         {"baseline (before appliedAt 2026-11-25T09:00:00Z)", "ramp"},
	"fast-readiness-on-eevee":     {"baseline (variant arrival not declared)", "ramp"},
	"jigglypuff-federated-probes": {"baseline (before appliedAt 2026-12-04T22:00:00Z)", "ramp"},
}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 7 {
		t.Fatalf("want at least seven example files, got %v (%v)", files, err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		exps, err := experiments.LoadFile(f, experiments.LoadOptions{LookupEnv: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Errorf("%s is invalid:\n%v", f, err)
			continue
		}
		for _, e := range exps {
			name := e.Metadata.Name
			seen[name] = true
			poolFile, ok := pools[name]
			if !ok {
				t.Errorf("%s: experiment %s has no pool in this test's table", f, name)
				continue
			}
			data, err := os.ReadFile(poolFile)
			if err != nil {
				t.Fatal(err)
			}
			pool, err := traffic.DecodePool(data)
			if err != nil {
				t.Fatalf("%s: %v", poolFile, err)
			}
			if pool.ID != e.Spec.Traffic.Cloudflare.PoolID {
				t.Errorf("%s: pool file %s is pool %s, the experiment names %s", name, poolFile, pool.ID, e.Spec.Traffic.Cloudflare.PoolID)
			}
			var origins []experiments.PoolOrigin
			total := 0
			for _, o := range pool.Origins {
				origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
				total += int(o.Weight*100 + 0.5)
			}
			plan, err := experiments.WeightPlan(e, origins)
			if err != nil {
				t.Errorf("%s: %v", name, e.FieldError(err))
				continue
			}
			if got, want := e.Spec.Phases(), phases[name]; !slices.Equal(got, want) {
				t.Errorf("%s: phases %q, want %q", name, got, want)
			}
			cols := append(plan.Steps, plan.Promote, plan.Rollback)
			if plan.Drained != nil {
				cols = append(cols, *plan.Drained)
			}
			for _, st := range cols {
				sum := 0
				for i, o := range st.Origins {
					sum += int(o.Weight*100 + 0.5)
					if o.Cluster == "" && o.Weight != pool.Origins[i].Weight {
						t.Errorf("%s step %d: origin %s outside the experiment changed", name, st.Step, o.Name)
					}
				}
				if sum != total {
					t.Errorf("%s step %d: pool total %d cents, want %d", name, st.Step, sum, total)
				}
			}
		}
	}
	for name := range pools {
		if !seen[name] {
			t.Errorf("table names %s, which no example defines", name)
		}
	}
}
