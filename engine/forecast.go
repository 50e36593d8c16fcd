package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
)

// Forecast is what the engine would most likely decide if the canary behaved exactly as
// its cluster did in the recent past: an A/A replay of history at the plan's traffic shares.
// It answers the question a plan leaves open: at this traffic, can the evidence for
// non-inferiority arrive before the holds end, or will the run end inconclusive? It is an
// estimate, not a promise: the variant may differ, and replayed history repeats its noise.
type Forecast struct {
	// Window is the history replayed; Intervals the complete intervals in it.
	Window    metrics.Range `json:"window"`
	Intervals int           `json:"intervals"`
	// CanaryShare is the canary cluster's share of the experiment's requests in the window;
	// the replay scales the counts from it to each step's share.
	CanaryShare float64 `json:"canaryShare"`
	// Action is how the replayed run ends: promote, rollback (harm, a guardrail, or
	// inconclusive at maxDuration under onInconclusive: rollback) or continue (paused
	// inconclusive at maxDuration under onInconclusive: pause).
	Action analysis.Action `json:"action"`
	// After is when, from the start of the ramp, the replayed run ends; Step the step it
	// is at then.
	After time.Duration `json:"after"`
	Step  int           `json:"step"`
	// Reason is the engine's reason for that ending.
	Reason string `json:"reason"`
	// PlannedEnd is when the last step's hold ends: the earliest possible promotion.
	PlannedEnd  time.Duration `json:"plannedEnd"`
	MaxDuration time.Duration `json:"maxDuration"`
	// KPIs says, per judged KPI, when it first became non-inferior in the replay.
	KPIs []KPIForecast `json:"kpis"`
}

// KPIForecast is one judged KPI in a Forecast.
type KPIForecast struct {
	Name      string  `json:"name"`
	Tolerance float64 `json:"tolerance"`
	// NonInferiorAfter is when it first became non-inferior, from the start of the ramp;
	// zero with Reached false when it never did before the replay ended.
	NonInferiorAfter time.Duration `json:"nonInferiorAfter,omitempty"`
	Reached          bool          `json:"reached"`
	// Final is its verdict when the replay ended.
	Final analysis.KPIVerdict `json:"final"`
}

