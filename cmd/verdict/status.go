package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
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

An unfinished run shows which process drives it (the holder of its lease: a serve replica, or
verdict-run@HOST); "nobody" means no live process watches it: resume it with
'verdict run FILE --resume RUN-ID' or let a serve replica whose directory holds the file take it.`,
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Experiment, r.State, r.Step, dash(r.Verdict), drivenBy(r, leases), r.UpdatedAt.Local().Format(time.DateTime))
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
	fmt.Fprintf(w, "Run %s\nExperiment %s on pool %s\nState %s, step %d", r.ID, r.Experiment, r.Pool, r.State, r.Step)
	if r.Verdict != "" {
		fmt.Fprintf(w, "\nVerdict %s — %s (by %s)", strings.ToUpper(strings.ReplaceAll(r.Verdict, "_", " ")), r.Reason, r.EndedBy)
	}
	fmt.Fprintf(w, "\nStarted %s", r.CreatedAt.Local().Format(time.DateTime))
	if !r.EndedAt.IsZero() {
		fmt.Fprintf(w, ", ended %s (%s)", r.EndedAt.Local().Format(time.DateTime), r.EndedAt.Sub(r.CreatedAt).Truncate(time.Second))
	}
	fmt.Fprintln(w)
	if !r.State.Terminal() {
		if l, ok := leases[r.ID]; ok {
			fmt.Fprintf(w, "Driven by %s (lease token %d, expires %s unless renewed)\n", l.Owner, l.Token, l.Expires.Local().Format(time.TimeOnly))
		} else {
			fmt.Fprintf(w, "Driven by nobody: no live process holds its lease. Resume it with: verdict run %s --resume %s\n", fileOr(r.SpecFile), r.ID)
		}
	}
	if len(r.Current) > 0 {
		fmt.Fprintln(w, "\nWeights (now / before the experiment)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, o := range sortedKeys(r.Current) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o, traffic.FormatWeight(r.Current[o]), traffic.FormatWeight(r.Original[o]))
		}
		tw.Flush()
	}
	if r.Intent != nil {
		fmt.Fprintf(w, "\nA weight write for %s is in flight since %s: resume the run to reconcile it.\n", r.Intent.Purpose, r.Intent.At.Local().Format(time.TimeOnly))
	}
	if len(ds) > 0 {
		d := ds[len(ds)-1]
		fmt.Fprintf(w, "\nLast decision (%s, step %d): %s — %s\n", d.At.Local().Format(time.TimeOnly), d.Step, d.Action, d.Reason)
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
				fmt.Fprintf(w, "  %-28s %-13s %s\n", k.Name, k.Status, k.Reason)
			}
		}
	}
	fmt.Fprintln(w, "\nEvents")
	start := max(0, len(evs)-15)
	for _, e := range evs[start:] {
		fmt.Fprintf(w, "  %s  %-18s %s\n", e.At.Local().Format(time.TimeOnly), e.Type, e.Message)
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
	var cmds []*cobra.Command
	for _, action := range engine.Actions {
		var who, reason, srv string
		cmd := &cobra.Command{
			Use:   action + " RUN-ID|EXPERIMENT",
			Short: help[action],
			Long: help[action] + `. The action is recorded with who asked and why, and applied by the
process running the experiment at its next step (within seconds). If no process runs it,
resume it with 'verdict run FILE --resume RUN-ID' and the action is applied first.`,
			Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if srv != "" {
					return remoteAction(cmd.Context(), g, srv, action, args[0], who, reason)
				}
				st, err := openStore(cmd.Context(), g)
				if err != nil {
					return err
				}
				defer st.Close()
				r, err := st.Run(cmd.Context(), args[0])
				if errors.Is(err, store.ErrNotFound) {
					return usageErrorf("no run or experiment %q in the store", args[0])
				}
				if err != nil {
					return withCode(exitError, err)
				}
				if r.State.Terminal() {
					return usageErrorf("run %s has already ended (%s)", r.ID, r.State)
				}
				c := &store.Command{RunID: r.ID, Action: action, Who: actor(who), Reason: reason}
				if err := st.PostCommand(cmd.Context(), c); err != nil {
					return withCode(exitError, err)
				}
				if g.json() {
					return writeJSON(g.stdout, map[string]any{"type": "action_queued", "version": jsonVersion, "run": r.ID, "action": action, "who": c.Who, "reason": reason, "id": c.ID})
				}
				fmt.Fprintf(g.stdout, "%s of run %s queued (by %s); the running process applies it at its next step.\n", action, r.ID, c.Who)
				return nil
			},
		}
		cmd.Flags().StringVar(&who, "who", "", "who asks (default: your login name)")
		cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's history and report")
		addServerFlag(cmd, &srv)
		cmds = append(cmds, cmd)
	}
	return cmds
}

func fileOr(f string) string {
	if f == "" {
		return "FILE"
	}
	return f
}
