package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// ObservationVersion is the version of the stored observation schema (the JSON of
// store.Observation.Values). Version 2 added a latency KPI's per-request variance (cv2);
// observations without a version are version 1 and read the same way.
const ObservationVersion = 2

// Observation phases as stored.
const (
	PhaseHistory = "pre" // before the variant: learns the noise model and the offset
	PhaseRun     = "run"
)

// Evidence is the one evidence model of an experiment: it turns an interval's fetched data
// into stored Observations, feeds them to each KPI's sequences and to the traffic-share
// check with one selection rule, and rebuilds exactly the same state from stored
// observations. Live runs, resumed runs, forecasts, reports and verdict analyze all go
// through it, so they cannot disagree about the same intervals.
//
// History observations (before the variant) are collected first; at the first live
// interval each KPI learns its noise model from them (analysis.LearnRatioNoise,
// LearnGaugeNoise) and its live sequences start from that model. With too little history
// the sequences fall back to estimating the noise from the run itself, after
// analysis.minIntervals.
type Evidence struct {
	exp     *experiments.Experiment
	kpis    []*kpiState
	share   *analysis.ShareCheck
	fitted  bool
	history int // history intervals added (all KPIs)
}

// NewEvidence builds the empty evidence of exp; plannedIntervals is where gauge boundaries
// are tightest (the plan's total hold in intervals).
func NewEvidence(exp *experiments.Experiment, plannedIntervals int) (*Evidence, error) {
	kpis, err := newKPIStates(exp, max(plannedIntervals, exp.Spec.Analysis.MinIntervals))
	if err != nil {
		return nil, err
	}
	return &Evidence{exp: exp, kpis: kpis, share: analysis.NewShareCheckTolerance(float64(exp.Spec.Analysis.ShareTolerance), exp.Spec.Analysis.Alpha)}, nil
}

// Queries are the KPI queries to fetch, in spec order (Observe takes their data in the same order).
func (e *Evidence) Queries() []metrics.KPI {
	out := make([]metrics.KPI, len(e.kpis))
	for i, k := range e.kpis {
		out[i] = k.query
	}
	return out
}

// Observe reduces one interval of fetched data (one Data per KPI, in Queries order) to the
// Observations to store and feed, by KPI name; missing names the KPIs whose canary or every
// baseline had no data.
func (e *Evidence) Observe(data []*metrics.Data, end time.Time) (obs map[string]Observation, missing []string) {
	canary, baselines := e.exp.Spec.Canary.Cluster, e.exp.Spec.Baselines
	obs = map[string]Observation{}
	for i, k := range e.kpis {
		if i >= len(data) || data[i] == nil {
			missing = append(missing, k.spec.Name)
			continue
		}
		o, ok := k.observe(data[i], end, canary, baselines)
		if !ok {
			missing = append(missing, k.spec.Name)
			continue
		}
		o.Version = ObservationVersion
		obs[k.spec.Name] = o
	}
	return obs, missing
}

// AddHistory adds one interval of history (same code, before the variant).
func (e *Evidence) AddHistory(obs map[string]Observation) {
	if e.fitted {
		return // history after the first live interval would change the past
	}
	canary, baselines := e.exp.Spec.Canary.Cluster, e.exp.Spec.Baselines
	for _, k := range e.kpis {
		if o, ok := obs[k.spec.Name]; ok {
			k.add(o, canary, baselines, true)
			e.history++
		}
	}
}

// HistoryIntervals is the number of KPI history intervals added.
func (e *Evidence) HistoryIntervals() int { return e.history }

// Fit learns every KPI's noise model from the history added so far and starts the live
// sequences from it. AddInterval calls it once; calling it earlier lets a caller show the
// models before the first live interval.
func (e *Evidence) Fit() {
	if e.fitted {
		return
	}
	e.fitted = true
	for _, k := range e.kpis {
		k.fit()
	}
}

// AddInterval adds one live interval: the Observations of every KPI that had data. The
// traffic-share check reads one of them, chosen by shareSource.
func (e *Evidence) AddInterval(obs map[string]Observation, end time.Time) {
	e.Fit()
	canary, baselines := e.exp.Spec.Canary.Cluster, e.exp.Spec.Baselines
	for _, k := range e.kpis {
		if o, ok := obs[k.spec.Name]; ok {
			k.add(o, canary, baselines, false)
			k.lastEnd = end
		}
	}
	if _, counts, weights, ok := e.ShareInput(obs); ok {
		_ = e.share.Add(counts, weights) // invalid input (all-zero weights) is skipped by design
	}
}

// shareSource is the one rule for which KPI's request counts feed the share check: the
// first throughput KPI in spec order with data, else the first ratio or latency KPI in
// spec order with data (their totals are request counts).
func (e *Evidence) shareSource(obs map[string]Observation) (*kpiState, Observation) {
	for _, types := range [][]string{{experiments.KPIThroughput}, {experiments.KPIRatio, experiments.KPILatency}} {
		for _, k := range e.kpis {
			if !slices.Contains(types, k.spec.Type) {
				continue
			}
			if o, ok := obs[k.spec.Name]; ok {
				return k, o
			}
		}
	}
	return nil, Observation{}
}

