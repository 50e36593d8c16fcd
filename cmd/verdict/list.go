package main

import (
	"context"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
)

// listArgs are the parsed arguments of verdict list (and of status without a run).
type listArgs struct {
	server     string
	experiment string
	states     []store.State
	all        bool
	limit      int
}

func newListCmd(g *globals) *cobra.Command {
	var a listArgs
	var states string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first",
		Long: `List shows runs newest first: unfinished ones, or every run with --all. --run-state keeps runs in
the given states (comma-separated, any case: ramping,paused), finished ones included;
--experiment keeps one experiment's runs. It reads the local store (the state directory, or
--store), or the server at --server URL.

With -o json it prints one RunList document (docs/cli.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if a.states, err = server.ParseStates(states); err != nil {
				return usageErrorf("--run-state: %v", err)
			}
			if a.limit <= 0 || a.limit > 1000 {
				return usageErrorf("--limit must be between 1 and 1000, not %d", a.limit)
			}
			return runList(cmd.Context(), g, a)
		},
	}
	cmd.Flags().BoolVar(&a.all, "all", false, "list finished runs too")
	// Not --state: that is the global state directory.
	cmd.Flags().StringVar(&states, "run-state", "", "only runs in these states, comma-separated, any case: ramping,paused (finished ones included)")
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "only this experiment's runs")
	cmd.Flags().IntVar(&a.limit, "limit", 50, "at most this many runs")
	addServerFlag(cmd, &a.server)
	return cmd
}

// loadRunList reads a run list from the server at a.server, else from the local store.
func loadRunList(ctx context.Context, g *globals, a listArgs) (*server.RunList, error) {
	if a.server != "" {
		c, err := remoteClient(a.server)
		if err != nil {
			return nil, err
		}
		l, err := c.ListRuns(ctx, server.RunQuery{Experiment: a.experiment, States: a.states, All: a.all, Limit: a.limit})
		if err != nil {
			return nil, remoteError("runs", err)
		}
		l.Server = a.server
		return l, nil
	}
	st, err := openStore(ctx, g)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	recs, err := st.ListRuns(ctx, store.ListOptions{Experiment: a.experiment, Unfinished: !a.all && len(a.states) == 0, Limit: a.limit})
	if err != nil {
		return nil, withCode(exitError, err)
	}
	leases := runLeases(ctx, st)
	out := &server.RunList{TypeMeta: server.Meta(server.KindRunList), Runs: []server.RunSummary{}}
	for _, r := range recs {
		if len(a.states) > 0 && !slices.Contains(a.states, r.State) {
			continue
		}
		sum := localSummary(r, leases, st)
		if !r.State.Terminal() {
			// As the server does: where traffic goes while a drift is unresolved.
			if evs, err := st.Events(ctx, r.ID, 0); err == nil {
				sum.ActualWeights = server.ActualWeights(evs)
			}
		}
		out.Runs = append(out.Runs, sum)
	}
	return out, nil
}

func runList(ctx context.Context, g *globals, a listArgs) error {
	l, err := loadRunList(ctx, g, a)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, l)
	}
	renderRunList(g, a, l)
	return nil
}

// renderRunList prints runs as a table, and how to see more when it is empty.
func renderRunList(g *globals, a listArgs, l *server.RunList) {
	w := g.stdout
	if len(l.Runs) == 0 {
		where := ""
		if a.server != "" {
			where = " on " + a.server
		}
		switch {
		case len(a.states) > 0 || a.experiment != "":
			fmt.Fprintf(w, "No runs match%s.\n", where)
		case a.all:
			fmt.Fprintf(w, "No runs yet%s.\n", where)
		default:
			fmt.Fprintf(w, "No unfinished runs%s (verdict list --all%s lists finished ones).\n", where, hintFlags(g, a.server))
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tEXPERIMENT\tSTATE\tSTEP\tCANARY\tVERDICT\tDRIVEN BY\tUPDATED")
	for _, r := range l.Runs {
		step := fmt.Sprint(r.Step)
		if r.Steps > 0 {
			step = fmt.Sprintf("%d/%d", r.Step, r.Steps)
		}
		driven := r.DrivenBy
		switch {
		case r.State.Terminal():
			driven = "-"
		case r.Supervised:
			driven = "this server"
		case driven == "":
			driven = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeText(r.ID), safeText(r.Experiment), r.State, step, shareText(r.CanaryShare),
			safeText(dash(r.Verdict)), safeText(driven), r.UpdatedAt.Local().Format(time.DateTime))
	}
	tw.Flush()
	for _, r := range l.Runs {
		if r.Orphan != nil {
			fmt.Fprintf(w, "\n%s\n", safeText(r.Orphan.Hint))
		}
	}
}
