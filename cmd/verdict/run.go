package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// runArgs are the parsed arguments of verdict run.
type runArgs struct {
	file       string
	experiment string
	resume     string
	tick       time.Duration
	noUI       bool
	leaseTTL   time.Duration
}

func newRunCmd(g *globals) *cobra.Command {
	var a runArgs
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run an experiment in the foreground until it is promoted or rolled back",
		Long: `Run shifts traffic step by step, judges the KPIs at every interval and promotes or rolls
back on its own. On a terminal it shows a live view; otherwise (or with --output json) it
prints one JSON event per line.

Ctrl-C asks whether to roll back now or to leave the run as it is for a later
'verdict run FILE --resume RUN-ID'. Runs live in the store: the state directory (--state),
or a PostgreSQL database shared with serve replicas (--store postgres://...), which then
show the run, and take it over if this process dies and their directory holds the file.

Exit status: 0 promoted, 3 rolled back, 4 aborted, 5 inconclusive, 6 a precondition failed,
1 error, 2 invalid input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			return runRun(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "run this experiment of a multi-document file")
	cmd.Flags().StringVar(&a.resume, "resume", "", "resume the unfinished run RUN-ID instead of starting a new one")
	cmd.Flags().DurationVar(&a.tick, "tick", 0, "how often the engine steps (default: a sixth of the analysis interval, 1s–10s)")
	cmd.Flags().BoolVar(&a.noUI, "no-ui", false, "print JSON events instead of the live view")
	cmd.Flags().DurationVar(&a.leaseTTL, "lease-ttl", 30*time.Second, "how long the run's lease lasts without renewal: if this process dies, a serve replica on the same store takes the run over after about that long")
	return cmd
}

func defaultTick(exp *experiments.Experiment) time.Duration {
	return min(max(exp.Spec.Analysis.Interval.Std()/6, time.Second), 10*time.Second)
}

func runRun(ctx context.Context, g *globals, a runArgs) error {
	exp, err := loadExperiment(a.file, a.experiment)
	if err != nil {
		return err
	}
	steer, err := steererFromEnv(g)
	if err != nil {
		return err
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	if a.tick <= 0 {
		a.tick = defaultTick(exp)
	}
	if a.leaseTTL <= 0 {
		return usageErrorf("--lease-ttl must be positive")
	}
	return driveRun(ctx, g, runSetup{exp: exp, file: a.file, resume: a.resume, tick: a.tick, noUI: a.noUI,
		owner: runOwner(), leaseTTL: a.leaseTTL,
		opts: engine.Options{Store: st, Steerer: steer, Metrics: src, Logger: g.log}})
}

// runOwner is verdict run's name in run leases. It is the same for every verdict run on a
// machine, so that --resume right after a crash takes the run back at once (with a new
// fencing token, which shuts out the dead incarnation) instead of waiting out its lease.
func runOwner() string {
	return "verdict-run@" + hostname()
}

type runSetup struct {
	exp    *experiments.Experiment
	file   string
	resume string
	tick   time.Duration
	noUI   bool
	opts   engine.Options
	// banner is printed above the live view (the demo's scenario).
	banner string
	clock  engine.Clock
	// onEnd, if set, receives the finished run (the demo summarises several).
	onEnd func(store.Run)
	// owner and leaseTTL name and time the run's lease, when the store has leases.
	owner    string
	leaseTTL time.Duration
}

// driveRun starts or resumes a run and drives it to its end with a live view or a JSON
// event stream, then maps its ending to the exit status.
func driveRun(ctx context.Context, g *globals, s runSetup) error {
	view := newRunView(g, s.noUI, s.banner)
	s.opts.Observer = view
	eng, err := engine.New(s.opts)
	if err != nil {
		return withCode(exitError, err)
	}
	if s.clock == nil {
		s.clock = engine.RealClock{}
	}
	if s.owner == "" {
		s.owner = runOwner()
	}
	if s.leaseTTL <= 0 {
		s.leaseTTL = 30 * time.Second
	}
	// The run must outlive Ctrl-C long enough to roll back, so its context is not ctx.
	base := context.WithoutCancel(ctx)
	ls := &runLease{g: g, s: &s, base: base}
	defer ls.release()
	var r *engine.Run
	if s.resume != "" {
		// The lease comes first: only the run's owner reads and reconciles it.
		if err := ls.acquire(s.resume); err != nil {
			return withCode(exitError, err)
		}
		r, err = eng.Resume(base, s.resume, s.exp)
	} else {
		// The absolute path, so that a serve replica watching the file's directory can
		// tell the run is one of its own and take it over.
		file := s.file
		if abs, aerr := filepath.Abs(file); aerr == nil {
			file = abs
		}
		r, err = eng.Start(base, s.exp, file, s.clock.Now())
		if err == nil {
			if err := ls.acquire(r.ID()); err != nil {
				return withCode(exitError, err)
			}
		}
	}
	if errors.Is(err, store.ErrPoolBusy) || errors.Is(err, engine.ErrSpecChanged) {
		return withCode(exitInvalid, err)
	}
	if err != nil {
		return withCode(exitError, err)
	}
	ls.fence(r)
	runCtx, cancelRun := context.WithCancel(base)
	defer cancelRun()
	view.attach(r)

	type ending struct {
		run *engine.Run
		err error
	}
	done := make(chan ending, 1)
	go func() {
		final, err := keepDriving(runCtx, eng, r, s, ls, view)
		done <- ending{final, err}
	}()
	stopView := view.start()
	defer stopView()

	interrupted := ctx.Done()
	for {
		select {
		case end := <-done:
			stopView()
			r := end.run
			if end.err != nil && errors.Is(end.err, store.ErrLeaseHeld) {
				return withCode(exitError, fmt.Errorf("run %s: %w; that process drives it now", r.ID(), end.err))
			}
			if end.err != nil && !errors.Is(end.err, context.Canceled) {
				return withCode(exitError, fmt.Errorf("run %s stopped: %w; resume it with: verdict run %s --resume %s", r.ID(), end.err, s.file, r.ID()))
			}
			if s.onEnd != nil {
				s.onEnd(r.Record())
			}
			return view.finish(r, s.file)
		case <-interrupted:
			interrupted = nil
			stopView()
			if view.askRollback(g) {
				if err := s.opts.Store.PostCommand(runCtx, &store.Command{RunID: r.ID(), Action: engine.ActionAbort, Who: actor(""), Reason: "interrupted with Ctrl-C"}); err != nil {
					return withCode(exitError, err)
				}
				fmt.Fprintln(g.stdio.err, "Rolling back…")
				continue
			}
			cancelRun()
			end := <-done
			rec := end.run.Record()
			fmt.Fprintf(g.stdio.err, "Left run %s as it is (%s, step %d). Resume it with:\n  verdict run %s --resume %s\n", rec.ID, rec.State, rec.Step, s.file, rec.ID)
			return &exitErr{code: exitError, silent: true}
		}
	}
}

// runLease is verdict run's lease on its run, when the store has leases.
type runLease struct {
	g    *globals
	s    *runSetup
	base context.Context
	hold *store.Hold // nil without leases
}

// acquire takes the run's lease; it fails matching store.ErrLeaseHeld while another
// process holds it.
func (l *runLease) acquire(id string) error {
	leaser, ok := l.s.opts.Store.(store.Leaser)
	if !ok {
		return nil
	}
	h, err := store.AcquireHold(l.base, leaser, id, l.s.owner, store.HoldOptions{TTL: l.s.leaseTTL, Logger: l.g.log})
	if errors.Is(err, store.ErrLeaseHeld) {
		return fmt.Errorf("%w: another process drives it (verdict status %s shows it)", err, id)
	}
	if err != nil {
		return fmt.Errorf("lease run %s: %w", id, err)
	}
	l.hold = h
	return nil
}

func (l *runLease) fence(r *engine.Run) {
	if l.hold != nil {
		r.SetFence(l.hold)
	}
}

// lost reports whether the lease has run out (the store unreachable past the TTL, or
// another process took the run).
func (l *runLease) lost() bool { return l.hold != nil && l.hold.Context().Err() != nil }

// scope is ctx ended also when the lease is lost.
func (l *runLease) scope(ctx context.Context) (context.Context, func()) {
	if l.hold == nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.hold.Context(), func() { cancel(context.Cause(l.hold.Context())) })
	return c, func() { stop(); cancel(nil) }
}

// release hands the run over at once: a later --resume or a serve replica goes on without
// waiting out the lease.
func (l *runLease) release() {
	if l.hold == nil {
		return
	}
	rctx, cancel := context.WithTimeout(l.base, 5*time.Second)
	defer cancel()
	_ = l.hold.Release(rctx)
}

// keepDriving drives r to its end. A step that fails (the store or the load balancer
// unreachable past the engine's own retries) does not end the command: as serve does, the
// run is reloaded from the store — the engine reconciles the pool with its last intent —
// and retried with backoff, and the failure is shown as a fault event. A lease that ran out
// (the store unreachable for longer than its TTL) is taken again, unless another process
// took the run meanwhile, which ends the command with an error matching
// store.ErrLeaseHeld. Only ctx (Ctrl-C) ends it otherwise. It returns the run as last loaded.
func keepDriving(ctx context.Context, eng *engine.Engine, r *engine.Run, s runSetup, ls *runLease, view *runView) (*engine.Run, error) {
	failures := 0
	for {
		dctx, done := ls.scope(ctx)
		err := r.Drive(dctx, s.clock, s.tick)
		done()
		if r.Done() || ctx.Err() != nil {
			return r, err
		}
		if err == nil {
			err = errors.New("the run stopped without ending")
		}
		lost := ls.lost() || errors.Is(err, store.ErrLeaseLost)
		for {
			failures++
			lost = lost || ls.lost()
			wait := min(s.tick<<min(failures, 6), time.Minute)
			what := "step failed"
			if lost {
				what = "lost the run's lease (nothing is written to the pool without it)"
			}
			// Shown, not stored: the store may be what failed.
			view.Observe(engine.NewEvent(engine.EventFault, r.ID(), s.clock.Now(),
				fmt.Sprintf("%s: %v; reloading the run from the store in %s", what, err, wait), map[string]any{"error": err.Error(), "retryIn": wait.String()}))
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-s.clock.After(wait):
			}
			if lost {
				// Same owner name: this succeeds unless another process holds the lease.
				if aerr := ls.acquire(r.ID()); aerr != nil {
					if errors.Is(aerr, store.ErrLeaseHeld) {
						return r, aerr
					}
					err = aerr
					continue
				}
				lost = false
			}
			next, rerr := eng.Resume(ctx, r.ID(), s.exp)
			if rerr == nil {
				ls.fence(next)
				r = next
				view.attach(r)
				break
			}
			err = rerr
		}
	}
}

// exitCode maps a finished run to the CLI contract's exit status.
func exitCode(rec store.Run) int {
	switch {
	case rec.Verdict == engine.VerdictCheckFailed:
		return exitCheckFailed
	case rec.Verdict == engine.VerdictInconclusive:
		return exitInconclusive
	case rec.State == store.StatePromoted:
		return exitOK
	case rec.State == store.StateRolledBack:
		return exitRolledBack
	case rec.State == store.StateAborted:
		return exitAborted
	}
	return exitError
}

// runView renders a run: a live terminal view refreshed every second, or JSON lines.
type runView struct {
	g      *globals
	json   bool
	tty    bool
	banner string
	mu     sync.Mutex
	run    *engine.Run
	recent []engine.Event
	out    io.Writer
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newRunView(g *globals, noUI bool, banner string) *runView {
	tty := isTerminal(g.stdout)
	return &runView{g: g, json: g.json() || noUI || !tty, tty: tty, banner: banner, out: g.stdout, stop: make(chan struct{})}
}

func (v *runView) attach(r *engine.Run) {
	v.mu.Lock()
	v.run = r
	v.mu.Unlock()
}

// Observe implements engine.Observer.
func (v *runView) Observe(e engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.json {
		writeJSON(v.out, map[string]any{"type": e.Type, "version": jsonVersion, "run": e.RunID, "at": e.At, "message": e.Message, "data": e.Data})
		return
	}
	v.recent = append(v.recent, e)
	if len(v.recent) > 200 {
		v.recent = v.recent[len(v.recent)-200:]
	}
}

func (v *runView) start() func() {
	if v.json {
		return func() {}
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			v.render()
			select {
			case <-v.stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		v.once.Do(func() { close(v.stop) })
		v.wg.Wait()
	}
}

func (v *runView) render() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.run == nil {
		return
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	renderRun(&b, v.banner, v.run, v.recent, time.Now())
	io.WriteString(v.out, b.String())
}

func (v *runView) askRollback(g *globals) bool {
	if !v.tty || !isTerminal(os.Stdin) {
		return false
	}
	fmt.Fprint(g.stdio.err, "\nInterrupted. Roll back now [r], or leave the run for a later --resume [l]? ")
	line, _ := bufio.NewReader(g.stdio.in).ReadString('\n')
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "r")
}

func (v *runView) finish(r *engine.Run, file string) error {
	rec := r.Record()
	code := exitCode(rec)
	if v.json {
		v.mu.Lock()
		writeJSON(v.out, map[string]any{"type": "run_result", "version": jsonVersion, "run": rec.ID, "state": rec.State, "verdict": rec.Verdict, "reason": rec.Reason, "exitCode": code, "weights": rec.Current})
		v.mu.Unlock()
	} else {
		v.render()
		fmt.Fprintf(v.out, "\n%s: %s — %s\nRun %s; report: verdict report %s\n", rec.Experiment, strings.ToUpper(strings.ReplaceAll(rec.Verdict, "_", " ")), rec.Reason, rec.ID, rec.ID)
	}
	if code == exitOK {
		return nil
	}
	return &exitErr{code: code, silent: true}
}
