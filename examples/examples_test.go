// Package examples holds realistic experiment files; this test keeps every one of them valid
// and plannable against its pool.
package examples

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	"api-legacy-to-eks":           "pools/route53-api.json", // aws route53 list-resource-record-sets output
	"use1-weekly-drain":           "pools/use1.json",        // a drill (kind: Drill)
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
	"api-legacy-to-eks":           {"baseline (before appliedAt 2026-12-04T10:00:00Z)", "ramp"},
}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 7 {
		t.Fatalf("want at least seven example files, got %v (%v)", files, err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil && experiments.FileKind(data) == experiments.KindDrill {
			for _, name := range checkDrill(t, f) {
				seen[name] = true
			}
			continue
		}
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
			var pool traffic.Pool
			if e.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
				pool = recordSetPool(t, data, e)
			} else if pool, err = traffic.DecodePool(data); err != nil {
				t.Fatalf("%s: %v", poolFile, err)
			}
			if id := e.Spec.Traffic.PoolRef().Pool; pool.ID != id {
				t.Errorf("%s: pool file %s is pool %s, the experiment names %s", name, poolFile, pool.ID, id)
			}
			if e.Spec.Traffic.Migration() {
				if note := e.Spec.MigrationNote(); !strings.HasPrefix(note, "migration: after promotion the legacy clusters carry no traffic and can be removed") {
					t.Errorf("%s: migration note %q", name, note)
				}
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
					if o.Cluster == "" && !traffic.SameWeight(o.Weight, pool.Origins[i].Weight) {
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

// recordSetPool reads a Route 53 example's pool file, record sets as `aws route53
// list-resource-record-sets` prints them (what `verdict plan --pool-file` reads), into the
// pool the steerer would report: the experiment's weighted set, weights as units/255.
func recordSetPool(t *testing.T, data []byte, e *experiments.Experiment) traffic.Pool {
	t.Helper()
	var doc struct {
		ResourceRecordSets []struct {
			Name, Type, SetIdentifier string
			Weight                    *int64
		}
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	ref := e.Spec.Traffic.PoolRef()
	pool := traffic.Pool{ID: ref.Pool, Enabled: true}
	for _, r := range doc.ResourceRecordSets {
		if strings.ToLower(r.Name)+"/"+r.Type != ref.Pool {
			continue
		}
		if r.SetIdentifier == "" || r.Weight == nil || *r.Weight < 0 || *r.Weight > 255 {
			t.Fatalf("%s: record %+v is not a weighted record", ref.Pool, r)
		}
		pool.Origins = append(pool.Origins, traffic.Origin{Name: r.SetIdentifier, Enabled: true, Weight: float64(*r.Weight) / 255})
	}
	if len(pool.Origins) == 0 {
		t.Fatalf("no records of %s in the pool file", ref.Pool)
	}
	return pool
}

// checkDrill loads a drill example and plans the drain of every cluster it rotates through
// on its pool: the drained origin at 0, the pool's total kept. It returns the drills' names.
func checkDrill(t *testing.T, f string) []string {
	t.Helper()
	ds, err := experiments.LoadDrillFile(f, experiments.LoadOptions{LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Errorf("%s is invalid:\n%v", f, err)
		return nil
	}
	var names []string
	for _, d := range ds {
		names = append(names, d.Metadata.Name)
		poolFile, ok := pools[d.Metadata.Name]
		if !ok {
			t.Errorf("%s: drill %s has no pool in this test's table", f, d.Metadata.Name)
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
		if d.Spec.Schedule == "" || d.NextRun(pool.ModifiedOn).IsZero() {
			t.Errorf("%s: drill %s has no schedule that fires", f, d.Metadata.Name)
		}
		var origins []experiments.PoolOrigin
		for _, o := range pool.Origins {
			origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
		}
		for _, drain := range d.Spec.Drain {
			e := d.Experiment(drain)
			plan, err := experiments.WeightPlan(e, origins)
			if err != nil {
				t.Errorf("%s: drill %s cannot drain %s: %v", f, d.Metadata.Name, drain, e.FieldError(err))
				continue
			}
			before, after := 0.0, 0.0
			for i, o := range plan.Steps[1].Origins {
				before += plan.Steps[0].Origins[i].Weight
				after += o.Weight
				if o.Cluster == drain && o.Weight != 0 {
					t.Errorf("%s: draining %s leaves its origin at %v", d.Metadata.Name, drain, o.Weight)
				}
			}
			if !traffic.SameWeight(before, after) {
				t.Errorf("%s: draining %s changes the pool's total from %v to %v", d.Metadata.Name, drain, before, after)
			}
		}
	}
	return names
}
