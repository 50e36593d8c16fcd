package experiments

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func loadBase(t testing.TB, edits ...string) *Experiment {
	t.Helper()
	src := readBase(t)
	for i := 0; i+1 < len(edits); i += 2 {
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	exps, err := Load("valid.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	return exps[0]
}

func cents(w float64) int { return int(math.Round(w * 100)) }

var basePool = []PoolOrigin{
	{"o1", 0.33, true}, {"o2", 0.33, true}, {"o3", 0.34, true}, {"other", 0.5, true}, {"off", 0.2, false},
}

func TestWeightPlan(t *testing.T) {
	e := loadBase(t)
	plan, err := WeightPlan(e, basePool)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float64{ // o1 o2 o3 other off
		{0.33, 0.33, 0.34, 0.5, 0.2},
		{0.05, 0.47, 0.48, 0.5, 0.2}, // 5% of 1.00; 0.95 split 33:34 → 0.4679/0.4821
		{0.20, 0.39, 0.41, 0.5, 0.2}, // 0.80 split 33:34 → 0.3940/0.4060 → largest remainder
	}
	if len(plan.Steps) != len(want) {
		t.Fatalf("got %d steps, want %d", len(plan.Steps), len(want))
	}
	for i, st := range plan.Steps {
		for j, o := range st.Origins {
			if cents(o.Weight) != cents(want[i][j]) {
				t.Errorf("step %d origin %s: weight %.2f, want %.2f", i, o.Name, o.Weight, want[i][j])
			}
		}
	}
	if got := plan.Steps[1].Origins[0].Share; math.Abs(got-0.05/1.5) > 1e-12 {
		t.Errorf("canary pool share at step 1 = %v, want %v", got, 0.05/1.5)
	}
	if plan.Steps[1].Origins[4].Share != 0 {
		t.Error("a disabled origin must have share 0")
	}
	if plan.Rollback.Origins[0].Weight != 0.33 || plan.Promote.Origins[0].Weight != 0.20 {
		t.Errorf("rollback restores (%v) and promote keeps (%v)", plan.Rollback.Origins[0].Weight, plan.Promote.Origins[0].Weight)
	}
	if plan.Steps[0].Origins[0].Cluster != "c1" || plan.Steps[0].Origins[3].Cluster != "" {
		t.Error("clusters not attributed to origins")
	}
}

func TestWeightPlanDrainAndRestore(t *testing.T) {
	e := loadBase(t, "    steps:\n", "    onRollback: drain\n    onPromote: restore\n    steps:\n")
	plan, err := WeightPlan(e, basePool)
	if err != nil {
		t.Fatal(err)
	}
	rb := plan.Rollback.Origins
	if rb[0].Weight != 0 || cents(rb[1].Weight)+cents(rb[2].Weight) != 100 || rb[3].Weight != 0.5 {
		t.Errorf("drain: %+v", rb)
	}
	if plan.Promote.Origins[0].Weight != 0.33 {
		t.Errorf("promote with restore: %+v", plan.Promote.Origins)
	}
}

func TestWeightPlanErrors(t *testing.T) {
	e := loadBase(t)
	cases := []struct {
		name string
		pool []PoolOrigin
		path string
		msg  string
	}{
		{"origin missing", []PoolOrigin{{"o1", 0.5, true}, {"o2", 0.5, true}}, "spec.traffic.cloudflare.origins.c3", `origin "o3" is not in the pool`},
		{"canary disabled", []PoolOrigin{{"o1", 0.5, false}, {"o2", 0.5, true}, {"o3", 0.5, true}}, "spec.traffic.cloudflare.origins.c1", "disabled"},
		{"no traffic", []PoolOrigin{{"o1", 0, true}, {"o2", 0, true}, {"o3", 0, true}, {"x", 1, true}}, "spec.traffic.cloudflare.origins", "weight 0"},
		{"step below 0.01", []PoolOrigin{{"o1", 0.01, true}, {"o2", 0.01, true}, {"o3", 0.01, true}, {"x", 1, true}}, "spec.traffic.steps[0].weight", "smallest weight step"},
		{"canary above 1", []PoolOrigin{{"o1", 1, true}, {"o2", 1, true}, {"o3", 1, true}}, "spec.traffic.steps[0].weight", ""},
		{"baselines at zero", []PoolOrigin{{"o1", 1, true}, {"o2", 0, true}, {"o3", 0, true}}, "spec.traffic.steps[0].weight", "no proportion"},
	}
	// With total 3.00, 5% is 0.15 (fine) but the baselines need 2.85 between two: above 1 each.
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WeightPlan(e, tc.pool)
			var pe *PlanError
			if !errors.As(err, &pe) {
				t.Fatalf("want a PlanError, got %v", err)
			}
			if pe.Path != tc.path || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got %v", err)
			}
			var fe *FieldError
			if !errors.As(e.FieldError(err), &fe) || fe.Line == 0 {
				t.Errorf("plan error not placed in the file: %v", e.FieldError(err))
			}
		})
	}
}

