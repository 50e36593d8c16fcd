package bench

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/experiments"
)

// Worlds are the simulated settings, in the order results show them. Every world has
// the daily load wave (±50%) and 3% per-cluster-minute latency noise; the canary is
// judged against two baselines.
func Worlds() []World {
	lat := Noise{LatencySD: 0.03}
	g100, g20, bursts, drift := lat, lat, lat, lat
	g100.GammaK, g20.GammaK = 100, 20
	bursts.BurstStart, bursts.BurstMinutes, bursts.BurstFactor = 0.01, 3, 3
	drift.DriftPhi, drift.DriftSD = 0.95, 0.10
	fleet := g20
	fleet.BurstStart, fleet.BurstMinutes, fleet.BurstFactor = bursts.BurstStart, bursts.BurstMinutes, bursts.BurstFactor
	fleet.DriftPhi, fleet.DriftSD = drift.DriftPhi, drift.DriftSD

	w := func(name string, kind Kind, desc string, nz Noise) World {
		return World{Name: name, Kind: kind, Description: desc, Noise: nz, Offset: 1, Diurnal: 0.5, Honour: 1, Errors: 1, Latency: 1}
	}
	const fleetDesc = "Gamma(k=20) per cluster-minute, ×3 bursts (~3 min, 1% of minutes start one), AR(1) drift (φ 0.95, sd 0.10), the canary cluster ×1.15, an operator's rebalance halfway through step 2"
	offset := w("offset", KindAA, "Poisson counts; the canary cluster's error rate and latency are ×1.15 always (same code, different cluster)", lat)
	offset.Offset = 1.15
	rebalance := w("rebalance", KindAA, "Poisson counts; halfway through step 2 an operator moves the canary from 20% to 30% and the baselines from 50/50 to 80/20", lat)
	rebalance.Rebalance, rebalance.RebalanceShare = true, 0.30
	fl := func(name string, kind Kind, desc string) World {
		x := w(name, kind, desc, fleet)
		x.Offset, x.Rebalance, x.RebalanceShare = 1.15, true, 0.30
		if kind != KindRegression {
			x.RunsFactor = 2 // the headline's worlds
		}
		return x
	}
	share995 := w("share-99.5%", KindAA, "Gamma(k=100); the canary receives 99.5% of its configured share (a real, harmless deviation inside the 5% share tolerance): must not be flagged", g100)
	share995.Honour = 0.995
	share995.Scales = []string{"700k/1%"}
	share60 := w("share-60%", KindMismatch, "Gamma(k=100); the canary receives 60% of its configured share (session affinity): must be flagged", g100)
	share60.Honour = 0.6
	share60.Scales = []string{"1k/1%", "12k/1%", "700k/1%"}

	boundary := func(name, desc string, nz Noise) World {
		x := w(name, KindBoundary, desc+"; the canary's error rate ×1.10, exactly the tolerance", nz)
		x.Errors = 1.10
		return x
	}
	bFleet := fl("boundary-fleet", KindBoundary, fleetDesc+"; the canary's error rate ×1.10, exactly the tolerance")
	bFleet.Errors = 1.10

	reg := func(name, desc string, nz Noise, errs, latency float64) World {
		x := w(name, KindRegression, desc, nz)
		x.Errors, x.Latency = errs, latency
		return x
	}
	eFleet := fl("errors-x1.5-fleet", KindRegression, fleetDesc+"; the variant's error rate ×1.5")
	eFleet.Errors = 1.5
	lFleet := fl("latency+10%-fleet", KindRegression, fleetDesc+"; the variant's latency ×1.10")
	lFleet.Latency = 1.10

	applied := func(name string, declared bool, desc string) World {
		x := w(name, KindRegression, desc, g100)
		x.Offset, x.Errors, x.AppliedBefore, x.DeclareApplied = 1.15, 1.3, 180, declared
		return x
	}

	// Where each world is run: every scale for the calm and the worst world and for the
	// regressions; where cluster-level noise can matter (12k and 700k) for the rest.
	high := []string{"12k/0.1%", "12k/1%", "700k/0.1%", "700k/1%"}
	top := []string{"12k/1%", "700k/0.1%", "700k/1%"}
	at := func(x World, scales []string) World {
		x.Scales = scales
		return x
	}
	return []World{
		w("poisson", KindAA, "Poisson counts: no cluster-level noise beyond the latency's", lat),
		at(w("gamma-k100", KindAA, "error rate × Gamma(k=100)/100 per cluster-minute (±10%)", g100), high),
		at(w("gamma-k20", KindAA, "error rate × Gamma(k=20)/20 per cluster-minute (±22%)", g20), high),
		at(w("bursts", KindAA, "a cluster's error rate ×3 for bursts of geometric length (mean 3 minutes), one starting in 1% of cluster-minutes", bursts), high),
		at(w("drift", KindAA, "each cluster's log error rate an AR(1) process, φ 0.95, stationary sd 0.10 (slow wander over tens of minutes)", drift), high),
		at(offset, high),
		at(rebalance, high),
		fl("fleet", KindAA, fleetDesc+": every difficulty at once"),
		share995,
		at(boundary("boundary-poisson", "Poisson counts", lat), high),
		at(boundary("boundary-gamma-k20", "Gamma(k=20)", g20), top),
		at(boundary("boundary-bursts", "×3 bursts (~3 min, 1% of minutes start one)", bursts), []string{"12k/1%", "700k/1%"}),
		at(bFleet, top),
		reg("errors-x1.5", "Poisson counts; the variant's error rate ×1.5", lat, 1.5, 1),
		eFleet,
		reg("latency+10%", "Poisson counts; the variant's latency ×1.10 (every request)", lat, 1, 1.10),
		lFleet,
		at(applied("applied-before", true, "Gamma(k=100), the canary cluster ×1.15; the variant (error rate ×1.3) went live 3 hours before the ramp, and the experiment declares spec.canary.apply.appliedAt: the history the engine reads ends there"), high),
		at(applied("applied-before-undeclared", false, "as applied-before, but spec.canary.apply is not declared: the engine warns, cannot know the history is clean (its last 3 hours hold the variant) and so does not subtract the canary cluster's offset"), high),
		share60,
	}
}

