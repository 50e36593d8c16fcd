package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// Verdicts a run can end with.
const (
	VerdictPromoted     = "promoted"
	VerdictRolledBack   = "rolled_back"
	VerdictAborted      = "aborted"
	VerdictInconclusive = "inconclusive"
	VerdictFailed       = "failed"
	VerdictCheckFailed  = "check_failed"
)

// book is the engine's bookkeeping for a run, persisted in store.Run.Data with every save.
type book struct {
	// Plan holds the experiment origins' weights: [0] before the experiment, [i] at step i.
	Plan     []store.Weights `json:"plan,omitempty"`
	Rollback store.Weights   `json:"rollback,omitempty"`
	// Others is the summed weight of the pool's enabled origins outside the experiment,
	// for the traffic percentages of the capacity formula.
	Others float64 `json:"others"`

	LastEnd    time.Time `json:"lastEnd,omitzero"`    // end of the last interval consumed
	LastDataAt time.Time `json:"lastDataAt,omitzero"` // when complete data last arrived
	RampStart  time.Time `json:"rampStart,omitzero"`
	StepStart  time.Time `json:"stepStart,omitzero"`
	// PausedAt is when the current pause began and PausedFor the ramp time spent paused
	// before it: maxDuration bounds the time a run is left to judge, and a person's pause
	// must not use it up. DriftPaused marks a pause on drift, when the pool holds weights
	// the run did not set and intervals cannot be judged against its shares.
	PausedAt    time.Time     `json:"pausedAt,omitzero"`
	PausedFor   time.Duration `json:"pausedFor,omitempty"`
	DriftPaused bool          `json:"driftPaused,omitempty"`
	Outage      bool          `json:"outage,omitempty"` // inside a no-data streak, so it is reported once
	Faults      int           `json:"faults,omitempty"` // consecutive failed pool operations
	HookFails   int           `json:"hookFails,omitempty"`
	// End is what the run becomes once the rollback or promotion write is confirmed.
	EndState   store.State `json:"endState,omitempty"`
	EndVerdict string      `json:"endVerdict,omitempty"`
	EndReason  string      `json:"endReason,omitempty"`
	EndBy      string      `json:"endBy,omitempty"`
	PauseNote  string      `json:"pauseNote,omitempty"`
	IntentSeq  int64       `json:"intentSeq,omitempty"`
	// AlarmsFiring are the drill outcome alarms seen firing, by name, and AlarmErrAt when
	// an alarm query began failing: kept so that an engine restarted in the middle of an
	// outage does not start an alarm's `for` (or noDataTimeout) over.
	AlarmsFiring map[string]*alarmClock `json:"alarmsFiring,omitempty"`
	AlarmErrAt   time.Time              `json:"alarmErrAt,omitzero"`
	// HistoryRead is set once the history window (the baseline before the variant) is stored.
	HistoryRead bool `json:"historyRead,omitempty"`
	// Apply is the variant's arrival phase (hook, ready, done) when the engine brings it
	// in; ApplyAt when that phase began; Drained the weights with the canary drained.
	Apply      string        `json:"apply,omitempty"`
	ApplyAt    time.Time     `json:"applyAt,omitzero"`
	ApplyFails int           `json:"applyFails,omitempty"`
	Drained    store.Weights `json:"drained,omitempty"`
	// WriteErr is why the pending intent's write last failed, since WriteFailedAt: an
	// ending while a write is failing names the load balancer, not the KPIs.
	WriteErr      string    `json:"writeErr,omitempty"`
	WriteFailedAt time.Time `json:"writeFailedAt,omitzero"`
	// Unconfirmed is set when an intent was dropped without knowing whether it landed (the
	// token was refused mid-write): Current must be read from the pool before it is trusted.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
	// Claimed: the pool carries this run's claim (the Steerer is a traffic.Claimer).
	// Persisted so that a resumed run checks the claim as drift and releases it at the end,
	// and a run on a steerer without claims never treats a missing claim as drift.
	Claimed bool `json:"claimed,omitempty"`
	// TTL is how long clients may cache the pool's answers (a DNS steerer's record TTL),
	// read once in preflight: after a weight change, intervals count only from one TTL
	// (plus the settle time) on, when the change has reached every client. TTLRead says
	// it was read (a TTL of 0 is a valid answer).
	TTL     time.Duration `json:"ttl,omitempty"`
	TTLRead bool          `json:"ttlRead,omitempty"`
	// Warned: the preflight warnings were given. Persisted so that a resumed or adopted
	// run does not notify people twice about the same pool.
	Warned bool `json:"warned,omitempty"`
	// SourceChecked: preflight compared the declared source of truth with the pool; a
	// resumed run must not compare again once it has moved weights itself.
	SourceChecked bool `json:"sourceChecked,omitempty"`
	// Sync is what the write-back into the source of truth did at the end of the run.
	Sync *SourceSyncData `json:"sync,omitempty"`
	// Health marks when the set of unhealthy experiment origins changed (the last one at
	// or before LastEnd, and those after), for the share check's expectations; HealthHold
	// names the origins a step or promotion is being held for (see health.go).
	Health     []healthMark `json:"health,omitempty"`
	HealthHold string       `json:"healthHold,omitempty"`
	// FreshChecked: the preflight found every cluster's KPI series fresh (stale.go); the
	// check runs before any weight moves and is not repeated by a resumed run.
	FreshChecked bool `json:"freshChecked,omitempty"`
	// Pending is the newest interval read but not judged yet, waiting for its counts to
	// settle (settle.go).
	Pending *pendingInterval `json:"pending,omitempty"`
}

// Run is one live run of an experiment.
type Run struct {
	e      *Engine
	exp    *experiments.Experiment
	rec    *store.Run
	ref    traffic.PoolRef
	origin map[string]string // cluster -> origin
	ev     *Evidence
	book   book
	last   *analysis.Decision
	fence  Fence
	// undecided: the last complete interval was stored but its decision was not (the
	// process died in between); the next tick records one even with no fresh interval.
	undecided bool
	// renew: the run was resumed by this process, whose claim on the pool is to be renewed.
	renew bool
	// Origin health as read this tick while ramping: healthRead is false when the Steerer
	// cannot read it; healthErr is a failed read; unhealthy names the experiment origins
	// found unhealthy and healthMsg says so.
	healthRead bool
	healthAt   time.Time
	healthErr  error
	unhealthy  []string
	healthMsg  string
	// snap is what Snapshot and Record return: published by the stepping goroutine, read by
	// views from any goroutine.
	snap atomic.Pointer[Snapshot]
}

// Fence is the lease a run acts under when several replicas share a store: *store.Hold
// implements it. Token is passed with every save and decision, so the store refuses them
// once the lease is someone else's; Valid is checked right before every pool write.
type Fence interface {
	Token() int64
	Valid() bool
}

// ErrNotOwner means the run's fence is no longer valid: the caller has lost (or is about to
// lose) its lease and must stop acting on the run. It matches store.ErrLeaseLost.
var ErrNotOwner = fmt.Errorf("not the run's owner any more: %w", store.ErrLeaseLost)

// SetFence makes the run act under f: every save and decision carries f.Token() and the
// pool is written only while f.Valid(). Nil (the default) means no fencing, as for a single
// process.
func (r *Run) SetFence(f Fence) { r.fence = f }

func (r *Run) token() int64 {
	if r.fence == nil {
		return 0
	}
	return r.fence.Token()
}

// owner returns ErrNotOwner when the run is fenced and its fence is no longer valid.
func (r *Run) owner() error {
	if r.fence != nil && !r.fence.Valid() {
		return fmt.Errorf("run %s: %w", r.rec.ID, ErrNotOwner)
	}
	return nil
}

func (e *Engine) newRun(exp *experiments.Experiment, rec *store.Run) (*Run, error) {
	planned := 0
	if iv := exp.Spec.Analysis.Interval.Std(); iv > 0 {
		planned = int(exp.Spec.TotalHold() / iv)
	}
	ev, err := NewEvidence(exp, planned)
	if err != nil {
		return nil, err
	}
	r := &Run{e: e, exp: exp, rec: rec, ref: poolRef(exp), origin: exp.Spec.Traffic.Origins(), ev: ev}
	if len(rec.Data) > 0 {
		if err := json.Unmarshal(rec.Data, &r.book); err != nil {
			return nil, fmt.Errorf("run %s: stored bookkeeping: %w", rec.ID, err)
		}
	}
	r.publish()
	return r, nil
}

// ID is the run's ID.
func (r *Run) ID() string { return r.rec.ID }

// Record returns a copy of the run as last published (after every save and every Step);
// it is safe to call from any goroutine.
func (r *Run) Record() store.Run { return r.snap.Load().Run }

// Experiment is the experiment being run.
func (r *Run) Experiment() *experiments.Experiment { return r.exp }

// Done reports whether the run has ended. Like Step, it is for the goroutine that drives
// the run; views use Snapshot or Record.
func (r *Run) Done() bool { return r.rec.State.Terminal() }

func (r *Run) interval() time.Duration { return r.exp.Spec.Analysis.Interval.Std() }

func (r *Run) settle() time.Duration {
	if r.e.opts.Settle > 0 {
		return r.e.opts.Settle
	}
	return min(r.interval()/4, 15*time.Second)
}

func (r *Run) event(typ string, at time.Time, msg string, data any) store.Event {
	ev := store.Event{RunID: r.rec.ID, At: at, Type: typ, Message: msg}
	if data != nil {
		ev.Data = mustJSON(data)
	}
	return ev
}

func (r *Run) emit(events ...store.Event) {
	for _, ev := range events {
		r.e.opts.Logger.Info(ev.Message, "run", r.rec.ID, "type", ev.Type)
		if r.e.opts.Observer != nil {
			r.e.opts.Observer.Observe(Event{Type: ev.Type, RunID: ev.RunID, At: ev.At, Message: ev.Message, Data: ev.Data})
		}
	}
}

