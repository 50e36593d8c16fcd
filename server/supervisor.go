package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// runner drives one engine run. Step and Snapshot share mu, because an engine.Run is not
// safe for concurrent use; readers take the snapshot published after every step instead.
type runner struct {
	id, experiment, file string
	exp                  *experiments.Experiment // as started or resumed; never changes

	mu    sync.Mutex
	run   *engine.Run
	drill *engine.DrillRun // a drill's run, stepped as a drill (drills.go)

	// hold is the run's lease when replicas share the store (nil otherwise): the run is
	// stepped only while it is live, and every save carries its token.
	hold *store.Hold

	snap    atomic.Pointer[engine.Snapshot]
	stalled atomic.Pointer[string] // why stepping stopped, while it is retried

	wake chan struct{}
	done chan struct{}

	stepMu  sync.Mutex
	stepped chan struct{} // closed and replaced after every step
	close   func()
}

func (r *runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// afterStep returns a channel closed after the next step.
func (r *runner) afterStep() <-chan struct{} {
	r.stepMu.Lock()
	defer r.stepMu.Unlock()
	return r.stepped
}

func (r *runner) signalStep() {
	r.stepMu.Lock()
	close(r.stepped)
	r.stepped = make(chan struct{})
	r.stepMu.Unlock()
}

// snapshot returns the run's state after its latest step.
func (r *runner) snapshot() engine.Snapshot {
	if s := r.snap.Load(); s != nil {
		return *s
	}
	return engine.Snapshot{}
}

// supervisor runs several experiments at once, each in its own goroutine with its own
// engine (its own Prometheus), and stops them all without touching their pools.
type supervisor struct {
	s    *Server
	mu   sync.Mutex
	runs map[string]*runner // by run ID, ended ones included until restart
	stop chan struct{}      // closed on shutdown: no new step starts
	wg   sync.WaitGroup
}

func newSupervisor(s *Server) *supervisor {
	return &supervisor{s: s, runs: map[string]*runner{}, stop: make(chan struct{})}
}

func (sv *supervisor) get(id string) (*runner, bool) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	r, ok := sv.runs[id]
	return r, ok
}

// keepEnded is how long an ended run stays in memory (and on /metrics, showing how it
// ended) before only the store remembers it.
const keepEnded = 24 * time.Hour