// DecisionConfig sizes the decision-quality benchmark.
type DecisionConfig struct {
	// Runs is the number of simulated experiments per A/A cell; boundary cells get
	// six times as many (their target is α/K), regression and mismatch cells half, and worlds
	// with a RunsFactor that many times more.
	Runs int
	// Seed makes the runs reproducible.
	Seed uint64
	// Workers defaults to GOMAXPROCS.
	Workers int
	// Progress, when set, is called after each cell's last run with the cell's world,
	// scale and the seconds its runs took.
	Progress func(world, scale string, seconds float64)
	// Worlds defaults to Worlds(); Scales to Scales().
	Worlds []World
	Scales []Scale
}

// cell is one world at one scale, with its plan and the oracle's knowledge.
type cell struct {
	world     *World
	scale     Scale
	plan      Plan
	exp       *experiments.Experiment
	history   int
	truth     *truth
	tolerance [nKPIs]float64
	rules     []string
	runs      int
	seed      uint64
	fixed     [nKPIs]float64
	learned   [nKPIs]float64 // fixed with the offset learned from the history
	busy      atomic.Int64   // nanoseconds spent judging its runs
	done      atomic.Int64   // runs judged
}

// runsFor is a world kind's number of runs.
func runsFor(k Kind, base int) int {
	switch k {
	case KindBoundary:
		// Their target is α/K = 1.67%: a true rate near 1% shows below it by the upper
		// 95% bound only from about 1,800 runs.
		return 6 * base
	case KindRegression, KindMismatch:
		return max(base/2, 10)
	}
	return base
}