// save persists the run with its bookkeeping and events, then tells observers. Nothing is
// acted on before save returns: it is the write-ahead log.
func (r *Run) save(ctx context.Context, events ...store.Event) error {
	r.rec.Data = mustJSON(r.book)
	r.rec.Fence = r.token()
	// Failed notifications are part of the run's history, in order with what caused them.
	events = append(events, r.notificationEvents()...)
	if err := r.e.opts.Store.SaveRun(ctx, r.rec, events...); err != nil {
		return fmt.Errorf("persist run %s: %w", r.rec.ID, err)
	}
	r.publishRecord()
	r.emit(events...)
	return nil
}

func (r *Run) transition(ctx context.Context, now time.Time, to store.State, why string, extra ...store.Event) error {
	from := r.rec.State
	r.rec.State = to
	switch {
	case to == store.StatePaused && from != store.StatePaused:
		r.book.PausedAt = now
	case from == store.StatePaused && to != store.StatePaused:
		r.book.PausedFor += r.pausedSinceRamp(now)
		r.book.PausedAt, r.book.DriftPaused = time.Time{}, false
	}
	ev := r.event(EventStateChanged, now, fmt.Sprintf("%s → %s: %s", from, to, why), map[string]any{"from": from, "to": to, "reason": why, "step": r.rec.Step})
	return r.save(ctx, append([]store.Event{ev}, extra...)...)
}

// pausedSinceRamp is how much of the current pause lies after the ramp began.
func (r *Run) pausedSinceRamp(now time.Time) time.Duration {
	if r.book.PausedAt.IsZero() || r.book.RampStart.IsZero() {
		return 0
	}
	start := r.book.PausedAt
	if r.book.RampStart.After(start) {
		start = r.book.RampStart
	}
	return max(0, now.Sub(start))
}

// rampElapsed is the time since the ramp began, less the time spent paused: what
// maxDuration bounds.
func (r *Run) rampElapsed(now time.Time) time.Duration {
	return now.Sub(r.book.RampStart) - r.book.PausedFor - r.pausedSinceRamp(now)
}

// Step moves the run one phase on at time now. An error means the run could not be
// persisted (or is misconfigured): the caller should stop and resume later. Faults of
// Prometheus or the load balancer are not errors: they are recorded and retried, except a
// refused API token, which fails the run (nothing changed yet) or pauses it. While a weight
// write is being retried, a ramping run keeps collecting and judging its KPIs.
func (r *Run) Step(ctx context.Context, now time.Time) error {
	return r.stepWith(ctx, now, r.preflight, r.ramp, r.watchPaused)
}

// stepWith is Step with the two phases that differ between an experiment and a drill:
// what is checked before the first weight moves, and what is judged while it holds. Intent
// reconciliation, commands, claims and the endings are the same for both.
func (r *Run) stepWith(ctx context.Context, now time.Time, preflight, ramp, paused func(context.Context, time.Time) error) error {
	if r.Done() {
		return nil
	}
	defer r.publish()
	if r.renew {
		r.renew = false
		if err := r.renewClaim(ctx, now); err != nil {
			return err
		}
	}
	if r.rec.Intent != nil {
		return r.reconcile(ctx, now)
	}
	if err := r.commands(ctx, now); err != nil || r.Done() || r.rec.Intent != nil {
		return err
	}
	switch r.rec.State {
	case store.StatePending, store.StatePreflight:
		return preflight(ctx, now)
	case store.StateRamping:
		return ramp(ctx, now)
	case store.StatePromoting:
		return r.writeFinal(ctx, now, "promote", r.promoteTarget())
	case store.StateRollingBack:
		return r.writeFinal(ctx, now, "rollback", r.book.Rollback)
	case store.StatePaused:
		if paused != nil {
			return paused(ctx, now)
		}
	}
	return nil
}

// watchPaused keeps the guardrails of a paused run: a person decides when it moves on,
// but the canary still carries its share, and an absolute limit broken meanwhile rolls it
// back as it would while ramping. Nothing else is decided while paused. Not while paused
// on drift: the pool then holds weights the run did not set, and intervals would be judged
// against the wrong shares.
func (r *Run) watchPaused(ctx context.Context, now time.Time) error {
	if r.rec.PausedFrom != store.StateRamping || r.book.DriftPaused || r.rec.Current == nil {
		return nil
	}
	fresh, err := r.collect(ctx, now)
	if err != nil || fresh == 0 {
		return err
	}
	d := r.decide(now)
	var broken []string
	for _, k := range d.KPIs {
		if k.Interval.GuardrailBreached {
			broken = append(broken, k.Name)
		}
	}
	if len(broken) == 0 {
		return nil
	}
	if err := r.recordDecision(ctx, now, d); err != nil {
		return err
	}
	reason := fmt.Sprintf("guardrail broken while paused (%s): %s", strings.Join(broken, ", "), d.Reason)
	return r.rollback(ctx, now, VerdictRolledBack, r.dropIntent(reason), r.e.opts.Who, store.StateRolledBack)
}

// fault records a failure that will be retried. A refused API token is not retried: see
// unauthorized.
func (r *Run) fault(ctx context.Context, now time.Time, what string, err error) error {
	if errors.Is(err, traffic.ErrUnauthorized) {
		return r.unauthorized(ctx, now, what, err)
	}
	r.book.Faults++
	return r.save(ctx, r.event(EventFault, now, fmt.Sprintf("%s: %v (will retry)", what, err), map[string]any{"error": err.Error(), "consecutive": r.book.Faults}))
}

// ---- preflight -------------------------------------------------------------------------

func (r *Run) preflight(ctx context.Context, now time.Time) error {
	if r.rec.State == store.StatePending {
		r.rec.StartedAt = now
		if err := r.transition(ctx, now, store.StatePreflight, "checking the pool, the preconditions and the baseline"); err != nil {
			return err
		}
	}
	if r.rec.Current == nil {
		// Nothing has changed yet: plan from the pool as it is now, check, capture the
		// baseline. Once weights move, the plan and the baseline are fixed.
		if err := r.prepare(ctx, now); err != nil || r.Done() {
			return err
		}
		if !r.book.HistoryRead {
			return nil // a fault was recorded; retried next tick
		}
		r.rec.Original = r.book.Plan[0]
		r.rec.Current = r.book.Plan[0]
	}
	if done, err := r.applyVariant(ctx, now); err != nil || !done || r.Done() || r.rec.Intent != nil {
		return err
	}
	if ok, err := r.healthBeforeChange(ctx, now); err != nil || !ok {
		return err
	}
	r.book.RampStart = now
	r.book.LastDataAt = now // and again when step 1 lands: a slow write is not a data gap
	r.book.Faults = 0
	return r.setWeights(ctx, now, "step:1", r.book.Plan[1])
}

// prepare plans the weights from the pool, checks the preconditions and captures the
// baseline (the history window before the variant). It leaves book.HistoryRead false when
// it recorded a fault to retry.
func (r *Run) prepare(ctx context.Context, now time.Time) error {
	timeout := r.exp.Spec.Analysis.NoDataTimeout.Std()
	pool, err := r.e.opts.Steerer.Pool(ctx, r.ref)
	if err != nil {
		if now.Sub(r.rec.StartedAt) > timeout {
			return r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("the pool could not be read for %s: %v", timeout, err), r.e.opts.Who)
		}
		return r.fault(ctx, now, "read pool "+r.ref.String(), err)
	}
	if claimed, err := r.claim(ctx, now, pool); err != nil || !claimed {
		return err
	}
	if read, err := r.readTTL(ctx, now); err != nil || !read {
		return err
	}
	if ok, err := r.checkSource(ctx, now, pool); err != nil || !ok {
		return err
	}
	var origins []experiments.PoolOrigin
	for _, o := range pool.Origins {
		origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
	}
	plan, err := experiments.WeightPlan(r.exp, origins)
	if err != nil {
		return r.end(ctx, now, store.StateFailed, VerdictFailed, "the pool cannot carry this experiment: "+err.Error(), r.e.opts.Who)
	}
	r.book.Plan = nil
	for _, st := range plan.Steps {
		r.book.Plan = append(r.book.Plan, r.owned(st))
	}
	r.book.Rollback = r.owned(plan.Rollback)
	r.book.Drained = nil
	if plan.Drained != nil {
		r.book.Drained = r.owned(*plan.Drained)
	}
	r.book.Others = 0
	for _, o := range pool.Origins {
		if _, mine := r.book.Plan[0][o.Name]; !mine && o.Enabled {
			r.book.Others += o.Weight
		}
	}
	if !r.book.Warned {
		r.book.Warned = true
		if err := r.save(ctx, r.warnings(pool, now)...); err != nil {
			return err
		}
	}

	if ok, err := r.healthBeforeChange(ctx, now); err != nil || !ok {
		return err
	}
	if ok, err := r.checkFresh(ctx, now); err != nil || !ok {
		return err
	}
	if ok, failed, err := r.checkPreconditions(ctx, now); err != nil {
		if now.Sub(r.rec.StartedAt) > timeout {
			return r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("preconditions could not be evaluated for %s: %v", timeout, err), r.e.opts.Who)
		}
		return r.fault(ctx, now, "evaluate preconditions", err)
	} else if !ok {
		return r.end(ctx, now, store.StateFailed, VerdictCheckFailed, "precondition failed before any change: "+failed, r.e.opts.Who)
	}

	if a := r.exp.Spec.Canary.Apply; a != nil && a.Readiness != nil && !r.book.HistoryRead {
		// The baseline is only a baseline if the variant is not there yet.
		ready, got, err := r.readinessHolds(ctx, now)
		if err != nil {
			if now.Sub(r.rec.StartedAt) > timeout {
				return r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("readiness could not be evaluated for %s: %v", timeout, err), r.e.opts.Who)
			}
			return r.fault(ctx, now, "evaluate readiness before the baseline", err)
		}
		if ready {
			return r.end(ctx, now, store.StateFailed, VerdictCheckFailed, fmt.Sprintf("the readiness query already holds (got %s) before the variant was applied: the canary may already run it, so no baseline can be taken now; declare spec.canary.apply.appliedAt with when it arrived", got), r.e.opts.Who)
		}
	}

	if r.book.HistoryRead || r.ev.HistoryIntervals() > 0 {
		r.book.HistoryRead = true
		return nil
	}
	end, err := r.historyEnd(now)
	if err != nil {
		return r.end(ctx, now, store.StateFailed, VerdictCheckFailed, err.Error(), r.e.opts.Who)
	}
	if err := r.readHistory(ctx, now, end, r.exp.Spec.Analysis.History.Std()); err != nil {
		if now.Sub(r.rec.StartedAt) > timeout {
			return r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("the history could not be read for %s: %v", timeout, err), r.e.opts.Who)
		}
		return r.fault(ctx, now, "read the history", err)
	}
	return nil
}

