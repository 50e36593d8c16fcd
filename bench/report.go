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
	Generated time.Time `json:"generated"`
	Machine   Machine   `json:"machine"`
	Mode      string    `json:"mode"`
	// Runs is the number of runs per A/A cell (boundary cells run six times as many,
	// regression and mismatch cells half).
	Runs     int              `json:"runsPerCell"`
	Seed     uint64           `json:"seed"`
	Worlds   []World          `json:"worlds"`
	Decision []DecisionResult `json:"decision"`
	Cells    []CellInfo       `json:"cells"`
	Scale    []ScaleResult    `json:"scale"`
	Micro    []MicroResult    `json:"micro,omitempty"`
	// DecisionSeconds, ScaleSeconds and TotalSeconds are how long each part took.
	DecisionSeconds float64 `json:"decisionSeconds"`
	ScaleSeconds    float64 `json:"scaleSeconds"`
	TotalSeconds    float64 `json:"totalSeconds"`
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
func (r *Results) Row(world, scale, rule string) *DecisionResult {
	for i := range r.Decision {
		d := &r.Decision[i]
		if d.World == world && d.Scale == scale && d.Rule == rule {
			return d
		}
	}
	return nil
}

// Cell finds a cell's plan and limits.
func (r *Results) Cell(world, scale string) *CellInfo {
	for i := range r.Cells {
		if r.Cells[i].World == world && r.Cells[i].Scale == scale {
			return &r.Cells[i]
		}
	}
	return nil
}

// rows returns the rows of a rule in the worlds of a kind, in result order.
func (r *Results) rows(kind Kind, rule string) []*DecisionResult {
	var out []*DecisionResult
	for i := range r.Decision {
		d := &r.Decision[i]
		if d.Kind == kind && d.Rule == rule {
			out = append(out, d)
		}
	}
	return out
}

// worst is the row with the highest upper bound of f's interval (then the highest rate).
func worst(rows []*DecisionResult, ci func(*DecisionResult) []float64, rate func(*DecisionResult) float64) *DecisionResult {
	var w *DecisionResult
	for _, d := range rows {
		if w == nil || ci(d)[1] > ci(w)[1] || (ci(d)[1] == ci(w)[1] && rate(d) > rate(w)) {
			w = d
		}
	}
	return w
}

func harmCI(d *DecisionResult) []float64    { return d.HarmCI }
func harmRate(d *DecisionResult) float64    { return d.HarmRate }
func errHarmCI(d *DecisionResult) []float64 { return d.ErrorHarmCI }
func errHarmRate(d *DecisionResult) float64 {
	if d.ErrorHarmRate == nil {
		return 0
	}
	return *d.ErrorHarmRate
}

