package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// addServerFlag adds --server to a command that can talk to a verdict server instead of
// the local state directory. VERDICT_SERVER sets it too (like every flag's VERDICT_*).
func addServerFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "server", "", "talk to the verdict server at URL instead of the local state directory (env VERDICT_SERVER; token from VERDICT_TOKEN)")
}

// remoteClient connects to a server; the token comes from VERDICT_TOKEN only, never from a
// flag, so it does not show in process listings or shell history.
func remoteClient(url string) (*server.Client, error) {
	c, err := server.NewClient(url, strings.TrimSpace(os.Getenv("VERDICT_TOKEN")))
	if err != nil {
		return nil, usageErrorf("--server: %v", err)
	}
	return c, nil
}

// remoteError maps a server's answer to the CLI's exit codes.
func remoteError(what string, err error) error {
	var apiErr *server.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusNotFound:
			return usageErrorf("no %s on the server", what)
		case http.StatusUnauthorized:
			return withCode(exitError, fmt.Errorf("the server refused the token: set VERDICT_TOKEN to the server's token (%s)", apiErr.Message))
		case http.StatusConflict, http.StatusBadRequest:
			return usageErrorf("%s", apiErr.Message)
		}
	}
	return withCode(exitError, err)
}

// remoteStatus is verdict status against a server.
func remoteStatus(ctx context.Context, g *globals, url string, args []string, all bool) error {
	c, err := remoteClient(url)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		runs, err := c.Runs(ctx, all)
		if err != nil {
			return remoteError("runs", err)
		}
		if g.json() {
			return writeJSON(g.stdout, map[string]any{"type": "runs", "version": jsonVersion, "server": url, "runs": runs})
		}
		if len(runs) == 0 {
			fmt.Fprintf(g.stdout, "No %sruns on %s.\n", map[bool]string{false: "unfinished ", true: ""}[all], url)
			return nil
		}
		tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tEXPERIMENT\tSTATE\tSTEP\tCANARY\tVERDICT\tUPDATED")
		for _, r := range runs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, r.Experiment, r.State, r.Step, r.Steps, shareText(r.CanaryShare), dash(r.Verdict), r.UpdatedAt.Local().Format(time.DateTime))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, r := range runs {
			if r.Orphan != nil {
				fmt.Fprintf(g.stdout, "\n%s\n", safeText(r.Orphan.Hint))
			}
		}
		return nil
	}
	d, err := c.Run(ctx, args[0])
	if err != nil {
		return remoteError("run or experiment "+args[0], err)
	}
	evs, err := c.Events(ctx, d.Run.ID)
	if err != nil {
		return remoteError("events of "+d.Run.ID, err)
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{"type": "run", "version": jsonVersion, "server": url, "run": d.Run, "events": evs})
	}
	renderRemote(g.stdout, url, d.Run, messagesOf(evs), time.Now())
	return nil
}

func shareText(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *p*100)
}

func messagesOf(evs []store.Event) []server.Message {
	out := make([]server.Message, 0, len(evs))
	for _, e := range evs {
		out = append(out, server.Message{Type: e.Type, RunID: e.RunID, At: e.At, Message: e.Message, Data: e.Data})
	}
	return out
}

// renderRemote draws a run as the server shows it: state, weights, every KPI's verdict and
// the recent events.
func renderRemote(w io.Writer, url string, r server.RunSummary, recent []server.Message, now time.Time) {
	fmt.Fprintf(w, "Experiment %s   run %s   (%s)\n", r.Experiment, r.ID, url)
	if r.Canary != "" {
		fmt.Fprintf(w, "Canary %s vs %s\n", r.Canary, strings.Join(r.Baselines, ", "))
	}
	state := string(r.State)
	if r.Step > 0 && !r.State.Terminal() {
		state += fmt.Sprintf(" — step %d/%d", r.Step, r.Steps)
	}
	fmt.Fprintf(w, "\nState   %s, canary at %s of the experiment's traffic\n", state, shareText(r.CanaryShare))
	if r.Verdict != "" {
		fmt.Fprintf(w, "Verdict %s — %s (by %s)\n", strings.ToUpper(strings.ReplaceAll(r.Verdict, "_", " ")), safeText(r.Reason), safeText(r.EndedBy))
	}
	if r.PauseNote != "" && r.State == store.StatePaused {
		fmt.Fprintf(w, "Paused  %s\n", safeText(r.PauseNote))
	}
	if r.Stalled != "" {
		fmt.Fprintf(w, "Stalled %s\n", safeText(r.Stalled))
	}
	if r.Orphan != nil {
		fmt.Fprintf(w, "Orphaned %s\n", safeText(r.Orphan.Hint))
	}
	if len(r.Weights) > 0 {
		fmt.Fprintln(w, "\nWeights (now / before)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		origins := make([]string, 0, len(r.Weights))
		for o := range r.Weights {
			origins = append(origins, o)
		}
		sort.Strings(origins)
		for _, o := range origins {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o, traffic.FormatWeight(r.Weights[o]), traffic.FormatWeight(r.Original[o]))
		}
		tw.Flush()
	}
	if d := r.Decision; d != nil {
		fmt.Fprintf(w, "\nLast decision: %s — %s\n", d.Action, safeText(d.Reason))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range d.KPIs {
			iv := k.Interval
			fmt.Fprintf(tw, "  %s\t%s\t%+.1f%%\t[%s, %s]\n", k.Name, k.Status, iv.Estimate*100, boundText(iv.Lower, iv.LowerBounded), boundText(iv.Upper, iv.UpperBounded))
		}
		tw.Flush()
	}
	if len(recent) > 0 {
		fmt.Fprintln(w, "\nEvents")
		for _, m := range recent[max(0, len(recent)-12):] {
			fmt.Fprintf(w, "  %s  %-18s %s\n", m.At.Local().Format(time.TimeOnly), m.Type, safeText(firstLine(m.Message)))
		}
	}
	fmt.Fprintf(w, "\nReport: verdict report %s   (updated %s)\n", r.ID, now.Local().Format(time.TimeOnly))
}

func boundText(x float64, ok bool) string {
	if !ok {
		return "unbounded"
	}
	return fmt.Sprintf("%+.1f%%", x*100)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// remoteAction is verdict pause|resume|promote|abort against a server.
func remoteAction(ctx context.Context, g *globals, url, action, id, who, reason string) error {
	c, err := remoteClient(url)
	if err != nil {
		return err
	}
	res, err := c.Act(ctx, id, action, actor(who), reason)
	if err != nil {
		return remoteError("run or experiment "+id, err)
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{"type": "action_result", "version": jsonVersion, "run": res.Run, "action": action, "who": res.Who,
			"reason": res.Reason, "id": res.Command, "applied": res.Applied, "state": res.State, "previous": res.Previous})
	}
	switch {
	case res.Applied && res.State == res.Previous:
		fmt.Fprintf(g.stdout, "%s of run %s applied (by %s); the run stays %s.\n", action, res.Run, safeText(res.Who), res.State)
	case res.Applied:
		fmt.Fprintf(g.stdout, "%s of run %s applied (by %s); the run is now %s (was %s).\n", action, res.Run, safeText(res.Who), res.State, res.Previous)
	default:
		fmt.Fprintf(g.stdout, "%s of run %s queued (by %s); the process running it applies it at its next step.\n", action, res.Run, res.Who)
	}
	return nil
}