// ttler is a Steerer whose pool is reached through DNS answers that clients cache
// (route53.Steerer): TTL is how long a weight change takes to reach all of them.
type ttler interface {
	TTL(ctx context.Context, ref traffic.PoolRef) (time.Duration, error)
}

// readTTL reads the pool's DNS TTL once, when the Steerer has one. It returns false when
// the run cannot go on now: a fault was recorded to retry, or the run failed.
func (r *Run) readTTL(ctx context.Context, now time.Time) (bool, error) {
	t, ok := r.e.opts.Steerer.(ttler)
	if !ok || r.book.TTLRead {
		return true, nil
	}
	ttl, err := t.TTL(ctx, r.ref)
	if err != nil {
		if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.rec.StartedAt) > timeout {
			return false, r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("the DNS TTL of %s could not be read for %s: %v", r.ref, timeout, err), r.e.opts.Who)
		}
		return false, r.fault(ctx, now, "read the DNS TTL of "+r.ref.String(), err)
	}
	r.book.TTL, r.book.TTLRead = ttl, true
	msg := fmt.Sprintf("DNS TTL of %s is %s: after each weight change, intervals count from one TTL on, once the change has reached every client", r.ref, ttl)
	if iv := r.interval(); ttl > iv {
		msg += fmt.Sprintf("; the TTL is longer than the analysis interval (%s), so every change costs about %d intervals of evidence", experiments.Duration(iv), int((ttl+iv-1)/iv)+1)
	}
	return true, r.save(ctx, r.event(EventWarning, now, msg, PoolWarning{Kind: WarnDNSTTL, Message: msg, TTL: ttl.String()}))
}

// owned keeps the weights of the experiment's origins.
func (r *Run) owned(st experiments.PlanStep) store.Weights {
	w := store.Weights{}
	for _, o := range st.Origins {
		if o.Cluster != "" {
			w[o.Name] = o.Weight
		}
	}
	return w
}

// checkPreconditions evaluates every precondition now; failed names the first that fails.
func (r *Run) checkPreconditions(ctx context.Context, now time.Time) (ok bool, failed string, err error) {
	vars := r.exp.Vars(r.exp.Spec.Canary.Cluster)
	var events []store.Event
	ok = true
	for _, pc := range r.exp.Spec.Preconditions {
		q, err := experiments.RenderQuery(pc.Query, vars)
		if err != nil {
			return false, "", err
		}
		val, _, err := r.e.opts.Metrics.Instant(ctx, q, now)
		if err != nil {
			return false, "", fmt.Errorf("precondition %s: %w", pc.Name, err)
		}
		expect, err := metrics.ParseExpect(pc.Expect)
		if err != nil {
			return false, "", fmt.Errorf("precondition %s: %w", pc.Name, err)
		}
		// Every series must satisfy the expectation; no data satisfies nothing.
		values := valuesOf(val)
		if len(values) == 0 {
			// No data is not a verdict on the precondition: a fresh or lagging Prometheus
			// looks the same. Retry until noDataTimeout makes it a failure.
			return false, "", fmt.Errorf("precondition %s: query returned no data: %s", pc.Name, q)
		}
		x, got := math.NaN(), true
		holds := got
		for _, v := range values {
			if !expect.Holds(v) {
				x, holds = v, false
				break
			}
			x = v
		}
		msg := fmt.Sprintf("precondition %s: value %s, expect %s: ", pc.Name, formatValue(x, got), pc.Expect)
		if holds {
			msg += "holds"
		} else {
			msg += "FAILS"
			if ok {
				failed = fmt.Sprintf("%s (value %s, expected %s)", pc.Name, formatValue(x, got), pc.Expect)
			}
			ok = false
		}
		events = append(events, r.event(EventPrecondition, now, msg, map[string]any{"name": pc.Name, "value": jsonFloat(x, got), "expect": pc.Expect, "ok": holds}))
	}
	if len(events) > 0 {
		if err := r.save(ctx, events...); err != nil {
			return false, "", err
		}
	}
	return ok, failed, nil
}

func formatValue(x float64, ok bool) string {
	if !ok {
		return "none"
	}
	return strconv.FormatFloat(x, 'g', 6, 64)
}

func jsonFloat(x float64, ok bool) any {
	if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}

// valuesOf returns every value of an instant query's result.
func valuesOf(v model.Value) []float64 {
	switch t := v.(type) {
	case *model.Scalar:
		return []float64{float64(t.Value)}
	case model.Vector:
		out := make([]float64, 0, len(t))
		for _, s := range t {
			out = append(out, float64(s.Value))
		}
		return out
	}
	return nil
}

// readHistory reads the history window — the baseline before the variant — stores it, and
// learns each KPI's noise model from it.
func (r *Run) readHistory(ctx context.Context, now, end time.Time, pre time.Duration) error {
	iv := r.interval()
	n := int(pre / iv)
	if n < 1 {
		r.book.HistoryRead = true
		r.ev.Fit()
		return r.save(ctx, r.event(EventPrePeriod, now, "no history window (analysis.history is 0): noise is estimated from the run itself, after analysis.minIntervals", nil))
	}
	if origin, idle := r.canaryIdle(); idle {
		// A standby at weight 0 served nothing: its history would hold no comparison, only
		// empty intervals that could pass for data. It is judged against the baselines live.
		r.book.HistoryRead = true
		r.ev.Fit()
		return r.save(ctx, r.event(EventPrePeriod, now, fmt.Sprintf("history skipped: the canary %s (origin %s) has weight 0 in the pool, so it served no traffic to compare with the baselines before the run; it is judged against them live only, with noise estimated from the run itself after analysis.minIntervals (%d)",
			r.exp.Spec.Canary.Cluster, origin, r.exp.Spec.Analysis.MinIntervals), nil))
	}
	// Prometheus answers at most 11,000 points per series: hours of short intervals are
	// read in chunks, oldest first, and fed only once all are in.
	const chunk = 5000
	var obs []store.Observation
	var batches []map[string]Observation
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		rng := metrics.AlignedRange(end.Add(-time.Duration(n-done-k)*iv), iv, k)
		data, err := r.fetchAll(ctx, rng)
		if err != nil {
			return err
		}
		for _, e := range rng.Ends() {
			got, _ := r.ev.Observe(data, e)
			batches = append(batches, got)
			for _, name := range sortedKeys(got) {
				obs = append(obs, store.Observation{RunID: r.rec.ID, KPI: name, Start: e.Add(-iv), End: e, Phase: PhaseHistory, Values: encodeObservation(got[name])})
			}
		}
	}
	for _, got := range batches {
		r.ev.AddHistory(got)
	}
	if err := r.e.opts.Store.AddObservations(ctx, obs); err != nil {
		return err
	}
	r.book.HistoryRead = true
	r.ev.Fit()
	noise := r.ev.Noise()
	var parts []string
	for _, n := range noise {
		if n.Model != nil {
			parts = append(parts, n.KPI+": "+n.Model.String())
		} else {
			parts = append(parts, n.KPI+": "+n.Fallback)
		}
	}
	msg := fmt.Sprintf("history: %d KPI intervals over the %s before %s; noise learned per KPI — %s",
		len(obs), experiments.Duration(pre), end.UTC().Format(time.RFC3339), strings.Join(parts, "; "))
	return r.save(ctx, r.event(EventPrePeriod, now, msg, map[string]any{"noise": noise, "end": end}))
}

// canaryIdle reports whether the canary's origin has weight 0 in the pool as the run
// found it (a standby taking over), with the origin's name.
func (r *Run) canaryIdle() (string, bool) {
	origin := r.exp.Spec.Traffic.Origins()[r.exp.Spec.Canary.Cluster]
	if len(r.book.Plan) == 0 {
		return origin, false
	}
	w, ok := r.book.Plan[0][origin]
	return origin, ok && w == 0
}

func (r *Run) fetchAll(ctx context.Context, rng metrics.Range) ([]*metrics.Data, error) {
	clusters := r.exp.Spec.Clusters()
	qs := r.ev.Queries()
	out := make([]*metrics.Data, len(qs))
	for i, q := range qs {
		d, err := r.e.opts.Metrics.Fetch(ctx, q, rng, clusters)
		if err != nil {
			return nil, fmt.Errorf("KPI %s: %w", q.Name, err)
		}
		out[i] = d
	}
	return out, nil
}

// ---- weights ---------------------------------------------------------------------------

func sameWeights(a, b store.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !traffic.SameWeight(v, w) {
			return false
		}
	}
	return true
}

func toTraffic(w store.Weights) traffic.Weights {
	out := traffic.Weights{}
	for k, v := range w {
		out[k] = v
	}
	return out
}