// ForecastRun replays the last `history` intervals of exp's KPIs complete at now (as the
// engine reads them: a quarter interval, at most 15 s, after their end) through the engine's own
// sequences and decision rule, at each step's share of the traffic, and says how the run
// would most likely end. Only canary and baseline clusters' data is used; the pre-period,
// the traffic-share check and preconditions are left out.
func ForecastRun(ctx context.Context, exp *experiments.Experiment, src KPISource, now time.Time, history int) (*Forecast, error) {
	iv := exp.Spec.Analysis.Interval.Std()
	if iv <= 0 || history < 1 {
		return nil, fmt.Errorf("forecast: need a positive interval and at least one interval of history")
	}
	steps := exp.Spec.Traffic.Steps
	if len(steps) == 0 {
		return nil, fmt.Errorf("forecast: the experiment has no steps")
	}
	end := now.Add(-min(iv/4, 15*time.Second)).Truncate(iv)
	rng := metrics.Range{Start: end.Add(-time.Duration(history) * iv), End: end, Interval: iv}
	kpis, err := newKPIStates(exp, max(int(exp.Spec.TotalHold()/iv), exp.Spec.Analysis.MinIntervals))
	if err != nil {
		return nil, err
	}
	canary, baselines := exp.Spec.Canary.Cluster, exp.Spec.Baselines
	clusters := exp.Spec.Clusters()
	data := make([]*metrics.Data, len(kpis))
	for i, k := range kpis {
		if data[i], err = src.Fetch(ctx, k.query, rng, clusters); err != nil {
			return nil, fmt.Errorf("forecast: KPI %s: %w", k.spec.Name, err)
		}
	}
	// The complete intervals of history: every KPI has the canary and a baseline.
	var hist [][]Observation
	var canaryReq, allReq float64
	for _, e := range rng.Ends() {
		row := make([]Observation, len(kpis))
		full := true
		for i, k := range kpis {
			o, ok := k.observe(data[i], e, canary, baselines)
			if !ok {
				full = false
				break
			}
			row[i] = o
		}
		if !full {
			continue
		}
		hist = append(hist, row)
		for i, k := range kpis {
			if k.spec.Type == experiments.KPIThroughput || k.ratio != nil {
				for _, c := range clusters {
					if n, ok := k.requests(row[i], c); ok {
						allReq += n
						if c == canary {
							canaryReq += n
						}
					}
				}
				break
			}
		}
	}
	f := &Forecast{Window: rng, Intervals: len(hist), MaxDuration: exp.Spec.Analysis.MaxDuration.Std(), PlannedEnd: exp.Spec.TotalHold()}
	if len(hist) == 0 {
		return nil, fmt.Errorf("forecast: no complete interval in the last %d (%s to %s): every KPI needs the canary and a baseline", history, rng.Start.Format(time.RFC3339), rng.End.Format(time.RFC3339))
	}
	f.CanaryShare = 0.5
	if allReq > 0 && canaryReq > 0 && canaryReq < allReq {
		f.CanaryShare = canaryReq / allReq
	}

	a := &exp.Spec.Analysis
	onInc := onInconclusive(a)
	first := map[string]time.Duration{}
	step, elapsed, t := 1, time.Duration(0), time.Duration(0)
	// A run ends at maxDuration; the bound only guards against a spec that never ends.
	for i := 0; i < 1_000_000; i++ {
		share := float64(steps[step-1].Weight)
		row := hist[i%len(hist)]
		for j, k := range kpis {
			k.add(scaleObservation(row[j], k.spec.Type, canary, share/f.CanaryShare, (1-share)/(1-f.CanaryShare)), canary, baselines, false)
		}
		t += iv
		elapsed += iv
		var ks []analysis.KPI
		for _, k := range kpis {
			ks = append(ks, k.judged()...)
		}
		d := analysis.Decide(ks, analysis.Step{
			Alpha:              a.Alpha,
			HoldComplete:       elapsed >= steps[step-1].Hold.Std(),
			Final:              step >= len(steps),
			MaxDurationReached: t >= f.MaxDuration,
			OnInconclusive:     onInc,
		})
		for _, kv := range d.KPIs {
			if _, seen := first[kv.Name]; !seen && kv.Status == analysis.NonInferior {
				first[kv.Name] = t
			}
		}
		done := false
		switch d.Action {
		case analysis.Advance:
			if step < len(steps) {
				step, elapsed = step+1, 0
			}
		case analysis.Promote, analysis.Rollback:
			done = true
		default:
			done = t >= f.MaxDuration
		}
		if done {
			f.Action, f.After, f.Step, f.Reason = d.Action, t, step, d.Reason
			for _, kv := range d.KPIs {
				kf := KPIForecast{Name: kv.Name, Tolerance: kv.Tolerance, Final: kv}
				kf.NonInferiorAfter, kf.Reached = first[kv.Name]
				f.KPIs = append(f.KPIs, kf)
			}
			return f, nil
		}
	}
	return nil, fmt.Errorf("forecast: the replay did not end within a million intervals")
}

// scaleObservation moves one interval of history to another traffic share: the canary's
// counts are multiplied by fc and the baselines' by fb. Rates, means and gauge values do
// not change with the share; their noise does, which the replay does not model.
func scaleObservation(o Observation, typ string, canary string, fc, fb float64) Observation {
	out := Observation{Clusters: make(map[string]ClusterValues, len(o.Clusters))}
	for c, v := range o.Clusters {
		f := fb
		if c == canary {
			f = fc
		}
		v.Events *= f
		v.Total *= f
		if v.Sum != nil {
			s := *v.Sum * f
			v.Sum = &s
		}
		if v.Value != nil && typ == experiments.KPIThroughput {
			x := *v.Value * f
			v.Value = &x
		}
		out.Clusters[c] = v
	}
	return out
}