// runs is a world's number of runs per cell.
func (w *World) runs(base int) int { return runsFor(w.Kind, base) * max(w.RunsFactor, 1) }

// DecisionResult is one world × scale × rule row of results.json. Rates count runs;
// times are minutes from the ramp's start (one-minute intervals). Pointers are null
// where a figure does not apply or was not reached (fewer than half, or 90%, of the
// runs got there: no median, or no p90).
type DecisionResult struct {
	World string `json:"world"`
	Kind  Kind   `json:"kind"`
	Scale string `json:"scale"`
	Rule  string `json:"rule"`
	Runs  int    `json:"runs"`
	// HarmRate is the share of runs rolled back for harm, with its 95% Wilson interval:
	// false rollbacks in A/A and mismatch worlds, detections in regressions.
	HarmRate float64   `json:"harmRate"`
	HarmCI   []float64 `json:"harmCI"`
	// ErrorHarmRate is the share of runs in which the error-rate KPI was found harmful
	// (Verdict and the oracle; boundary worlds' calibration figure), with its interval.
	ErrorHarmRate *float64  `json:"errorHarmRate,omitempty"`
	ErrorHarmCI   []float64 `json:"errorHarmCI,omitempty"`
	// HarmByKPI counts harm rollbacks by the KPI found harmful (Verdict and the oracle).
	HarmByKPI map[string]int `json:"harmByKPI,omitempty"`
	// TimeoutRate is the share rolled back at maxDuration with KPIs still inconclusive
	// (onInconclusive: rollback): not an error of the statistics, a plan too short for
	// the noise.
	TimeoutRate float64 `json:"timeoutRate"`
	// PromoteRate and its interval; MedianPromote and P90Promote over all runs.
	PromoteRate   float64   `json:"promoteRate"`
	PromoteCI     []float64 `json:"promoteCI"`
	MedianPromote *float64  `json:"medianPromote"`
	P90Promote    *float64  `json:"p90Promote"`
	// MedianDetect and P90Detect are the quantiles of the time to a harm rollback (a
	// share flag in mismatch worlds) over all runs; OracleRatio is MedianDetect over the
	// oracle's.
	MedianDetect *float64 `json:"medianDetect"`
	P90Detect    *float64 `json:"p90Detect"`
	OracleRatio  *float64 `json:"oracleRatio"`
	// FlagRate is the share of runs with a traffic-share mismatch flagged (Verdict).
	FlagRate float64   `json:"flagRate"`
	FlagCI   []float64 `json:"flagCI"`
}

// CellInfo describes one world × scale: the plan Verdict and the oracle ran, its
// forecast, and the physical limit.
type CellInfo struct {
	World string `json:"world"`
	Scale string `json:"scale"`
	Plan  Plan   `json:"plan"`
	// FixedSample is, per judged KPI, the intervals a fixed-sample non-inferiority test
	// needs at the final share (α/K, 90% power, true variance): the physical limit.
	FixedSample map[string]float64 `json:"fixedSample"`
	// FixedSampleLearned is the same limit for a rule that learns the canary/baseline
	// offset from the history window, as Verdict must (-1: never, however long the run).
	FixedSampleLearned map[string]float64 `json:"fixedSampleLearned"`
	// NoiseLR and NoiseMarg are the world's per-cluster long-run and marginal variance of
	// the log error-rate multiplier (what the history must reveal).
	NoiseLR   float64 `json:"noiseLongRunVar"`
	NoiseMarg float64 `json:"noiseMarginalVar"`
	// Seconds is the time spent judging the cell's runs (all rules).
	Seconds float64 `json:"seconds"`
}