// list returns the runs this server drives or recently drove, forgetting runs that ended
// more than keepEnded ago.
func (sv *supervisor) list() []*runner {
	now := sv.s.opts.Clock.Now()
	sv.mu.Lock()
	defer sv.mu.Unlock()
	out := make([]*runner, 0, len(sv.runs))
	for id, r := range sv.runs {
		if end := r.snapshot().Run.EndedAt; r.isDone() && !end.IsZero() && now.Sub(end) > keepEnded {
			delete(sv.runs, id)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (sv *supervisor) stopping() bool {
	select {
	case <-sv.stop:
		return true
	default:
		return false
	}
}

// engineFor builds an engine for one experiment, with that experiment's Prometheus and,
// with Options.SteererFor, its own steerer. setRun names the run in their log lines once
// the engine has given it an ID.
func (sv *supervisor) engineFor(exp *experiments.Experiment) (eng *engine.Engine, closeSrc func(), setRun func(string), err error) {
	o := &sv.s.opts
	sv.s.tel.prepare(exp)
	log, setRun := newRunLogger(o.Logger.With("experiment", exp.Metadata.Name))
	steer := o.Steerer
	if o.SteererFor != nil {
		if steer, err = o.SteererFor(exp, log); err != nil {
			return nil, nil, nil, fmt.Errorf("steerer of %s: %w", exp.Metadata.Name, err)
		}
	}
	src, closeSrc, err := o.MetricsFor(exp)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("prometheus of %s: %w", exp.Metadata.Name, err)
	}
	eng, err = engine.New(engine.Options{
		Store:    o.Store,
		Steerer:  steer,
		Metrics:  sv.s.tel.instrumentKPI(src, exp.Metadata.Name),
		Notifier: o.Notifier,
		Hooks:    o.Hooks,
		Observer: engine.ObserverFunc(sv.s.observe),
		// The engine names the run in its own lines.
		Logger: o.Logger.With("experiment", exp.Metadata.Name),
		Settle: o.Settle,
		Who:    o.Who,
	})
	if err != nil {
		closeSrc()
		return nil, nil, nil, err
	}
	return eng, closeSrc, setRun, nil
}

// acquire takes the run's lease when replicas share the store; nil, nil without leases.
// It fails matching store.ErrLeaseHeld while another replica drives the run.
func (sv *supervisor) acquire(ctx context.Context, runID string) (*store.Hold, error) {
	s := sv.s
	if s.leaser == nil {
		return nil, nil
	}
	// The hold outlives ctx (a scan's): it ends with the run, its loss or Release.
	return store.AcquireHold(context.WithoutCancel(ctx), s.leaser, runID, s.opts.Replica, store.HoldOptions{
		TTL: s.opts.LeaseTTL, Every: s.opts.LeaseRenew, Clock: s.opts.LeaseClock, Logger: s.opts.Logger.With("replica", s.opts.Replica)})
}

// release gives a hold up, so another replica can take the run over at once.
func (sv *supervisor) release(h *store.Hold) {
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Release(ctx); err != nil {
		sv.s.opts.Logger.Warn("release lease", "run", h.Lease().RunID, "err", err)
	}
}

// start records a new run of exp and drives it. With leases, another replica may take the
// new run's lease first: it then drives the run, and start fails matching
// store.ErrLeaseHeld.
func (sv *supervisor) start(ctx context.Context, exp *experiments.Experiment, file string) (*runner, error) {
	if sv.stopping() {
		return nil, errors.New("server is stopping")
	}
	eng, closeSrc, setRun, err := sv.engineFor(exp)
	if err != nil {
		return nil, err
	}
	run, err := eng.Start(ctx, exp, file, sv.s.opts.Clock.Now())
	if err != nil {
		closeSrc()
		return nil, err
	}
	setRun(run.ID())
	hold, err := sv.acquire(ctx, run.ID())
	if err != nil {
		// The run is recorded; whichever replica gets its lease drives it.
		closeSrc()
		return nil, err
	}
	return sv.launch(run, nil, file, closeSrc, hold), nil
}

// resume reloads an unfinished run. exp is the experiment as its file says now, for the
// secrets the store never keeps; nil (or a file that changed since) resumes the run from its
// stored spec, without notification targets.
func (sv *supervisor) resume(ctx context.Context, rec *store.Run, exp *experiments.Experiment) (*runner, error) {
	if isDrillRun(rec) {
		return sv.resumeDrill(ctx, rec)
	}
	if exp != nil && string(mustJSON(exp)) != string(rec.Spec) {
		exp = nil
	}
	build := exp
	if build == nil {
		build = &experiments.Experiment{}
		if err := json.Unmarshal(rec.Spec, build); err != nil {
			return nil, fmt.Errorf("resume %s: stored experiment: %w", rec.ID, err)
		}
	}
	return sv.resumeWith(ctx, rec, build, func(eng *engine.Engine) (*engine.Run, *engine.DrillRun, error) {
		run, err := eng.Resume(ctx, rec.ID, exp)
		return run, nil, err
	})
}

// resumeWith takes rec's lease, builds the engine for build and has open resume the run in
// it (and the drill around it, for a drill); on any failure, or when the run turns out to
// have ended, the lease and the metrics source are given back.
func (sv *supervisor) resumeWith(ctx context.Context, rec *store.Run, build *experiments.Experiment, open func(*engine.Engine) (*engine.Run, *engine.DrillRun, error)) (*runner, error) {
	// With leases, the lease comes first: the run is read (and its in-flight intent
	// reconciled, at the first step) only by its owner.
	hold, err := sv.acquire(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	eng, closeSrc, setRun, err := sv.engineFor(build)
	if err != nil {
		sv.release(hold)
		return nil, err
	}
	setRun(rec.ID)
	run, drill, err := open(eng)
	if err != nil {
		closeSrc()
		sv.release(hold)
		return nil, err
	}
	if run.Done() {
		// Ended by another replica since it was listed.
		closeSrc()
		sv.release(hold)
		return nil, fmt.Errorf("run %s has ended: %w", rec.ID, store.ErrLeaseHeld)
	}
	return sv.launch(run, drill, rec.SpecFile, closeSrc, hold), nil
}

// launch has the supervisor drive run, through drill's state machine when drill is not nil.
func (sv *supervisor) launch(run *engine.Run, drill *engine.DrillRun, file string, closeSrc func(), hold *store.Hold) *runner {
	if hold != nil {
		run.SetFence(hold)
	}
	r := &runner{id: run.ID(), experiment: run.Experiment().Metadata.Name, exp: run.Experiment(), file: file, run: run, drill: drill, hold: hold,
		wake: make(chan struct{}, 1), done: make(chan struct{}), stepped: make(chan struct{}), close: closeSrc}
	snap := run.Snapshot()
	r.snap.Store(&snap)
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.stopping() {
		// Shutting down: the run stays as the store has it, for the next start.
		close(r.done)
		closeSrc()
		go sv.release(hold)
		return r
	}
	sv.runs[r.id] = r
	sv.wg.Add(1) // under mu, so never after shutdown has begun to wait
	go sv.drive(r)
	return r
}

// tick is how often a run steps: Options.Tick, else a sixth of its analysis interval
// within 1s–10s (as verdict run does).
func (sv *supervisor) tick(exp *experiments.Experiment) time.Duration {
	if sv.s.opts.Tick > 0 {
		return sv.s.opts.Tick
	}
	return min(max(exp.Spec.Analysis.Interval.Std()/6, time.Second), 10*time.Second)
}

// drive steps r until it ends or the server stops. A step is never interrupted by the
// shutdown: it finishes (and persists) first, so the pool is left as the store says.
func (sv *supervisor) drive(r *runner) {
	defer sv.wg.Done()
	defer close(r.done)
	defer func() { r.close() }()
	// Last, after the final step has persisted: hand the run over (SIGTERM, the run's end,
	// or a lease already lost, when releasing changes nothing).
	defer sv.release(r.hold)
	o := &sv.s.opts
	log := o.Logger.With("run", r.id, "experiment", r.experiment)
	tick := sv.tick(r.exp)
	failures := 0
	parent, lost := context.Background(), (<-chan struct{})(nil)
	if r.hold != nil {
		parent, lost = r.hold.Context(), r.hold.Context().Done()
	}
	for {
		if sv.stopping() {
			return
		}
		if parent.Err() != nil {
			sv.drop(r, log, context.Cause(parent))
			return
		}
		ctx, cancel := context.WithTimeout(parent, o.StepTimeout)
		r.mu.Lock()
		err := r.step(ctx, o.Clock.Now())
		snap := r.run.Snapshot()
		done := r.run.Done()
		r.mu.Unlock()
		cancel()
		r.snap.Store(&snap)
		r.signalStep()
		if err != nil && r.hold != nil && (errors.Is(err, store.ErrLeaseLost) || parent.Err() != nil) {
			cause := err
			if parent.Err() != nil {
				cause = context.Cause(parent)
			}
			sv.drop(r, log, cause)
			return
		}
		wait := tick
		if err != nil {
			failures++
			why := err.Error()
			r.stalled.Store(&why)
			wait = min(tick<<min(failures, 6), time.Minute)
			log.Error("step failed; the run is reloaded from the store and retried", "err", err, "retry_in", wait)
			sv.s.notice("run_stalled", r.id, fmt.Sprintf("run %s could not step: %v; reloading it from the store in %s", r.id, err, wait), map[string]any{"error": err.Error()})
		} else if failures > 0 {
			failures = 0
			r.stalled.Store(nil)
		}
		if done {
			log.Info("run ended", "state", snap.Run.State, "verdict", snap.Run.Verdict)
			return
		}
		select {
		case <-sv.stop:
			return
		case <-lost:
			sv.drop(r, log, context.Cause(parent))
			return
		case <-r.wake:
		case <-o.Clock.After(wait):
		}
		if err != nil {
			sv.reload(r, log)
		}
	}
}

// reload rebuilds a run from the store after a failed step, as a restart would.
func (sv *supervisor) reload(r *runner, log interface{ Error(string, ...any) }) {
	if r.drill != nil {
		sv.reloadDrill(r, log)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sv.s.opts.StepTimeout)
	defer cancel()
	eng, closeSrc, setRun, err := sv.engineFor(r.exp)
	if err != nil {
		log.Error("reload failed", "err", err)
		return
	}
	setRun(r.id)
	run, err := eng.Resume(ctx, r.id, r.exp)
	if errors.Is(err, engine.ErrSpecChanged) {
		run, err = eng.Resume(ctx, r.id, nil)
	}
	if err != nil {
		closeSrc()
		log.Error("reload failed", "err", err)
		return
	}
	if r.hold != nil {
		run.SetFence(r.hold)
	}
	r.mu.Lock()
	r.run = run
	r.mu.Unlock()
	old := r.close
	r.close = closeSrc
	old()
}

// drop stops driving a run whose lease this replica lost: another replica drives it now
// (or will, once it takes the lease). Its in-memory state is forgotten; if this replica
// gets the lease again, it reloads the run from the store and reconciles it.
func (sv *supervisor) drop(r *runner, log interface{ Warn(string, ...any) }, cause error) {
	sv.mu.Lock()
	if sv.runs[r.id] == r {
		delete(sv.runs, r.id)
	}
	sv.mu.Unlock()
	log.Warn("stopped acting on the run: its lease is lost; another replica takes it over", "replica", sv.s.opts.Replica, "cause", cause)
	sv.s.notice("run_handed_over", r.id, fmt.Sprintf("replica %s stopped driving run %s: %v", sv.s.opts.Replica, r.id, cause), map[string]any{"replica": sv.s.opts.Replica})
}

// shutdown stops every run between two steps and waits for them; pools stay as they are.
func (sv *supervisor) shutdown(ctx context.Context) error {
	sv.mu.Lock()
	select {
	case <-sv.stop:
	default:
		close(sv.stop)
	}
	sv.mu.Unlock()
	done := make(chan struct{})
	go func() { sv.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runs still stepping at shutdown: %w", ctx.Err())
	}
}

// act records a manual action for a run and, when this server drives it, applies it at once
// and waits (up to wait) for the run to have taken it.
func (sv *supervisor) act(ctx context.Context, c *store.Command, wait time.Duration) (applied bool, err error) {
	st := sv.s.opts.Store
	if err := st.PostCommand(ctx, c); err != nil {
		return false, err
	}
	r, ok := sv.get(c.RunID)
	if !ok {
		return false, nil // another process runs it and applies the command at its next step
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		stepped := r.afterStep()
		r.poke()
		select {
		case <-stepped:
		case <-r.done:
		case <-deadline.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
		pending, err := st.PendingCommands(ctx, c.RunID)
		if err != nil {
			return false, err
		}
		still := false
		for _, p := range pending {
			still = still || p.ID == c.ID
		}
		if !still {
			return true, nil
		}
		select {
		case <-r.done:
			return false, nil
		default:
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":"unencodable"}`)
	}
	return b
}