// TestWeightPlanInvariants checks, on random pools and steps, what plan promises: origins
// outside the experiment never change, the experiment keeps its total to the cent, every
// weight is a valid Cloudflare weight, and the canary gets its share to within half a cent.
func TestWeightPlanInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 3000 {
		nBase := 1 + rng.IntN(4)
		var b strings.Builder
		clusters := []string{"c0"}
		for i := 1; i <= nBase; i++ {
			clusters = append(clusters, fmt.Sprintf("c%d", i))
		}
		fmt.Fprintf(&b, "apiVersion: verdict.dev/v1alpha1\nkind: Experiment\nmetadata: {name: r}\nspec:\n  canary: {cluster: c0}\n  baselines: [%s]\n", strings.Join(clusters[1:], ", "))
		b.WriteString("  traffic:\n    cloudflare:\n      poolID: p\n      origins:\n")
		for _, c := range clusters {
			fmt.Fprintf(&b, "        %s: o-%s\n", c, c)
		}
		b.WriteString("    steps:\n")
		prev := 0
		for prev < 100 && rng.IntN(4) != 0 {
			prev += 1 + rng.IntN(100-prev)
			if prev == 100 && b.Len() > 0 && strings.HasSuffix(b.String(), "steps:\n") {
				prev = 99 // a 100% cut-over needs a judged step before it
			}
			if prev == 100 {
				b.WriteString("      - {weight: 100%}\n") // a migration's cut-over: not held
				break
			}
			fmt.Fprintf(&b, "      - {weight: %d%%, hold: 1m}\n", prev)
		}
		if prev == 0 {
			b.WriteString("      - {weight: 50%, hold: 1m}\n")
		}
		b.WriteString("  prometheus: {address: http://p:9090}\n  kpis:\n    - {name: g, type: gauge, query: sum by (cluster) (up)}\n  analysis: {minIntervals: 1}\n")
		exps, err := Load("r.yaml", []byte(b.String()), LoadOptions{LookupEnv: noEnv})
		if err != nil {
			t.Fatalf("run %d: generated file invalid: %v\n%s", run, err, b.String())
		}
		e := exps[0]
		var pool []PoolOrigin
		for _, c := range clusters {
			pool = append(pool, PoolOrigin{"o-" + c, float64(rng.IntN(101)) / 100, true})
		}
		for i := range rng.IntN(3) {
			pool = append(pool, PoolOrigin{fmt.Sprintf("x%d", i), float64(rng.IntN(101)) / 100, rng.IntN(2) == 0})
		}
		rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })

		plan, err := WeightPlan(e, pool)
		if err != nil {
			var pe *PlanError
			if !errors.As(err, &pe) {
				t.Fatalf("run %d: %v", run, err)
			}
			continue
		}
		total, others := 0, 0
		for _, o := range pool {
			if strings.HasPrefix(o.Name, "o-") {
				total += cents(o.Weight)
			} else if o.Enabled {
				others += cents(o.Weight)
			}
		}
		// With nothing else carrying traffic, a total the last step cannot fit under weight
		// 1 is scaled to 1 for the steps (step 0 is the pool as read).
		stepTotal := total
		if steps := e.Spec.Traffic.Steps; others == 0 && int(math.Round(float64(steps[len(steps)-1].Weight)*float64(total))) > 100 {
			stepTotal = 100
		}
		rollbackTotal, promoteTotal := stepTotal, stepTotal
		if e.Spec.Traffic.OnRollback == OnRollbackRestore {
			rollbackTotal = total
		}
		if e.Spec.Traffic.OnPromote == OnPromoteRestore {
			promoteTotal = total
		}
		for i, st := range append(plan.Steps, plan.Rollback, plan.Promote) {
			want := []int{stepTotal, rollbackTotal, promoteTotal}[max(0, i-len(plan.Steps)+1)]
			if i == 0 {
				want = total
			}
			sum := 0
			for k, o := range st.Origins {
				if o.Weight < 0 || o.Weight > 1 || math.Abs(o.Weight*100-math.Round(o.Weight*100)) > 1e-9 {
					t.Fatalf("run %d step %d: weight %v of %s is not a Cloudflare weight", run, st.Step, o.Weight, o.Name)
				}
				if o.Name != pool[k].Name {
					t.Fatalf("run %d: origin order changed", run)
				}
				if o.Cluster == "" && cents(o.Weight) != cents(pool[k].Weight) {
					t.Fatalf("run %d step %d: untouched origin %s changed %v -> %v", run, st.Step, o.Name, pool[k].Weight, o.Weight)
				}
				if o.Cluster != "" {
					sum += cents(o.Weight)
				}
			}
			if sum != want {
				t.Fatalf("run %d step %d: experiment total %d cents, want %d", run, st.Step, sum, want)
			}
		}
		for i, st := range plan.Steps[1:] {
			canary := 0
			for _, o := range st.Origins {
				if o.Cluster == "c0" {
					canary = cents(o.Weight)
				}
			}
			if want := float64(e.Spec.Traffic.Steps[i].Weight) * float64(stepTotal); math.Abs(float64(canary)-want) > 0.5+1e-9 {
				t.Fatalf("run %d step %d: canary %d cents, want %.2f", run, i+1, canary, want)
			}
		}
	}
}

func TestHPAReplicas(t *testing.T) {
	h := HPA{MinReplicas: 20, MaxReplicas: 200, DefaultMinReplicas: 3, DefaultMaxReplicas: 10}
	for _, tc := range []struct {
		pct      float64
		min, max int
	}{
		{0, 3, 10}, {5, 3, 10}, {33, 7, 66}, {33.4, 7, 67}, {100, 20, 200}, {50, 10, 100},
	} {
		if r := h.ReplicasAt(tc.pct); r.Min != tc.min || r.Max != tc.max {
			t.Errorf("at %v%%: %+v, want %d-%d", tc.pct, r, tc.min, tc.max)
		}
	}
}
