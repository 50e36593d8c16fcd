package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// A drill is a practice drain, after AWS zonal autoshift's practice runs: checks (allowed
// window, blocked date, blocking alarms, pool claim, origin health, a before window with
// data) → drain (the drained cluster's origin to 0, the survivors keep their proportions
// and the total) → hold, judged every interval (outcome alarms, guardrails, and each
// survivor's KPIs against its own window just before the drain) → restore the weights it
// found. It runs on the experiment machinery: the drill's experiment (Drill.Experiment)
// has the drained cluster as canary with one step at weight 0, so the write-ahead intent,
// read-back, reconciliation after a crash, claims, drift and endings are the experiment
// run's own. Its states are the run's: Preflight for the checks, Ramping for the hold,
// RollingBack for the restore.

// Drill verdicts. A failed drill ends RolledBack with VerdictFailed (restored early); a
// passed one ends Promoted (the hypothesis held) after its restore; a blocked one ends
// Failed with nothing changed.
const (
	VerdictDrillPassed  = "passed"
	VerdictDrillBlocked = "blocked"
)

// DrillRun is one run of a drill.
type DrillRun struct {
	r     *Run
	drill *experiments.Drill // nil when resumed without the drill's file: restore only
	drain string
	// before caches the survivors' KPI data for the window before the drain, which does
	// not change once read.
	before []*metrics.Data
	judged int // intervals judged at the last recorded decision
	last   *DrillEvaluation
}

// DrillKPI is one survivor's KPI compared between the hold and its own window before it.
type DrillKPI struct {
	Cluster string `json:"cluster"`
	KPIVerdict
	// GuardrailOnly: from spec.guardrails, judged by its absolute limit only.
	GuardrailOnly bool `json:"guardrailOnly,omitempty"`
}

// DrillEvaluation is the drill's evidence at one moment: stored as a decision's details.
type DrillEvaluation struct {
	Kind    string    `json:"kind"` // "drill"
	Drain   string    `json:"drain"`
	Through time.Time `json:"through,omitzero"` // end of the last judged interval
	// Intervals judged so far, of Planned in the hold.
	Intervals int        `json:"intervals"`
	Planned   int        `json:"planned"`
	KPIs      []DrillKPI `json:"kpis"`
	Alarms    []string   `json:"alarms,omitempty"` // outcome alarms firing now
	Harm      []string   `json:"harm,omitempty"`
	NoData    []string   `json:"noData,omitempty"`
}

// DrillKind is the Kind of a decision's details written by a drill.
const DrillKind = "drill"

// IsDrill reports whether a stored run is a drill's, and which cluster it drains.
func IsDrill(rec *store.Run) (drain string, ok bool) {
	var head struct {
		Kind     string               `json:"kind"`
		Metadata experiments.Metadata `json:"metadata"`
	}
	if json.Unmarshal(rec.Spec, &head) != nil || head.Kind != experiments.KindDrill {
		return "", false
	}
	return head.Metadata.Labels[experiments.DrillDrainLabel], true
}

// NextDrain is the cluster the next run of d drains: spec.drain in turn, counting the
// drill's earlier runs that drained a cluster (blocked ones changed nothing).
func NextDrain(ctx context.Context, st store.Store, d *experiments.Drill) (string, error) {
	runs, err := st.ListRuns(ctx, store.ListOptions{Experiment: d.Metadata.Name})
	if err != nil {
		return "", fmt.Errorf("list the earlier runs of %s: %w", d.Metadata.Name, err)
	}
	n := 0
	for _, r := range runs {
		if _, ok := IsDrill(r); ok && r.Verdict != VerdictDrillBlocked {
			n++
		}
	}
	return d.DrainAt(n), nil
}