// setWeights records the intent to write want, then writes it. purpose says what the
// write completes once confirmed: "step:N", "promote" or "rollback".
func (r *Run) setWeights(ctx context.Context, now time.Time, purpose string, want store.Weights) error {
	r.book.IntentSeq++
	r.rec.Intent = &store.Intent{ID: r.book.IntentSeq, Purpose: purpose, Want: want, Expect: r.rec.Current, At: now}
	if err := r.save(ctx, r.event(EventWeightsIntent, now, fmt.Sprintf("about to set weights for %s: %s", purposeText(purpose), formatWeights(want)), r.rec.Intent)); err != nil {
		r.rec.Intent = nil
		return err
	}
	return r.write(ctx, now)
}

func purposeText(p string) string {
	if n, ok := strings.CutPrefix(p, "step:"); ok {
		return "step " + n
	}
	return p
}

func formatWeights(w store.Weights) string {
	var parts []string
	for _, k := range sortedKeys(w) {
		parts = append(parts, k+"="+traffic.FormatWeight(w[k]))
	}
	return strings.Join(parts, " ")
}

// write applies the recorded intent: capacity first when a cluster gains traffic, then the
// pool, then the read-back confirmation.
func (r *Run) write(ctx context.Context, now time.Time) error {
	in := r.rec.Intent
	if err := r.owner(); err != nil {
		return err // the intent stays: whoever owns the run now reconciles it
	}
	if err := r.scale(ctx, now, in.Expect, in.Want, true); err != nil {
		if in.Purpose == "rollback" {
			// Traffic safety wins over capacity: a rollback takes traffic off the variant,
			// and waiting on a hook would keep it there. The clusters that regain traffic
			// carried it before the experiment; a person is told to check their capacity.
			msg := "capacity hook failed before the rollback; rolling back anyway, check the capacity of the clusters that regain traffic: " + err.Error()
			if err := r.save(ctx, r.event(EventCapacityFailed, now, msg, map[string]any{"purpose": in.Purpose, "error": err.Error()})); err != nil {
				return err
			}
			r.notify(ctx, "verdict", "ALERT "+r.exp.Metadata.Name+": "+msg)
		} else {
			// A step or a promotion raises a cluster's share beyond what it carries now:
			// without the capacity for it, not raising is the safe side.
			r.book.HookFails++
			if r.book.HookFails >= 3 {
				r.rec.Intent = nil
				r.book.HookFails = 0
				return r.rollback(ctx, now, VerdictRolledBack, "the capacity hook failed 3 times before raising a cluster's weight: "+err.Error(), r.e.opts.Who, store.StateRolledBack)
			}
			return r.save(ctx, r.event(EventFault, now, "capacity hook failed; weights not changed: "+err.Error(), nil))
		}
	}
	r.book.HookFails = 0
	if err := r.owner(); err != nil {
		return err
	}
	err := r.e.opts.Steerer.SetWeights(ctx, r.ref, toTraffic(in.Want), toTraffic(in.Expect))
	var drift *traffic.DriftError
	switch {
	case err == nil:
		return r.confirm(ctx, now)
	case errors.As(err, &drift) && drift.Phase != "after write":
		r.rec.Intent = nil
		return r.drifted(ctx, now, in.Purpose, err)
	default:
		// The write may or may not have happened: keep the intent, reconcile next step.
		if r.book.WriteFailedAt.IsZero() {
			r.book.WriteFailedAt = now
		}
		r.book.WriteErr = err.Error()
		return r.fault(ctx, now, fmt.Sprintf("set weights for %s on pool %s", purposeText(in.Purpose), r.ref), err)
	}
}

// reconcile finds out what happened to an intent whose outcome is unknown (a crash, a
// timeout, a 5xx) by reading the pool.
func (r *Run) reconcile(ctx context.Context, now time.Time) error {
	in := r.rec.Intent
	pool, err := r.e.opts.Steerer.Pool(ctx, r.ref)
	if err != nil {
		return r.fault(ctx, now, "read pool "+r.ref.String()+" to reconcile "+purposeText(in.Purpose), err)
	}
	actual := r.actual(pool)
	switch {
	case sameWeights(actual, in.Want):
		return r.confirm(ctx, now)
	case sameWeights(actual, in.Expect):
		if r.rec.State == store.StateRamping && strings.HasPrefix(in.Purpose, "step:") {
			// The write has not landed, and the read proves the weights in force are still
			// Current: the intervals served meanwhile are judged as usual, so a Cloudflare
			// outage neither stops the KPI clock nor shields a harmful canary.
			if _, stop, err := r.assess(ctx, now); err != nil || stop {
				return err
			}
		}
		return r.write(ctx, now)
	case in.Purpose == "rollback":
		// Someone changed the pool while a rollback was in flight. A rollback must finish:
		// take the pool as it is and write the rollback weights over the owned origins only.
		in.Expect = actual
		r.rec.Current = actual
		if err := r.save(ctx, r.event(EventDrift, now, "pool changed during the rollback; rolling back from its current weights "+formatWeights(actual), nil)); err != nil {
			return err
		}
		return r.write(ctx, now)
	default:
		r.rec.Intent = nil
		return r.drifted(ctx, now, in.Purpose, fmt.Errorf("pool %s holds %s, neither the weights before (%s) nor after (%s) the interrupted write", r.ref, formatWeights(actual), formatWeights(in.Expect), formatWeights(in.Want)))
	}
}

func (r *Run) actual(p traffic.Pool) store.Weights {
	w := store.Weights{}
	for name := range r.book.Plan[0] {
		if o, ok := p.Origin(name); ok {
			w[name] = o.Weight
		} else {
			w[name] = math.NaN()
		}
	}
	return w
}

