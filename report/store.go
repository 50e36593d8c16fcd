package report

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// Reader is the part of the store a report reads: a narrow seam so reports can be built
// from any store.Store implementation.
type Reader interface {
	Run(ctx context.Context, idOrName string) (*store.Run, error)
	Observations(ctx context.Context, runID string) ([]store.Observation, error)
	Decisions(ctx context.Context, runID string) ([]store.Decision, error)
	Events(ctx context.Context, runID string, afterSeq int64) ([]store.Event, error)
}

var _ Reader = store.Store(nil)

// FromStore builds the report of a run, named by its ID or by its experiment's name (the
// latest run). A run that is not in the store gives an error matching store.ErrNotFound.
// The run may still be going: the report then shows it as it stands.
func FromStore(ctx context.Context, st Reader, idOrName string) (*Report, error) {
	run, err := st.Run(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	var exp experiments.Experiment
	if err := json.Unmarshal(run.Spec, &exp); err != nil {
		return nil, fmt.Errorf("run %s: stored experiment: %w", run.ID, err)
	}
	obs, err := st.Observations(ctx, run.ID)
	if err != nil {
		return nil, fmt.Errorf("run %s: observations: %w", run.ID, err)
	}
	decs, err := st.Decisions(ctx, run.ID)
	if err != nil {
		return nil, fmt.Errorf("run %s: decisions: %w", run.ID, err)
	}
	evs, err := st.Events(ctx, run.ID, 0)
	if err != nil {
		return nil, fmt.Errorf("run %s: events: %w", run.ID, err)
	}
	r, err := fromRun(run, &exp, obs, decs, evs)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", run.ID, err)
	}
	return r, nil
}

// plannedIntervals is where a run's gauge boundaries are tightest: its plan's total hold
// in intervals, as the engine sets it for the run.
func plannedIntervals(exp *experiments.Experiment) int {
	if iv := exp.Spec.Analysis.Interval.Std(); iv > 0 {
		return int(exp.Spec.TotalHold() / iv)
	}
	return 0
}

func fromRun(run *store.Run, exp *experiments.Experiment, obs []store.Observation, decs []store.Decision, evs []store.Event) (*Report, error) {
	r := &Report{SchemaVersion: SchemaVersion, Kind: KindRun,
		Experiment: Experiment{Name: exp.Metadata.Name, Description: exp.Spec.Description, Variant: exp.Spec.Canary.Variant,
			RunID: run.ID, State: string(run.State), EndedBy: run.EndedBy, Started: run.CreatedAt.UTC(), Ended: run.EndedAt.UTC()},
		Clusters:  Clusters{Canary: exp.Spec.Canary.Cluster, Baselines: append([]string{}, exp.Spec.Baselines...)},
		Window:    Window{Step: exp.Spec.Analysis.Interval.String()},
		Decisions: []Decision{}, Timeline: []Entry{}, Steps: []Step{}, Weights: []WeightPoint{}, Preconditions: []Precondition{}, Notes: []string{},
	}
	if run.EndedAt.IsZero() {
		r.Experiment.Ended = time.Time{}
		r.Verdict = "running"
		r.Reason = fmt.Sprintf("the run is still %s (step %d)", run.State, run.Step)
	} else {
		r.Verdict, r.Reason = run.Verdict, run.Reason
		r.Experiment.Duration = run.EndedAt.Sub(run.CreatedAt).Seconds()
	}
	for _, d := range obs {
		if d.Phase != engine.PhaseRun {
			continue
		}
		if r.Window.From.IsZero() || d.Start.Before(r.Window.From) {
			r.Window.From = d.Start.UTC()
		}
		if d.End.After(r.Window.To) {
			r.Window.To = d.End.UTC()
		}
	}

	for _, d := range decs {
		r.Decisions = append(r.Decisions, Decision{At: d.At.UTC(), Step: d.Step, Action: d.Action, Reason: d.Reason})
	}
	if err := build(evidence{exp: exp, planned: plannedIntervals(exp), obs: obs, decisions: decs, weighted: true}, r); err != nil {
		return nil, err
	}
	timeline(r, run, exp, evs)
	if isDrill(exp) {
		drillKPIs(r, exp, decs)
	}
	for _, k := range r.KPIs {
		if k.Canary.N == 0 && k.Status != StatusNotJudged {
			r.Notes = append(r.Notes, fmt.Sprintf("%s has no canary data in the run.", k.Name))
		}
	}
	return r, nil
}

