package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// ErrInvalidWindow marks an analysis request that is wrong before any query is sent (from
// not before to, a window shorter than one step, no canary); the CLI exits 2 on it.
var ErrInvalidWindow = errors.New("invalid analysis window")

// ErrNoData means the window holds no usable data for the canary and a baseline in any KPI:
// there is nothing to report. It wraps metrics.ErrNoData.
var ErrNoData = fmt.Errorf("no data in the window: %w", metrics.ErrNoData)

// Fetcher is what Analyze needs from a KPI source; *metrics.Source implements it.
type Fetcher interface {
	Fetch(ctx context.Context, kpi metrics.KPI, r metrics.Range, clusters []string) (*metrics.Data, error)
}

var _ Fetcher = (*metrics.Source)(nil)

// AnalyzeRequest asks for the evidence about any past window, without moving traffic: for
// example two clusters that already differ.
type AnalyzeRequest struct {
	// Experiment provides the KPIs and the analysis settings (alpha, minIntervals, history,
	// the plan whose total hold sets the gauge boundaries); its canary and baselines are
	// used unless Canary and Baselines are set.
	Experiment *experiments.Experiment
	// Canary overrides the experiment's canary cluster.
	Canary string
	// Baselines override the experiment's baselines.
	Baselines []string
	// From and To bound the window; both are aligned to Step (From up, To down).
	From, To time.Time
	// Step is the interval; default the experiment's analysis interval.
	Step time.Duration
	// PreFrom and PreTo optionally give the history window explicitly; by default it is
	// the experiment's analysis.history just before From, as a run reads the history just
	// before its ramp.
	PreFrom, PreTo time.Time
	// Prometheus names the source in the report (credentials redacted).
	Prometheus string
	// PlanFromWindow takes the window's length as the plan's, where the gauge sequences'
	// boundaries are tightest, for KPIs that come without a plan of their own (verdict
	// analyze --kpi). Otherwise the experiment's total hold is used, as a run uses it.
	PlanFromWindow bool
}