// StartDrill records a new run of the drill d draining the cluster drain; nothing is
// changed until the first Step.
func (e *Engine) StartDrill(ctx context.Context, d *experiments.Drill, drain, specFile string, now time.Time) (*DrillRun, error) {
	if !slices.Contains(d.Spec.Clusters, drain) {
		return nil, fmt.Errorf("drill %s: %q is not one of its clusters (%s)", d.Metadata.Name, drain, strings.Join(d.Spec.Clusters, ", "))
	}
	exp := d.Experiment(drain)
	rec := &store.Run{
		ID: NewRunID(d.Metadata.Name, now), Experiment: d.Metadata.Name, Spec: mustJSON(exp), SpecFile: specFile,
		Pool: poolRef(exp).String(), State: store.StatePending, CreatedAt: now,
	}
	r, err := e.newRun(exp, rec)
	if err != nil {
		return nil, err
	}
	survivors := d.Survivors(drain)
	ev := r.event(EventRunStarted, now, fmt.Sprintf("drill %s of %s started by %s: drain %s for %s, %s take its traffic", rec.ID, d.Metadata.Name, e.opts.Who, drain, d.Spec.Hold, strings.Join(survivors, ", ")), map[string]any{
		"experiment": d.Metadata.Name, "kind": experiments.KindDrill, "drain": drain, "survivors": survivors, "hold": d.Spec.Hold,
		"canary": drain, "baselines": survivors,
	})
	if err := e.opts.Store.CreateRun(ctx, rec, ev); err != nil {
		return nil, err
	}
	r.emit(ev)
	r.notify(ctx, "start", fmt.Sprintf("Drill %s started: draining %s for %s", d.Metadata.Name, drain, d.Spec.Hold))
	return &DrillRun{r: r, drill: d, drain: drain}, nil
}

// ResumeDrill reloads an unfinished drill run. d is the drill as loaded from its file now;
// it must be the drill the run started with. With d nil the run can only be restored: a
// drained pool is restored at the next Step, a drill not yet drained ends unchanged.
func (e *Engine) ResumeDrill(ctx context.Context, runID string, d *experiments.Drill) (*DrillRun, error) {
	rec, err := e.opts.Store.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	drain, ok := IsDrill(rec)
	if !ok {
		return nil, fmt.Errorf("resume %s: not a drill run (resume it with verdict run)", rec.ID)
	}
	exp := &experiments.Experiment{}
	if d != nil {
		exp = d.Experiment(drain)
		if string(mustJSON(exp)) != string(rec.Spec) {
			return nil, fmt.Errorf("resume %s: %w; finish it with the original file, or run it without the file to restore the pool", rec.ID, ErrSpecChanged)
		}
	} else if err := json.Unmarshal(rec.Spec, exp); err != nil {
		return nil, fmt.Errorf("resume %s: stored drill: %w", rec.ID, err)
	}
	r, err := e.newRun(exp, rec)
	if err != nil {
		return nil, err
	}
	r.renew = r.book.Claimed && !r.Done()
	r.publish()
	return &DrillRun{r: r, drill: d, drain: drain}, nil
}

// Run is the underlying run, for views (Snapshot, Record) and fencing.
func (dr *DrillRun) Run() *Run { return dr.r }

// ID is the run's ID.
func (dr *DrillRun) ID() string { return dr.r.ID() }

// Done reports whether the drill has ended.
func (dr *DrillRun) Done() bool { return dr.r.Done() }

// Drill is the drill as loaded from its file; nil for a run resumed without it.
func (dr *DrillRun) Drill() *experiments.Drill { return dr.drill }

// Drain is the cluster the drill drains.
func (dr *DrillRun) Drain() string { return dr.drain }

// Evaluation is the drill's latest evidence, nil before the first judged interval.
func (dr *DrillRun) Evaluation() *DrillEvaluation { return dr.last }

// Step moves the drill one phase on at time now, from its persisted state.
func (dr *DrillRun) Step(ctx context.Context, now time.Time) error {
	return dr.r.stepWith(ctx, now, dr.checks, dr.hold, nil)
}

// Drive steps the drill every tick until it ends or ctx is cancelled.
func (dr *DrillRun) Drive(ctx context.Context, clk Clock, tick time.Duration) error {
	return driveLoop(ctx, clk, tick, dr.Step, dr.Done, nil)
}

// block ends a drill that never started, with nothing changed.
func (dr *DrillRun) block(ctx context.Context, now time.Time, why string) error {
	return dr.r.end(ctx, now, store.StateFailed, VerdictDrillBlocked, why+"; nothing was changed", dr.r.e.opts.Who)
}

// retry records a fault to retry, or blocks the drill once it has lasted the no-data
// timeout since the checks began.
func (dr *DrillRun) retry(ctx context.Context, now time.Time, what string, err error) error {
	r := dr.r
	if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.rec.StartedAt) > timeout {
		return dr.block(ctx, now, fmt.Sprintf("could not %s for %s: %v", what, timeout, err))
	}
	return r.fault(ctx, now, what, err)
}