// confirm marks the intent as applied and completes what it was for.
func (r *Run) confirm(ctx context.Context, now time.Time) error {
	in := r.rec.Intent
	prev := r.rec.Current
	r.rec.Current = in.Want
	r.rec.Intent = nil
	r.book.Faults = 0
	r.book.WriteErr, r.book.WriteFailedAt = "", time.Time{}
	evs := []store.Event{r.event(EventWeightsConfirmed, now, fmt.Sprintf("weights for %s confirmed by read-back: %s", purposeText(in.Purpose), formatWeights(in.Want)), in)}
	switch {
	case strings.HasPrefix(in.Purpose, "step:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(in.Purpose, "step:"))
		r.rec.Step = n
		r.rec.StepElapsed = 0
		r.book.StepStart = now
		// The interval in progress saw both the old and the new weights: skip it, and the
		// next one too if the change lands within the scrape lag of its start. Behind DNS,
		// clients keep the old answers for a TTL, so the change is only complete then.
		r.book.LastEnd = ceilTime(now.Add(r.settle()+r.book.TTL), r.interval())
		// Those skipped intervals are the engine's choice, not a gap in Prometheus: the
		// no-data clock counts from the first interval wanted, unless an outage is already
		// under way.
		if !r.book.Outage {
			r.book.LastDataAt = r.book.LastEnd
		}
		if r.rec.State != store.StateRamping {
			// The ramp starts when step 1 lands, however long Cloudflare took to take it.
			r.book.RampStart, r.book.LastDataAt = now, r.book.LastEnd
			r.rec.State = store.StateRamping
			evs = append(evs, r.event(EventStateChanged, now, fmt.Sprintf("Preflight → Ramping: step %d, canary at %s of the experiment's traffic", n, r.stepWeight(n)), map[string]any{"to": store.StateRamping, "step": n}))
		}
		if err := r.save(ctx, evs...); err != nil {
			return err
		}
		r.notify(ctx, "step", fmt.Sprintf("%s: step %d of %d, canary %s at %s of the traffic", r.exp.Metadata.Name, n, len(r.exp.Spec.Traffic.Steps), r.exp.Spec.Canary.Cluster, r.stepWeight(n)))
	case in.Purpose == "promote", in.Purpose == "rollback":
		if err := r.save(ctx, evs...); err != nil {
			return err
		}
		if err := r.end(ctx, now, r.book.EndState, r.book.EndVerdict, r.book.EndReason, r.book.EndBy); err != nil {
			return err
		}
	default:
		if err := r.save(ctx, evs...); err != nil {
			return err
		}
	}
	// Scale down only after the traffic has left.
	if err := r.scale(ctx, now, prev, in.Want, false); err != nil {
		// The traffic has already moved, so nothing waits on this; but a cluster left scaled
		// up costs money and a person must hear of it, in the run's history like any event.
		msg := "capacity hook failed while scaling down (traffic already moved); check the capacity of the clusters that lost traffic: " + err.Error()
		if err := r.save(ctx, r.event(EventCapacityFailed, now, msg, map[string]any{"purpose": in.Purpose, "direction": "down", "error": err.Error()})); err != nil {
			return err
		}
		r.notify(ctx, "verdict", "ALERT "+r.exp.Metadata.Name+": "+msg)
	}
	return nil
}

func (r *Run) stepWeight(n int) string {
	if n < 1 || n > len(r.exp.Spec.Traffic.Steps) {
		return "?"
	}
	return r.exp.Spec.Traffic.Steps[n-1].Weight.String()
}

func ceilTime(t time.Time, d time.Duration) time.Time {
	tr := t.Truncate(d)
	if tr.Equal(t) {
		return t
	}
	return tr.Add(d)
}

// drifted follows onDrift after the pool was changed by someone else. A rollback in
// flight always finishes, with its own ending; a promotion in flight follows onDrift, and
// if that rolls back, the ending becomes a rollback that says the promotion was interrupted.
func (r *Run) drifted(ctx context.Context, now time.Time, during string, cause error) error {
	msg := fmt.Sprintf("pool %s changed outside Verdict: %v", r.ref, cause)
	ev := r.event(EventDrift, now, msg, DriftData{During: during, OnDrift: r.exp.Spec.Analysis.OnDrift, Actual: r.driftedWeights(cause)})
	r.notify(ctx, "verdict", r.exp.Metadata.Name+": "+msg)
	policy := r.exp.Spec.Analysis.OnDrift
	if policy == experiments.OnDriftIgnore && errors.Is(cause, traffic.ErrClaimed) {
		policy = experiments.OnDriftPause // two runs steering one pool is never ignored
	}
	switch {
	case during == "rollback" || policy == experiments.OnDriftRollback:
		// A failed read leaves Current stale; the rollback goes on regardless, and its
		// write meets the drift again in reconcile, which rolls back from the pool as read.
		if err := r.adoptPool(ctx, now); err != nil && !errors.Is(err, errPoolUnread) {
			return err
		}
		if r.halted() {
			return nil
		}
		reason := msg
		if during == "promote" {
			reason = "the promotion was interrupted: " + msg
		}
		return r.rollback(ctx, now, VerdictRolledBack, reason, r.e.opts.Who, store.StateRolledBack, ev)
	case policy == experiments.OnDriftIgnore:
		if err := r.adoptPool(ctx, now); err != nil {
			if errors.Is(err, errPoolUnread) {
				return nil // the next read sees the drift again and adopts it then
			}
			return err
		}
		return r.save(ctx, ev)
	default:
		r.book.PauseNote = msg
		r.book.DriftPaused = true
		if r.rec.State != store.StatePaused {
			r.rec.PausedFrom = r.rec.State
			if r.rec.PausedFrom == store.StatePreflight || r.rec.PausedFrom == store.StatePending {
				r.rec.PausedFrom = store.StateRamping
			}
		}
		return r.transition(ctx, now, store.StatePaused, "paused on drift; resume to carry on from the pool's current weights, or abort to roll back", ev)
	}
}

// driftedWeights is what the pool holds for the experiment's origins as the drift error
// saw it: a paused run keeps its last confirmed weights in Current, and whoever watches
// must still see where the traffic really goes.
func (r *Run) driftedWeights(cause error) store.Weights {
	if wd, ok := errors.AsType[*weightsDrift](cause); ok {
		return wd.actual
	}
	var de *traffic.DriftError
	if !errors.As(cause, &de) {
		return nil
	}
	w := store.Weights{}
	for o, v := range r.rec.Current {
		w[o] = v
	}
	for _, d := range de.Origins {
		if _, ours := w[d.Name]; !ours {
			continue
		}
		if d.Missing {
			w[d.Name] = 0
			continue
		}
		w[d.Name] = d.Actual
	}
	return w
}

// weightsDrift is a pool whose experiment weights differ from the last confirmed ones.
type weightsDrift struct{ expect, actual store.Weights }

func (e *weightsDrift) Error() string {
	return fmt.Sprintf("expected %s, found %s", formatWeights(e.expect), formatWeights(e.actual))
}

// halted says the run stopped moving on its own (ended, or paused for a person) while a
// caller was in the middle of something, as a refused token does from any pool call.
func (r *Run) halted() bool { return r.Done() || r.rec.State == store.StatePaused }

// errPoolUnread means the pool could not be read (the fault is recorded): the caller must
// not go on as if it knew the pool's weights.
var errPoolUnread = errors.New("pool not read")

// adoptPool takes the pool's current owned weights as the truth, after a person or a
// policy accepted a change made outside Verdict. A failed read is recorded as a fault and
// returned wrapping errPoolUnread.
func (r *Run) adoptPool(ctx context.Context, now time.Time) error {
	pool, err := r.e.opts.Steerer.Pool(ctx, r.ref)
	if err != nil {
		if ferr := r.fault(ctx, now, "read pool "+r.ref.String(), err); ferr != nil {
			return ferr
		}
		return fmt.Errorf("read pool %s: %w: %w", r.ref, errPoolUnread, err)
	}
	r.rec.Current = r.actual(pool)
	r.book.Unconfirmed = false
	return nil
}

// checkDrift compares the pool with the last confirmed weights, and its claim with the
// run's. stop means the ramp must not go on this tick.
func (r *Run) checkDrift(ctx context.Context, now time.Time) (stop bool, err error) {
	pool, perr := r.e.opts.Steerer.Pool(ctx, r.ref)
	if perr != nil {
		err := r.fault(ctx, now, "read pool "+r.ref.String(), perr)
		return err != nil || r.rec.State != store.StateRamping, err
	}
	if c, ok := pool.Claim(); ok && r.book.Claimed && c.Run != r.rec.ID {
		return true, r.drifted(ctx, now, "ramp", &traffic.ClaimedError{Pool: r.ref, Claim: c})
	}
	if actual := r.actual(pool); !sameWeights(actual, r.rec.Current) {
		return true, r.drifted(ctx, now, "ramp", &weightsDrift{expect: r.rec.Current, actual: actual})
	}
	return false, nil
}

// ---- ramping ---------------------------------------------------------------------------

func (r *Run) ramp(ctx context.Context, now time.Time) error {
	if stop, err := r.checkDrift(ctx, now); err != nil || stop {
		return err
	}
	r.observeHealth(ctx, now, false)
	d, stop, err := r.assess(ctx, now)
	if err != nil || stop {
		return err
	}
	a := &r.exp.Spec.Analysis
	maxed := r.rampElapsed(now) >= a.MaxDuration.Std()
	switch d.Action {
	case analysis.Advance:
		if r.rec.Step >= r.exp.Spec.Traffic.JudgedSteps() {
			return nil
		}
		if hold, err := r.holdForHealth(ctx, now, fmt.Sprintf("step %d", r.rec.Step+1)); err != nil || hold {
			return err
		}
		if ok, failed, err := r.checkPreconditions(ctx, now); err != nil {
			return r.fault(ctx, now, "evaluate preconditions before advancing", err)
		} else if !ok {
			return r.rollback(ctx, now, VerdictCheckFailed, "precondition failed during the run: "+failed, r.e.opts.Who, store.StateRolledBack)
		}
		next := r.rec.Step + 1
		return r.setWeights(ctx, now, fmt.Sprintf("step:%d", next), r.book.Plan[next])
	case analysis.Promote:
		if hold, err := r.holdForHealth(ctx, now, "the promotion"); err != nil || hold {
			return err
		}
		return r.promote(ctx, now, d.Reason, r.e.opts.Who)
	}
	if maxed && a.OnInconclusive == experiments.OnInconclusivePause {
		r.rec.PausedFrom = store.StateRamping
		r.book.PauseNote = "maxDuration reached while inconclusive: " + d.Reason
		return r.transition(ctx, now, store.StatePaused, r.book.PauseNote+"; promote or abort by hand")
	}
	return nil
}

// assess collects the complete intervals, records the decision on them and acts on the
// endings no pending write may hold up: no data past noDataTimeout, and a rollback. It runs
// while ramping, also while a step's write is pending and the pool still holds Current (a
// rollback then drops that intent). stop means the run was moved on.
func (r *Run) assess(ctx context.Context, now time.Time) (d analysis.Decision, stop bool, err error) {
	fresh, err := r.collect(ctx, now)
	if err != nil {
		return d, true, err
	}
	a := &r.exp.Spec.Analysis
	if silent := now.Sub(r.book.LastDataAt); silent > a.NoDataTimeout.Std() {
		reason := r.dropIntent(fmt.Sprintf("no complete KPI data for %s (noDataTimeout %s): never promote blind", experiments.Duration(silent.Truncate(time.Second)), a.NoDataTimeout))
		return d, true, r.rollback(ctx, now, VerdictRolledBack, reason, r.e.opts.Who, store.StateRolledBack)
	}
	d = r.decide(now)
	if fresh > 0 || r.undecided || d.Action != analysis.Continue {
		if err := r.recordDecision(ctx, now, d); err != nil {
			return d, true, err
		}
		r.undecided = false
	}
	if d.Action != analysis.Rollback {
		return d, false, nil
	}
	verdict := VerdictRolledBack
	if r.rampElapsed(now) >= a.MaxDuration.Std() && !anyHarm(d) {
		verdict = VerdictInconclusive
	}
	return d, true, r.rollback(ctx, now, verdict, r.dropIntent(d.Reason), r.e.opts.Who, store.StateRolledBack)
}

// dropIntent gives up a pending step whose write has not landed (the caller read the pool
// at Current) and returns the ending's reason, saying that the load balancer had been
// refusing the step when it had: the run may have been held at a step by Cloudflare.
func (r *Run) dropIntent(reason string) string {
	in := r.rec.Intent
	r.rec.Intent = nil
	werr, since := r.book.WriteErr, r.book.WriteFailedAt
	r.book.WriteErr, r.book.WriteFailedAt = "", time.Time{}
	if in == nil || werr == "" {
		return reason
	}
	return fmt.Sprintf("%s (meanwhile the load balancer, pool %s, refused the weights for %s since %s: %s)", reason, r.ref, purposeText(in.Purpose), since.UTC().Format(time.RFC3339), werr)
}

func anyHarm(d analysis.Decision) bool {
	for _, k := range d.KPIs {
		if k.Status == analysis.Harm || k.Interval.GuardrailBreached {
			return true
		}
	}
	return false
}

// collect reads every complete interval since the last one consumed and feeds the analysis;
// it returns how many intervals had complete data.
func (r *Run) collect(ctx context.Context, now time.Time) (int, error) {
	iv := r.interval()
	avail := now.Add(-r.settle())
	n := int(avail.Sub(r.book.LastEnd) / iv)
	if n <= 0 {
		return 0, nil
	}
	n = min(n, 120)
	rng := metrics.Range{Start: r.book.LastEnd, End: r.book.LastEnd.Add(time.Duration(n) * iv), Interval: iv}
	data, err := r.fetchAll(ctx, rng)
	if err != nil {
		if !r.book.Outage {
			r.book.Outage = true
			return 0, r.save(ctx, r.event(EventNoData, now, "KPIs unavailable, the step clock is stopped: "+err.Error(), map[string]any{"error": err.Error()}))
		}
		return 0, nil
	}
	clusters := r.exp.Spec.Clusters()
	ends := rng.Ends()
	var evs []store.Event
	// The newest interval may still be filling in (late samples): judged once settled.
	last := ends[len(ends)-1]
	lastObs, _ := r.ev.Observe(data, last)
	if ok, note := r.settled(now, last, lastObs); !ok {
		ends = ends[:len(ends)-1]
		rng.End = last.Add(-iv)
		if len(ends) == 0 {
			return 0, nil
		}
	} else if note != "" {
		evs = append(evs, r.event(EventNoData, now, note, nil))
	}
	var obs []store.Observation
	complete := 0
	var missing []string
	for _, end := range ends {
		got, miss := r.ev.Observe(data, end)
		for _, m := range miss {
			if !slices.Contains(missing, m) {
				missing = append(missing, m)
			}
		}
		// The share check expects what the load balancer does: nothing for an origin
		// unhealthy throughout the interval; an interval in which health changed has no
		// single expectation and is left out of it (no weights).
		weights := map[string]float64{}
		down, mixed := r.healthDuring(end.Add(-iv), end)
		for _, c := range clusters {
			weights[c] = r.rec.Current[r.origin[c]]
			if down[c] {
				weights[c] = 0
			}
		}
		if mixed {
			weights = nil
		}
		for name, o := range got {
			o.Weights = weights
			got[name] = o
		}
		r.ev.AddInterval(got, end)
		for _, name := range sortedKeys(got) {
			obs = append(obs, store.Observation{RunID: r.rec.ID, KPI: name, Start: end.Add(-iv), End: end, Step: r.rec.Step, Phase: PhaseRun, Values: encodeObservation(got[name])})
		}
		if len(miss) == 0 {
			complete++
			r.rec.StepElapsed += iv
		}
	}
	r.book.LastEnd = rng.End
	if complete > 0 {
		r.book.LastDataAt = now
		if r.book.Outage {
			evs = append(evs, r.event(EventNoData, now, "KPI data is back; the step clock runs again", nil))
		}
		r.book.Outage = false
	} else if !r.book.Outage {
		r.book.Outage = true
		evs = append(evs, r.event(EventNoData, now, "no data for "+strings.Join(missing, ", ")+"; the step clock is stopped", map[string]any{"kpis": missing}))
	}
	if len(obs) > 0 {
		if err := r.e.opts.Store.AddObservations(ctx, obs); err != nil {
			return 0, fmt.Errorf("persist observations of %s: %w", r.rec.ID, err)
		}
	}
	return complete, r.save(ctx, evs...)
}

// onInconclusive is the action the analysis takes at maxDuration on inconclusive KPIs.
func onInconclusive(a *experiments.Analysis) analysis.Action {
	switch a.OnInconclusive {
	case experiments.OnInconclusivePromote:
		return analysis.Promote
	case experiments.OnInconclusivePause:
		return analysis.Continue
	}
	return analysis.Rollback
}

func (r *Run) decide(now time.Time) analysis.Decision {
	d := r.ev.Decide(Position{Step: r.rec.Step, StepElapsed: r.rec.StepElapsed, Elapsed: r.rampElapsed(now)})
	r.last = &d
	return d
}

func (r *Run) recordDecision(ctx context.Context, now time.Time, d analysis.Decision) error {
	details := map[string]any{"decision": DecisionOf(d), "step": r.rec.Step, "stepElapsed": r.rec.StepElapsed.String(), "values": r.latestValues(),
		decidedThroughKey: r.book.LastEnd}
	dec := &store.Decision{RunID: r.rec.ID, At: now, Step: r.rec.Step, Action: string(d.Action), Reason: d.Reason, Details: mustJSON(details), Fence: r.token()}
	if err := r.e.opts.Store.AddDecision(ctx, dec); err != nil {
		return fmt.Errorf("persist decision of %s: %w", r.rec.ID, err)
	}
	r.emit(r.event(EventDecision, now, fmt.Sprintf("step %d: %s — %s", r.rec.Step, d.Action, d.Reason), details))
	return nil
}

// KPIValue is a KPI's latest canary and baseline values, for live views.
type KPIValue struct {
	KPI      string  `json:"kpi"`
	Canary   float64 `json:"canary"`
	Baseline float64 `json:"baseline"`
}

func (r *Run) latestValues() []KPIValue { return r.ev.LatestValues() }

func finiteOr0(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// ---- endings ---------------------------------------------------------------------------

func (r *Run) promoteTarget() store.Weights {
	if r.exp.Spec.Traffic.OnPromote == experiments.OnPromoteRestore {
		return r.book.Plan[0]
	}
	return r.book.Plan[len(r.book.Plan)-1]
}

// Endings are set once: the first of promote and rollback to run decides the verdict, the
// reason and who, and nothing overwrites them, except that a rollback replaces a promotion
// not yet written (a person's abort, or drift or a failing hook interrupting it).

func (r *Run) promote(ctx context.Context, now time.Time, reason, by string) error {
	if r.book.EndState != "" && r.book.EndState != store.StatePromoted {
		return r.save(ctx, r.event(EventAction, now, "not promoting, the run is already ending: "+r.book.EndReason, nil))
	}
	if note := r.exp.Spec.MigrationNote(); note != "" {
		reason = strings.TrimSuffix(reason, ".") + " — " + note
	}
	r.book.EndState, r.book.EndVerdict, r.book.EndReason, r.book.EndBy = store.StatePromoted, VerdictPromoted, reason, by
	if err := r.transition(ctx, now, store.StatePromoting, reason); err != nil {
		return err
	}
	return r.writeFinal(ctx, now, "promote", r.promoteTarget())
}

func (r *Run) rollback(ctx context.Context, now time.Time, verdict, reason, by string, end store.State, extra ...store.Event) error {
	if r.book.EndState == "" || r.book.EndState == store.StatePromoted {
		r.book.EndState, r.book.EndVerdict, r.book.EndReason, r.book.EndBy = end, verdict, reason, by
	}
	if r.rec.State == store.StateRollingBack {
		// Already rolling back (drift met the write): the ending stands, the events say why.
		if err := r.save(ctx, extra...); err != nil {
			return err
		}
	} else if err := r.transition(ctx, now, store.StateRollingBack, r.book.EndReason, extra...); err != nil {
		return err
	}
	return r.writeFinal(ctx, now, "rollback", r.book.Rollback)
}

// writeFinal writes the weights an ending needs, or ends at once when they are in place.
func (r *Run) writeFinal(ctx context.Context, now time.Time, purpose string, want store.Weights) error {
	if r.book.Unconfirmed && r.rec.Current != nil {
		// A write was dropped unconfirmed: what the pool holds decides what is to write.
		if err := r.adoptPool(ctx, now); err != nil {
			if errors.Is(err, errPoolUnread) {
				return nil // retried next tick
			}
			return err
		}
	}
	if len(want) == 0 || r.rec.Current == nil || sameWeights(r.rec.Current, want) {
		return r.end(ctx, now, r.book.EndState, r.book.EndVerdict, r.book.EndReason, r.book.EndBy)
	}
	return r.setWeights(ctx, now, purpose, want)
}

func (r *Run) end(ctx context.Context, now time.Time, state store.State, verdict, reason, by string) error {
	from := r.rec.State
	r.rec.State, r.rec.Verdict, r.rec.Reason, r.rec.EndedBy, r.rec.EndedAt = state, verdict, reason, by, now
	ev := r.event(EventRunEnded, now, fmt.Sprintf("%s: %s — %s", r.exp.Metadata.Name, verdict, reason), map[string]any{
		"from": from, "state": state, "verdict": verdict, "reason": reason, "by": by, "weights": r.rec.Current,
	})
	if err := r.save(ctx, ev); err != nil {
		return err
	}
	if err := r.release(ctx, now); err != nil {
		return err
	}
	if err := r.syncSource(ctx, now); err != nil {
		return err
	}
	r.notify(ctx, "verdict", fmt.Sprintf("%s %s: %s", r.exp.Metadata.Name, strings.ReplaceAll(verdict, "_", " "), reason))
	r.notify(ctx, "end", fmt.Sprintf("%s ended (%s) after %s; weights %s", r.exp.Metadata.Name, state, now.Sub(r.rec.CreatedAt).Truncate(time.Second), formatWeights(r.rec.Current)))
	return nil
}

// ---- manual actions --------------------------------------------------------------------

// Manual actions.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionPromote = "promote"
	ActionAbort   = "abort"
)

// Actions lists the manual actions.
var Actions = []string{ActionPause, ActionResume, ActionPromote, ActionAbort}

func (r *Run) commands(ctx context.Context, now time.Time) error {
	cmds, err := r.e.opts.Store.PendingCommands(ctx, r.rec.ID)
	if err != nil {
		return fmt.Errorf("read commands of %s: %w", r.rec.ID, err)
	}
	for _, c := range cmds {
		result, err := r.apply(ctx, now, c)
		if errors.Is(err, errPoolUnread) {
			return nil // the command stays pending and is retried next step
		}
		if err != nil {
			return err
		}
		if err := r.e.opts.Store.CompleteCommand(ctx, c.ID, result, now); err != nil {
			return err
		}
		if r.Done() || r.rec.Intent != nil {
			return nil
		}
	}
	return nil
}

func (r *Run) apply(ctx context.Context, now time.Time, c store.Command) (string, error) {
	who := c.Who
	why := c.Reason
	if why == "" {
		why = "no reason given"
	}
	act := r.event(EventAction, now, fmt.Sprintf("%s asked to %s: %s", who, c.Action, why), c)
	st := r.rec.State
	switch c.Action {
	case ActionPause:
		if st != store.StateRamping && st != store.StatePreflight && st != store.StatePending {
			return "ignored: run is " + string(st), r.save(ctx, act)
		}
		r.rec.PausedFrom = st
		r.book.PauseNote = fmt.Sprintf("paused by %s: %s", who, why)
		return "paused", r.transition(ctx, now, store.StatePaused, r.book.PauseNote, act)
	case ActionResume:
		if st != store.StatePaused {
			return "ignored: run is " + string(st), r.save(ctx, act)
		}
		to := r.rec.PausedFrom
		if to == "" {
			to = store.StateRamping
		}
		if to == store.StateRamping {
			// Whatever changed while paused was seen by a person: carry on from the pool,
			// never from weights it may no longer hold.
			if err := r.adoptPool(ctx, now); err != nil {
				return "", err
			}
			r.book.LastDataAt = now
			r.book.LastEnd = ceilTime(now, r.interval())
		}
		r.book.PauseNote = ""
		return "resumed", r.transition(ctx, now, to, fmt.Sprintf("resumed by %s: %s", who, why), act)
	case ActionPromote:
		if st != store.StateRamping && !(st == store.StatePaused && r.rec.PausedFrom == store.StateRamping) {
			return "ignored: only a ramping run can be promoted (run is " + string(st) + ")", r.save(ctx, act)
		}
		if err := r.save(ctx, act); err != nil {
			return "", err
		}
		return "promoting", r.promote(ctx, now, fmt.Sprintf("promoted by %s, skipping the remaining steps: %s", who, why), who)
	case ActionAbort:
		if st == store.StateRollingBack || st == store.StatePromoting || st.Terminal() {
			return "ignored: run is " + string(st), r.save(ctx, act)
		}
		if err := r.save(ctx, act); err != nil {
			return "", err
		}
		if r.rec.Current == nil { // nothing was changed yet
			return "aborted", r.end(ctx, now, store.StateAborted, VerdictAborted, fmt.Sprintf("aborted by %s before any change: %s", who, why), who)
		}
		return "rolling back", r.rollback(ctx, now, VerdictAborted, fmt.Sprintf("aborted by %s: %s", who, why), who, store.StateAborted)
	}
	return "ignored: unknown action " + c.Action, r.save(ctx, act)
}

// ---- replay ----------------------------------------------------------------------------

// decidedThroughKey names the end of the last interval a decision had seen, in its details.
const decidedThroughKey = "decidedThrough"

// replay rebuilds the analysis state from the stored observations, in their order, and
// finds out whether the last complete interval was decided.
func (r *Run) replay(ctx context.Context) error {
	obs, err := r.e.opts.Store.Observations(ctx, r.rec.ID)
	if err != nil {
		return err
	}
	lastComplete, err := r.ev.Replay(obs)
	if err != nil {
		return err
	}
	if lastComplete.IsZero() || r.rec.State != store.StateRamping {
		return nil
	}
	ds, err := r.e.opts.Store.Decisions(ctx, r.rec.ID)
	if err != nil {
		return err
	}
	var through time.Time
	for _, d := range ds {
		var det map[string]json.RawMessage
		var at time.Time
		if json.Unmarshal(d.Details, &det) == nil && json.Unmarshal(det[decidedThroughKey], &at) == nil && at.After(through) {
			through = at
		}
	}
	r.undecided = lastComplete.After(through)
	return nil
}

// ---- views -----------------------------------------------------------------------------

// Snapshot is what a live view shows about a run.
type Snapshot struct {
	Run      store.Run     `json:"run"`
	Steps    int           `json:"steps"`
	Hold     time.Duration `json:"hold"`
	Decision *Decision     `json:"decision,omitempty"`
	Values   []KPIValue    `json:"values"`
	Share    ShareResult   `json:"share"`
	Noise    []KPINoise    `json:"noise,omitempty"`
	// Phases are the run's phases (experiments.Spec.Phases) and Phase the one it is in.
	Phases    []string  `json:"phases,omitempty"`
	Phase     string    `json:"phase,omitempty"`
	PauseNote string    `json:"pauseNote,omitempty"`
	RampStart time.Time `json:"rampStart,omitzero"`
	// PausedFor and PausedAt are the book's: the ramp time spent paused, which maxDuration
	// does not count (PausedAt the start of a pause still going on).
	PausedFor   time.Duration `json:"pausedFor,omitempty"`
	PausedAt    time.Time     `json:"pausedAt,omitzero"`
	MaxDuration time.Duration `json:"maxDuration"`
	// TTL is the pool's DNS TTL (Route 53), the minimum wait after a weight change before
	// an interval counts; 0 for a load balancer pool.
	TTL time.Duration `json:"ttl,omitempty"`
}

// Snapshot returns the run's state for display, as published after the last save or
// Step. It is safe to call from any goroutine while another steps the run: nothing in it
// aliases what Step changes.
func (r *Run) Snapshot() Snapshot { return *r.snap.Load() }

// publish makes the run's current state what Snapshot and Record return. It runs on the
// stepping goroutine only.
func (r *Run) publish() {
	s := &Snapshot{Run: cloneRun(r.rec), Steps: len(r.exp.Spec.Traffic.Steps), Values: r.latestValues(),
		Share: ShareResultOf(r.ev.Share(r.exp.Spec.Analysis.Alpha)), Noise: r.ev.Noise(), Phases: r.exp.Spec.Phases(), Phase: r.phase(), PauseNote: r.book.PauseNote, RampStart: r.book.RampStart, PausedFor: r.book.PausedFor, PausedAt: r.book.PausedAt, MaxDuration: r.exp.Spec.Analysis.MaxDuration.Std(), TTL: r.book.TTL}
	if r.last != nil {
		d := DecisionOf(*r.last) // a copy: nothing in it aliases what Step changes
		s.Decision = &d
	}
	if r.rec.Step >= 1 && r.rec.Step <= s.Steps {
		s.Hold = r.exp.Spec.Traffic.Steps[r.rec.Step-1].Hold.Std()
	}
	r.snap.Store(s)
}

// publishRecord refreshes the published run record and keeps the last published analysis:
// cheap enough for every save.
func (r *Run) publishRecord() {
	s := *r.snap.Load()
	s.Run, s.Phase, s.PauseNote, s.RampStart, s.TTL = cloneRun(r.rec), r.phase(), r.book.PauseNote, r.book.RampStart, r.book.TTL
	s.PausedFor, s.PausedAt = r.book.PausedFor, r.book.PausedAt
	s.Hold = 0
	if r.rec.Step >= 1 && r.rec.Step <= s.Steps {
		s.Hold = r.exp.Spec.Traffic.Steps[r.rec.Step-1].Hold.Std()
	}
	r.snap.Store(&s)
}

// cloneRun copies a run record deep enough that the copy shares nothing Step mutates.
func cloneRun(rec *store.Run) store.Run {
	c := *rec
	c.Current, c.Original = maps.Clone(rec.Current), maps.Clone(rec.Original)
	c.Data, c.Spec = slices.Clone(rec.Data), slices.Clone(rec.Spec)
	if rec.Intent != nil {
		in := *rec.Intent
		in.Want, in.Expect = maps.Clone(in.Want), maps.Clone(in.Expect)
		c.Intent = &in
	}
	return c
}

// phase is where the run is among experiments' phases: baseline until the history is read,
// apply while the hook is to run, ready while readiness is awaited, then ramp.
func (r *Run) phase() string {
	st := r.rec.State
	if st == store.StatePaused {
		st = r.rec.PausedFrom
	}
	switch {
	case st == store.StatePending || (st == store.StatePreflight && !r.book.HistoryRead):
		return experiments.PhaseBaseline
	case st == store.StatePreflight && r.book.Apply == applyHook:
		return experiments.PhaseApply
	case st == store.StatePreflight && r.book.Apply == applyReady:
		return experiments.PhaseReady
	case st == store.StatePreflight && r.applyDeclared() && r.book.Apply == "":
		return experiments.PhaseApply
	}
	return experiments.PhaseRamp
}

// Drive steps the run every tick until it ends or ctx is cancelled. It returns the first
// error that makes continuing unsafe (the run is then left for a later resume).
func (r *Run) Drive(ctx context.Context, clk Clock, tick time.Duration) error {
	return r.DriveEach(ctx, clk, tick, nil)
}

// DriveEach is Drive calling after (when set) after every step, failed or not: a live view
// draws each step's outcome, the last one included.
func (r *Run) DriveEach(ctx context.Context, clk Clock, tick time.Duration, after func()) error {
	return driveLoop(ctx, clk, tick, r.Step, r.Done, after)
}

// driveLoop steps until done, every tick, until ctx is cancelled.
func driveLoop(ctx context.Context, clk Clock, tick time.Duration, step func(context.Context, time.Time) error, done func() bool, after func()) error {
	for !done() {
		err := step(ctx, clk.Now())
		if after != nil {
			after()
		}
		if err != nil {
			return err
		}
		if done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clk.After(tick):
		}
	}
	return nil
}