func pct(x float64) string {
	switch {
	case x == 0:
		return "0%"
	case x < 0.1:
		return fmt.Sprintf("%.1f%%", 100*x)
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

// rateCI is "1.2% (0.3–4.1)".
func rateCI(rate float64, ci []float64) string {
	if len(ci) != 2 {
		return pct(rate)
	}
	return fmt.Sprintf("%s (%.1f–%.1f)", pct(rate), 100*ci[0], 100*ci[1])
}

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

func where(d *DecisionResult) string { return d.World + ", " + d.Scale }

// headlineRegression picks the regression cell the headline reports: the worst world
// (fleet) at the highest traffic.
const (
	headlineScale      = "700k/1%"
	headlineErrors     = "errors-x1.5-fleet"
	headlineLatency    = "latency+10%-fleet"
	headlineAA         = "fleet"
	headlineCalm       = "poisson"
	promoteScaleMiddle = "12k/1%"
)

func detectCell(d *DecisionResult) string {
	if d == nil {
		return "—"
	}
	return fmt.Sprintf("%s: %s / %s", pct(d.HarmRate), num(d.MedianDetect), num(d.P90Detect))
}

func promoteCell(d *DecisionResult) string {
	if d == nil {
		return "—"
	}
	return fmt.Sprintf("%s (%s min)", pct(d.PromoteRate), num(d.MedianPromote))
}

// Headline is the README table: per rule, the worst figures over every world and scale.
func (r *Results) Headline() string {
	var b strings.Builder
	b.WriteString("| rule | worst A/A false rollbacks (95% CI) | worst at the boundary: error-rate harm flagged (95% CI), target ≤ α/K = 1.7% | healthy canary promoted (median min), fleet 12k / 700k | same, Poisson 12k / 700k | errors ×1.5, fleet 700k: detected / median / p90 min | latency +10%, fleet 700k: detected / median / p90 min |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, rule := range Rules() {
		aa := worst(r.rows(KindAA, rule), harmCI, harmRate)
		if aa == nil {
			continue
		}
		bd := "—"
		ci, rate := harmCI, harmRate
		if rule == RuleVerdict || rule == RuleOracle {
			ci, rate = errHarmCI, errHarmRate
		}
		if w := worst(r.rows(KindBoundary, rule), ci, rate); w != nil {
			bd = fmt.Sprintf("%s [%s]", rateCI(rate(w), ci(w)), where(w))
			if rule != RuleVerdict && rule != RuleOracle {
				bd = fmt.Sprintf("(any rollback) %s", bd)
			}
		}
		e, l := r.Row(headlineErrors, headlineScale, rule), r.Row(headlineLatency, headlineScale, rule)
		eTxt, lTxt := detectCell(e), detectCell(l)
		if e != nil && e.OracleRatio != nil && rule != RuleOracle {
			eTxt += " (" + ratio(e.OracleRatio) + ")"
		}
		if l != nil && l.OracleRatio != nil && rule != RuleOracle {
			lTxt += " (" + ratio(l.OracleRatio) + ")"
		}
		fmt.Fprintf(&b, "| %s | %s [%s] | %s | %s / %s | %s / %s | %s | %s |\n", rule, rateCI(aa.HarmRate, aa.HarmCI), where(aa), bd,
			promoteCell(r.Row(headlineAA, promoteScaleMiddle, rule)), promoteCell(r.Row(headlineAA, headlineScale, rule)),
			promoteCell(r.Row(headlineCalm, promoteScaleMiddle, rule)), promoteCell(r.Row(headlineCalm, headlineScale, rule)),
			eTxt, lTxt)
	}
	return b.String()
}

func mark(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**NOT MET**"
}

// Goals checks the targets against the figures, one line each, failures first named.
func (r *Results) Goals() []string {
	var out []string
	alpha := 0.05
	// A/A: the upper bound of every cell's false-rollback rate at or below α.
	var bad []string
	for _, d := range r.rows(KindAA, RuleVerdict) {
		if d.HarmCI[1] > alpha {
			bad = append(bad, fmt.Sprintf("%s %s", where(d), rateCI(d.HarmRate, d.HarmCI)))
		}
	}
	if w := worst(r.rows(KindAA, RuleVerdict), harmCI, harmRate); w != nil {
		out = append(out, fmt.Sprintf("Healthy canaries (A/A): Verdict's false-rollback rate ≤ α = 5%% by the upper 95%% bound in every world and scale: %s (worst %s in %s%s).",
			mark(len(bad) == 0), rateCI(w.HarmRate, w.HarmCI), where(w), listed(" above α: ", bad)))
	}
	// Promotion: where the forecast sized a plan, healthy canaries are promoted within it;
	// where it found none, check says the run cannot conclude (and the cells say so).
	bad = nil
	var lowest *DecisionResult
	var reachable int
	var beyond []string
	for _, c := range r.Cells {
		d := r.Row(c.World, c.Scale, RuleVerdict)
		if d == nil || d.Kind != KindAA {
			continue
		}
		if !c.Plan.Reachable {
			if !strings.HasPrefix(c.Scale, "1k/") {
				beyond = append(beyond, where(d))
			}
			continue
		}
		reachable++
		if d.PromoteRate < 0.9 {
			bad = append(bad, fmt.Sprintf("%s %s", where(d), rateCI(d.PromoteRate, d.PromoteCI)))
		}
		if lowest == nil || d.PromoteRate < lowest.PromoteRate {
			lowest = d
		}
	}
	if len(beyond) > 0 {
		beyond[len(beyond)-1] += "."
	}
	if lowest != nil {
		out = append(out, fmt.Sprintf("Healthy canaries promoted ≥ 90%% within the plan the forecast sized, in each of the %d A/A cells it found reachable: %s (lowest %s in %s%s).%s",
			reachable, mark(len(bad) == 0), rateCI(lowest.PromoteRate, lowest.PromoteCI), where(lowest), listed("; below 90%: ", bad),
			listed(" Out of reach by the forecast at 12k and 700k, where check says the run cannot conclude: ", beyond)))
	}
	// Boundary: the error-rate KPI found harmful at or below α/K.
	aK := alpha / nKPIs
	bad = nil
	over := 0
	for _, d := range r.rows(KindBoundary, RuleVerdict) {
		if d.ErrorHarmCI[1] > aK {
			bad = append(bad, fmt.Sprintf("%s %s", where(d), rateCI(*d.ErrorHarmRate, d.ErrorHarmCI)))
			if *d.ErrorHarmRate > aK {
				over++
			}
		}
	}
	if w := worst(r.rows(KindBoundary, RuleVerdict), errHarmCI, errHarmRate); w != nil {
		out = append(out, fmt.Sprintf("Calibration at the boundary (error rate ×1.10 = the tolerance): Verdict flags the error rate harmful ≤ α/K = %.2f%% by the upper bound: %s (worst %s in %s; %d cells with the point estimate itself above α/K%s).",
			100*aK, mark(len(bad) == 0), rateCI(*w.ErrorHarmRate, w.ErrorHarmCI), where(w), over, listed("; upper bound above α/K: ", bad)))
	}
	// Boundary, the other side: a canary at the tolerance must not be proven non-inferior.
	bad = nil
	over = 0
	var wp *DecisionResult
	for _, d := range r.rows(KindBoundary, RuleVerdict) {
		if d.PromoteCI[1] > aK {
			bad = append(bad, fmt.Sprintf("%s %s", where(d), rateCI(d.PromoteRate, d.PromoteCI)))
			if d.PromoteRate > aK {
				over++
			}
		}
		if wp == nil || d.PromoteCI[1] > wp.PromoteCI[1] {
			wp = d
		}
	}
	if wp != nil {
		out = append(out, fmt.Sprintf("At the boundary Verdict promotes (proves the error rate within 10%%, wrongly) ≤ α/K by the upper bound: %s (worst %s in %s; %d cells with the point estimate itself above α/K%s).",
			mark(len(bad) == 0), rateCI(wp.PromoteRate, wp.PromoteCI), where(wp), over, listed("; upper bound above α/K: ", bad)))
	}
	// Share check.
	if d := r.Row("share-99.5%", "700k/1%", RuleVerdict); d != nil {
		out = append(out, fmt.Sprintf("A canary receiving 99.5%% of its share at 700k requests/min is not flagged: %s (flagged in %s; promoted in %s).", mark(d.FlagRate == 0), rateCI(d.FlagRate, d.FlagCI), pct(d.PromoteRate)))
	}
	for _, sc := range []string{"1k/1%", "12k/1%", "700k/1%"} {
		if d := r.Row("share-60%", sc, RuleVerdict); d != nil {
			out = append(out, fmt.Sprintf("A canary receiving 60%% of its share at %s is flagged: %s (%s, median %s min; promoted %s).", sc, mark(d.FlagRate >= 0.95 && d.PromoteRate == 0), pct(d.FlagRate), num(d.MedianDetect), pct(d.PromoteRate)))
		}
	}
	// The variant that arrived before the run.
	for _, d := range r.rows(KindRegression, RuleVerdict) {
		if d.World == "applied-before" {
			out = append(out, fmt.Sprintf("A ×1.3 variant applied 3 hours before the run, appliedAt declared, %s, is never promoted and is rolled back: %s (for harm in %s, median %s min — the oracle %s; at maxDuration, still inconclusive, in %s; promoted %s).",
				d.Scale, mark(d.PromoteRate == 0 && d.HarmRate+d.TimeoutRate >= 0.99), pct(d.HarmRate), num(d.MedianDetect), pct(r.Row(d.World, d.Scale, RuleOracle).HarmRate), pct(d.TimeoutRate), pct(d.PromoteRate)))
		}
	}
	// Detection against the valid oracle.
	for _, w := range []string{"errors-x1.5", "latency+10%", "errors-x1.5-fleet", "latency+10%-fleet"} {
		var parts []string
		for _, sc := range Scales() {
			v, o := r.Row(w, sc.Name, RuleVerdict), r.Row(w, sc.Name, RuleOracle)
			if v == nil || o == nil {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %s/%s min vs %s/%s (%s)", sc.Name, num(v.MedianDetect), num(v.P90Detect), num(o.MedianDetect), num(o.P90Detect), ratio(v.OracleRatio)))
		}
		out = append(out, fmt.Sprintf("%s, Verdict vs the valid oracle, median/p90 minutes to roll back: %s.", w, strings.Join(parts, "; ")))
	}
	return out
}

func listed(prefix string, items []string) string {
	if len(items) == 0 {
		return ""
	}
	return prefix + strings.Join(items, "; ")
}

// cellRuns is the number of runs of a kind's cells as measured, in the worlds with a
// RunsFactor (the fleet's) or the others, so results re-rendered by an older or newer
// build say what was run.
func (r *Results) cellRuns(k Kind, factored bool) int {
	factor := map[string]int{}
	for _, w := range r.Worlds {
		factor[w.Name] = w.RunsFactor
	}
	for _, d := range r.Decision {
		if d.Kind == k && (factor[d.World] > 1) == factored {
			return d.Runs
		}
	}
	n := runsFor(k, r.Runs)
	if factored {
		n *= 2
	}
	return n
}

// Markdown renders results.md.
func (r *Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Verdict benchmarks\n\nGenerated by `make bench` (`go run ./bench/cmd/verdict-bench`) on %s, mode **%s**, seed %d.\n\n", r.Generated.UTC().Format("2006-01-02 15:04 MST"), r.Mode, r.Seed)
	fmt.Fprintf(&b, "Machine: %s, %d cores (GOMAXPROCS %d), %s, %s. Decision part %.0f s, scale part %.0f s, total %.0f s.\n\n", r.Machine.CPU, r.Machine.Cores, r.Machine.GOMAXPROCS, r.Machine.OS, r.Machine.Go, r.DecisionSeconds, r.ScaleSeconds, r.TotalSeconds)
	b.WriteString("## Headline: the worst case\n\n")
	b.WriteString(r.Headline())
	fmt.Fprintf(&b, "\nEach A/A cell (world × scale) is %d simulated experiments (the fleet world %d), each boundary cell %d (boundary-fleet %d), each regression and mismatch cell %d; every rule judges the same latent worlds. "+
		"\"A/A false rollbacks\" are rollbacks for harm of a canary running the same code (rollbacks because maxDuration ran out are counted apart, as timeouts). "+
		"Times are minutes from the start of the ramp (one-minute intervals); \"—\" means fewer than half (median) or 90%% (p90) of the runs got there. "+
		"Promotion rates are for the plan Verdict's own forecast sized (below); the oracle runs the same plan. "+
		"× is the ratio to the valid oracle's median.\n\n", r.cellRuns(KindAA, false), r.cellRuns(KindAA, true), r.cellRuns(KindBoundary, false), r.cellRuns(KindBoundary, true), r.cellRuns(KindRegression, false))
	b.WriteString("### Targets\n\n")
	for _, g := range r.Goals() {
		b.WriteString("- " + g + "\n")
	}
	b.WriteString("\n### What this shows\n\n")
	b.WriteString(r.WhatThisShows())

	b.WriteString("\n## How the worlds are made\n\n")
	b.WriteString("`bench/world.go` simulates one-minute intervals of three clusters (the canary and two baselines) behind one pool, independently of the analysis package's test generator. " +
		"Requests per cluster are Poisson around the pool's load times the cluster's real share; the load follows a ±50% daily wave. " +
		"Each cluster's error rate is the scale's rate times its own noise process (below); errors are Poisson given requests. " +
		"Latency per request is a lognormal body (median 50 ms) with a 2% lognormal tail (median 250 ms), both log-sd 0.5, times a per-cluster-minute multiplier (3% log-sd, and the canary's offset and variant): interval sums, counts of requests slower than 250 ms, and the CV² the engine estimates from Prometheus' default buckets are what the engine is given (`engine.Observation`, as `engine.Reduce` makes them). " +
		"Before the ramp the engine reads its history window (`analysis.history`, a day by default) at the pool's original weights (three equal origins); it ends at `spec.canary.apply.appliedAt`, which every world declares as the moment the variant went live (the ramp's start, or 3 hours earlier in applied-before). " +
		"The interval in which weights change is skipped, as the engine skips it.\n\n")
	b.WriteString("| scale | requests/min through the pool | normal error rate |\n|---|---|---|\n")
	for _, sc := range Scales() {
		fmt.Fprintf(&b, "| %s | %.0f | %g%% |\n", sc.Name, sc.RequestsPerMinute, 100*sc.ErrorRate)
	}
	b.WriteString("\n| world | kind | what | scales |\n|---|---|---|---|\n")
	for _, w := range r.Worlds {
		sc := "all"
		if w.Scales != nil {
			sc = strings.Join(w.Scales, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", w.Name, w.Kind, w.Description, sc)
	}
	b.WriteString("\n| rule | how |\n|---|---|\n")
	desc := RuleDescriptions()
	for _, rule := range Rules() {
		fmt.Fprintf(&b, "| %s | %s |\n", rule, desc[rule])
	}

	b.WriteString("\n## Plans and limits\n\n")
	b.WriteString("Every plan is 5% for 10 minutes, 20% for 20 minutes, then 34% for a final hold sized the way an operator would with the check forecast: the noise models learned from a day of history of the world (3 histories, the median plan), `analysis.ProofTime`'s P90 for every judged KPI of a healthy canary, the shortest final hold (10-minute steps) that covers them — at most a 5-hour plan; where the forecast says it cannot be done within that, the default one-hour plan is run (\"out of reach\"). Every step has a 10-minute minimum hold (`minHold`), so a run advances or promotes as soon as every KPI is non-inferior; maxDuration is the engine's default, twice the holds. " +
		"The physical limit is the number of intervals a fixed-sample non-inferiority test at α/K with 90% power needs at the final share, with the true per-interval variance (sampling plus the long-run cluster noise) and the offset known: no rule can promote a healthy canary reliably sooner. " +
		"Verdict cannot know the offset: it learns it from the history window (a day), whose uncertainty adds to every verdict (never = no amount of live traffic makes up for it); the second limit is the fixed-sample size with that uncertainty.\n\n")
	b.WriteString("| world | scale | plan | forecast P90 per KPI (intervals; 0 = beyond the cap) | physical limit per KPI (intervals at 34%) | limit with the offset learned from history | Verdict promoted: rate, median / p90 min | oracle promoted | timeouts (Verdict) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		v, o := r.Row(c.World, c.Scale, RuleVerdict), r.Row(c.World, c.Scale, RuleOracle)
		if v == nil || (v.Kind != KindAA && v.Kind != KindMismatch) {
			continue
		}
		plan := c.Plan.String()
		if !c.Plan.Reachable {
			plan += " (out of reach)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s, %s / %s | %s, %s / %s | %s |\n", c.World, c.Scale, plan, kpiInts(c.Plan.Forecast), kpiFloats(c.FixedSample), kpiFloats(c.FixedSampleLearned),
			pct(v.PromoteRate), num(v.MedianPromote), num(v.P90Promote), pct(o.PromoteRate), num(o.MedianPromote), num(o.P90Promote), pct(v.TimeoutRate))
	}

	cols := Rules()
	header := func(first string) {
		b.WriteString("| " + first + " |")
		for _, rule := range cols {
			b.WriteString(" " + rule + " |")
		}
		b.WriteString("\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	}
	b.WriteString("\n## False rollbacks of healthy canaries\n\nRollbacks for harm, with their 95% Wilson interval, per world and scale (every rule on the same runs). Kayenta, Flagger and naive peeking judge the canary against the baselines as they are: they have no history, so the offset world's standing 15% is harm to them.\n\n")
	header("world, scale")
	for _, d := range r.rows(KindAA, RuleVerdict) {
		b.WriteString("| " + where(d) + " |")
		for _, rule := range cols {
			x := r.Row(d.World, d.Scale, rule)
			b.WriteString(" " + rateCI(x.HarmRate, x.HarmCI) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Calibration at the boundary\n\nThe canary's error rate is ×1.10, exactly the tolerance: the error-rate KPI must be found harmful in at most α/K = 1.67% of runs, and proven non-inferior (the run promoted) in at most as many. Verdict and the oracle: error-rate KPI flagged harmful, with its 95% interval [promoted]; the others: any rollback.\n\n")
	header("world, scale")
	for _, d := range r.rows(KindBoundary, RuleVerdict) {
		b.WriteString("| " + where(d) + " |")
		for _, rule := range cols {
			x := r.Row(d.World, d.Scale, rule)
			if x.ErrorHarmRate != nil {
				fmt.Fprintf(&b, " %s [%s] |", rateCI(*x.ErrorHarmRate, x.ErrorHarmCI), pct(x.PromoteRate))
			} else {
				b.WriteString(" " + rateCI(x.HarmRate, x.HarmCI) + " |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Detection\n\nPer rule: share of runs rolled back for harm / median / p90 minutes to the rollback (× the valid oracle's median). For share-60%, detecting is flagging the traffic-share mismatch (Verdict only: the others have no share check).\n\n")
	header("world, scale")
	for _, kind := range []Kind{KindRegression, KindMismatch} {
		for _, d := range r.rows(kind, RuleVerdict) {
			b.WriteString("| " + where(d) + " |")
			for _, rule := range cols {
				x := r.Row(d.World, d.Scale, rule)
				rate := x.HarmRate
				if kind == KindMismatch {
					rate = x.FlagRate
				}
				fmt.Fprintf(&b, " %s / %s / %s", pct(rate), num(x.MedianDetect), num(x.P90Detect))
				if x.OracleRatio != nil && rule != RuleOracle {
					fmt.Fprintf(&b, " (%s)", ratio(x.OracleRatio))
				}
				b.WriteString(" |")
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\nCharts: [detection time](detection-time.svg), [false-rollback rate per rule](false-rollback-rate.svg).\n")

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
	b.WriteString("\nA latency KPI costs three range queries (buckets, sum, count) and a ratio KPI two (events, total): 5 per experiment tick for 2 KPIs; nothing is batched across experiments yet. " +
		"Every tick also reads the pool (the drift check); as in `verdict serve`, those reads share one listing of the account's pools at most 10 s old (`traffic.PoolCache`). A weight change costs 3 calls (read, PATCH, read back). The emulator's limiter was off for the plain rows; the row marked \"rate limit on\" runs the same world with Cloudflare's 1,200 calls per 5 minutes on: most experiments wait (faults are the 429s, retried at the next tick) and none is failed or left half-shifted.\n")
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

// kpiInts and kpiFloats print per-KPI figures in judged order, shortened.
func kpiInts(m map[string]int) string {
	var parts []string
	for i, n := range kpiNames {
		parts = append(parts, fmt.Sprintf("%s %d", kpiShort[i], m[n]))
	}
	return strings.Join(parts, ", ")
}

func kpiFloats(m map[string]float64) string {
	var parts []string
	for i, n := range kpiNames {
		if x, ok := m[n]; ok && x < 0 {
			parts = append(parts, kpiShort[i]+" never")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", kpiShort[i], m[n]))
	}
	return strings.Join(parts, ", ")
}

var kpiShort = [nKPIs]string{"errors", "slow", "mean"}

// WhatThisShows is the short reading of the figures, with the ratios computed from them.
func (r *Results) WhatThisShows() string {
	var b strings.Builder
	v := worst(r.rows(KindAA, RuleVerdict), harmCI, harmRate)
	if v == nil {
		return ""
	}
	fmt.Fprintf(&b, "- **False rollbacks.** Verdict's worst A/A cell is %s (%s); the valid oracle's worst is %s (%s).",
		rateCI(v.HarmRate, v.HarmCI), where(v), rateCI(worst(r.rows(KindAA, RuleOracle), harmCI, harmRate).HarmRate, worst(r.rows(KindAA, RuleOracle), harmCI, harmRate).HarmCI), where(worst(r.rows(KindAA, RuleOracle), harmCI, harmRate)))
	for _, rule := range []string{RuleKayenta, RuleKayentaEach, flaggerRule(flaggerThresholds[len(flaggerThresholds)-1]), RuleNaive} {
		if w := worst(r.rows(KindAA, rule), harmCI, harmRate); w != nil {
			fmt.Fprintf(&b, " %s: %s (%s).", rule, pct(w.HarmRate), where(w))
		}
	}
	b.WriteString("\n")
	if w := worst(r.rows(KindBoundary, RuleVerdict), errHarmCI, errHarmRate); w != nil {
		o := worst(r.rows(KindBoundary, RuleOracle), errHarmCI, errHarmRate)
		fmt.Fprintf(&b, "- **At the boundary** Verdict flags the error rate in at most %s of runs (%s) against α/K = 1.7%%; the oracle, which spends all of α/K on the live test, %s (%s).\n",
			pct(errHarmRate(w)), where(w), pct(errHarmRate(o)), where(o))
	}
	// Promotion: Verdict against the oracle and the physical limit where Verdict promotes.
	var pr []string
	for _, c := range r.Cells {
		vr, or := r.Row(c.World, c.Scale, RuleVerdict), r.Row(c.World, c.Scale, RuleOracle)
		if vr == nil || vr.Kind != KindAA || vr.MedianPromote == nil || or.MedianPromote == nil {
			continue
		}
		lim := 0.0
		for _, x := range c.FixedSample {
			lim = math.Max(lim, x)
		}
		pr = append(pr, fmt.Sprintf("%s %s: %s min (%.1f× the oracle's %s; physical limit %.0f intervals at 34%%)", c.World, c.Scale, num(vr.MedianPromote), *vr.MedianPromote / *or.MedianPromote, num(or.MedianPromote), lim))
	}
	var never []string
	for _, c := range r.Cells {
		vr, or := r.Row(c.World, c.Scale, RuleVerdict), r.Row(c.World, c.Scale, RuleOracle)
		if vr == nil || vr.Kind != KindAA || vr.PromoteRate >= 0.5 {
			continue
		}
		never = append(never, fmt.Sprintf("%s %s (%s; oracle %s)", c.World, c.Scale, pct(vr.PromoteRate), pct(or.PromoteRate)))
	}
	fmt.Fprintf(&b, "- **Promotion.** Where half of the healthy canaries are promoted, Verdict's median time to promote: %s. Promoted in fewer than half of the runs: %s.\n", strings.Join(pr, "; "), strings.Join(never, "; "))
	// Detection ratios.
	var det []string
	for _, w := range []string{"errors-x1.5", "latency+10%", "errors-x1.5-fleet", "latency+10%-fleet"} {
		var rs []float64
		for _, sc := range Scales() {
			if d := r.Row(w, sc.Name, RuleVerdict); d != nil && d.OracleRatio != nil {
				rs = append(rs, *d.OracleRatio)
			}
		}
		if len(rs) > 0 {
			det = append(det, fmt.Sprintf("%s %.2f–%.2f× (%d scales with both medians)", w, slices.Min(rs), slices.Max(rs), len(rs)))
		}
	}
	fmt.Fprintf(&b, "- **Detection** against the valid oracle's median: %s.\n", strings.Join(det, "; "))
	// The Flagger sweep: no threshold both spares healthy canaries and catches regressions.
	var sweep []string
	for _, t := range flaggerThresholds {
		rule := flaggerRule(t)
		w := worst(r.rows(KindAA, rule), harmCI, harmRate)
		e, l := r.Row(headlineErrors, headlineScale, rule), r.Row(headlineLatency, headlineScale, rule)
		if w == nil || e == nil || l == nil {
			continue
		}
		sweep = append(sweep, fmt.Sprintf("×%g: worst A/A %s, catches errors ×1.5 in %s and latency +10%% in %s", t, pct(w.HarmRate), pct(e.HarmRate), pct(l.HarmRate)))
	}
	if len(sweep) > 0 {
		fmt.Fprintf(&b, "- **Flagger's threshold** (fleet world, 700k/1%% for the regressions): %s.\n", strings.Join(sweep, "; "))
	}
	return b.String()
}
