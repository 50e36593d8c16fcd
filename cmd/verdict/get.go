package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// getArgs are the parsed arguments of verdict get.
type getArgs struct {
	run, server string
}

func newGetCmd(g *globals) *cobra.Command {
	var a getArgs
	cmd := &cobra.Command{
		Use:   "get RUN-ID|EXPERIMENT",
		Short: "Show one run in detail: state, step, weights, KPI verdicts and its last events",
		Long: `Get shows one run (or an experiment's latest run): its state and step, who drives it, the
pool's weights (expected, actual after drift, and before the experiment), every KPI's verdict
with its effect and confidence bounds at the last decision, and its last events. It reads the
local store (the state directory, or --store), or the server at --server URL.

With -o json it prints one Run document (docs/cli.md).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run = args[0]
			d, err := loadRunDetail(cmd.Context(), g, a.server, a.run)
			if err != nil {
				return err
			}
			return printRunDetail(g, a.server, d)
		},
	}
	addServerFlag(cmd, &a.server)
	return cmd
}

// loadRunDetail reads one run, by ID or as an experiment's latest: from the server at srv,
// else from the local store.
func loadRunDetail(ctx context.Context, g *globals, srv, id string) (server.RunDetail, error) {
	if srv != "" {
		c, err := remoteClient(srv)
		if err != nil {
			return server.RunDetail{}, err
		}
		d, err := c.Run(ctx, id)
		if err != nil {
			return server.RunDetail{}, remoteError("run or experiment "+id, err)
		}
		// The server's messages start with its own process; the stored events are the
		// whole history.
		if evs, err := c.Events(ctx, d.Run.ID); err == nil {
			d.Messages = messagesOf(evs[max(0, len(evs)-50):])
		}
		d.Server = srv
		return *d, nil
	}
	st, err := openStore(ctx, g)
	if err != nil {
		return server.RunDetail{}, err
	}
	defer st.Close()
	return localRunDetail(ctx, st, id)
}

// localRunDetail is a run's detail from the store: the document the server answers for
// GET /api/v1/runs/{id}, as far as a store tells it.
func localRunDetail(ctx context.Context, st store.Store, id string) (server.RunDetail, error) {
	rec, err := st.Run(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return server.RunDetail{}, usageErrorf("no run or experiment %q in the store (verdict list --all lists them)", safeText(id))
	}
	if err != nil {
		return server.RunDetail{}, withCode(exitError, err)
	}
	evs, err := st.Events(ctx, rec.ID, 0)
	if err != nil {
		return server.RunDetail{}, withCode(exitError, err)
	}
	ds, err := st.Decisions(ctx, rec.ID)
	if err != nil {
		return server.RunDetail{}, withCode(exitError, err)
	}
	sum := localSummary(rec, runLeases(ctx, st), st)
	if !rec.State.Terminal() {
		sum.ActualWeights = server.ActualWeights(evs)
	}
	if len(ds) > 0 {
		sum.Decision = server.StoredDecisionOf(ds[len(ds)-1])
	}
	sum.RetryOf = server.RetryOf(ctx, st, rec, evs)
	return server.RunDetail{TypeMeta: server.Meta(server.KindRun), Run: sum, Spec: rec.Spec, Intent: rec.Intent,
		Messages: messagesOf(evs[max(0, len(evs)-50):])}, nil
}

// localSummary is a stored run's summary with who drives it, when the store has leases.
func localSummary(rec *store.Run, leases map[string]store.Lease, st store.Store) server.RunSummary {
	sum := server.SummaryOf(rec)
	if _, ok := st.(store.Leaser); ok && !rec.State.Terminal() {
		sum.DrivenBy = "nobody"
		if l, ok := leases[rec.ID]; ok {
			sum.DrivenBy, sum.Lease = l.Owner, &l
		}
	}
	return sum
}

// printRunDetail prints a run's detail as JSON or for a person.
func printRunDetail(g *globals, srv string, d server.RunDetail) error {
	if g.json() {
		return writeJSON(g.stdout, d)
	}
	renderRunDetail(g.stdout, hintFlags(g, srv), d.Run, d.Messages, d.Intent, time.Now())
	return nil
}

// hintFlags are the flags a printed command line needs to reach the same runs: --server
// URL, or the state directory or store this command used.
func hintFlags(g *globals, srv string) string {
	if srv != "" {
		return " --server " + shellQuote(srv)
	}
	return storeFlags(g)
}

// reportHint is the command line that writes run id's report from where this command
// read it.
func reportHint(g *globals, srv, id string) string {
	return "verdict report " + shellQuote(id) + hintFlags(g, srv)
}

// renderRunDetail draws a run for a person: state, who drives it, weights (with the pool's
// actual ones after drift), every KPI's verdict at the last decision and the recent
// events. flags are appended to the command lines it suggests.
func renderRunDetail(w io.Writer, flags string, r server.RunSummary, recent []server.Message, intent *store.Intent, now time.Time) {
	fmt.Fprintf(w, "Experiment %s   run %s", safeText(r.Experiment), safeText(r.ID))
	if r.Pool != "" {
		fmt.Fprintf(w, "   pool %s", safeText(r.Pool))
	}
	fmt.Fprintln(w)
	if r.Canary != "" {
		fmt.Fprintf(w, "Canary %s vs %s\n", safeText(r.Canary), safeText(strings.Join(r.Baselines, ", ")))
	}
	if r.RetryOf != "" {
		fmt.Fprintf(w, "Retry of run %s\n", safeText(r.RetryOf))
	}
	state := string(r.State)
	if !r.State.Terminal() && r.Steps > 0 {
		state += fmt.Sprintf(" — step %d/%d", r.Step, r.Steps)
	}
	fmt.Fprintf(w, "\nState     %s", state)
	if r.CanaryShare != nil {
		fmt.Fprintf(w, ", canary at %s of the experiment's traffic", shareText(r.CanaryShare))
	}
	fmt.Fprintln(w)
	if r.Verdict != "" {
		fmt.Fprintf(w, "Verdict   %s — %s (by %s)\n", strings.ToUpper(strings.ReplaceAll(safeText(r.Verdict), "_", " ")), safeText(r.Reason), safeText(r.EndedBy))
	}
	fmt.Fprintf(w, "Started   %s", r.CreatedAt.Local().Format(time.DateTime))
	if !r.EndedAt.IsZero() {
		fmt.Fprintf(w, ", ended %s (%s)", r.EndedAt.Local().Format(time.DateTime), r.EndedAt.Sub(r.CreatedAt).Truncate(time.Second))
	}
	fmt.Fprintln(w)
	switch {
	case r.State.Terminal():
	case r.Supervised:
		fmt.Fprintln(w, "Driven by this server")
	case r.DrivenBy == "nobody" && r.Orphan == nil && !strings.Contains(flags, "--server"):
		fmt.Fprintf(w, "Driven by nobody: no live process holds its lease. Roll it back with: verdict abort %s%s (no file needed), or resume it with: verdict %s%s\n",
			safeText(r.ID), flags, safeText(resumeLine(r)), flags)
	case r.DrivenBy == "nobody":
		// The server's orphan line below says how to finish it.
		fmt.Fprintln(w, "Driven by nobody: no live process holds its lease")
	case r.Lease != nil:
		fmt.Fprintf(w, "Driven by %s (lease token %d, expires %s unless renewed)\n", safeText(r.Lease.Owner), r.Lease.Token, r.Lease.Expires.Local().Format(time.TimeOnly))
	case r.DrivenBy != "":
		fmt.Fprintf(w, "Driven by %s\n", safeText(r.DrivenBy))
	}
	if r.PauseNote != "" && r.State == store.StatePaused {
		fmt.Fprintf(w, "Paused    %s\n", safeText(r.PauseNote))
	}
	if r.Stalled != "" {
		fmt.Fprintf(w, "Stalled   %s\n", safeText(r.Stalled))
	}
	if r.Orphan != nil {
		fmt.Fprintf(w, "Orphaned  %s\n", safeText(r.Orphan.Hint))
	}
	if len(r.Weights) > 0 || len(r.Original) > 0 {
		renderWeights(w, r)
	}
	if intent != nil {
		fmt.Fprintf(w, "\nA weight write for %s is in flight since %s: resume the run to reconcile it.\n", safeText(intent.Purpose), intent.At.Local().Format(time.TimeOnly))
	}
	if d := r.Decision; d != nil {
		fmt.Fprintf(w, "\nLast decision")
		if !d.At.IsZero() {
			fmt.Fprintf(w, " (%s, step %d)", d.At.Local().Format(time.TimeOnly), d.Step)
		}
		fmt.Fprintf(w, ": %s — %s\n", safeText(string(d.Action)), safeText(d.Reason))
		if len(d.KPIs) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  KPI\tVERDICT\tEFFECT\tBOUNDS\tWHY")
			for _, k := range d.KPIs {
				iv := k.Interval
				fmt.Fprintf(tw, "  %s\t%s\t%+.1f%%\t[%s, %s]\t%s\n", safeText(k.Name), safeText(string(k.Status)), iv.Estimate*100,
					boundText(iv.Lower, iv.LowerBounded), boundText(iv.Upper, iv.UpperBounded), safeText(firstLine(k.Reason)))
			}
			tw.Flush()
		}
	}
	if len(recent) > 0 {
		fmt.Fprintln(w, "\nEvents")
		for _, m := range recent[max(0, len(recent)-12):] {
			fmt.Fprintf(w, "  %s  %-18s %s\n", m.At.Local().Format(time.TimeOnly), safeText(m.Type), safeText(firstLine(m.Message)))
		}
	}
	fmt.Fprintf(w, "\nReport: verdict report %s%s   (as of %s)\n", safeText(shellQuote(r.ID)), flags, now.Local().Format(time.TimeOnly))
}

// renderWeights prints the pool's weights: what the run expects, what the pool actually
// had at the last drift (when it differs), and what it had before the experiment.
func renderWeights(w io.Writer, r server.RunSummary) {
	origins := map[string]bool{}
	for _, m := range []store.Weights{r.Weights, r.Original, r.ActualWeights} {
		for o := range m {
			origins[o] = true
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	weight := func(m store.Weights, o string) string {
		if v, ok := m[o]; ok {
			return traffic.FormatWeight(v)
		}
		return "-"
	}
	if r.ActualWeights != nil {
		fmt.Fprintln(w, "\nWeights: the pool differs from what the run set (drift); actual is where traffic goes")
		fmt.Fprintln(tw, "  ORIGIN\tEXPECTED\tACTUAL\tBEFORE")
		for _, o := range sortedKeys(origins) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", safeText(o), weight(r.Weights, o), weight(r.ActualWeights, o), weight(r.Original, o))
		}
	} else {
		fmt.Fprintln(w, "\nWeights")
		fmt.Fprintln(tw, "  ORIGIN\tNOW\tBEFORE")
		for _, o := range sortedKeys(origins) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", safeText(o), weight(r.Weights, o), weight(r.Original, o))
		}
	}
	tw.Flush()
}

// resumeLine is the command (after "verdict ") that drives r again.
func resumeLine(r server.RunSummary) string {
	args := r.Resume
	if len(args) == 0 {
		args = []string{"run", fileOr(r.File), "--resume", r.ID}
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}