// ---- checks --------------------------------------------------------------------------

func (dr *DrillRun) checks(ctx context.Context, now time.Time) error {
	r := dr.r
	if r.rec.State == store.StatePending {
		r.rec.StartedAt = now
		if err := r.transition(ctx, now, store.StatePreflight, "checking the window, the alarms and the pool before draining "+dr.drain); err != nil {
			return err
		}
	}
	if dr.drill == nil {
		return r.end(ctx, now, store.StateAborted, VerdictAborted, "resumed without the drill's file before the drain; nothing was changed", r.e.opts.Who)
	}
	if ok, why := dr.drill.Allowed(now); !ok {
		return dr.block(ctx, now, why)
	}
	for _, a := range dr.drill.Spec.BlockingAlarms {
		firing, value, err := dr.alarm(ctx, a, now)
		if err != nil {
			return dr.retry(ctx, now, "evaluate blocking alarm "+a.Name, err)
		}
		if firing {
			return dr.block(ctx, now, fmt.Sprintf("blocking alarm %s is firing (value %s)", a.Name, formatValue(value, true)))
		}
	}
	pool, err := r.e.opts.Steerer.Pool(ctx, r.ref)
	if err != nil {
		return dr.retry(ctx, now, "read pool "+r.ref.String(), err)
	}
	if claimed, err := r.claim(ctx, now, pool); err != nil || !claimed {
		return err
	}
	if read, err := r.readTTL(ctx, now); err != nil || !read {
		return err
	}
	var origins []experiments.PoolOrigin
	for _, o := range pool.Origins {
		origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
	}
	plan, err := experiments.WeightPlan(r.exp, origins)
	if err != nil {
		return dr.block(ctx, now, "the pool cannot be drained: "+err.Error())
	}
	r.book.Plan = nil
	for _, st := range plan.Steps {
		r.book.Plan = append(r.book.Plan, r.owned(st))
	}
	r.book.Rollback = r.owned(plan.Rollback)
	r.book.Others = 0
	for _, o := range pool.Origins {
		if _, mine := r.book.Plan[0][o.Name]; !mine && o.Enabled {
			r.book.Others += o.Weight
		}
	}
	if w := r.book.Plan[0][r.origin[dr.drain]]; w <= 0 {
		return dr.block(ctx, now, fmt.Sprintf("%s (origin %s) already has weight 0: there is nothing to drain", dr.drain, r.origin[dr.drain]))
	}
	bad, msg, known, err := r.readHealth(ctx, now)
	if err != nil {
		return dr.retry(ctx, now, "read origin health of pool "+r.ref.String(), err)
	}
	if known && len(bad) > 0 {
		if err := r.save(ctx, r.healthEvent(now, bad, msg)); err != nil {
			return err
		}
		return dr.block(ctx, now, msg)
	}
	// A survivor whose series went stale (a dead federation leaf) would be judged blind.
	if ok, err := r.checkFresh(ctx, now); err != nil || !ok {
		return err
	}
	// The before window: every survivor must have data for every KPI, or the hold could
	// never be judged.
	r.book.ApplyAt = now // for a drill: when the drain was decided, the end of the before window
	dr.before = nil
	before, err := dr.beforeData(ctx)
	if err != nil {
		return dr.retry(ctx, now, "read the KPIs before the drill", err)
	}
	for i, d := range before {
		for _, c := range dr.drill.Survivors(dr.drain) {
			if cd := d.Clusters[c]; cd == nil || len(cd.Intervals) == 0 {
				return dr.block(ctx, now, fmt.Sprintf("KPI %s has no data for %s in the %s before the drill: its share of the drained traffic could not be judged", r.exp.Spec.KPIs[i].Name, c, dr.drill.Spec.Hold))
			}
		}
	}
	r.rec.Original, r.rec.Current = r.book.Plan[0], r.book.Plan[0]
	r.book.Faults = 0
	r.book.LastDataAt = now
	return r.setWeights(ctx, now, "step:1", r.book.Plan[1])
}