// Analyze reads a past window exactly as a live run reads its intervals, through the
// engine's evidence model (engine.Evidence): the history before the window (the
// experiment's analysis.history, or PreFrom–PreTo) is the baseline each KPI learns its
// noise model and the canary's offset from, and the window's own intervals are the live
// phase, judged by the engine's sequences at the experiment's α. It builds the same
// evidence a run report shows; the traffic-share check is not run (no weights are known).
// Errors: ErrInvalidWindow (exit 2), ErrNoData (nothing to analyse), metrics.ErrUnreachable
// and other source errors as returned.
func Analyze(ctx context.Context, src Fetcher, req AnalyzeRequest) (*Report, error) {
	if req.Experiment == nil {
		return nil, fmt.Errorf("%w: no KPIs", ErrInvalidWindow)
	}
	exp := *req.Experiment
	if req.Canary != "" {
		exp.Spec.Canary.Cluster = req.Canary
	}
	if len(req.Baselines) > 0 {
		exp.Spec.Baselines = req.Baselines
	}
	if exp.Spec.Canary.Cluster == "" || len(exp.Spec.Baselines) == 0 {
		return nil, fmt.Errorf("%w: a canary and at least one baseline are needed", ErrInvalidWindow)
	}
	if len(exp.Spec.Traffic.Steps) == 0 {
		return nil, fmt.Errorf("%w: the experiment has no steps", ErrInvalidWindow)
	}
	step := req.Step
	if step <= 0 {
		step = exp.Spec.Analysis.Interval.Std()
	}
	if step <= 0 {
		step = experiments.DefaultInterval
	}
	rng, err := window(req.From, req.To, step, "")
	if err != nil {
		return nil, err
	}
	// The queries' {{.Interval}} must be the step, or increase(x[I]) at step S would count
	// overlapping (I > S) or partial (I < S) intervals.
	exp.Spec.Analysis.Interval = experiments.Duration(step)
	planned := plannedIntervals(&exp)
	if req.PlanFromWindow {
		planned = rng.Len()
	}
	r := &Report{SchemaVersion: SchemaVersion, Kind: KindAnalysis,
		Experiment: Experiment{Name: exp.Metadata.Name, Description: exp.Spec.Description, Variant: exp.Spec.Canary.Variant, Prometheus: req.Prometheus},
		Clusters:   Clusters{Canary: exp.Spec.Canary.Cluster, Baselines: append([]string{}, exp.Spec.Baselines...)},
		Window:     Window{From: rng.Start.UTC(), To: rng.End.UTC(), Step: experiments.Duration(step).String()},
		Decisions:  []Decision{}, Timeline: []Entry{}, Steps: []Step{}, Weights: []WeightPoint{}, Preconditions: []Precondition{}, Notes: []string{},
	}

	// The history window: explicit, or analysis.history before the window, ending where a
	// run's would (at the window's start, or earlier at a declared appliedAt).
	var hist *metrics.Range
	switch {
	case !req.PreFrom.IsZero() || !req.PreTo.IsZero():
		h, err := window(req.PreFrom, req.PreTo, step, "pre-")
		if err != nil {
			return nil, err
		}
		if h.End.After(rng.Start) {
			return nil, fmt.Errorf("%w: the history window (to %s) must end before the window starts (%s)", ErrInvalidWindow, h.End.Format(time.RFC3339), rng.Start.Format(time.RFC3339))
		}
		hist = &h
		if !exp.Spec.Canary.Apply.Declared() {
			// An explicit history window is declared to be before the change: its offset is
			// subtracted (difference-in-differences), as for a run with apply.appliedAt.
			at := rng.Start
			exp.Spec.Canary.Apply = &experiments.Apply{AppliedAt: &at}
		}
	default:
		end := rng.Start
		if a := exp.Spec.Canary.Apply; a != nil && a.AppliedAt != nil && a.AppliedAt.Before(end) {
			end = a.AppliedAt.Truncate(step)
		}
		if n := int(exp.Spec.Analysis.History.Std() / step); n >= 1 {
			h := metrics.AlignedRange(end, step, n)
			hist = &h
		}
	}
	ev, err := engine.NewEvidence(&exp, planned)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidWindow, err)
	}
	var obs []store.Observation
	if hist == nil {
		r.Notes = append(r.Notes, "No history window (analysis.history is 0): the noise is estimated from the window itself.")
	} else {
		ho, notes, err := readWindow(ctx, src, ev, &exp, *hist, engine.PhaseHistory)
		if err != nil && !errors.Is(err, ErrNoData) {
			return nil, fmt.Errorf("history: %w", err)
		}
		if errors.Is(err, ErrNoData) {
			r.Notes = append(r.Notes, fmt.Sprintf("The history window %s → %s holds no data: no noise model or offset was learned, and the noise is estimated from the window itself.",
				fmtTime(hist.Start), fmtTime(hist.End)))
		}
		obs = append(obs, ho...)
		r.Notes = append(r.Notes, prefixed("history: ", notes)...)
	}
	ro, notes, err := readWindow(ctx, src, ev, &exp, rng, engine.PhaseRun)
	if err != nil {
		return nil, err
	}
	obs = append(obs, ro...)
	r.Notes = append(r.Notes, notes...)
	if err := build(evidence{exp: &exp, planned: planned, obs: obs}, r); err != nil {
		return nil, err
	}
	r.Verdict, r.Reason = overall(r.KPIs)
	return r, nil
}

func prefixed(p string, s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = p + x
	}
	return out
}

// window aligns [from, to] to whole steps.
func window(from, to time.Time, step time.Duration, what string) (metrics.Range, error) {
	if from.IsZero() || to.IsZero() {
		return metrics.Range{}, fmt.Errorf("%w: --%sfrom and --%sto are both needed", ErrInvalidWindow, what, what)
	}
	if !from.Before(to) {
		return metrics.Range{}, fmt.Errorf("%w: --%sfrom %s is not before --%sto %s", ErrInvalidWindow, what, from.UTC().Format(time.RFC3339), what, to.UTC().Format(time.RFC3339))
	}
	start := from.Truncate(step)
	if start.Before(from) {
		start = start.Add(step)
	}
	n := int(to.Truncate(step).Sub(start) / step)
	if n < 1 {
		return metrics.Range{}, fmt.Errorf("%w: %s to %s holds no whole %s interval", ErrInvalidWindow, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), experiments.Duration(step))
	}
	return metrics.AlignedRange(to, step, n), nil
}