// timeline reads the events into the timeline, steps, weights and preconditions.
func timeline(r *Report, run *store.Run, exp *experiments.Experiment, evs []store.Event) {
	clusterOf := map[string]string{}
	for c, o := range exp.Spec.Traffic.Origins() {
		clusterOf[o] = c
	}
	origins := exp.Spec.Traffic.Origins()
	shares := func(w store.Weights) map[string]float64 {
		out := map[string]float64{}
		total := 0.0
		for _, c := range exp.Spec.Clusters() {
			total += w[origins[c]]
		}
		for _, c := range exp.Spec.Clusters() {
			if total > 0 {
				out[c] = round(w[origins[c]]/total, 1e-9)
			}
		}
		return out
	}
	pcs := map[string]*Precondition{}
	var pcOrder []string
	var weightsStarted bool
	for _, ev := range evs {
		at := ev.At.UTC()
		if ev.Type != engine.EventDecision {
			r.Timeline = append(r.Timeline, Entry{At: at, Type: ev.Type, Message: ev.Message})
		}
		switch ev.Type {
		case engine.EventWeightsConfirmed:
			var in store.Intent
			if json.Unmarshal(ev.Data, &in) != nil {
				continue
			}
			if !weightsStarted && len(in.Expect) > 0 {
				r.Weights = append(r.Weights, WeightPoint{At: run.CreatedAt.UTC(), Why: "before the experiment", Shares: shares(in.Expect)})
			}
			weightsStarted = true
			why := strings.ReplaceAll(in.Purpose, "step:", "step ")
			r.Weights = append(r.Weights, WeightPoint{At: at, Why: why, Shares: shares(in.Want)})
			if n, ok := strings.CutPrefix(in.Purpose, "step:"); ok {
				step, _ := strconv.Atoi(n)
				if len(r.Steps) > 0 && r.Steps[len(r.Steps)-1].End.IsZero() {
					r.Steps[len(r.Steps)-1].End = at
				}
				s := Step{Step: step, Start: at}
				if step >= 1 && step <= len(exp.Spec.Traffic.Steps) {
					s.Weight = float64(exp.Spec.Traffic.Steps[step-1].Weight)
					s.Hold = exp.Spec.Traffic.Steps[step-1].Hold.String()
				}
				r.Steps = append(r.Steps, s)
			}
		case engine.EventDrift:
			// The pool held other weights from here until the next confirmed write: the
			// chart shows where the traffic went, not where the run meant it to go.
			d, err := engine.DecodeEventData[engine.DriftData](ev.Data)
			if err != nil || len(d.Actual) == 0 {
				continue
			}
			r.Weights = append(r.Weights, WeightPoint{At: at, Why: "pool changed outside Verdict", Shares: shares(d.Actual)})
		case engine.EventSourceSynced:
			d, err := engine.DecodeEventData[engine.SourceSyncData](ev.Data)
			if err != nil {
				continue
			}
			r.SourceOfTruth = &SourceSync{Source: d.Source, Ending: d.Ending, Changes: d.Changes, Written: d.Written, Branch: d.Branch, Commit: d.Commit,
				Base: d.Base, PullRequest: d.PullRequest, UpToDate: d.UpToDate, Error: d.Error, Summary: d.Summary()}
		case engine.EventPrecondition:
			var d struct {
				Name   string   `json:"name"`
				Value  *float64 `json:"value"`
				Expect string   `json:"expect"`
				OK     bool     `json:"ok"`
			}
			if json.Unmarshal(ev.Data, &d) != nil {
				continue
			}
			p := pcs[d.Name]
			if p == nil {
				p = &Precondition{Name: d.Name, Expect: d.Expect}
				pcs[d.Name] = p
				pcOrder = append(pcOrder, d.Name)
			}
			p.Checks++
			if !d.OK {
				p.Failures++
			}
			p.Last = d.Value
		case engine.EventStateChanged, engine.EventRunEnded:
			var d struct {
				State string `json:"state"`
				To    string `json:"to"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			if (d.To == string(store.StateRollingBack) || d.To == string(store.StatePromoting) || ev.Type == engine.EventRunEnded) &&
				len(r.Steps) > 0 && r.Steps[len(r.Steps)-1].End.IsZero() {
				r.Steps[len(r.Steps)-1].End = at
			}
		}
	}
	if len(r.Steps) > 0 && r.Steps[len(r.Steps)-1].End.IsZero() && !run.EndedAt.IsZero() {
		r.Steps[len(r.Steps)-1].End = run.EndedAt.UTC()
	}
	for i := range r.Steps {
		n := 0
		for _, k := range r.KPIs {
			if k.Status == StatusNotJudged {
				continue
			}
			for _, p := range k.Series {
				if p.Phase == "run" && p.Step == r.Steps[i].Step {
					n++
				}
			}
			break
		}
		r.Steps[i].Intervals = n
	}
	for _, n := range pcOrder {
		r.Preconditions = append(r.Preconditions, *pcs[n])
	}
	sort.SliceStable(r.Timeline, func(i, j int) bool { return r.Timeline[i].At.Before(r.Timeline[j].At) })
}