// alarm evaluates an alarm's query now: it fires when any sample is above 0.
func (dr *DrillRun) alarm(ctx context.Context, a experiments.Alarm, now time.Time) (firing bool, value float64, err error) {
	return AlarmFiring(ctx, dr.r.e.opts.Metrics, dr.r.exp, a, now)
}

// AlarmFiring evaluates a drill alarm's query at now, templated over the drill's
// experiment (exp from Drill.Experiment): it fires when any sample is above 0, and value
// is that sample. A query with no samples is quiet.
func AlarmFiring(ctx context.Context, src KPISource, exp *experiments.Experiment, a experiments.Alarm, now time.Time) (firing bool, value float64, err error) {
	q, err := experiments.RenderQuery(a.Query, exp.Vars(exp.Spec.Canary.Cluster))
	if err != nil {
		return false, 0, err
	}
	v, _, err := src.Instant(ctx, q, now)
	if err != nil {
		if errors.Is(err, metrics.ErrNoData) {
			return false, 0, nil
		}
		return false, 0, fmt.Errorf("alarm %s: %w", a.Name, err)
	}
	for _, x := range valuesOf(v) {
		if x > 0 {
			return true, x, nil
		}
	}
	return false, 0, nil
}

// alarmClock is how long an outcome alarm has been pending, kept in the run's book. As
// Prometheus restores an alert's `for` after a restart, the time the alarm was seen firing
// before the engine went away counts and the time it was away does not (the alarm may
// have cleared meanwhile): an evaluation gap longer than gap resumes the count where it
// stood. A changed query is a new alarm and starts over.
type alarmClock struct {
	Query    string    `json:"query"`
	Since    time.Time `json:"since"`    // when the pending time began, moved past gaps
	LastSeen time.Time `json:"lastSeen"` // the last evaluation that saw it firing
}

// observe records the alarm firing at now: how long it has been pending, and whether the
// clock began or moved (so the book is saved).
func (c *alarmClock) observe(query string, now time.Time, gap time.Duration) (pending time.Duration, moved bool) {
	switch {
	case c.Since.IsZero() || c.Query != query || now.Before(c.LastSeen):
		*c = alarmClock{Query: query, Since: now}
		moved = true
	case now.Sub(c.LastSeen) > gap:
		c.Since = now.Add(-c.LastSeen.Sub(c.Since))
		moved = true
	}
	c.LastSeen = now
	return now.Sub(c.Since), moved
}

// outcomeAlarms evaluates the drill's outcome alarms and keeps their clocks in the book. It
// returns the alarms firing for less than their `for` (pending) and whether any could not
// be read. stop is true when the hold must not go on: the drill is being restored because
// one fired for its `for` or went unread for noDataTimeout, or err.
func (dr *DrillRun) outcomeAlarms(ctx context.Context, now time.Time) (pending []string, failed, stop bool, err error) {
	r := dr.r
	changed := false
	for name := range r.book.AlarmsFiring {
		if !slices.ContainsFunc(dr.drill.Spec.OutcomeAlarms, func(a experiments.Alarm) bool { return a.Name == name }) {
			delete(r.book.AlarmsFiring, name) // the file resumed with no longer has it
			changed = true
		}
	}
	// A clock's LastSeen reaches the store with the book, at least once an interval: a
	// gap shorter than two intervals is the last save's age, not an absence.
	gap := max(2*r.exp.Spec.Analysis.Interval.Std(), 2*time.Minute)
	for _, a := range dr.drill.Spec.OutcomeAlarms {
		firing, value, err := dr.alarm(ctx, a, now)
		if err != nil {
			failed = true
			if r.book.AlarmErrAt.IsZero() {
				r.book.AlarmErrAt, changed = now, true
			}
			if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.book.AlarmErrAt) > timeout {
				return nil, false, true, r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("outcome alarm %s could not be evaluated for %s (%v): restoring rather than holding blind", a.Name, timeout, err), r.e.opts.Who, store.StateRolledBack)
			}
			if err := r.fault(ctx, now, "evaluate outcome alarm "+a.Name, err); err != nil {
				return nil, false, true, err
			}
			continue
		}
		clock := r.book.AlarmsFiring[a.Name]
		if !firing {
			if clock != nil {
				delete(r.book.AlarmsFiring, a.Name)
				changed = true
			}
			continue
		}
		if clock == nil {
			clock = &alarmClock{}
			if r.book.AlarmsFiring == nil {
				r.book.AlarmsFiring = map[string]*alarmClock{}
			}
			r.book.AlarmsFiring[a.Name] = clock
		}
		firingFor, restarted := clock.observe(a.Query, now, gap)
		changed = changed || restarted
		pending = append(pending, a.Name)
		if firingFor >= a.For.Std() {
			return nil, false, true, r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("outcome alarm %s fired during the drill (value %s): restored at once", a.Name, formatValue(value, true)), r.e.opts.Who, store.StateRolledBack)
		}
	}
	if !failed && !r.book.AlarmErrAt.IsZero() {
		r.book.AlarmErrAt, changed = time.Time{}, true
	}
	if changed {
		// An alarm's clock must survive a restart before anything else can fail.
		if err := r.save(ctx); err != nil {
			return nil, false, true, err
		}
	}
	return pending, failed, false, nil
}

