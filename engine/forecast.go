package engine

import (
	"context"
	"fmt"
	"math"
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
	// Noise is each judged KPI's noise model learned from the window.
	Noise []KPINoise `json:"noise,omitempty"`
	// Warnings say where the plan cannot conclude: a KPI whose proof needs more than the
	// holds, or more than maxDuration.
	Warnings []string `json:"warnings,omitempty"`
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
	Final KPIVerdict `json:"final"`
	// Proof is how long a healthy canary takes to be proven non-inferior under the noise
	// learned from the window, at the plan's shares (nil without a usable noise model).
	Proof *ProofForecast `json:"proof,omitempty"`
}

// ProofForecast is analysis.ProofTime in time units from the start of the ramp.
type ProofForecast struct {
	// Median and P90 are when the KPI is proven non-inferior with probability 50% and 90%;
	// Reached is false when even maxDuration is not enough.
	Median  time.Duration `json:"median,omitempty"`
	P90     time.Duration `json:"p90,omitempty"`
	Reached bool          `json:"reached"`
	// Limit is the part of the tolerance the baseline offset's own uncertainty takes.
	Limit float64 `json:"limit"`
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
	steps := exp.Spec.Traffic.Steps[:exp.Spec.Traffic.JudgedSteps()] // a migration's cut-over is not judged
	if len(steps) == 0 {
		return nil, fmt.Errorf("forecast: the experiment has no steps")
	}
	end := now.Add(-min(iv/4, 15*time.Second)).Truncate(iv)
	rng := metrics.Range{Start: end.Add(-time.Duration(history) * iv), End: end, Interval: iv}
	ev, err := NewEvidence(exp, int(exp.Spec.TotalHold()/iv))
	if err != nil {
		return nil, err
	}
	kpis := ev.kpis
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
	reqBy := map[string]float64{}
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
						reqBy[c] += n
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

	// The history is the baseline the replayed run learns its noise from, as a run would.
	for _, row := range hist {
		obs := map[string]Observation{}
		for j, k := range kpis {
			obs[k.spec.Name] = row[j]
		}
		ev.AddHistory(obs)
	}
	ev.Fit()
	f.Noise = ev.Noise()

	first := map[string]time.Duration{}
	step, elapsed, t := 1, time.Duration(0), time.Duration(0)
	// A run ends at maxDuration; the bound only guards against a spec that never ends.
	for i := 0; i < 1_000_000; i++ {
		share := float64(steps[step-1].Weight)
		row := hist[i%len(hist)]
		// The pool is assumed to honour the weights: each cluster is expected to get what
		// the scaled history gives it, so the share check sees a faithful pool.
		weights := map[string]float64{canary: share}
		if baseReq := allReq - canaryReq; baseReq > 0 {
			for _, b := range baselines {
				weights[b] = (1 - share) * reqBy[b] / baseReq
			}
		}
		obs := map[string]Observation{}
		for j, k := range kpis {
			o := scaleObservation(row[j], k.spec.Type, canary, share/f.CanaryShare, (1-share)/(1-f.CanaryShare))
			o.Weights = weights
			obs[k.spec.Name] = o
		}
		ev.AddInterval(obs, rng.End.Add(t))
		t += iv
		elapsed += iv
		d := ev.Decide(Position{Step: step, StepElapsed: elapsed, Elapsed: t})
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
			proofs := proofForecasts(exp, ev, f.CanaryShare)
			for i, kv := range d.KPIs {
				kf := KPIForecast{Name: kv.Name, Tolerance: kv.Tolerance, Final: KPIVerdictOf(kv)}
				kf.NonInferiorAfter, kf.Reached = first[kv.Name]
				if i < len(proofs) {
					kf.Proof = proofs[i]
				}
				f.KPIs = append(f.KPIs, kf)
				switch p := kf.Proof; {
				case p == nil:
				case !p.Reached:
					why := ""
					if p.Limit > 0 {
						why = fmt.Sprintf(" (the baseline offset's uncertainty alone takes %.2g of it on the log scale)", p.Limit)
					}
					f.Warnings = append(f.Warnings, fmt.Sprintf("%s cannot be proven within its %.3g tolerance before maxDuration %s at this traffic and noise%s: widen the tolerance, take larger steps, read more history, or expect an inconclusive end", kv.Name, kv.Tolerance, experiments.Duration(f.MaxDuration), why))
				case p.P90 > f.PlannedEnd:
					f.Warnings = append(f.Warnings, fmt.Sprintf("%s needs about %s (90%%: %s) to be proven, longer than the holds' %s: hold the last step longer", kv.Name, experiments.Duration(p.Median), experiments.Duration(p.P90), experiments.Duration(f.PlannedEnd)))
				}
			}
			return f, nil
		}
	}
	return nil, fmt.Errorf("forecast: the replay did not end within a million intervals")
}

// proofForecasts runs analysis.ProofTime for every judged KPI with a usable noise model,
// in judged order, at the plan's shares and holds, up to maxDuration.
func proofForecasts(exp *experiments.Experiment, ev *Evidence, canaryShare float64) []*ProofForecast {
	iv := exp.Spec.Analysis.Interval.Std()
	var steps []analysis.ProofStep
	for _, st := range exp.Spec.Traffic.Steps[:exp.Spec.Traffic.JudgedSteps()] {
		steps = append(steps, analysis.ProofStep{Share: float64(st.Weight), Intervals: max(1, int(st.Hold.Std()/iv))})
	}
	judged := ev.Judged()
	noise := ev.Noise()
	alpha := exp.Spec.Analysis.Alpha
	if !(alpha > 0 && alpha < 1) {
		alpha = experiments.DefaultAlpha
	}
	alpha /= float64(max(len(judged), 1))
	maxIv := int(exp.Spec.Analysis.MaxDuration.Std() / iv)
	planned := int(exp.Spec.TotalHold() / iv)
	out := make([]*ProofForecast, len(judged))
	for i, k := range judged {
		if i >= len(noise) || noise[i].Model == nil {
			continue
		}
		m := *noise[i].Model
		tol := k.Tolerance
		gauge := m.Kind == "gauge"
		if iv := k.State.Interval(alpha); iv.Relative {
			tol = math.Log1p(tol)
		}
		p := analysis.ProofTime(m.Analysis().ForHarm(k.Harm), tol, alpha, gauge, canaryShare, steps, maxIv, analysis.RatioOptions{}, planned)
		out[i] = &ProofForecast{Median: time.Duration(p.Median) * iv, P90: time.Duration(p.P90) * iv, Reached: p.Reached, Limit: p.Limit}
	}
	return out
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
