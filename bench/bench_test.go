package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuick runs the harness in its quick mode (what `make test` runs with BENCH_QUICK=1)
// and checks that it produces every scenario × rule with sane values, that the rules
// behave as their designs say on the simulated data, and that the scale worlds ran the
// real engine without errors. Without BENCH_QUICK it runs the decision part only, and
// with -short it is skipped, so `go test ./...` stays fast.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: set BENCH_QUICK=1 to run the benchmark harness")
	}
	o := Options{Quick: true}
	if !QuickFromEnv() {
		o.SkipScale = true
	}
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}

	scs := Scenarios()
	if got, want := len(res.Decision), len(scs)*len(Rules); got != want {
		t.Fatalf("%d decision rows, want %d scenarios × %d rules", got, len(scs), len(Rules))
	}
	for _, sc := range scs {
		for _, rule := range Rules {
			d := res.Row(sc.Name, rule)
			if d == nil {
				t.Fatalf("no row for %s × %s", sc.Name, rule)
			}
			if d.Runs != 100 || d.RollbackRate < 0 || d.RollbackRate > 1 || d.PromoteRate+d.RollbackRate > 1 {
				t.Errorf("%s × %s: runs %d, rollback %.3f, promote %.3f", sc.Name, rule, d.Runs, d.RollbackRate, d.PromoteRate)
			}
			switch sc.Kind {
			case KindRegression:
				if d.Power == nil || d.FalseRollbackRate != nil {
					t.Errorf("%s × %s: a regression row needs power and no false-rollback rate", sc.Name, rule)
				}
			case KindAA, KindImprovement:
				if d.FalseRollbackRate == nil || len(d.FalseRollbackCI) != 2 || d.FalseRollbackCI[0] > *d.FalseRollbackRate || d.FalseRollbackCI[1] < *d.FalseRollbackRate {
					t.Errorf("%s × %s: false-rollback rate and CI missing or inconsistent", sc.Name, rule)
				}
			}
			if m, p := d.MedianIntervalsToDetect, d.P90IntervalsToDetect; m != nil && (*m < 1 || *m > float64(d.Horizon) || (p != nil && *p < *m)) {
				t.Errorf("%s × %s: median %v, p90 %v outside [1, %d]", sc.Name, rule, *m, p, d.Horizon)
			}
		}
	}
	// What the rules are known to do on this data (statistics.md §1, §3a): Verdict holds
	// α in every A/A scenario and naive peeking does not; Verdict detects ×2 errors and
	// +20% latency every time, and nothing beats the oracle's median on them.
	for _, sc := range scs {
		if sc.Kind != KindAA {
			continue
		}
		v, n := res.Row(sc.Name, RuleVerdict), res.Row(sc.Name, RuleNaive)
		if *v.FalseRollbackRate > 0.08 {
			t.Errorf("%s: Verdict false rollbacks %.2f on 100 runs", sc.Name, *v.FalseRollbackRate)
		}
		if *n.FalseRollbackRate <= *v.FalseRollbackRate {
			t.Errorf("%s: naive peeking (%.2f) should roll back more often than Verdict (%.2f)", sc.Name, *n.FalseRollbackRate, *v.FalseRollbackRate)
		}
	}
	for _, name := range []string{"errors-x2", "latency+20%", "p99-only"} {
		v, o := res.Row(name, RuleVerdict), res.Row(name, RuleOracle)
		if *v.Power < 0.95 || v.OracleRatio == nil || *v.OracleRatio < 1 || *o.MedianIntervalsToDetect > *v.MedianIntervalsToDetect {
			t.Errorf("%s: Verdict power %.2f, ratio to oracle %v", name, *v.Power, v.OracleRatio)
		}
	}
	if m := res.Row("weight-mismatch", RuleVerdict); *m.Power < 0.95 || m.PromoteRate > 0 {
		t.Errorf("weight-mismatch: Verdict flagged %.2f and promoted %.2f of runs", *m.Power, m.PromoteRate)
	}

	for _, f := range []string{"results.md", "results.json", "detection-time.svg", "false-rollback-rate.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) < 500 {
			t.Errorf("%s: %d bytes, %v", f, len(b), err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	var js struct {
		Decision []map[string]any `json:"decision"`
		Scale    []map[string]any `json:"scale"`
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"scenario", "rule", "runs", "falseRollbackRate", "falseRollbackCI", "power", "medianIntervalsToDetect", "p90IntervalsToDetect", "oracleRatio"} {
		if _, ok := js.Decision[0][key]; !ok {
			t.Errorf("results.json decision rows lack %q", key)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), "| verdict |") {
		t.Error("results.md lacks the headline table")
	}

	if o.SkipScale {
		return
	}
	if len(res.Scale) != 2 {
		t.Fatalf("%d scale rows, want 2", len(res.Scale))
	}
	for _, s := range res.Scale {
		if s.Errors != 0 || s.ExperimentTicks == 0 || s.QueriesPerTick <= 0 || s.CloudflareCallsPerStep <= 0 || s.CloudflareCallsPerStep > 3 || s.RSSBytes == 0 || s.CPUPerExperimentTick <= 0 {
			t.Errorf("scale %d: %+v", s.Experiments, s)
		}
		// The drift checks share one listing of the account per round, not a call each.
		if s.PoolReadsPerTick >= 0.5 {
			t.Errorf("scale %d: %.2f pool reads per experiment tick; the runs should share listings", s.Experiments, s.PoolReadsPerTick)
		}
		for _, key := range []string{"experiments", "cpuPerExperimentTick", "rssBytes", "queriesPerTick", "cloudflareCallsPerStep", "lateTicks"} {
			if _, ok := js.Scale[0][key]; !ok {
				t.Errorf("results.json scale rows lack %q", key)
			}
		}
	}
}