// ---- refused credentials -----------------------------------------------------------------

// unauthorized stops a run whose API token Cloudflare refuses (HTTP 401/403): retrying
// cannot help until a person fixes the token. With nothing changed yet the run fails; with
// weights moved it pauses, so it stays resumable and an abort rolls it back once a process
// with a working token drives it. Either way the message says where the pool is left.
func (r *Run) unauthorized(ctx context.Context, now time.Time, what string, err error) error {
	status := "HTTP 401/403"
	var ae *traffic.APIError
	if errors.As(err, &ae) {
		status = fmt.Sprintf("HTTP %d", ae.Status)
	}
	head := fmt.Sprintf("Cloudflare refused the API token (%s) to %s: %v", status, what, err)
	if r.exp.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
		head = fmt.Sprintf("Route 53 refused the AWS credentials (%s) to %s: %v", status, what, err)
	}
	ev := r.event(EventFault, now, head, map[string]any{"error": err.Error(), "unauthorized": true})
	in := r.rec.Intent
	if in == nil && r.rec.Step == 0 && (r.rec.Current == nil || sameWeights(r.rec.Current, r.book.Plan[0])) && r.book.EndState == "" {
		left := "unchanged"
		if r.rec.Current != nil {
			left += " at " + formatWeights(r.rec.Current)
		}
		if err := r.save(ctx, ev); err != nil {
			return err
		}
		return r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("%s; nothing was changed, the pool is left %s; fix the token and start the run again", head, left), r.e.opts.Who)
	}
	left := formatWeights(r.rec.Current)
	if in != nil {
		// Whether the write landed is unknown until a working token reads the pool.
		left = fmt.Sprintf("%s, or %s if the last write landed", formatWeights(in.Expect), formatWeights(in.Want))
		r.rec.Intent = nil
		r.book.Unconfirmed = true
	}
	file := r.rec.SpecFile
	if file == "" {
		file = "FILE"
	}
	r.book.PauseNote = fmt.Sprintf("%s; the pool is left at %s; fix the token and run `verdict run %s --resume %s` to carry on, or `verdict abort %s` to roll back", head, left, file, r.rec.ID, r.rec.ID)
	if r.rec.State == store.StatePaused {
		return r.save(ctx, ev)
	}
	r.rec.PausedFrom = r.rec.State
	if r.rec.PausedFrom == store.StatePending {
		r.rec.PausedFrom = store.StatePreflight
	}
	r.notify(ctx, "verdict", "ALERT "+r.exp.Metadata.Name+": "+r.book.PauseNote)
	return r.transition(ctx, now, store.StatePaused, r.book.PauseNote, ev)
}

