package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
)

func newStatusCmd(g *globals) *cobra.Command {
	var a statusArgs
	cmd := &cobra.Command{
		Use:   "status [RUN-ID|EXPERIMENT]",
		Short: "Show runs from the store (the state directory, or --store), or from a server",
		Long: `Without an argument, lists runs (unfinished ones unless --all), as verdict list does. With one,
shows that run (or the experiment's latest) in detail, as verdict get does; --watch shows it
again whenever it changes until it ends, then exits with the run's exit status (0 promoted,
3 rolled back, 4 aborted, 5 inconclusive, 6 a precondition failed), like verdict run.

An unfinished run shows which process drives it (the holder of its lease: a serve replica,
verdict-run@HOST/PID, or verdict-abort@HOST/PID carrying out an abort); "nobody" means no live
process watches it: roll it back with 'verdict abort RUN-ID' (no file needed), resume it with
'verdict run FILE --resume RUN-ID', or let a serve replica whose directory holds the file take
it. Names, reasons and messages are printed with control characters escaped.

With -o json: a RunList document, or a Run document (one per change with --watch).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				if a.watch {
					return usageErrorf("--watch follows one run: verdict status --watch RUN-ID")
				}
				l := listArgs{server: a.server, all: a.all, limit: 50}
				return runList(cmd.Context(), g, l)
			}
			a.run = args[0]
			if a.watch {
				return watchStatus(cmd.Context(), g, a)
			}
			d, err := loadRunDetail(cmd.Context(), g, a.server, a.run)
			if err != nil {
				return err
			}
			return printRunDetail(g, a.server, d)
		},
	}
	cmd.Flags().BoolVar(&a.all, "all", false, "list finished runs too")
	cmd.Flags().BoolVarP(&a.watch, "watch", "w", false, "show the run again whenever it changes, until it ends; exit with its exit status")
	cmd.Flags().DurationVar(&a.interval, "interval", 2*time.Second, "with --watch, how often to look for changes")
	addServerFlag(cmd, &a.server)
	return cmd
}

// statusArgs are the parsed arguments of verdict status.
type statusArgs struct {
	run, server string
	all, watch  bool
	interval    time.Duration
}

// watchStatus shows a run whenever it changes until it ends: redrawn on a terminal, one
// view (or one Run document) per change otherwise. Its exit status is the run's.
func watchStatus(ctx context.Context, g *globals, a statusArgs) error {
	if a.interval < 100*time.Millisecond {
		return usageErrorf("--interval must be at least 100ms, not %s", a.interval)
	}
	tty := !g.json() && isTerminal(g.stdout)
	var last string
	failures := 0
	for {
		d, err := loadRunDetail(ctx, g, a.server, a.run)
		switch {
		case err != nil && ctx.Err() != nil:
			return watchInterrupted(g, a)
		case err != nil && last == "":
			return err
		case err != nil:
			// A transient failure (the server restarting) is waited out, a lasting one is not.
			if failures++; failures >= 5 {
				return err
			}
		default:
			failures = 0
			a.run = d.Run.ID // an experiment name would follow its next run once this one ends
			if key := watchKey(d); key != last {
				last = key
				if err := showWatched(g, a.server, d, tty); err != nil {
					return err
				}
			}
			if d.Run.State.Terminal() {
				return silentExitUnlessOK(exitCode(store.Run{State: d.Run.State, Verdict: d.Run.Verdict}))
			}
		}
		select {
		case <-ctx.Done():
			return watchInterrupted(g, a)
		case <-time.After(a.interval):
		}
	}
}

func watchInterrupted(g *globals, a statusArgs) error {
	fmt.Fprintf(g.stdio.err, "Stopped watching; run %s goes on.\n", safeText(a.run))
	return silentExit(exitError)
}

// watchKey changes whenever what status shows of the run does.
func watchKey(d server.RunDetail) string {
	r := d.Run
	k := fmt.Sprintf("%s|%d|%s|%s|%s|%v|%v|%d", r.State, r.Step, r.Verdict, r.UpdatedAt, r.DrivenBy, r.Weights, r.ActualWeights, len(d.Messages))
	if n := len(d.Messages); n > 0 {
		k += "|" + d.Messages[n-1].At.String() + d.Messages[n-1].Message
	}
	if r.Decision != nil {
		k += "|" + r.Decision.At.String() + r.Decision.Reason
	}
	return k
}

func showWatched(g *globals, srv string, d server.RunDetail, tty bool) error {
	if g.json() {
		return writeJSON(g.stdout, d)
	}
	var b strings.Builder
	if tty {
		b.WriteString("\x1b[H\x1b[2J")
	} else {
		b.WriteString("\n")
	}
	renderRunDetail(&b, hintFlags(g, srv), d.Run, d.Messages, d.Intent, time.Now())
	_, err := fmt.Fprint(g.stdout, b.String())
	return err
}

// runLeases are the unexpired leases by run ID; none when the store has no leases or
// cannot say (the listing goes on without them).
func runLeases(ctx context.Context, st store.Store) map[string]store.Lease {
	out := map[string]store.Lease{}
	l, ok := st.(store.Leaser)
	if !ok {
		return out
	}
	ls, err := l.Leases(ctx)
	if err != nil {
		return out
	}
	for _, x := range ls {
		out[x.RunID] = x
	}
	return out
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newActionCmds(g *globals) []*cobra.Command {
	help := map[string]string{
		engine.ActionPause:   "Pause a run: weights stay, nothing advances until resume",
		engine.ActionResume:  "Resume a paused run from the pool's current weights",
		engine.ActionPromote: "Promote a run now, skipping its remaining steps",
		engine.ActionAbort:   "Abort a run: roll back now (alias: rollback)",
	}
	long := map[string]string{
		engine.ActionPause: `. The action is recorded with who asked and why, and applied by the process driving the
run at its next step (within seconds). A run nobody drives is paused when it is next driven.`,
		engine.ActionResume: `. The action is recorded with who asked and why, and applied by the process driving the
run at its next step. A run nobody drives needs one: 'verdict run FILE --resume RUN-ID'.`,
		engine.ActionPromote: driverHelp,
		engine.ActionAbort:   driverHelp,
	}
	var cmds []*cobra.Command
	for _, action := range engine.Actions {
		var a actionArgs
		a.action = action
		var aliases []string
		if action == engine.ActionAbort {
			// kubectl-argo-rollouts' word for the same thing.
			aliases = []string{"rollback"}
		}
		cmd := &cobra.Command{
			Use:     action + " RUN-ID|EXPERIMENT",
			Aliases: aliases,
			Short:   help[action],
			Long:    help[action] + long[action],
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				a.run = args[0]
				if a.server != "" {
					return remoteAction(cmd.Context(), g, a.server, action, a.run, a.who, a.reason)
				}
				return runAction(cmd.Context(), g, a)
			},
		}
		cmd.Flags().StringVar(&a.who, "who", "", "who asks (default: your login name)")
		cmd.Flags().StringVar(&a.reason, "reason", "", "why, recorded in the run's history and report")
		if action == engine.ActionAbort || action == engine.ActionPromote {
			cmd.Flags().DurationVar(&a.wait, "wait", 0, "how long to wait for the run's live driver to apply the action before reporting it queued (default: two of the run's ticks)")
			cmd.Flags().DurationVar(&a.leaseTTL, "lease-ttl", 30*time.Second, "the lease this command holds while it drives a run nobody else drives")
		}
		addServerFlag(cmd, &a.server)
		cmds = append(cmds, cmd)
	}
	return cmds
}

const driverHelp = `. The action is recorded with who asked and why. When a live process drives
the run (verdict run, or a serve replica: the holder of the run's lease), it applies it at its
next step; this command waits up to --wait for that and reports the result. When nobody drives
the run (the driver was killed, or left it with --on-interrupt leave), this command takes the
run's lease and carries the action out itself: it resumes the run from the experiment stored
with it (the original file is not needed: it may have been edited or deleted), drives it to its
end, prints the ending and exits with the run's exit status (4 aborted, 0 promoted, 3 rolled
back). If the driver holds the lease but seems gone, it waits up to the lease's remaining TTL.
It needs the Cloudflare credentials (CLOUDFLARE_*) and reaches the run's Prometheus.`

// actionArgs are the parsed arguments of verdict pause, resume, promote and abort.
type actionArgs struct {
	action, run, who, reason, server string
	wait, leaseTTL                   time.Duration
}

// runAction queues the action; abort and promote of a run nobody drives are then carried
// out by this process.
func runAction(ctx context.Context, g *globals, a actionArgs) error {
	// The store outlives an interrupt: a rollback this command drives goes on after one.
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	r, err := st.Run(ctx, a.run)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store", safeText(a.run))
	}
	if err != nil {
		return withCode(exitError, err)
	}
	if r.State.Terminal() {
		return usageErrorf("run %s has already ended (%s)", safeText(r.ID), r.State)
	}
	c := &store.Command{RunID: r.ID, Action: a.action, Who: actor(a.who), Reason: a.reason}
	if err := st.PostCommand(ctx, c); err != nil {
		return withCode(exitError, err)
	}
	leaser, leases := st.(store.Leaser)
	if g.json() {
		writeJSON(g.stdout, server.ActionResult{TypeMeta: server.Meta(server.KindActionResult), Run: r.ID, Action: a.action, Command: c.ID, Who: c.Who,
			Reason: a.reason, Applied: false, State: r.State, Previous: r.State})
	}
	say := func(format string, args ...any) {
		if !g.json() {
			fmt.Fprintf(g.stdout, format, args...)
		}
	}
	say("%s of run %s queued (by %s).\n", a.action, safeText(r.ID), safeText(c.Who))
	if a.action != engine.ActionAbort && a.action != engine.ActionPromote || !leases {
		driver := "the running process applies it at its next step."
		if l, ok := runLeases(ctx, st)[r.ID]; ok {
			driver = safeText(l.Owner) + " drives the run and applies it at its next step."
		} else if leases {
			driver = "Nobody drives the run now: it is applied when the run is next driven."
			if a.action == engine.ActionResume {
				driver = fmt.Sprintf("Nobody drives the run now: drive it with: verdict%s %s", storeFlags(g), safeText(resumeLine(server.SummaryOf(r))))
			}
		}
		say("%s\n", driver)
		return nil
	}
	exp := &experiments.Experiment{}
	if err := json.Unmarshal(r.Spec, exp); err != nil {
		return withCode(exitError, fmt.Errorf("run %s: stored experiment: %w", r.ID, err))
	}
	tick := defaultTick(exp)
	if a.wait <= 0 {
		a.wait = 2 * tick
	}
	owner := cliOwner(a.action)
	free, err := awaitDriver(ctx, g, st, leaser, r, c, a.wait, say)
	if err != nil || !free {
		return err
	}
	// Nobody drives the run: carry the action out here, from the stored spec.
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return err
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	say("No live process drives run %s: carrying out the %s here (%s), from the experiment stored with the run.\n", safeText(r.ID), a.action, owner)
	return driveRun(ctx, g, runSetup{file: r.SpecFile, resume: r.ID, tick: tick, owner: owner, leaseTTL: a.leaseTTL,
		onInterrupt: onInterruptRollback, aborting: a.action == engine.ActionAbort, compact: true,
		opts: engine.Options{Store: st, Steerer: steer, Metrics: src, Logger: g.log}})
}

// awaitDriver waits for the run's live driver to apply command c: it returns free true when
// nobody (alive) holds the run's lease, so the caller must carry the command out itself.
// It waits up to wait for the driver to complete it; a driver that holds the lease without
// renewing it is waited for up to the lease's remaining TTL. When the driver applied the
// command, or is alive but has not yet, it says so and returns false (with the run's exit
// status when it has ended meanwhile).
func awaitDriver(ctx context.Context, g *globals, st store.Store, leaser store.Leaser, r *store.Run, c *store.Command, wait time.Duration, say func(string, ...any)) (free bool, err error) {
	deadline := time.Now().Add(wait)
	var first store.Lease
	extended, applied := false, false
	for {
		if !applied {
			pending, err := st.PendingCommands(ctx, r.ID)
			if err != nil {
				return false, withCode(exitError, err)
			}
			applied = !slices.ContainsFunc(pending, func(p store.Command) bool { return p.ID == c.ID })
		}
		rec, err := st.Run(ctx, r.ID)
		if err != nil {
			return false, withCode(exitError, err)
		}
		if rec.State.Terminal() {
			say("Run %s ended: %s — %s\n", safeText(rec.ID), strings.ToUpper(strings.ReplaceAll(safeText(rec.Verdict), "_", " ")), safeText(rec.Reason))
			return false, silentExitUnlessOK(exitCode(*rec))
		}
		l, held := leaseOf(ctx, leaser, r.ID)
		switch {
		case applied && !held:
			// Applied, then left: the run goes on undriven (a pause, say); nothing to add.
			say("The %s was applied; run %s is %s and nobody drives it now.\n", c.Action, safeText(rec.ID), rec.State)
			return false, nil
		case !held:
			return true, nil
		case !applied && deadLocalOwner(l.Owner):
			// Its process is gone: take the run over without waiting out the lease.
			return true, nil
		}
		if first.Owner == "" {
			first = l
		}
		now := time.Now()
		if now.After(deadline) {
			renewed := l.Owner == first.Owner && l.Expires.After(first.Expires)
			switch {
			case applied:
				say("%s applied the %s: run %s is %s (verdict status --watch %s%s follows it).\n", safeText(l.Owner), c.Action, safeText(rec.ID), rec.State, safeText(rec.ID), storeFlags(g))
				return false, nil
			case !extended && !renewed:
				extended = true
				left := min(max(time.Until(l.Expires), 0), l.TTL) + time.Second
				say("%s holds the run's lease but has not applied the %s within %s; waiting up to %s, the lease's remaining TTL, for it to do so or for the lease to run out.\n", safeText(l.Owner), c.Action, wait, left.Round(time.Second))
				deadline = now.Add(left)
			default:
				say("%s drives the run (it renews its lease) but has not applied the %s yet: it stays queued (verdict status --watch %s%s follows it).\n", safeText(l.Owner), c.Action, safeText(rec.ID), storeFlags(g))
				return false, nil
			}
		}
		select {
		case <-ctx.Done():
			say("Interrupted; the %s stays queued.\n", c.Action)
			return false, silentExit(exitError)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leaseOf is run id's unexpired lease, if any.
func leaseOf(ctx context.Context, leaser store.Leaser, id string) (store.Lease, bool) {
	ls, err := leaser.Leases(ctx)
	if err != nil {
		return store.Lease{}, true // cannot tell: assume a driver rather than race one
	}
	for _, l := range ls {
		if l.RunID == id {
			return l, true
		}
	}
	return store.Lease{}, false
}

// silentExitUnlessOK is nil for exit status 0, else a silent exit with code.
func silentExitUnlessOK(code int) error {
	if code == exitOK {
		return nil
	}
	return silentExit(code)
}

func fileOr(f string) string {
	if f == "" {
		return "FILE"
	}
	return f
}
