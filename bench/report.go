package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Results is results.json.
type Results struct {
	Generated time.Time        `json:"generated"`
	Machine   Machine          `json:"machine"`
	Mode      string           `json:"mode"`
	Runs      int              `json:"runsPerScenario"`
	Seed      uint64           `json:"seed"`
	Decision  []DecisionResult `json:"decision"`
	Scale     []ScaleResult    `json:"scale"`
	Micro     []MicroResult    `json:"micro,omitempty"`
	// DecisionSeconds and ScaleSeconds are how long each part took.
	DecisionSeconds float64 `json:"decisionSeconds"`
	ScaleSeconds    float64 `json:"scaleSeconds"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	OS         string `json:"os"`
	Go         string `json:"go"`
}

// ThisMachine reads the CPU model from /proc/cpuinfo where there is one.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

// Write writes results.json, results.md and the SVG charts into dir.
func (r *Results) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"results.json":            append(js, '\n'),
		"results.md":              []byte(r.Markdown()),
		"detection-time.svg":      []byte(DetectionChart(r.Decision)),
		"false-rollback-rate.svg": []byte(FalseRollbackChart(r.Decision)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// Row finds a decision row.
func (r *Results) Row(scenario, rule string) *DecisionResult {
	for i := range r.Decision {
		if r.Decision[i].Scenario == scenario && r.Decision[i].Rule == rule {
			return &r.Decision[i]
		}
	}
	return nil
}

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

func num(p *float64) string {
	if p == nil {
		return "—"
	}
	if *p == math.Trunc(*p) {
		return fmt.Sprintf("%.0f", *p)
	}
	return fmt.Sprintf("%.2f", *p)
}

func ratio(p *float64) string {
	if p == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f×", *p)
}

func frCell(d *DecisionResult) string {
	if d == nil || d.FalseRollbackRate == nil {
		return "—"
	}
	return fmt.Sprintf("%s (%.1f–%.1f)", pct(*d.FalseRollbackRate), 100*d.FalseRollbackCI[0], 100*d.FalseRollbackCI[1])
}

// worstAA is a rule's highest A/A false-rollback rate and where.
func (r *Results) worstAA(rule string) (*DecisionResult, bool) {
	var worst *DecisionResult
	for i := range r.Decision {
		d := &r.Decision[i]
		if d.Kind == KindAA && d.Rule == rule && (worst == nil || *d.FalseRollbackRate > *worst.FalseRollbackRate) {
			worst = d
		}
	}
	return worst, worst != nil
}

// Headline is the README table: per rule, the worst A/A false-rollback rate, the
// detection times of the two goal regressions and their ratio to the oracle SPRT.
func (r *Results) Headline() string {
	var b strings.Builder
	b.WriteString("| rule | worst A/A false rollbacks (95% CI) | errors ×1.5: median / p90 intervals | latency +10%: median / p90 intervals | × oracle SPRT (errors ×1.5, latency +10%) | p99-only regression detected |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, rule := range Rules {
		if rule == RuleOracleMargin {
			continue
		}
		w, _ := r.worstAA(rule)
		e, l, p := r.Row("errors-x1.5", rule), r.Row("latency+10%", rule), r.Row("p99-only", rule)
		if e == nil || l == nil || p == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s / %s | %s / %s | %s, %s | %s |\n", rule, frCell(w),
			num(e.MedianIntervalsToDetect), num(e.P90IntervalsToDetect), num(l.MedianIntervalsToDetect), num(l.P90IntervalsToDetect),
			ratio(e.OracleRatio), ratio(l.OracleRatio), pct(*p.Power))
	}
	return b.String()
}

// Goals checks the goals against the figures.
func (r *Results) Goals() []string {
	var out []string
	mark := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**not met**"
	}
	if w, ok := r.worstAA(RuleVerdict); ok {
		met := true
		for _, d := range r.Decision {
			if d.Kind == KindAA && d.Rule == RuleVerdict && *d.FalseRollbackRate > alpha {
				met = false
			}
		}
		out = append(out, fmt.Sprintf("A/A false-rollback rate ≤ α = 0.05 for Verdict in every A/A scenario: %s (worst %s in %s).", mark(met), frCell(w), w.Scenario))
	}
	for _, sc := range []string{"errors-x1.5", "latency+10%"} {
		v, k := r.Row(sc, RuleVerdict), r.Row(sc, RuleKayenta)
		if v == nil || k == nil || v.MedianIntervalsToDetect == nil {
			continue
		}
		within := v.OracleRatio != nil && *v.OracleRatio <= 1.5
		half := k.MedianIntervalsToDetect == nil || *v.MedianIntervalsToDetect <= *k.MedianIntervalsToDetect/2
		margin := r.Row(sc, RuleOracleMargin)
		mr := ""
		if margin != nil && margin.MedianIntervalsToDetect != nil {
			mr = fmt.Sprintf(" (against the tolerance-aware oracle, which tests what Verdict tests: %.2f×)", *v.MedianIntervalsToDetect / *margin.MedianIntervalsToDetect)
		}
		out = append(out, fmt.Sprintf("%s: Verdict's median %s intervals within 1.5× the oracle SPRT's %s: %s (%s)%s; at most half of Kayenta's %s: %s.",
			sc, num(v.MedianIntervalsToDetect), num(r.Row(sc, RuleOracle).MedianIntervalsToDetect), mark(within), ratio(v.OracleRatio), mr, num(k.MedianIntervalsToDetect), mark(half)))
	}
	for _, s := range r.Scale {
		if s.Experiments == 1000 && !s.RateLimited {
			out = append(out, fmt.Sprintf("1,000 concurrent experiments on %d cores with no late ticks at a 1-minute interval: %s (%d late of %d experiment ticks; slowest round %.1f s).",
				r.Machine.GOMAXPROCS, mark(s.LateTicks == 0 && s.Errors == 0), s.LateTicks, s.ExperimentTicks, s.TickWallMax))
		}
	}
	return out
}

// Markdown renders results.md.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := DefaultWorld()
	fmt.Fprintf(&b, "# Verdict benchmarks\n\nGenerated by `make bench` (`go run ./bench/cmd/verdict-bench`) on %s, mode **%s**.\n\n", r.Generated.UTC().Format("2006-01-02 15:04 MST"), r.Mode)
	fmt.Fprintf(&b, "Machine: %s, %d cores (GOMAXPROCS %d), %s, %s. Decision part %.0f s, scale part %.0f s.\n\n", r.Machine.CPU, r.Machine.Cores, r.Machine.GOMAXPROCS, r.Machine.OS, r.Machine.Go, r.DecisionSeconds, r.ScaleSeconds)
	b.WriteString("## Headline\n\n")
	b.WriteString(r.Headline())
	b.WriteString("\nIntervals are one minute; each regression's run is 150 intervals. \"—\" means not reached: fewer than half (median) or 90% (p90) of the runs detected within the horizon. " +
		"The oracle SPRT knows the true effect and assumes Poisson counts, so it is a lower bound on detection time but not calibrated on the fleet's overdispersed errors (its A/A column). " +
		"Verdict's goal ratios against `oracle-sprt-margin`, the oracle asked Verdict's own question (harm beyond the tolerance), are under Goals.\n\n")
	b.WriteString("### Goals of issue 10\n\n")
	for _, g := range r.Goals() {
		b.WriteString("- " + g + "\n")
	}
	b.WriteString("\n## Decision quality\n\n")
	fmt.Fprintf(&b, "%d simulated experiments per scenario, seed %d; every rule judges the same runs. Each run: %d one-minute intervals in %d steps of %d (canary share 5%% → 20%% → 34%% of the experiment's traffic unless noted), %.0f requests/s through the pool with a ±%.0f%% daily wave, two baselines. "+
		"Per-interval counts and values are drawn from `sim.Profile` — the profile the demo fleet's clusters serve requests from (`sim.DefaultProfile`: 50 ms median, 2%% of requests in a 250 ms tail, 1%% errors with Gamma(k=20) noise per 10 s epoch and 2%% ×2–6 bursts, ±4%% drift over 10 minutes, 3%% latency noise per epoch) — aggregated per minute in `bench/world.go` "+
		"(exact Poisson counts; interval mean latency and p99 from the profile's mixture moments and asymptotic quantile noise; the fleet's capacity queueing and per-route factors are left out).\n\n",
		r.Runs, r.Seed, w.StepIntervals*3, 3, w.StepIntervals, w.Load.Rate, 100*w.Load.Amplitude)
	b.WriteString("| scenario | kind | what |\n|---|---|---|\n")
	for _, sc := range Scenarios() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", sc.Name, sc.Kind, sc.Description)
	}
	b.WriteString("\n| rule | how |\n|---|---|\n")
	for _, rule := range Rules {
		fmt.Fprintf(&b, "| %s | %s |\n", rule, RuleDescriptions[rule])
	}
	b.WriteString("\n### False rollbacks (no harmful change), 95% Wilson interval\n\n| scenario |")
	for _, rule := range Rules {
		b.WriteString(" " + rule + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(Rules)) + "\n")
	for _, sc := range Scenarios() {
		if sc.Kind == KindRegression {
			continue
		}
		b.WriteString("| " + sc.Name + " |")
		for _, rule := range Rules {
			b.WriteString(" " + frCell(r.Row(sc.Name, rule)) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n### Detection: power / median / p90 intervals to detect (× oracle SPRT's median)\n\nFor weight-mismatch, detecting means flagging the traffic-share mismatch (which blocks promotion), not rolling back.\n\n| scenario |")
	for _, rule := range Rules {
		b.WriteString(" " + rule + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(Rules)) + "\n")
	for _, sc := range Scenarios() {
		if sc.Kind != KindRegression && sc.Kind != KindMismatch {
			continue
		}
		b.WriteString("| " + sc.Name + " |")
		for _, rule := range Rules {
			d := r.Row(sc.Name, rule)
			if d == nil || d.Power == nil {
				b.WriteString(" — |")
				continue
			}
			fmt.Fprintf(&b, " %s / %s / %s (%s) |", pct(*d.Power), num(d.MedianIntervalsToDetect), num(d.P90IntervalsToDetect), ratio(d.OracleRatio))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n### Verdict: promotions, and what was still open at the horizon\n\nA run that is neither rolled back nor promoted after the final hold stays inconclusive; with the default `onInconclusive: rollback` the engine would end it as `inconclusive` at `maxDuration`.\n\n| scenario | promoted | rolled back | inconclusive at the horizon: KPIs not yet non-inferior (runs) |\n|---|---|---|---|\n")
	for _, sc := range Scenarios() {
		d := r.Row(sc.Name, RuleVerdict)
		if d == nil {
			continue
		}
		var open []string
		keys := make([]string, 0, len(d.OpenAtEnd))
		for k := range d.OpenAtEnd {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			open = append(open, fmt.Sprintf("%s %d", k, d.OpenAtEnd[k]))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", sc.Name, pct(d.PromoteRate), pct(d.RollbackRate), strings.Join(open, "; "))
	}
	b.WriteString("\nCharts: [detection time against effect size](detection-time.svg), [false-rollback rate per rule](false-rollback-rate.svg).\n\n")
	b.WriteString("Notes on fairness. The oracle SPRT knows the true effect, the KPI it is on, and the true likelihood only under Poisson counts: under the fleet's overdispersed errors it is anti-conservative (its A/A rows show it), so it is a lower bound on detection time, not a rule anyone could run. " +
		"Verdict decides harm only beyond each KPI's tolerance (10% errors, 5% latency), never before 10 intervals, at α/3 per KPI: `oracle-sprt-margin` is the best possible test of that same question. " +
		"Kayenta can only act at a step's end (intervals 50, 100, 150). Flagger's thresholds are fixed numbers (2% errors, 400 ms p99): looser ones miss regressions, tighter ones roll back healthy canaries more often.\n")

	b.WriteString("\n## Scale\n\n")
	b.WriteString("Each row is one world: that many experiments started at once and stepped by one engine (one SQLite store, one metrics client, one Cloudflare client) against the Cloudflare emulator (one pool per experiment, over HTTP, rate limit off) and the embedded Prometheus (real TSDB and PromQL over HTTP, three clusters per experiment, samples every 15 s), on compressed virtual time: one tick per virtual minute, all experiments' `Run.Step` calls run by a pool of workers, as fast as they complete. " +
		"Each experiment has 2 KPIs (a ratio and a latency histogram), three 4-minute steps and minIntervals 3. CPU counts the whole process while stepping (engine, SQLite, and the in-process Prometheus and emulator serving it); sample writing is excluded.\n\n")
	b.WriteString("| experiments | CPU per experiment tick | RSS | Go heap | Prometheus queries per tick that reads data (KPIs) / averaged over all ticks | Cloudflare calls per weight change | pool reads per experiment tick | late ticks | round wall p50 / max | step p99 | faults | errors | ended as |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Scale {
		var ends []string
		keys := make([]string, 0, len(s.Outcomes))
		for k := range s.Outcomes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ends = append(ends, fmt.Sprintf("%s %d", k, s.Outcomes[k]))
		}
		name := fmt.Sprint(s.Experiments)
		if s.RateLimited {
			name += " (Cloudflare rate limit on)"
		}
		fmt.Fprintf(&b, "| %s | %.2f ms | %.0f MiB | %.0f MiB | %.2f (%d) / %.2f | %.2f | %.2f | %d of %d | %.2f s / %.2f s | %.0f ms | %d | %d | %s |\n",
			name, 1000*s.CPUPerExperimentTick, float64(s.RSSBytes)/(1<<20), float64(s.HeapBytes)/(1<<20), s.QueriesPerTick, s.KPIs, s.QueriesPerExperimentTick, s.CloudflareCallsPerStep, s.PoolReadsPerTick,
			s.LateTicks, s.ExperimentTicks, s.TickWallP50, s.TickWallMax, 1000*s.StepP99, s.Faults, s.Errors, strings.Join(ends, ", "))
	}
	b.WriteString("\nA latency KPI costs three range queries (buckets, sum, count) and a ratio KPI two (events, total): 5 per experiment tick for 2 KPIs, against the target of one per KPI; nothing is batched across experiments yet. " +
		"Every tick also reads the pool (the drift check); as in `verdict serve`, those reads share one listing of the account's pools at most 10 s old (`traffic.PoolCache`), so pool reads per tick are about one listing per round instead of one call per experiment (1.00 before the cache). A weight change costs 3 calls (read, PATCH, read back). The emulator's limiter was off for the plain rows; the row marked \"rate limit on\" runs the same world with Cloudflare's 1,200 calls per 5 minutes on: 1,000 experiments starting in the same minute need about 3,000 calls for their first step alone, so most of them wait (faults are the 429s, retried at the next tick) and none is failed or left half-shifted.\n")
	if len(r.Micro) > 0 {
		b.WriteString("\n## Micro-benchmarks\n\n`testing.Benchmark` in the same process (the same workloads run with `go test -bench . ./analysis ./experiments`).\n\n| function | what | time per op | allocs per op |\n|---|---|---|---|\n")
		for _, m := range r.Micro {
			t := fmt.Sprintf("%.2f µs", m.NsPerOp/1000)
			if m.NsPerOp >= 1e6 {
				t = fmt.Sprintf("%.1f ms", m.NsPerOp/1e6)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %d |\n", m.Name, m.What, t, m.AllocsPerOp)
		}
	}
	return b.String()
}