// ---- pool claims -------------------------------------------------------------------------

// A run claims its pool in the pool itself (traffic.Claimer) before the first weight write,
// so that runs from other stores and people at the dashboard see it; a second run is
// refused unless Options.TakeOverPool, another run's claim appearing mid-run is drift, and
// the ending replaces the claim with a note of the verdict (traffic.LastRun).

// claim marks the pool as this run's, once, from the pool just read. It returns false when
// the run cannot go on now: another run's claim ended it (check_failed), or a fault was
// recorded to retry.
func (r *Run) claim(ctx context.Context, now time.Time, pool traffic.Pool) (bool, error) {
	cl, ok := r.e.opts.Steerer.(traffic.Claimer)
	if !ok || r.book.Claimed {
		return true, nil
	}
	if err := r.owner(); err != nil {
		return false, err
	}
	force := r.e.opts.TakeOverPool
	err := cl.Claim(ctx, r.ref, traffic.Claim{Run: r.rec.ID, Owner: r.e.opts.Who, Since: now}, force)
	var ce *traffic.ClaimedError
	switch {
	case errors.As(err, &ce):
		return false, r.end(ctx, now, store.StateFailed, VerdictCheckFailed, fmt.Sprintf("%v: another Verdict, perhaps with another state directory, is running an experiment on this pool; nothing was changed. Wait for run %s to end or abort it; if it is dead, start this run with the option to take over the pool (engine.Options.TakeOverPool)", ce, ce.Claim.Run), r.e.opts.Who)
	case err != nil:
		if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.rec.StartedAt) > timeout && !errors.Is(err, traffic.ErrUnauthorized) {
			return false, r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("the pool could not be claimed for %s: %v", timeout, err), r.e.opts.Who)
		}
		return false, r.fault(ctx, now, "claim pool "+r.ref.String(), err)
	}
	r.book.Claimed = true
	msg := fmt.Sprintf("claimed pool %s for run %s (owner %s)", r.ref, r.rec.ID, r.e.opts.Who)
	data := map[string]any{"run": r.rec.ID, "owner": r.e.opts.Who}
	if old, ok := pool.Claim(); ok && old.Run != r.rec.ID && force {
		msg = fmt.Sprintf("took over pool %s: replaced the claim of run %s (driven by %s since %s)", r.ref, old.Run, old.Owner, old.Since.UTC().Format(time.RFC3339))
		data["replaced"] = map[string]any{"run": old.Run, "owner": old.Owner, "since": old.Since}
	}
	return true, r.save(ctx, r.event(EventClaim, now, msg, data))
}

