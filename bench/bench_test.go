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
// and checks that it produces every world × scale × rule with sane values, that the
// rules behave as their designs say on the simulated worlds, and that the scale worlds
// ran the real engine without errors. Without BENCH_QUICK it runs the decision part
// only, and with -short it is skipped, so `go test ./...` stays fast.
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

	rules := Rules()
	if len(res.Decision) != len(res.Cells)*len(rules) || len(res.Cells) < len(QuickWorlds) {
		t.Fatalf("%d decision rows for %d cells × %d rules", len(res.Decision), len(res.Cells), len(rules))
	}
	for _, c := range res.Cells {
		if len(c.Plan.Steps) != 3 || c.Plan.MaxDuration != 2*c.Plan.Holds() {
			t.Errorf("%s %s: plan %+v", c.World, c.Scale, c.Plan)
		}
		for _, rule := range rules {
			d := res.Row(c.World, c.Scale, rule)
			if d == nil {
				t.Fatalf("no row for %s %s × %s", c.World, c.Scale, rule)
			}
			if d.Runs < 10 || d.HarmRate+d.TimeoutRate+d.PromoteRate > 1+1e-9 || d.HarmCI[0] > d.HarmRate || d.HarmCI[1] < d.HarmRate {
				t.Errorf("%s %s × %s: runs %d, harm %.3f %v, timeouts %.3f, promoted %.3f", c.World, c.Scale, rule, d.Runs, d.HarmRate, d.HarmCI, d.TimeoutRate, d.PromoteRate)
			}
			if m, p := d.MedianDetect, d.P90Detect; m != nil && (*m < 1 || (p != nil && *p < *m)) {
				t.Errorf("%s %s × %s: median %v, p90 %v", c.World, c.Scale, rule, *m, p)
			}
		}
	}
	row := func(world, scale, rule string) *DecisionResult {
		t.Helper()
		d := res.Row(world, scale, rule)
		if d == nil {
			t.Fatalf("no row for %s %s × %s", world, scale, rule)
		}
		return d
	}
	// Healthy canaries: Verdict's false rollbacks stay low (loose: 24 runs), the valid
	// oracle's too, and naive peeking rolls back more often than Verdict in the worst world.
	for _, w := range []string{"poisson", "fleet"} {
		for _, sc := range []string{"12k/1%", "700k/1%"} {
			v, o := row(w, sc, RuleVerdict), row(w, sc, RuleOracle)
			if v.HarmRate > 0.15 || o.HarmRate > 0.15 {
				t.Errorf("%s %s: false rollbacks Verdict %.2f, oracle %.2f", w, sc, v.HarmRate, o.HarmRate)
			}
		}
	}
	if v, n := row("fleet", "700k/1%", RuleVerdict), row("fleet", "700k/1%", RuleNaive); n.HarmRate <= v.HarmRate {
		t.Errorf("fleet 700k: naive peeking (%.2f) should roll back more often than Verdict (%.2f)", n.HarmRate, v.HarmRate)
	}
	// A calm, busy world promotes healthy canaries.
	if v := row("poisson", "700k/1%", RuleVerdict); v.PromoteRate < 0.8 {
		t.Errorf("poisson 700k/1%%: Verdict promoted %.2f of healthy canaries", v.PromoteRate)
	}
	// At the boundary the error rate is rarely found harmful (α/K = 1.7%; loose: 48 runs).
	if v := row("boundary-fleet", "700k/1%", RuleVerdict); *v.ErrorHarmRate > 0.1 {
		t.Errorf("boundary-fleet 700k/1%%: error rate found harmful in %.2f of runs", *v.ErrorHarmRate)
	}
	// The ×1.3 variant applied before the run, appliedAt declared, is rolled back.
	if v := row("applied-before", "700k/1%", RuleVerdict); v.HarmRate < 0.9 {
		t.Errorf("applied-before 700k/1%%: Verdict rolled back %.2f of ×1.3 canaries", v.HarmRate)
	}
	// Share check: 99.5% of the share at 700k is no mismatch; 60% is, and blocks promotion.
	if v := row("share-99.5%", "700k/1%", RuleVerdict); v.FlagRate > 0 {
		t.Errorf("share-99.5%% 700k/1%%: flagged in %.2f of runs", v.FlagRate)
	}
	for _, sc := range []string{"12k/1%", "700k/1%"} {
		if v := row("share-60%", sc, RuleVerdict); v.FlagRate < 0.95 || v.PromoteRate > 0 {
			t.Errorf("share-60%% %s: flagged %.2f, promoted %.2f", sc, v.FlagRate, v.PromoteRate)
		}
	}
	// A ×1.5 error regression at 700k is caught by Verdict and by the oracle.
	if v, o := row("errors-x1.5", "700k/1%", RuleVerdict), row("errors-x1.5", "700k/1%", RuleOracle); v.HarmRate < 0.95 || o.HarmRate < 0.95 || v.MedianDetect == nil || o.MedianDetect == nil {
		t.Errorf("errors-x1.5 700k/1%%: detected by Verdict %.2f, oracle %.2f", v.HarmRate, o.HarmRate)
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
		Cells    []map[string]any `json:"cells"`
		Scale    []map[string]any `json:"scale"`
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"world", "scale", "rule", "runs", "harmRate", "harmCI", "timeoutRate", "promoteRate", "medianPromote", "medianDetect", "p90Detect", "oracleRatio", "flagRate"} {
		if _, ok := js.Decision[0][key]; !ok {
			t.Errorf("results.json decision rows lack %q", key)
		}
	}
	for _, key := range []string{"plan", "fixedSample"} {
		if _, ok := js.Cells[0][key]; !ok {
			t.Errorf("results.json cells lack %q", key)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"| verdict |", "## Headline: the worst case", "### Targets", "Machine:"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
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
