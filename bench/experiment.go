package bench

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
)

// Cluster names of the bench's experiment: the canary first.
var clusterNames = [nClusters]string{"canary", "baseline-1", "baseline-2"}

// rampStart is the virtual wall time the ramp starts at (minute `start` of a latent world).
var rampStart = time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)

// benchExperiment is the experiment every world runs: an error-rate KPI and a latency KPI
// with a slow threshold, as an operator would write them, and nothing in analysis: the
// engine's defaults apply (history a day, α 5%, minIntervals 10, share tolerance 5%, error
// rate tolerance 10%, latency mean 5%, slow share 20%, maxDuration twice the holds,
// onInconclusive rollback).
const benchExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: bench
spec:
  canary:
    cluster: canary
%[1]s
  baselines: [baseline-1, baseline-2]
  traffic:
    cloudflare:
      accountID: 023e105f4ecef8ad9ca31a8372d0c353
      poolID: 17b5962d775c646f3f9725cbc7a53df4
      origins: {canary: o1, baseline-1: o2, baseline-2: o3}
    steps:
%[2]s
  prometheus:
    address: http://prometheus:9090
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5..", cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      slowerThan: 250ms
`

// Step is one traffic step of a plan, in one-minute intervals.
type Step struct {
	Share   float64 `json:"share"`
	Hold    int     `json:"hold"`
	MinHold int     `json:"minHold"`
}

// Plan is the traffic plan a world runs at one scale, with how it was sized.
type Plan struct {
	Steps []Step `json:"steps"`
	// MaxDuration is the engine's default: twice the holds (intervals).
	MaxDuration int `json:"maxDuration"`
	// Forecast is, per judged KPI, analysis.ProofTime's P90 intervals to prove a healthy
	// canary non-inferior under the noise models learned from one history of the world
	// (0: not within the longest plan the bench allows); Limit the half-width the
	// offset's uncertainty alone leaves (≥ the tolerance: never).
	Forecast map[string]int     `json:"forecast"`
	Limit    map[string]float64 `json:"limit"`
	// Reachable is false when some KPI's forecast did not reach non-inferiority within
	// the longest plan: the plan is then the default one hour.
	Reachable bool `json:"reachable"`
}

// Holds is the total hold in intervals.
func (p Plan) Holds() int {
	n := 0
	for _, s := range p.Steps {
		n += s.Hold
	}
	return n
}

// String is the plan as people read it: 5% 10m → 20% 20m → 34% 1h30m (min 10m).
func (p Plan) String() string {
	var parts []string
	for _, s := range p.Steps {
		parts = append(parts, fmt.Sprintf("%.0f%% %s", 100*s.Share, experiments.Duration(time.Duration(s.Hold)*time.Minute)))
	}
	return strings.Join(parts, " → ")
}

// Plan shares and the early steps' holds; the final hold is sized per world and scale.
var (
	planShares = []float64{0.05, 0.20, 0.34}
	earlyHolds = []int{10, 20}
	minHold    = 10
	// defaultFinal is the final hold when the forecast says non-inferiority is out of
	// reach within maxFinal: a one-hour plan.
	defaultFinal = 30
	maxFinal     = 270 // a 5-hour plan at most
)

func (w *World) planSteps(final int) []Step {
	var out []Step
	for i, s := range planShares {
		hold := final
		if i < len(earlyHolds) {
			hold = earlyHolds[i]
		}
		out = append(out, Step{Share: s, Hold: hold, MinHold: min(minHold, hold)})
	}
	return out
}

// experiment loads the bench experiment for a world and plan through the experiments
// package, so that the engine's defaults and validation apply.
func (w *World) experiment(steps []Step) (*experiments.Experiment, error) {
	var st strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&st, "      - {weight: %g%%, hold: %dm, minHold: %dm}\n", 100*s.Share, s.Hold, s.MinHold)
	}
	apply := ""
	if w.DeclareApplied || w.AppliedBefore == 0 {
		// The variant went live AppliedBefore minutes before the ramp (0: as it starts).
		at := rampStart.Add(-time.Duration(w.AppliedBefore) * time.Minute)
		apply = fmt.Sprintf("    apply: {appliedAt: %s}", at.Format(time.RFC3339))
	}
	exps, err := experiments.Load("bench.yaml", fmt.Appendf(nil, benchExperiment, apply, strings.TrimRight(st.String(), "\n")), experiments.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench experiment for %s: %w", w.Name, err)
	}
	return exps[0], nil
}

// historyIntervals is the engine's history window in intervals (spec.analysis.history).
func historyIntervals(exp *experiments.Experiment) int {
	iv := exp.Spec.Analysis.Interval.Std()
	if iv <= 0 {
		return 0
	}
	return int(exp.Spec.Analysis.History.Std() / iv)
}

// plannedIntervals is what the engine passes to NewEvidence: the total hold in intervals.
func plannedIntervals(exp *experiments.Experiment) int {
	return int(exp.Spec.TotalHold() / exp.Spec.Analysis.Interval.Std())
}

// sizeSamples is how many histories the plan is forecast from; the median is used.
const sizeSamples = 3

// sizePlan sizes the final hold the way an operator would with `verdict check`: learn
// the noise models from a history of the world at this scale, forecast with
// analysis.ProofTime when each judged KPI of a healthy canary is proven non-inferior
// (P90) under the plan, and take the shortest final hold, in 10-minute steps, that
// covers every KPI's P90 — up to maxFinal; beyond it the default one-hour plan is run.
// The forecast moves a lot from one history to the next (a quiet night, a spurious
// variance), so it is made from sizeSamples histories and the median plan is used.
func (w *World) sizePlan(sc Scale, seed uint64) (Plan, error) {
	var plans []Plan
	for i := range sizeSamples {
		p, err := w.sizePlanOnce(sc, seed+uint64(i)*0x51ed27)
		if err != nil {
			return Plan{}, err
		}
		plans = append(plans, p)
	}
	slices.SortStableFunc(plans, func(a, b Plan) int {
		ka, kb := a.Holds(), b.Holds()
		if !a.Reachable {
			ka = math.MaxInt
		}
		if !b.Reachable {
			kb = math.MaxInt
		}
		return cmp.Compare(ka, kb)
	})
	return plans[sizeSamples/2], nil
}

func (w *World) sizePlanOnce(sc Scale, seed uint64) (Plan, error) {
	probe, err := w.experiment(w.planSteps(maxFinal))
	if err != nil {
		return Plan{}, err
	}
	hist := historyIntervals(probe)
	l := newLatent(w, sc, seed, hist, 1)
	ev, err := engine.NewEvidence(probe, plannedIntervals(probe))
	if err != nil {
		return Plan{}, err
	}
	d := newDrawer(l)
	orig := originalWeights()
	for t := l.histEnd - hist; t < l.histEnd; t++ {
		iv := d.draw(t, orig)
		ev.AddHistory(observations(&iv))
	}
	ev.Fit()
	judged := ev.Judged()
	noise := ev.Noise()
	aK := probe.Spec.Analysis.Alpha / float64(len(judged))
	forecast := func(final int) (Plan, int) {
		plan := Plan{Steps: w.planSteps(final), Forecast: map[string]int{}, Limit: map[string]float64{}, Reachable: true}
		var ps []analysis.ProofStep
		for _, s := range plan.Steps {
			ps = append(ps, analysis.ProofStep{Share: s.Share, Intervals: s.Hold})
		}
		total, need := plan.Holds(), 0
		for i, k := range judged {
			n := noise[i]
			plan.Forecast[k.Name] = 0
			if n.Model == nil {
				plan.Reachable = false
				continue
			}
			pr := analysis.ProofTime(n.Model.Analysis().ForHarm(k.Harm), math.Log1p(k.Tolerance), aK, n.Model.Kind == "gauge", 1.0/3, ps, total,
				analysis.RatioOptions{MinIntervals: probe.Spec.Analysis.MinIntervals}, total)
			plan.Limit[k.Name] = pr.Limit
			if pr.Reached {
				plan.Forecast[k.Name] = pr.P90
				need = max(need, pr.P90)
			} else {
				plan.Reachable = false
			}
		}
		return plan, need
	}
	plan, need := forecast(maxFinal)
	if plan.Reachable {
		early := 0
		for _, h := range earlyHolds {
			early += h
		}
		final := max(10, (need-early+9)/10*10)
		// The gauge's boundary is tightest at the planned intervals: forecast again with
		// the chosen plan, and lengthen it while that moves the P90 beyond it.
		for {
			p, n := forecast(final)
			if (p.Reachable && n <= p.Holds()) || final >= maxFinal {
				plan = p
				break
			}
			final += 10
		}
	}
	if !plan.Reachable {
		p, _ := forecast(defaultFinal)
		p.Reachable = false
		for k, v := range plan.Forecast {
			p.Forecast[k] = v
		}
		plan = p
	}
	plan.MaxDuration = experiments.DefaultMaxDurationPerHold * plan.Holds()
	return plan, nil
}

// originalWeights are the pool's weights before the experiment: three equal origins.
func originalWeights() [nClusters]float64 { return [nClusters]float64{1.0 / 3, 1.0 / 3, 1.0 / 3} }

// observations turns one interval into the engine's observations: what engine.Reduce
// makes of Prometheus' answers (ratio: events and total; latency: requests slower than
// slowerThan, count, sum and the buckets' CV²), with the configured weights.
func observations(iv *Interval) map[string]engine.Observation {
	errs := engine.Observation{Clusters: map[string]engine.ClusterValues{}, Weights: map[string]float64{}}
	lat := engine.Observation{Clusters: map[string]engine.ClusterValues{}, Weights: map[string]float64{}}
	for j, c := range clusterNames {
		errs.Clusters[c] = engine.ClusterValues{Events: iv.Errors[j], Total: iv.Requests[j]}
		cv := engine.ClusterValues{Events: iv.Slow[j], Total: iv.Requests[j]}
		if iv.Requests[j] > 0 {
			s, v := iv.Sum[j], iv.CV2[j]
			cv.Sum, cv.CV2 = &s, &v
		}
		lat.Clusters[c] = cv
		errs.Weights[c] = iv.Weights[j]
		lat.Weights[c] = iv.Weights[j]
	}
	return map[string]engine.Observation{"error-rate": errs, "latency": lat}
}