// RunDecision simulates every world at each of its scales and judges each run with every
// rule. Results are deterministic for a given config whatever the number of workers.
func RunDecision(cfg DecisionConfig) ([]DecisionResult, []CellInfo, error) {
	worlds := cfg.Worlds
	if worlds == nil {
		worlds = Worlds()
	}
	scales := cfg.Scales
	if scales == nil {
		scales = Scales()
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Cells are set up in parallel: the oracle's truth (one per world) and the plan's
	// forecast (one per cell) take a moment each.
	truths := make([]*truth, len(worlds))
	parallel(workers, len(worlds), func(wi int) { truths[wi] = newTruth(&worlds[wi], cfg.Seed+uint64(wi)) })
	type key struct{ wi, si int }
	var keys []key
	for wi := range worlds {
		for si, sc := range scales {
			if worlds[wi].Scales == nil || slices.Contains(worlds[wi].Scales, sc.Name) {
				keys = append(keys, key{wi, si})
			}
		}
	}
	cells := make([]*cell, len(keys))
	errs := make([]error, len(keys))
	parallel(workers, len(keys), func(i int) {
		k := keys[i]
		w, sc := &worlds[k.wi], scales[k.si]
		seed := cfg.Seed*1_000_003 + uint64(k.wi)*1009 + uint64(k.si)
		plan, err := w.sizePlan(sc, seed^0xabcdef)
		if err != nil {
			errs[i] = err
			return
		}
		exp, err := w.experiment(plan.Steps)
		if err != nil {
			errs[i] = err
			return
		}
		tr := truths[k.wi]
		c := &cell{world: w, scale: sc, plan: plan, exp: exp, history: historyIntervals(exp), truth: tr, tolerance: tolerances(exp),
			rules: Rules(), runs: w.runs(cfg.Runs), seed: seed}
		c.fixed, c.learned = tr.fixedSample(w, sc, plan.Steps[len(plan.Steps)-1].Share, c.tolerance, exp.Spec.Analysis.Alpha/nKPIs, c.history)
		cells[i] = c
	})
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	// One queue of (cell, run) jobs, so that both cores stay busy to the end.
	type job struct{ c, i int }
	outcomes := make([][][]Outcome, len(cells))
	for ci, c := range cells {
		outcomes[ci] = make([][]Outcome, c.runs)
	}
	jobs := make(chan job, 256)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				c := cells[j.c]
				l := newLatent(c.world, c.scale, c.seed*7919+uint64(j.i), c.history, c.plan.MaxDuration+len(c.plan.Steps)+2)
				t0 := time.Now()
				outcomes[j.c][j.i] = judgeRun(c, l)
				c.busy.Add(int64(time.Since(t0)))
				if c.done.Add(1) == int64(c.runs) && cfg.Progress != nil {
					cfg.Progress(c.world.Name, c.scale.Name, float64(c.busy.Load())/1e9)
				}
			}
		}()
	}
	for ci, c := range cells {
		for i := range c.runs {
			jobs <- job{ci, i}
		}
	}
	close(jobs)
	wg.Wait()
	var rows []DecisionResult
	var infos []CellInfo
	for ci, c := range cells {
		rows = append(rows, summarise(c, outcomes[ci])...)
		info := CellInfo{World: c.world.Name, Scale: c.scale.Name, Plan: c.plan, FixedSample: map[string]float64{}, FixedSampleLearned: map[string]float64{}, NoiseLR: c.truth.errLR, NoiseMarg: c.truth.errMarg,
			Seconds: math.Round(float64(c.busy.Load())/1e7) / 100}
		for i, n := range kpiNames {
			info.FixedSample[n] = math.Round(c.fixed[i])
			info.FixedSampleLearned[n] = -1
			if !math.IsInf(c.learned[i], 0) {
				info.FixedSampleLearned[n] = math.Round(c.learned[i])
			}
		}
		infos = append(infos, info)
	}
	return rows, infos, nil
}