// warnings are what a person should know before the first weight moves; they never block.
func (r *Run) warnings(pool traffic.Pool, now time.Time) []store.Event {
	var evs []store.Event
	for _, w := range poolWarnings(r.exp, pool, r.book.Plan, now) {
		evs = append(evs, r.event(EventWarning, now, w.Message, w))
	}
	return evs
}

// PoolWarning is something a person should know before an experiment's first weight moves
// on a pool. It never blocks the run.
type PoolWarning struct {
	Kind    string `json:"kind"` // WarnRecentPromotion, WarnStepOneLowersCanary or WarnDNSTTL
	Message string `json:"message"`
	// LastRun, Verdict and Ended describe the pool's last run, for a recent promotion.
	LastRun string    `json:"lastRun,omitempty"`
	Verdict string    `json:"verdict,omitempty"`
	Ended   time.Time `json:"ended,omitzero"`
	// Canary, Current and Step1 are the canary's share of the experiment's traffic now and
	// at step 1, for a step 1 that lowers it.
	Canary  string  `json:"canary,omitempty"`
	Current float64 `json:"current,omitempty"`
	Step1   float64 `json:"step1,omitempty"`
	// TTL is the DNS TTL ("1m0s") of a pool behind DNS, for WarnDNSTTL.
	TTL string `json:"ttl,omitempty"`
}

// Kinds of PoolWarning.
const (
	WarnRecentPromotion     = "recent_promotion"
	WarnStepOneLowersCanary = "step1_lowers_canary"
	// WarnDNSTTL states the pool's DNS TTL, which delays the evidence after every change.
	WarnDNSTTL = "dns_ttl"
)

// PoolWarnings are the warnings a run of exp on pool would give now, as the engine gives
// them in preflight and `verdict plan`/`check` print them. A pool the experiment cannot
// run on gives none: planning reports that.
func PoolWarnings(exp *experiments.Experiment, pool traffic.Pool, now time.Time) []PoolWarning {
	var origins []experiments.PoolOrigin
	for _, o := range pool.Origins {
		origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
	}
	plan, err := experiments.WeightPlan(exp, origins)
	if err != nil {
		return nil
	}
	var owned []store.Weights
	for _, st := range plan.Steps {
		w := store.Weights{}
		for _, o := range st.Origins {
			if o.Cluster != "" {
				w[o.Name] = o.Weight
			}
		}
		owned = append(owned, w)
	}
	return poolWarnings(exp, pool, owned, now)
}

// recentPromotion is how long after a promotion on the pool a new run warns that it may
// undo it: the experiment's maxDuration, at least an hour.
func recentPromotion(exp *experiments.Experiment) time.Duration {
	return max(time.Hour, exp.Spec.Analysis.MaxDuration.Std())
}

func poolWarnings(exp *experiments.Experiment, pool traffic.Pool, plan []store.Weights, now time.Time) []PoolWarning {
	var out []PoolWarning
	if lr, ok := pool.LastRun(); ok && lr.Verdict == VerdictPromoted && now.Sub(lr.Ended) < recentPromotion(exp) {
		out = append(out, PoolWarning{Kind: WarnRecentPromotion, LastRun: lr.Run, Verdict: lr.Verdict, Ended: lr.Ended,
			Message: fmt.Sprintf("run %s promoted on this pool %s ago: this run's steps may undo that promotion", lr.Run, now.Sub(lr.Ended).Truncate(time.Second))})
	}
	// Every canary starts above step 1 with an even split, so only a canary above its even
	// share (a previous promotion, a manual shift) is worth a warning when step 1 lowers it.
	cluster := exp.Spec.Canary.Cluster
	canary := exp.Spec.Traffic.Origins()[cluster]
	share := func(w store.Weights) float64 {
		total := 0.0
		for _, v := range w {
			total += v
		}
		if total <= 0 {
			return 0
		}
		return w[canary] / total
	}
	if len(plan) > 1 {
		cur, first := share(plan[0]), share(plan[1])
		even := 1 / float64(len(exp.Spec.Clusters()))
		if cur > first+traffic.WeightStep && cur > even+traffic.WeightStep {
			out = append(out, PoolWarning{Kind: WarnStepOneLowersCanary, Canary: cluster, Current: cur, Step1: first,
				Message: fmt.Sprintf("step 1 lowers the canary %s from %.0f%% to %.0f%% of the experiment's traffic: it already carries more than an even share, perhaps from a previous promotion", cluster, cur*100, first*100)})
		}
	}
	return out
}

// renewClaim puts this process's claim on the pool of a resumed run. Another run's claim
// is left for checkDrift to treat as drift.
func (r *Run) renewClaim(ctx context.Context, now time.Time) error {
	cl, ok := r.e.opts.Steerer.(traffic.Claimer)
	if !ok || !r.book.Claimed || r.Done() {
		return nil
	}
	if err := r.owner(); err != nil {
		return err
	}
	if err := cl.Claim(ctx, r.ref, traffic.Claim{Run: r.rec.ID, Owner: r.e.opts.Who, Since: now}, false); err != nil {
		return r.save(ctx, r.event(EventClaim, now, fmt.Sprintf("could not renew the claim on pool %s: %v", r.ref, err), map[string]any{"error": err.Error()}))
	}
	return r.save(ctx, r.event(EventClaim, now, fmt.Sprintf("renewed the claim on pool %s (owner %s)", r.ref, r.e.opts.Who), map[string]any{"run": r.rec.ID, "owner": r.e.opts.Who}))
}

// release replaces the run's claim with a note of its verdict, best effort: a failure is an
// event and never holds the ending up.
func (r *Run) release(ctx context.Context, now time.Time) error {
	cl, ok := r.e.opts.Steerer.(traffic.Claimer)
	if !ok || !r.book.Claimed {
		return nil
	}
	err := cl.Release(ctx, r.ref, traffic.LastRun{Run: r.rec.ID, Verdict: r.rec.Verdict, Ended: now})
	if err != nil {
		return r.save(ctx, r.event(EventClaim, now, fmt.Sprintf("could not release the claim on pool %s: %v", r.ref, err), map[string]any{"error": err.Error()}))
	}
	r.book.Claimed = false
	return r.save(ctx, r.event(EventClaim, now, fmt.Sprintf("released pool %s: %s", r.ref, r.rec.Verdict), map[string]any{"verdict": r.rec.Verdict}))
}
