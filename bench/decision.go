package bench

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// DecisionConfig sizes the decision-quality benchmark.
type DecisionConfig struct {
	// Runs is the number of simulated experiments per scenario; every rule judges the
	// same runs.
	Runs int
	// Seed makes the runs reproducible; run i of scenario s uses (Seed+s, i).
	Seed uint64
	// Workers defaults to GOMAXPROCS.
	Workers int
	// World defaults to DefaultWorld.
	World *World
	// Scenarios defaults to Scenarios().
	Scenarios []Scenario
}

// DecisionResult is one scenario × rule row of results.json. Pointers are null where a
// figure does not apply (no false rollbacks to count in a regression, nothing to detect
// in an A/A run) or was not reached (fewer than half of the runs detected: no median).
type DecisionResult struct {
	Scenario string `json:"scenario"`
	Kind     Kind   `json:"kind"`
	Rule     string `json:"rule"`
	Runs     int    `json:"runs"`
	// FalseRollbackRate is the share of runs rolled back when the canary was not worse
	// (A/A, improvement, weight mismatch), with its 95% Wilson interval.
	FalseRollbackRate *float64  `json:"falseRollbackRate"`
	FalseRollbackCI   []float64 `json:"falseRollbackCI"`
	Power             *float64  `json:"power"`
	PowerCI           []float64 `json:"powerCI,omitempty"`
	// MedianIntervalsToDetect and P90IntervalsToDetect are quantiles over all runs,
	// undetected runs counting as never: null when that quantile was never reached.
	MedianIntervalsToDetect *float64 `json:"medianIntervalsToDetect"`
	P90IntervalsToDetect    *float64 `json:"p90IntervalsToDetect"`
	// OracleRatio is this rule's median detection time over the oracle SPRT's.
	OracleRatio *float64 `json:"oracleRatio"`
	// RollbackRate, PromoteRate and FlagRate are the raw outcome shares.
	RollbackRate float64 `json:"rollbackRate"`
	PromoteRate  float64 `json:"promoteRate"`
	FlagRate     float64 `json:"flagRate"`
	// Horizon is the run length in intervals.
	Horizon int `json:"horizon"`
	// OpenAtEnd counts, for Verdict, the runs that reached the horizon without a verdict
	// by what was still open (KPI names, "traffic share").
	OpenAtEnd map[string]int `json:"openAtEnd,omitempty"`
}

// RunDecision simulates cfg.Runs experiments per scenario and judges each with every
// rule. Results are in scenario order, then Rules order; they are deterministic for a
// given config whatever the number of workers.
func RunDecision(cfg DecisionConfig) []DecisionResult {
	w := DefaultWorld()
	if cfg.World != nil {
		w = *cfg.World
	}
	scs := cfg.Scenarios
	if scs == nil {
		scs = Scenarios()
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var out []DecisionResult
	for si, sc := range scs {
		outcomes := make([][nRules]Outcome, cfg.Runs)
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					r := rand.New(rand.NewPCG(cfg.Seed+uint64(si), uint64(i)))
					outcomes[i] = w.judge(sc, w.generate(sc, r))
				}
			}()
		}
		for i := range cfg.Runs {
			next <- i
		}
		close(next)
		wg.Wait()
		out = append(out, summarise(sc, w.Horizon(sc), outcomes)...)
	}
	return out
}

func summarise(sc Scenario, horizon int, outcomes [][nRules]Outcome) []DecisionResult {
	n := len(outcomes)
	rows := make([]DecisionResult, len(Rules))
	for ri, rule := range Rules {
		row := DecisionResult{Scenario: sc.Name, Kind: sc.Kind, Rule: rule, Runs: n, Horizon: horizon}
		var rb, pr, fl int
		times := make([]float64, 0, n)
		for _, oc := range outcomes {
			o := oc[ri]
			if o.RollbackAt > 0 {
				rb++
			}
			if o.Promoted {
				pr++
			}
			if o.FlagAt > 0 {
				fl++
			}
			if o.Open != "" {
				if row.OpenAtEnd == nil {
					row.OpenAtEnd = map[string]int{}
				}
				for _, name := range strings.Split(o.Open, ", ") {
					row.OpenAtEnd[name]++
				}
			}
			at := 0
			switch sc.Kind {
			case KindRegression:
				at = o.RollbackAt
			case KindMismatch:
				at = o.FlagAt
			}
			if at > 0 {
				times = append(times, float64(at))
			} else {
				times = append(times, math.Inf(1))
			}
		}
		row.RollbackRate = frac(rb, n)
		row.PromoteRate = frac(pr, n)
		row.FlagRate = frac(fl, n)
		if sc.Kind != KindRegression {
			lo, hi := Wilson(rb, n)
			row.FalseRollbackRate = ptr(frac(rb, n))
			row.FalseRollbackCI = []float64{lo, hi}
		}
		if sc.Kind == KindRegression || sc.Kind == KindMismatch {
			det := rb
			if sc.Kind == KindMismatch {
				det = fl
			}
			lo, hi := Wilson(det, n)
			row.Power = ptr(frac(det, n))
			row.PowerCI = []float64{lo, hi}
			slices.Sort(times)
			row.MedianIntervalsToDetect = quantile(times, 0.5)
			row.P90IntervalsToDetect = quantile(times, 0.9)
		}
		rows[ri] = row
	}
	oracle := rows[slices.Index(Rules, RuleOracle)].MedianIntervalsToDetect
	for i := range rows {
		if m := rows[i].MedianIntervalsToDetect; m != nil && oracle != nil && *oracle > 0 {
			rows[i].OracleRatio = ptr(math.Round(*m / *oracle * 100) / 100)
		}
	}
	return rows
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
	return math.Max(0, centre-half), math.Min(1, centre+half)
}