func summarise(c *cell, outcomes [][]Outcome) []DecisionResult {
	n := len(outcomes)
	rows := make([]DecisionResult, len(c.rules))
	for ri, rule := range c.rules {
		row := DecisionResult{World: c.world.Name, Kind: c.world.Kind, Scale: c.scale.Name, Rule: rule, Runs: n}
		var harm, errHarm, timeout, promoted, flagged int
		byKPI := map[string]int{}
		var promoteT, detectT []float64
		for _, oc := range outcomes {
			o := oc[ri]
			if o.harmRollback() {
				harm++
				if ri <= 1 {
					for i, name := range kpiNames {
						if o.Harm&(1<<i) != 0 {
							byKPI[name]++
						}
					}
					if o.Harm&(1<<kpiErrors) != 0 {
						errHarm++
					}
				}
			} else if o.RollbackAt > 0 {
				timeout++
			}
			pt, dt := math.Inf(1), math.Inf(1)
			if o.PromoteAt > 0 {
				promoted++
				pt = float64(o.PromoteAt)
			}
			if o.FlagAt > 0 {
				flagged++
			}
			switch c.world.Kind {
			case KindMismatch:
				if o.FlagAt > 0 {
					dt = float64(o.FlagAt)
				}
			default:
				if o.harmRollback() {
					dt = float64(o.RollbackAt)
				}
			}
			promoteT = append(promoteT, pt)
			detectT = append(detectT, dt)
		}
		row.HarmRate = frac(harm, n)
		row.HarmCI = wilsonSlice(harm, n)
		if ri <= 1 {
			row.ErrorHarmRate = ptr(frac(errHarm, n))
			row.ErrorHarmCI = wilsonSlice(errHarm, n)
			if len(byKPI) > 0 {
				row.HarmByKPI = byKPI
			}
		}
		row.TimeoutRate = frac(timeout, n)
		row.PromoteRate = frac(promoted, n)
		row.PromoteCI = wilsonSlice(promoted, n)
		slices.Sort(promoteT)
		slices.Sort(detectT)
		row.MedianPromote, row.P90Promote = quantile(promoteT, 0.5), quantile(promoteT, 0.9)
		row.MedianDetect, row.P90Detect = quantile(detectT, 0.5), quantile(detectT, 0.9)
		row.FlagRate = frac(flagged, n)
		row.FlagCI = wilsonSlice(flagged, n)
		rows[ri] = row
	}
	if o := rows[1].MedianDetect; o != nil && *o > 0 {
		for i := range rows {
			if m := rows[i].MedianDetect; m != nil {
				rows[i].OracleRatio = ptr(math.Round(*m / *o * 100) / 100)
			}
		}
	}
	return rows
}

func wilsonSlice(k, n int) []float64 {
	lo, hi := Wilson(k, n)
	return []float64{lo, hi}
}

func frac(k, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(k) / float64(n)
}

func ptr(x float64) *float64 { return &x }

// quantile is the lower empirical quantile of sorted values (R type 1); nil when it is
// +Inf (the quantile was never reached).
func quantile(sorted []float64, p float64) *float64 {
	if len(sorted) == 0 {
		return nil
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	if math.IsInf(sorted[i], 1) {
		return nil
	}
	return ptr(sorted[i])
}

// Wilson is the 95% Wilson score interval of k successes in n trials.
func Wilson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	const z = 1.959963984540054
	p := float64(k) / float64(n)
	nn := float64(n)
	den := 1 + z*z/nn
	centre := (p + z*z/(2*nn)) / den
	half := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / den
	lo, hi = math.Max(0, centre-half), math.Min(1, centre+half)
	if k == 0 {
		lo = 0
	}
	if k == n {
		hi = 1
	}
	return lo, hi
}

// String names a cell for errors and logs.
func (c *cell) String() string { return fmt.Sprintf("%s at %s", c.world.Name, c.scale.Name) }

// parallel calls f(0..n-1) on workers goroutines.
func parallel(workers, n int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
