package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
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

func shareText(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *p*100)
}

func messagesOf(evs []store.Event) []server.Message {
	out := make([]server.Message, 0, len(evs))
	for _, e := range evs {
		// A stored event's ID is its sequence number in the run, not a stream position.
		out = append(out, server.Message{ID: fmt.Sprint(e.Seq), Type: e.Type, RunID: e.RunID, At: e.At, Message: e.Message, Data: e.Data})
	}
	return out
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
		return writeJSON(g.stdout, res)
	}
	switch {
	case res.Applied && res.State == res.Previous:
		fmt.Fprintf(g.stdout, "%s of run %s applied (by %s); the run stays %s.\n", action, res.Run, safeText(res.Who), res.State)
	case res.Applied:
		fmt.Fprintf(g.stdout, "%s of run %s applied (by %s); the run is now %s (was %s).\n", action, res.Run, safeText(res.Who), res.State, res.Previous)
	default:
		fmt.Fprintf(g.stdout, "%s of run %s queued (by %s); the process running it applies it at its next step (verdict status --watch %s%s follows it).\n",
			action, safeText(res.Run), safeText(res.Who), safeText(res.Run), hintFlags(g, url))
	}
	return nil
}
