package report

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
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
	// Experiment provides the KPIs and the analysis settings (alpha, minIntervals); its
	// canary and baselines are used unless Canary and Baselines are set.
	Experiment *experiments.Experiment
	// Canary overrides the experiment's canary cluster.
	Canary string
	// Baselines override the experiment's baselines.
	Baselines []string
	// From and To bound the window; both are aligned to Step (From up, To down).
	From, To time.Time
	// Step is the interval; default the experiment's analysis interval.
	Step time.Duration
	// PreFrom and PreTo optionally give a calibration window (difference-in-differences).
	PreFrom, PreTo time.Time
	// Prometheus names the source in the report (credentials redacted).
	Prometheus string
}

// Analyze queries every KPI of the request over the window (and the pre-period), with the
// engine's semantics (non-overlapping intervals, latency slow share at the largest bucket
// boundary at or below slowerThan, the mean as Δsum/Δcount, baselines pooled), and builds
// the same evidence a run report shows. Errors: ErrInvalidWindow (exit 2), ErrNoData
// (nothing to analyse), metrics.ErrUnreachable and other source errors as returned.
func Analyze(ctx context.Context, src Fetcher, req AnalyzeRequest) (*Report, error) {
	if req.Experiment == nil {
		return nil, fmt.Errorf("%w: no KPIs", ErrInvalidWindow)
	}
	exp := *req.Experiment
	if req.Canary != "" {
		exp.Spec.Canary = experiments.Canary{Cluster: req.Canary, Variant: exp.Spec.Canary.Variant}
	}
	if len(req.Baselines) > 0 {
		exp.Spec.Baselines = req.Baselines
	}
	if exp.Spec.Canary.Cluster == "" || len(exp.Spec.Baselines) == 0 {
		return nil, fmt.Errorf("%w: a canary and at least one baseline are needed", ErrInvalidWindow)
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
	queries, err := engine.MetricsKPIs(&exp)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidWindow, err)
	}
	r := &Report{SchemaVersion: SchemaVersion, Kind: KindAnalysis,
		Experiment: Experiment{Name: exp.Metadata.Name, Description: exp.Spec.Description, Variant: exp.Spec.Canary.Variant, Prometheus: req.Prometheus},
		Clusters:   Clusters{Canary: exp.Spec.Canary.Cluster, Baselines: append([]string{}, exp.Spec.Baselines...)},
		Window:     Window{From: rng.Start.UTC(), To: rng.End.UTC(), Step: experiments.Duration(step).String()},
		Decisions:  []Decision{}, Timeline: []Entry{}, Steps: []Step{}, Weights: []WeightPoint{}, Preconditions: []Precondition{}, Notes: []string{},
	}
	var obs []decoded
	if !req.PreFrom.IsZero() || !req.PreTo.IsZero() {
		pre, err := window(req.PreFrom, req.PreTo, step, "pre-")
		if err != nil {
			return nil, err
		}
		if pre.End.After(rng.Start) {
			return nil, fmt.Errorf("%w: the pre-period (to %s) must end before the window starts (%s)", ErrInvalidWindow, pre.End.Format(time.RFC3339), rng.Start.Format(time.RFC3339))
		}
		po, notes, err := fetchWindow(ctx, src, &exp, queries, pre, "pre")
		if err != nil && !errors.Is(err, ErrNoData) {
			return nil, fmt.Errorf("pre-period: %w", err)
		}
		if errors.Is(err, ErrNoData) {
			r.Notes = append(r.Notes, "The pre-period holds no data: the effect is not calibrated.")
		}
		obs = append(obs, po...)
		r.Notes = append(r.Notes, prefixed("pre-period: ", notes)...)
	}
	ro, notes, err := fetchWindow(ctx, src, &exp, queries, rng, "run")
	if err != nil {
		return nil, err
	}
	obs = append(obs, ro...)
	r.Notes = append(r.Notes, notes...)
	sort.SliceStable(obs, func(i, j int) bool { return obs[i].End.Before(obs[j].End) })
	build(evidence{exp: &exp, planned: max(rng.Len(), exp.Spec.Analysis.MinIntervals), obs: obs}, r)
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

// fetchWindow reads every KPI over rng and keeps, per interval, the observations the
// engine would have kept (canary and at least one baseline with data).
func fetchWindow(ctx context.Context, src Fetcher, exp *experiments.Experiment, queries []metrics.KPI, rng metrics.Range, phase string) ([]decoded, []string, error) {
	canary, baselines := exp.Spec.Canary.Cluster, exp.Spec.Baselines
	clusters := exp.Spec.Clusters()
	var out []decoded
	var notes []string
	for i, k := range exp.Spec.KPIs {
		data, err := src.Fetch(ctx, queries[i], rng, clusters)
		if errors.Is(err, metrics.ErrNoData) {
			notes = append(notes, fmt.Sprintf("KPI %s has no data in the window for any of %s.", k.Name, strings.Join(clusters, ", ")))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("KPI %s: %w", k.Name, err)
		}
		for _, w := range data.Warnings {
			notes = append(notes, fmt.Sprintf("KPI %s: Prometheus warned: %s", k.Name, w))
		}
		for _, c := range clusters {
			if cd := data.Clusters[c]; cd == nil || len(cd.Intervals) == 0 {
				notes = append(notes, fmt.Sprintf("KPI %s: no data for cluster %s.", k.Name, c))
			} else if len(cd.Missing) > 0 {
				notes = append(notes, fmt.Sprintf("KPI %s: cluster %s has no data for %d of %d intervals.", k.Name, c, len(cd.Missing), rng.Len()))
			}
		}
		for _, end := range rng.Ends() {
			o := engine.Observation{Clusters: map[string]engine.ClusterValues{}}
			for c, cd := range data.Clusters {
				if cd == nil {
					continue
				}
				for _, iv := range cd.Intervals {
					if iv.End.Equal(end) {
						if cv, ok := engine.Reduce(k, iv); ok {
							o.Clusters[c] = cv
						}
					}
				}
			}
			if _, ok := o.Clusters[canary]; !ok {
				continue
			}
			any := false
			for _, b := range baselines {
				_, ok := o.Clusters[b]
				any = any || ok
			}
			if !any {
				continue
			}
			d := decoded{o: o}
			d.KPI, d.Start, d.End, d.Phase = k.Name, end.Add(-rng.Interval), end, phase
			out = append(out, d)
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
