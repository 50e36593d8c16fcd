package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

func newStatusCmd(g *globals) *cobra.Command {
	var all bool
	var srv string
	cmd := &cobra.Command{
		Use:   "status [RUN-ID|EXPERIMENT]",
		Short: "Show runs from the store (the state directory, or --store)",
		Long: `Without an argument, lists runs (unfinished ones unless --all). With one, shows that run (or
the experiment's latest) in detail.

An unfinished run shows which process drives it (the holder of its lease: a serve replica,
verdict-run@HOST/PID, or verdict-abort@HOST/PID carrying out an abort); "nobody" means no live
process watches it: roll it back with 'verdict abort RUN-ID' (no file needed), resume it with
'verdict run FILE --resume RUN-ID', or let a serve replica whose directory holds the file take
it. Names, reasons and messages are printed with control characters escaped.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if srv != "" {
				return remoteStatus(cmd.Context(), g, srv, args, all)
			}
			st, err := openStore(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer st.Close()
			if len(args) == 0 {
				return listRuns(cmd.Context(), g, st, all)
			}
			return showRun(cmd.Context(), g, st, args[0])
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list finished runs too")
	addServerFlag(cmd, &srv)
	return cmd
}

func listRuns(ctx context.Context, g *globals, st store.Store, all bool) error {
	runs, err := st.ListRuns(ctx, store.ListOptions{Unfinished: !all, Limit: 50})
	if err != nil {
		return withCode(exitError, err)
	}
	if g.json() {
		leases := runLeases(ctx, st)
		out := []map[string]any{}
		for _, r := range runs {
			m := runSummary(r)
			if l, ok := leases[r.ID]; ok {
				m["lease"] = l
			}
			out = append(out, m)
		}
		return writeJSON(g.stdout, map[string]any{"type": "runs", "version": jsonVersion, "runs": out})
	}
	if len(runs) == 0 {
		if all {
			fmt.Fprintln(g.stdout, "No runs yet.")
		} else {
			fmt.Fprintln(g.stdout, "No unfinished runs (verdict status --all lists finished ones).")
		}
		return nil
	}
	leases := runLeases(ctx, st)
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tEXPERIMENT\tSTATE\tSTEP\tVERDICT\tDRIVEN BY\tUPDATED")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", safeText(r.ID), safeText(r.Experiment), r.State, r.Step, safeText(dash(r.Verdict)), safeText(drivenBy(r, leases)), r.UpdatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func runSummary(r *store.Run) map[string]any {
	return map[string]any{"id": r.ID, "experiment": r.Experiment, "pool": r.Pool, "state": r.State, "step": r.Step,
		"verdict": r.Verdict, "reason": r.Reason, "endedBy": r.EndedBy, "weights": r.Current, "original": r.Original,
		"createdAt": r.CreatedAt, "updatedAt": r.UpdatedAt, "endedAt": r.EndedAt}
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

// drivenBy names the process driving an unfinished run, from its lease.
func drivenBy(r *store.Run, leases map[string]store.Lease) string {
	if r.State.Terminal() {
		return "-"
	}
	if l, ok := leases[r.ID]; ok {
		return l.Owner
	}
	return "nobody"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func showRun(ctx context.Context, g *globals, st store.Store, id string) error {
	r, err := st.Run(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store", id)
	}
	if err != nil {
		return withCode(exitError, err)
	}
	ds, err := st.Decisions(ctx, r.ID)
	if err != nil {
		return withCode(exitError, err)
	}
	evs, err := st.Events(ctx, r.ID, 0)
	if err != nil {
		return withCode(exitError, err)
	}
	leases := runLeases(ctx, st)
	if g.json() {
		m := runSummary(r)
		m["type"], m["version"] = "run", jsonVersion
		if l, ok := leases[r.ID]; ok {
			m["lease"] = l
		}
		if len(ds) > 0 {
			m["lastDecision"] = ds[len(ds)-1]
		}
		m["events"] = evs
		return writeJSON(g.stdout, m)
	}
	w := g.stdout
	fmt.Fprintf(w, "Run %s\nExperiment %s on pool %s\nState %s, step %d", safeText(r.ID), safeText(r.Experiment), safeText(r.Pool), r.State, r.Step)
	if r.Verdict != "" {
		fmt.Fprintf(w, "\nVerdict %s — %s (by %s)", strings.ToUpper(strings.ReplaceAll(safeText(r.Verdict), "_", " ")), safeText(r.Reason), safeText(r.EndedBy))
	}
	fmt.Fprintf(w, "\nStarted %s", r.CreatedAt.Local().Format(time.DateTime))
	if !r.EndedAt.IsZero() {
		fmt.Fprintf(w, ", ended %s (%s)", r.EndedAt.Local().Format(time.DateTime), r.EndedAt.Sub(r.CreatedAt).Truncate(time.Second))
	}
	fmt.Fprintln(w)
	if !r.State.Terminal() {
		if l, ok := leases[r.ID]; ok {
			fmt.Fprintf(w, "Driven by %s (lease token %d, expires %s unless renewed)\n", safeText(l.Owner), l.Token, l.Expires.Local().Format(time.TimeOnly))
		} else {
			fmt.Fprintf(w, "Driven by nobody: no live process holds its lease. Roll it back with: verdict abort %s (no file needed), or resume it with: verdict run %s --resume %s\n", safeText(r.ID), safeText(shellQuote(fileOr(r.SpecFile))), safeText(r.ID))
		}
	}
	if len(r.Current) > 0 {
		fmt.Fprintln(w, "\nWeights (now / before the experiment)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, o := range sortedKeys(r.Current) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", safeText(o), traffic.FormatWeight(r.Current[o]), traffic.FormatWeight(r.Original[o]))
		}
		tw.Flush()
	}
	if r.Intent != nil {
		fmt.Fprintf(w, "\nA weight write for %s is in flight since %s: resume the run to reconcile it.\n", safeText(r.Intent.Purpose), r.Intent.At.Local().Format(time.TimeOnly))
	}
	if len(ds) > 0 {
		d := ds[len(ds)-1]
		fmt.Fprintf(w, "\nLast decision (%s, step %d): %s — %s\n", d.At.Local().Format(time.TimeOnly), d.Step, safeText(d.Action), safeText(d.Reason))
		var det struct {
			Decision struct {
				KPIs []struct {
					Name   string `json:"name"`
					Status string `json:"status"`
					Reason string `json:"reason"`
				} `json:"kpis"`
			} `json:"decision"`
		}
		if json.Unmarshal(d.Details, &det) == nil {
			for _, k := range det.Decision.KPIs {
				fmt.Fprintf(w, "  %-28s %-13s %s\n", safeText(k.Name), safeText(k.Status), safeText(k.Reason))
			}
		}
	}
	fmt.Fprintln(w, "\nEvents")
	start := max(0, len(evs)-15)
	for _, e := range evs[start:] {
		fmt.Fprintf(w, "  %s  %-18s %s\n", e.At.Local().Format(time.TimeOnly), safeText(e.Type), safeText(e.Message))
	}
	return nil
}

func newActionCmds(g *globals) []*cobra.Command {
	help := map[string]string{
		engine.ActionPause:   "Pause a run: weights stay, nothing advances until resume",
		engine.ActionResume:  "Resume a paused run from the pool's current weights",
		engine.ActionPromote: "Promote a run now, skipping its remaining steps",
		engine.ActionAbort:   "Abort a run: roll back now",
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
		cmd := &cobra.Command{
			Use:   action + " RUN-ID|EXPERIMENT",
			Short: help[action],
			Long:  help[action] + long[action],
			Args:  cobra.ExactArgs(1),
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
		writeJSON(g.stdout, map[string]any{"type": "action_queued", "version": jsonVersion, "run": r.ID, "action": a.action, "who": c.Who, "reason": a.reason, "id": c.ID})
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
				driver = fmt.Sprintf("Nobody drives the run now: drive it with: verdict%s run %s --resume %s", storeFlags(g), safeText(shellQuote(fileOr(r.SpecFile))), safeText(r.ID))
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
				say("%s applied the %s: run %s is %s (verdict status %s follows it).\n", safeText(l.Owner), c.Action, safeText(rec.ID), rec.State, safeText(rec.ID))
				return false, nil
			case !extended && !renewed:
				extended = true
				left := min(max(time.Until(l.Expires), 0), l.TTL) + time.Second
				say("%s holds the run's lease but has not applied the %s within %s; waiting up to %s, the lease's remaining TTL, for it to do so or for the lease to run out.\n", safeText(l.Owner), c.Action, wait, left.Round(time.Second))
				deadline = now.Add(left)
			default:
				say("%s drives the run (it renews its lease) but has not applied the %s yet: it stays queued (verdict status %s follows it).\n", safeText(l.Owner), c.Action, safeText(rec.ID))
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