// ---- hold ----------------------------------------------------------------------------

func (dr *DrillRun) hold(ctx context.Context, now time.Time) error {
	r := dr.r
	who := r.e.opts.Who
	if dr.drill == nil {
		return r.rollback(ctx, now, VerdictAborted, "resumed without the drill's file: restoring the weights the drill found", who, store.StateAborted)
	}
	if stop, err := r.checkDrift(ctx, now); err != nil || stop {
		return err
	}
	alarms, alarmFailed, stop, err := dr.outcomeAlarms(ctx, now)
	if stop {
		return err
	}

	ev, err := dr.evaluate(ctx, now)
	if err != nil {
		if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.book.LastDataAt) > timeout {
			return r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("no KPI data for %s (%v): restoring rather than holding blind", timeout, err), who, store.StateRolledBack)
		}
		return r.fault(ctx, now, "read the KPIs during the drill", err)
	}
	ev.Alarms = alarms
	dr.last = ev
	if ev.Intervals > dr.judged || len(ev.Harm) > 0 {
		if err := dr.recordEvaluation(ctx, now, ev); err != nil {
			return err
		}
	}
	if len(ev.Harm) > 0 {
		return r.rollback(ctx, now, VerdictFailed, "the survivors did not absorb the drained traffic: "+strings.Join(ev.Harm, "; ")+": restored at once", who, store.StateRolledBack)
	}
	if ev.Intervals > 0 {
		r.book.LastDataAt = now
	} else if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.book.LastDataAt) > timeout {
		return r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("no complete KPI interval for %s: restoring rather than holding blind", timeout), who, store.StateRolledBack)
	}
	holdEnd := r.book.StepStart.Add(dr.drill.Spec.Hold.Std())
	if now.Before(holdEnd) || ev.Intervals < ev.Planned {
		if now.Sub(holdEnd) > r.exp.Spec.Analysis.NoDataTimeout.Std() {
			return r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("the hold ended %s ago and only %d of its %d intervals have data", now.Sub(holdEnd).Truncate(time.Second), ev.Intervals, ev.Planned), who, store.StateRolledBack)
		}
		return nil
	}
	if len(alarms) > 0 || alarmFailed {
		// An outcome alarm firing for less than its `for` is pending, not quiet, and one
		// that cannot be read is not quiet either: the drill holds on until it clears or
		// fires, which its `for` (or noDataTimeout) bounds.
		return nil
	}
	if len(ev.NoData) > 0 {
		return r.rollback(ctx, now, VerdictFailed, "no data during the hold for "+strings.Join(ev.NoData, ", ")+": a drill without evidence is not a pass", who, store.StateRolledBack)
	}
	return r.rollback(ctx, now, VerdictDrillPassed, dr.passReason(ev), who, store.StatePromoted)
}

func (dr *DrillRun) passReason(ev *DrillEvaluation) string {
	var proven, open []string
	for _, k := range ev.KPIs {
		if k.GuardrailOnly {
			continue
		}
		name := k.Name + " on " + k.Cluster
		if k.Status == analysis.NonInferior {
			proven = append(proven, name)
		} else {
			open = append(open, name)
		}
	}
	s := fmt.Sprintf("%s drained for %s: the survivors absorbed its traffic with no KPI beyond its tolerance, no guardrail breached and no outcome alarm", dr.drain, dr.drill.Spec.Hold)
	if len(proven) > 0 {
		s += "; proven within tolerance: " + strings.Join(proven, ", ")
	}
	if len(open) > 0 {
		s += "; not proven either way in " + fmt.Sprint(ev.Intervals) + " intervals: " + strings.Join(open, ", ")
	}
	return s + "; weights restored"
}

