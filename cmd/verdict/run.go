package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	settle     time.Duration
	noUI       bool
	leaseTTL   time.Duration
	// onInterrupt is what SIGINT or SIGTERM does: rollback, leave or ask.
	onInterrupt string
	// takeOverPool replaces another run's claim on the pool (a run known to be dead).
	takeOverPool bool
}

// What verdict run does when interrupted (--on-interrupt).
const (
	onInterruptRollback = "rollback"
	onInterruptLeave    = "leave"
	onInterruptAsk      = "ask"
)

func newRunCmd(g *globals) *cobra.Command {
	var a runArgs
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run an experiment in the foreground until it is promoted or rolled back",
		Long: `Run shifts traffic step by step, judges the KPIs at every interval and promotes or rolls
back on its own. On a terminal it shows a live view; otherwise (or with --output json) it
prints one JSON event per line.

SIGINT (Ctrl-C) or SIGTERM (a cancelled CI job) never leaves the pool shifted with nobody
driving it by accident. With --on-interrupt rollback (the default) the run is aborted
("interrupted by SIGTERM") and driven on until the pool is back at its original weights
("Rolling back…"), then the command exits 4; a second signal while it rolls back leaves the
run as it is. --on-interrupt leave exits at once and leaves the run as it is; --on-interrupt
ask asks on a terminal (without one it rolls back, and says so). Leaving prints how to finish:
'verdict abort RUN-ID' (rolls back; needs no experiment file and no running process) or
'verdict run FILE --resume RUN-ID', and exits 1.

A pool another run claims (its mark in the pool's description, seen by every Verdict whatever
its store) is refused, with exit 6, unless --take-over-pool says that run is dead.

One process drives a run at a time: --resume of a run another live process drives is refused;
a run whose verdict process on this machine has died is taken back at once. Runs live in the
store: the state directory (--state), or a PostgreSQL database shared with serve replicas
(--store postgres://...), which then show the run, and take it over if this process dies and
their directory holds the file.

Exit status: 0 promoted, 3 rolled back, 4 aborted (by hand, or interrupted and rolled back),
5 inconclusive, 6 a precondition failed, 1 error (or the run left unfinished), 2 invalid input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			return runRun(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "run this experiment of a multi-document file")
	addRunFlags(cmd, &a)
	return cmd
}

// addRunFlags registers the flags of commands that drive a run as verdict run does
// (run, switchover).
func addRunFlags(cmd *cobra.Command, a *runArgs) {
	cmd.Flags().StringVar(&a.resume, "resume", "", "resume the unfinished run RUN-ID instead of starting a new one")
	cmd.Flags().DurationVar(&a.tick, "tick", 0, "how often the engine steps (default: a sixth of the analysis interval, 1s–10s)")
	cmd.Flags().BoolVar(&a.noUI, "no-ui", false, "print JSON events instead of the live view")
	cmd.Flags().StringVar(&a.onInterrupt, "on-interrupt", onInterruptRollback, "what SIGINT (Ctrl-C) or SIGTERM does: rollback (abort and roll the pool back before exiting), leave (exit at once, leaving the run for 'verdict abort' or --resume) or ask (on a terminal; rollback without one)")
	cmd.Flags().BoolVar(&a.takeOverPool, "take-over-pool", false, "run even though another run claims the pool (its mark in the pool's description): only when that run is known to be dead, e.g. its state directory is gone; the claim is replaced and an event names whose it was")
	cmd.Flags().DurationVar(&a.settle, "settle", 0, "how long after an interval ends its data counts as complete (scrape and federation lag), the least the engine waits before reading it; it then re-reads the interval until its counts stop changing (default: a quarter of the analysis interval, at most 15s; with federation, about one federation scrape interval)")
	cmd.Flags().DurationVar(&a.leaseTTL, "lease-ttl", 30*time.Second, "how long the run's lease lasts without renewal: if this process dies, a serve replica on the same store takes the run over after about that long")
}

func defaultTick(exp *experiments.Experiment) time.Duration {
	return min(max(exp.Spec.Analysis.Interval.Std()/6, time.Second), 10*time.Second)
}

// check refuses flag values no run can use, before anything is read.
func (a runArgs) check() error {
	switch a.onInterrupt {
	case onInterruptRollback, onInterruptLeave, onInterruptAsk:
	default:
		return usageErrorf("--on-interrupt must be rollback, leave or ask, not %q", a.onInterrupt)
	}
	if a.leaseTTL <= 0 {
		return usageErrorf("--lease-ttl must be positive")
	}
	if a.settle < 0 {
		return usageErrorf("--settle must not be negative")
	}
	return nil
}

func runRun(ctx context.Context, g *globals, a runArgs) error {
	if err := a.check(); err != nil {
		return err
	}
	exp, err := loadExperiment(a.file, a.experiment)
	if err != nil {
		return err
	}
	return runExperiment(ctx, g, a, exp, "")
}

// runExperiment drives exp, loaded or derived from a.file, as verdict run does.
// resumeCmd is the command that resumes the run with --resume (default verdict run FILE).
func runExperiment(ctx context.Context, g *globals, a runArgs, exp *experiments.Experiment, resumeCmd string) error {
	steer, err := steererFor(ctx, g, exp)
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
	return driveRun(ctx, g, runSetup{exp: exp, file: a.file, resume: a.resume, tick: a.tick, noUI: a.noUI,
		owner: runOwner(), leaseTTL: a.leaseTTL, onInterrupt: a.onInterrupt, resumeCmd: resumeCmd,
		opts: engine.Options{Store: st, Steerer: steer, Metrics: src, Logger: g.log, TakeOverPool: a.takeOverPool, Settle: a.settle}})
}

// runOwner is verdict run's name in run leases: verdict-run@HOST/PID. It is unique to the
// process, so a second verdict run on the same machine cannot take a run its live driver
// holds; --resume right after a crash still takes the run back at once, because a lease
// whose holder is a verdict process of this machine that no longer exists is taken over
// (see runLease.acquire).
func runOwner() string { return cliOwner("run") }

// cliOwner is the lease owner name of a verdict command of this process:
// verdict-COMMAND@HOST/PID.
func cliOwner(command string) string {
	return fmt.Sprintf("verdict-%s@%s/%d", command, hostname(), os.Getpid())
}

// deadLocalOwner reports whether owner names a verdict command (verdict-*@HOST/PID) on this
// machine whose process no longer exists, so that its lease can be taken at once instead of
// after its TTL. A reused pid makes the owner look alive, which only means waiting.
func deadLocalOwner(owner string) bool {
	name, rest, ok := strings.Cut(owner, "@")
	if !ok || !strings.HasPrefix(name, "verdict-") {
		return false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 || rest[:i] != hostname() {
		return false
	}
	pid, err := strconv.Atoi(rest[i+1:])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return !processAlive(pid)
}

// processAlive reports whether a process with this pid exists (where the platform cannot
// tell, it says yes).
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH)
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
	// onInterrupt is rollback (also when empty), leave or ask.
	onInterrupt string
	// aborting says an abort is already queued (verdict abort drives the run): an interrupt
	// does not queue another.
	aborting bool
	// compact prints one line per event instead of the full-screen view (verdict abort and
	// promote driving a run themselves).
	compact bool
	// resumeCmd is the command that resumes the run with --resume, for hints; default
	// verdict run FILE (a switchover's run is resumed by verdict switchover).
	resumeCmd string
}

// resumeHint is the command line that resumes run id.
func (s *runSetup) resumeHint(g *globals, id string) string {
	if s.resumeCmd != "" {
		return "verdict" + storeFlags(g) + " " + s.resumeCmd + " --resume " + id
	}
	return "verdict" + storeFlags(g) + " run " + shellQuote(fileOr(s.file)) + " --resume " + id
}

// driveRun starts or resumes a run and drives it to its end with a live view or a JSON
// event stream, then maps its ending to the exit status. An interrupt (ctx's end) rolls the
// run back, or leaves it, as s.onInterrupt says.
func driveRun(ctx context.Context, g *globals, s runSetup) error {
	view := newRunView(g, s.noUI, s.banner)
	if s.compact && !g.json() {
		view.json, view.compact = false, true
	}
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

	// flush waits, bounded, for the notifications the engine has queued (the final ones of a
	// run that just ended) before the command exits.
	flush := func() {
		fctx, cancel := context.WithTimeout(base, notifyDrainTimeout)
		defer cancel()
		if err := eng.Close(fctx); err != nil {
			g.log.Warn("notifications not delivered before exit", "err", err)
		}
	}
	// leave stops driving and tells how to finish the run.
	leave := func() error {
		cancelRun()
		end := <-done
		flush()
		rec := end.run.Record()
		if rec.State.Terminal() {
			return view.finish(end.run)
		}
		printLeft(g, rec, s.resumeHint(g, rec.ID))
		return &exitErr{code: exitError, silent: true}
	}
	interrupted := ctx.Done()
	var again <-chan os.Signal
	for {
		select {
		case end := <-done:
			stopView()
			flush()
			r := end.run
			if end.err != nil && errors.Is(end.err, store.ErrLeaseHeld) {
				return withCode(exitError, fmt.Errorf("run %s: %w; that process drives it now", r.ID(), end.err))
			}
			if end.err != nil && !errors.Is(end.err, context.Canceled) {
				return withCode(exitError, fmt.Errorf("run %s stopped: %w; resume it with: %s, or roll it back with: verdict abort %s", r.ID(), end.err, s.resumeHint(g, r.ID()), r.ID()))
			}
			if s.onEnd != nil {
				s.onEnd(r.Record())
			}
			return view.finish(r)
		case <-interrupted:
			interrupted = nil
			sig := interruptedBy(ctx)
			stopView()
			if !rollbackOnInterrupt(g, view, s.onInterrupt, sig) {
				fmt.Fprintf(g.stdio.err, "\n%s: leaving the run as it is.\n", sig)
				return leave()
			}
			if !s.aborting {
				c := &store.Command{RunID: r.ID(), Action: engine.ActionAbort, Who: actor(""), Reason: "interrupted by " + sig}
				if err := s.opts.Store.PostCommand(runCtx, c); err != nil {
					fmt.Fprintf(g.stdio.err, "\n%s: could not queue the rollback: %v\n", sig, err)
					return leave()
				}
			}
			fmt.Fprintf(g.stdio.err, "\n%s: Rolling back… (another interrupt leaves the run as it is)\n", sig)
			// What follows shows as lines: the full-screen view would hide the message.
			view.toCompact()
			again = g.stdio.again
		case sig := <-again:
			again = nil
			fmt.Fprintf(g.stdio.err, "%s again: leaving the run as it is, unfinished.\n", signalName(sig))
			return leave()
		}
	}
}

// notifyDrainTimeout bounds how long a finished command waits for its last notifications.
const notifyDrainTimeout = 10 * time.Second

// rollbackOnInterrupt decides what an interrupt does under --on-interrupt mode: true to
// roll back, false to leave the run. ask asks on a terminal and rolls back without one.
func rollbackOnInterrupt(g *globals, view *runView, mode, sig string) bool {
	switch mode {
	case onInterruptLeave:
		return false
	case onInterruptAsk:
		if view.tty && isTerminal(os.Stdin) {
			return view.askRollback(g)
		}
		fmt.Fprintf(g.stdio.err, "\n%s: --on-interrupt ask needs a terminal to ask on; rolling back.\n", sig)
	}
	return true
}

// printLeft tells how to finish a run left unfinished on purpose; resume is the command
// line that carries on (runSetup.resumeHint).
func printLeft(g *globals, rec store.Run, resume string) {
	flags := storeFlags(g)
	id := safeText(rec.ID)
	fmt.Fprintf(g.stdio.err, "Left run %s as it is (%s, step %d): nobody drives it and the pool keeps its current weights.\n", id, rec.State, rec.Step)
	fmt.Fprintf(g.stdio.err, "Finish it with one of:\n  # roll the pool back now (needs neither the file nor a running process):\n  verdict%s abort %s\n  # or carry on where it stopped:\n  %s\n",
		flags, id, safeText(resume))
}

// storeFlags are the global flags that find the run's store again, for hints: --state or
// --store as given (a URL without its password).
func storeFlags(g *globals) string {
	var b strings.Builder
	if g.store != "" {
		st := g.store
		if u, err := url.Parse(st); err == nil && u.User != nil {
			st = u.Redacted()
		}
		b.WriteString(" --store " + shellQuote(st))
	} else if g.state != "" {
		b.WriteString(" --state " + shellQuote(g.state))
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// runLease is verdict run's lease on its run, when the store has leases.
type runLease struct {
	g    *globals
	s    *runSetup
	base context.Context
	hold *store.Hold // nil without leases
}

// acquire takes the run's lease; it fails matching store.ErrLeaseHeld while another
// live process holds it. A lease held by a verdict command of this machine whose process is
// gone is taken over at once (see takeLease).
func (l *runLease) acquire(id string) error {
	leaser, ok := l.s.opts.Store.(store.Leaser)
	if !ok {
		return nil
	}
	h, err := takeLease(l.base, l.g, leaser, id, l.s.owner, l.s.leaseTTL)
	var held *store.LeaseHeldError
	if errors.As(err, &held) {
		return fmt.Errorf("%w: %s drives it, and one process drives a run at a time (verdict status %s shows it; verdict abort, promote and pause reach it; if that process is dead its lease runs out at %s)",
			store.ErrLeaseHeld, safeText(held.Owner), id, held.Expires.Local().Format(time.TimeOnly))
	}
	if errors.Is(err, store.ErrLeaseHeld) {
		return fmt.Errorf("%w: another process drives it (verdict status %s shows it)", err, id)
	}
	if err != nil {
		return fmt.Errorf("lease run %s: %w", id, err)
	}
	l.hold = h
	return nil
}

// takeLease acquires run id's lease for owner and keeps it renewed. When a verdict command
// of this machine whose process no longer exists holds it (a crash, kill -9), it is taken
// over at once instead of after its TTL: acquired once in the dead owner's name, which
// gives it a new fencing token that shuts out anything still in flight from the dead
// process, released, and acquired for owner. Any other holder is refused
// (*store.LeaseHeldError).
func takeLease(ctx context.Context, g *globals, leaser store.Leaser, id, owner string, ttl time.Duration) (*store.Hold, error) {
	h, err := store.AcquireHold(ctx, leaser, id, owner, store.HoldOptions{TTL: ttl, Logger: g.log})
	var held *store.LeaseHeldError
	if !errors.As(err, &held) || !deadLocalOwner(held.Owner) {
		return h, err
	}
	dead, err := leaser.Acquire(ctx, id, held.Owner, ttl)
	if err != nil {
		return nil, fmt.Errorf("take run %s over from %s, whose process is gone: %w", id, held.Owner, err)
	}
	if err := leaser.Release(ctx, dead); err != nil {
		return nil, fmt.Errorf("take run %s over from %s, whose process is gone: %w", id, held.Owner, err)
	}
	g.log.Info("took the run over from a verdict process that is gone", "run", id, "from", held.Owner, "token", dead.Token)
	return store.AcquireHold(ctx, leaser, id, owner, store.HoldOptions{TTL: ttl, Logger: g.log})
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
		// The view gets a snapshot after every step from this goroutine, so its render loop
		// never reads the run while it steps.
		err := r.DriveEach(dctx, s.clock, s.tick, func() { view.publish(r) })
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

// runView renders a run: a live terminal view refreshed every second, one line per event
// (compact), or JSON lines. The render loop draws the snapshot the driving goroutine last
// published, never the run itself, so it does not race with Step.
type runView struct {
	g       *globals
	json    bool
	tty     bool
	compact bool
	banner  string
	mu      sync.Mutex
	exp     *experiments.Experiment
	snap    *engine.Snapshot
	recent  []engine.Event
	out     io.Writer
	stop    chan struct{}
	// screen is the terminal's alternate screen while the live view is shown.
	screen *liveScreen
	once   sync.Once
	wg     sync.WaitGroup
}

// liveViewEvery is how often the live view is redrawn; tests make it short.
var liveViewEvery = time.Second

// isTerminal reports whether w is a terminal; a variable so tests can show the live view.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newRunView(g *globals, noUI bool, banner string) *runView {
	tty := isTerminal(g.stdout)
	return &runView{g: g, json: g.json() || noUI || !tty, tty: tty, banner: banner, out: g.stdout, stop: make(chan struct{})}
}

// attach shows r from now on; call it from the goroutine that steps r (or before it starts).
func (v *runView) attach(r *engine.Run) { v.publish(r) }

// publish takes a snapshot of r for the render loop; call it from the goroutine that steps
// r. The maps are copied so that nothing the engine changes later is shared.
func (v *runView) publish(r *engine.Run) {
	s := r.Snapshot()
	s.Run.Current = maps.Clone(s.Run.Current)
	s.Run.Original = maps.Clone(s.Run.Original)
	if s.Run.Intent != nil {
		in := *s.Run.Intent
		s.Run.Intent = &in
	}
	exp := r.Experiment()
	v.mu.Lock()
	v.exp, v.snap = exp, &s
	v.mu.Unlock()
}

// toCompact switches the view to one line per event (after an interrupt, when the
// full-screen view would hide what is said).
func (v *runView) toCompact() {
	v.mu.Lock()
	v.compact = !v.json
	v.mu.Unlock()
}

// Observe implements engine.Observer.
func (v *runView) Observe(e engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.json {
		writeJSON(v.out, newEventJSON(e))
		return
	}
	if v.compact {
		if e.Type != engine.EventDecision {
			fmt.Fprintf(v.out, "%s  %-18s %s\n", e.At.Local().Format(time.TimeOnly), e.Type, safeText(e.Message))
		}
		return
	}
	v.recent = append(v.recent, e)
	if len(v.recent) > 200 {
		v.recent = v.recent[len(v.recent)-200:]
	}
}

func (v *runView) start() func() {
	if v.json || v.compact {
		return func() {}
	}
	v.mu.Lock()
	v.screen = newLiveScreen(v.out)
	v.screen.enter()
	v.mu.Unlock()
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		t := time.NewTicker(liveViewEvery)
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
		v.screen.leave()
	}
}

func (v *runView) render() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.snap == nil || v.compact {
		return
	}
	if v.screen == nil {
		return
	}
	m := liveFromSnapshot(v.banner, v.exp, *v.snap, v.recent)
	now := time.Now()
	v.screen.draw(func(w, h int) []string { return liveLines(m, now, w, h) })
}

func (v *runView) askRollback(g *globals) bool {
	fmt.Fprint(g.stdio.err, "\nInterrupted. Roll back now [r], or leave the run for a later 'verdict abort' or --resume [l]? ")
	line, _ := bufio.NewReader(g.stdio.in).ReadString('\n')
	return !strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "l")
}

// finish shows the run's ending and returns its exit status; r must no longer be stepped.
func (v *runView) finish(r *engine.Run) error {
	v.publish(r)
	rec := r.Record()
	code := exitCode(rec)
	if v.json {
		v.mu.Lock()
		writeJSON(v.out, newResultJSON("run_result", rec, code))
		v.mu.Unlock()
	} else {
		v.mu.Lock()
		if v.tty && !v.compact && v.snap != nil {
			// The live view has left the alternate screen: the final frame goes to the
			// normal screen, where it stays in the scrollback with the verdict.
			w, _ := terminalSize(v.out)
			renderSnapshotFit(v.out, v.banner, v.exp, *v.snap, v.recent, time.Now(), w, 0)
		}
		v.mu.Unlock()
		fmt.Fprintf(v.out, "\n%s: %s — %s\nRun %s; report: %s\n", safeText(rec.Experiment), strings.ToUpper(strings.ReplaceAll(safeText(rec.Verdict), "_", " ")), safeText(rec.Reason), safeText(rec.ID), reportHint(v.g, "", rec.ID))
	}
	if code == exitOK {
		return nil
	}
	return &exitErr{code: code, silent: true}
}