// readWindow reads every KPI over rng and turns each interval into the observations a run
// would store for it (engine.Evidence.Observe: the canary and at least one baseline with
// data), in the store's order.
func readWindow(ctx context.Context, src Fetcher, ev *engine.Evidence, exp *experiments.Experiment, rng metrics.Range, phase string) ([]store.Observation, []string, error) {
	clusters := exp.Spec.Clusters()
	queries := ev.Queries()
	data := make([]*metrics.Data, len(queries))
	var notes []string
	for i, q := range queries {
		d, err := src.Fetch(ctx, q, rng, clusters)
		if errors.Is(err, metrics.ErrNoData) {
			notes = append(notes, fmt.Sprintf("KPI %s has no data in the window for any of %s.", q.Name, strings.Join(clusters, ", ")))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("KPI %s: %w", q.Name, err)
		}
		data[i] = d
		for _, w := range d.Warnings {
			notes = append(notes, fmt.Sprintf("KPI %s: Prometheus warned: %s", q.Name, w))
		}
		for _, c := range clusters {
			if cd := d.Clusters[c]; cd == nil || len(cd.Intervals) == 0 {
				notes = append(notes, fmt.Sprintf("KPI %s: no data for cluster %s.", q.Name, c))
			} else if len(cd.Missing) > 0 {
				notes = append(notes, fmt.Sprintf("KPI %s: cluster %s has no data for %d of %d intervals.", q.Name, c, len(cd.Missing), rng.Len()))
			}
		}
	}
	var out []store.Observation
	for _, end := range rng.Ends() {
		got, _ := ev.Observe(data, end)
		names := make([]string, 0, len(got))
		for name := range got {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			b, err := json.Marshal(got[name])
			if err != nil {
				return nil, nil, fmt.Errorf("KPI %s at %s: %w", name, end.Format(time.RFC3339), err)
			}
			out = append(out, store.Observation{KPI: name, Start: end.Add(-rng.Interval), End: end, Phase: phase, Values: b})
		}
	}
	if len(out) == 0 {
		return nil, notes, ErrNoData
	}
	return out, notes, nil
}

// overall sums up an analysis: harm if any KPI shows harm, non-inferior if every judged
// KPI is, no data if none has data, inconclusive otherwise.
func overall(ks []KPI) (string, string) {
	var harm, nodata, pending, ok []string
	for _, k := range ks {
		switch k.Status {
		case string(analysis.Harm):
			harm = append(harm, k.StatusReason)
		case string(analysis.NoData):
			nodata = append(nodata, k.Name)
		case string(analysis.Inconclusive):
			pending = append(pending, k.Name)
		case string(analysis.NonInferior):
			ok = append(ok, k.Name)
		}
	}
	switch {
	case len(harm) > 0:
		return string(analysis.Harm), "The canary is worse: " + strings.Join(harm, "; ") + "."
	case len(ok) == 0 && len(pending) == 0:
		return string(analysis.NoData), "No KPI has usable data in the window."
	case len(pending) == 0 && len(nodata) == 0:
		return string(analysis.NonInferior), "Every KPI is within its tolerance: " + strings.Join(ok, ", ") + "."
	default:
		why := []string{}
		if len(pending) > 0 {
			why = append(why, strings.Join(pending, ", ")+" inconclusive")
		}
		if len(nodata) > 0 {
			why = append(why, strings.Join(nodata, ", ")+" without data")
		}
		return string(analysis.Inconclusive), "No harm shown, but not every KPI is within its tolerance: " + strings.Join(why, "; ") + "."
	}
}