// recordEvaluation stores the evaluation as a decision, for reports and watchers.
func (dr *DrillRun) recordEvaluation(ctx context.Context, now time.Time, ev *DrillEvaluation) error {
	r := dr.r
	action, reason := analysis.Continue, fmt.Sprintf("drill holding: %d of %d intervals judged", ev.Intervals, ev.Planned)
	if len(ev.Harm) > 0 {
		action, reason = analysis.Rollback, strings.Join(ev.Harm, "; ")
	}
	dec := &store.Decision{RunID: r.rec.ID, At: now, Step: r.rec.Step, Action: string(action), Reason: reason, Details: mustJSON(ev), Fence: r.token()}
	if err := r.e.opts.Store.AddDecision(ctx, dec); err != nil {
		return fmt.Errorf("persist decision of %s: %w", r.rec.ID, err)
	}
	dr.judged = ev.Intervals
	// The event carries an experiment decision too, with one KPI per survivor, so live
	// views and watchers that know only experiments still show what the drill concluded.
	d := Decision{Action: action, Reason: reason}
	for _, k := range ev.KPIs {
		v := k.KPIVerdict
		v.Name += " on " + k.Cluster
		d.KPIs = append(d.KPIs, v)
	}
	data := struct {
		DecisionData
		Drill *DrillEvaluation `json:"drill"`
	}{DecisionData{Decision: d, Step: r.rec.Step, StepElapsed: now.Sub(r.book.StepStart).Truncate(time.Second).String(), DecidedThrough: ev.Through}, ev}
	return r.save(ctx, r.event(EventDecision, now, "drill: "+reason, data))
}

// ranges are the hold's intervals judged so far (from the first after the drain settled to
// the last complete one), the hold's whole span, and the window before the drain of the
// same length.
func (dr *DrillRun) ranges(now time.Time) (hold metrics.Range, planned int, before metrics.Range) {
	r := dr.r
	iv := r.interval()
	start := r.book.LastEnd // set when the drain was confirmed: intervals count after it
	last := metrics.AlignedRange(r.book.StepStart.Add(dr.drill.Spec.Hold.Std()), iv, 0).End
	planned = max(0, int(last.Sub(start)/iv))
	// The hold is re-read whole at every evaluation, so late samples of older intervals
	// are picked up; the newest one counts only once it has been quiet as long as the
	// run's settle rule asks (federated samples arrive in batches, see settle.go).
	upto := metrics.AlignedRange(now.Add(-(r.settle() + r.quiet())), iv, 0).End
	if upto.After(last) {
		upto = last
	}
	hold = metrics.Range{Start: start, End: upto, Interval: iv}
	// The window before is the hold's length, ending when the drain was decided; interval
	// k of the hold is paired with its interval k.
	before = metrics.AlignedRange(r.book.ApplyAt, iv, max(1, int(dr.r.exp.Spec.Traffic.Steps[0].Hold.Std()/iv)))
	return hold, planned, before
}

// beforeData reads (once) every KPI over the window before the drain.
func (dr *DrillRun) beforeData(ctx context.Context) ([]*metrics.Data, error) {
	if dr.before != nil {
		return dr.before, nil
	}
	_, _, rng := dr.ranges(dr.r.book.ApplyAt)
	data, err := dr.fetch(ctx, rng)
	if err != nil {
		return nil, err
	}
	dr.before = data
	return data, nil
}

func (dr *DrillRun) fetch(ctx context.Context, rng metrics.Range) ([]*metrics.Data, error) {
	queries, err := MetricsKPIs(dr.r.exp)
	if err != nil {
		return nil, err
	}
	survivors := dr.r.exp.Spec.Baselines
	out := make([]*metrics.Data, len(queries))
	for i, q := range queries {
		d, err := dr.r.e.opts.Metrics.Fetch(ctx, q, rng, survivors)
		if err != nil && !errors.Is(err, metrics.ErrNoData) {
			return nil, fmt.Errorf("kpi %s: %w", q.Name, err)
		}
		if d == nil {
			d = &metrics.Data{KPI: q.Name, Range: rng, Clusters: map[string]*metrics.ClusterData{}}
		}
		out[i] = d
	}
	return out, nil
}