// Replay rebuilds the evidence from stored observations, in their stored order (end time,
// then KPI name): history first, then live intervals grouped by end. It returns the end of
// the last live interval that had every KPI.
func (e *Evidence) Replay(stored []store.Observation) (lastComplete time.Time, err error) {
	return e.ReplayEach(stored, nil)
}

// ReplayEach is Replay calling each (when not nil) after every live interval, with the
// interval's end and step: reports draw the sequences' paths with it.
func (e *Evidence) ReplayEach(stored []store.Observation, each func(end time.Time, step int)) (lastComplete time.Time, err error) {
	var cur time.Time
	var step int
	var phase string
	batch := map[string]Observation{}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if phase == PhaseRun {
			e.AddInterval(batch, cur)
			if len(batch) == len(e.kpis) {
				lastComplete = cur
			}
			if each != nil {
				each(cur, step)
			}
		} else {
			e.AddHistory(batch)
		}
		batch = map[string]Observation{}
	}
	for _, so := range stored {
		if !so.End.Equal(cur) || so.Phase != phase {
			flush()
			cur, phase, step = so.End, so.Phase, so.Step
		}
		var o Observation
		if err := json.Unmarshal(so.Values, &o); err != nil {
			return lastComplete, fmt.Errorf("observation %s at %s: %w", so.KPI, so.End, err)
		}
		batch[so.KPI] = o
	}
	flush()
	return lastComplete, nil
}

// Judged are the KPIs as the decision sees them, in spec order (a latency KPI may be two).
func (e *Evidence) Judged() []analysis.KPI {
	var ks []analysis.KPI
	for _, k := range e.kpis {
		ks = append(ks, k.judged()...)
	}
	return ks
}

// Share is the traffic-share check at α.
func (e *Evidence) Share(alpha float64) analysis.ShareResult { return e.share.Result(alpha) }

// KPINoise is one judged KPI's learned noise, for check, live views and reports.
type KPINoise struct {
	KPI   string      `json:"kpi"`
	Model *NoiseModel `json:"model,omitempty"`
	// HistoryIntervals is how many history intervals the KPI had, model or not.
	HistoryIntervals int `json:"historyIntervals"`
	// Fallback says why no model is used, when none is.
	Fallback string `json:"fallback,omitempty"`
}

// Noise reports each judged KPI's noise model (after Fit).
func (e *Evidence) Noise() []KPINoise {
	var out []KPINoise
	for _, k := range e.kpis {
		for _, n := range k.noise() {
			out = append(out, n)
		}
	}
	return out
}

// LatestValues are each KPI's latest canary and baseline values, for live views.
func (e *Evidence) LatestValues() []KPIValue {
	var out []KPIValue
	for _, k := range e.kpis {
		out = append(out, KPIValue{KPI: k.spec.Name, Canary: finiteOr0(k.lastCanary), Baseline: finiteOr0(k.lastBaseline)})
		if k.spec.Type == experiments.KPILatency && k.ratio != nil {
			// The slow share is judged on its own: show its values under its judged name.
			out = append(out, KPIValue{KPI: k.slowName(), Canary: finiteOr0(k.lastSlowC), Baseline: finiteOr0(k.lastSlowB)})
		}
	}
	return out
}

// Position is where a run is when it decides.
type Position struct {
	// Step is the current step, from 1.
	Step int
	// StepElapsed is the complete-data time spent in the step; Elapsed is the time since
	// the ramp started (maxDuration counts it).
	StepElapsed, Elapsed time.Duration
}

// Decide is the engine's decision at p: every judged KPI and the share check, with the
// step's hold, minimum hold and the experiment's maxDuration. Runs, forecasts and the
// bench decide through it.
func (e *Evidence) Decide(p Position) analysis.Decision {
	a := &e.exp.Spec.Analysis
	// A migration's cut-over (a final step of 100%) is not judged: the step before it is
	// the final one, and its promotion writes the cut-over.
	steps := e.exp.Spec.Traffic.Steps[:max(1, e.exp.Spec.Traffic.JudgedSteps())]
	st := steps[min(max(p.Step, 1), len(steps))-1]
	share := e.Share(a.Alpha)
	minHold := st.MinHold.Std()
	return analysis.Decide(e.Judged(), analysis.Step{
		Alpha:              a.Alpha,
		HoldComplete:       p.StepElapsed >= st.Hold.Std(),
		MinHoldComplete:    minHold > 0 && p.StepElapsed >= minHold,
		Final:              p.Step >= len(steps),
		MaxDurationReached: p.Elapsed >= a.MaxDuration.Std(),
		OnInconclusive:     onInconclusive(a),
		Share:              &share,
	})
}