// evaluate judges every survivor's KPIs over the hold so far against the same number of
// intervals before the drain, interval k of the hold paired with interval k before it.
// Each comparison is the experiment's own anytime-valid sequence, with the hold as the
// "canary" and the window before as the "baseline", so the survivor's higher share of
// traffic cancels out of ratios exactly as a canary's share does; the family-wise α is
// split over every survivor and KPI.
func (dr *DrillRun) evaluate(ctx context.Context, now time.Time) (*DrillEvaluation, error) {
	r := dr.r
	holdRng, planned, beforeRng := dr.ranges(now)
	ev := &DrillEvaluation{Kind: DrillKind, Drain: dr.drain, Planned: planned}
	n := 0
	if holdRng.End.After(holdRng.Start) {
		n = holdRng.Len()
	}
	before, err := dr.beforeData(ctx)
	if err != nil {
		return nil, err
	}
	var hold []*metrics.Data
	if n > 0 {
		if hold, err = dr.fetch(ctx, holdRng); err != nil {
			return nil, err
		}
		ev.Through = holdRng.End
	}
	ev.Intervals = n
	survivors := r.exp.Spec.Baselines
	type judged struct {
		cluster string
		kpi     analysis.KPI
		only    bool
	}
	var all []judged
	for _, c := range survivors {
		states, err := newKPIStates(r.exp, planned)
		if err != nil {
			return nil, err
		}
		for i, st := range states {
			have := 0
			for j := range n {
				hEnd, bEnd := holdRng.Start.Add(time.Duration(j+1)*holdRng.Interval), beforeRng.Start.Add(time.Duration(j+1)*beforeRng.Interval)
				h, okH := intervalAt(hold[i], c, hEnd, st.spec)
				b, okB := intervalAt(before[i], c, bEnd, st.spec)
				if !okH {
					continue
				}
				have++
				if !okB {
					// No paired interval before: the guardrail still sees the hold's value.
					st.add(Observation{Clusters: map[string]ClusterValues{"hold": h}}, "hold", nil, false)
					continue
				}
				st.add(Observation{Clusters: map[string]ClusterValues{"hold": h, "before": b}}, "hold", []string{"before"}, false)
			}
			if n > 0 && have == 0 && st.spec.Type != experiments.KPIThroughput {
				ev.NoData = append(ev.NoData, st.spec.Name+" on "+c)
			}
			for _, k := range st.judged() {
				all = append(all, judged{cluster: c, kpi: k, only: dr.drill != nil && dr.drill.GuardrailOnly(i)})
			}
		}
	}
	family := 0
	for _, j := range all {
		if !j.only {
			family++
		}
	}
	alpha := r.exp.Spec.Analysis.Alpha / float64(max(1, family))
	for _, j := range all {
		iv := j.kpi.State.Interval(alpha)
		v := analysis.Judge(j.kpi.Name, iv, j.kpi.Harm, j.kpi.Tolerance)
		if j.only && v.Status != analysis.NoData && !iv.GuardrailBreached {
			v.Status, v.Reason = analysis.NonInferior, fmt.Sprintf("%s is within its guardrail (latest %.4g)", j.kpi.Name, iv.CanaryValue)
		}
		v.Reason = strings.Replace(v.Reason, "on the canary", "during the drill than before it", 1)
		if v.Status == analysis.Harm {
			ev.Harm = append(ev.Harm, j.cluster+": "+v.Reason)
		}
		ev.KPIs = append(ev.KPIs, DrillKPI{Cluster: j.cluster, KPIVerdict: KPIVerdictOf(v), GuardrailOnly: j.only})
	}
	return ev, nil
}

// intervalAt is cluster's values of one KPI for the interval ending at end.
func intervalAt(d *metrics.Data, cluster string, end time.Time, spec experiments.KPI) (ClusterValues, bool) {
	if d == nil {
		return ClusterValues{}, false
	}
	cd := d.Clusters[cluster]
	if cd == nil {
		return ClusterValues{}, false
	}
	for _, iv := range cd.Intervals {
		if iv.End.Equal(end) {
			return Reduce(spec, iv)
		}
	}
	return ClusterValues{}, false
}
