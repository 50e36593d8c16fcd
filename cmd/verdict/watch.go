package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
)

// watchArgs are the parsed arguments of verdict watch.
type watchArgs struct {
	run    string
	server string
}

func newWatchCmd(g *globals) *cobra.Command {
	var a watchArgs
	cmd := &cobra.Command{
		Use:   "watch RUN-ID|EXPERIMENT",
		Short: "Follow a run on a verdict server live, until it ends",
		Long: `Watch shows a run that a 'verdict serve' process is running, fed by the server's event
stream: a live view on a terminal, one line per event otherwise, JSON lines with --output json.
It ends when the run ends, with the exit status of verdict run (0 promoted, 3 rolled back,
4 aborted, 5 inconclusive, 6 a precondition failed). Ctrl-C stops watching; the run goes on.

The server comes from --server or VERDICT_SERVER, its token from VERDICT_TOKEN.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run = args[0]
			if a.server == "" {
				return usageErrorf("watch follows a run on a server: set --server URL or VERDICT_SERVER (a run started with 'verdict run' shows its own live view)")
			}
			return runWatch(cmd.Context(), g, a)
		},
	}
	addServerFlag(cmd, &a.server)
	return cmd
}

func remoteExit(r server.RunSummary) error {
	code := exitCode(store.Run{State: r.State, Verdict: r.Verdict})
	if code == exitOK {
		return nil
	}
	return silentExit(code)
}

func runWatch(ctx context.Context, g *globals, a watchArgs) error {
	c, err := remoteClient(a.server)
	if err != nil {
		return err
	}
	d, err := c.Run(ctx, a.run)
	if err != nil {
		return remoteError("run or experiment "+a.run, err)
	}
	v := &watchView{g: g, url: a.server, run: d.Run, tty: isTerminal(g.stdout) && !g.json()}
	if evs, err := c.Events(ctx, d.Run.ID); err == nil {
		v.recent = messagesOf(evs)
	}
	if d.Run.State.Terminal() {
		v.final()
		return remoteExit(d.Run)
	}
	v.render(nil)
	refresh := func() {
		if nd, err := c.Run(ctx, d.Run.ID); err == nil {
			v.mu.Lock()
			v.run = nd.Run
			v.mu.Unlock()
		}
	}
	err = c.Stream(ctx, d.Run.ID, d.Cursor, func(m server.Message) error {
		switch m.Type {
		case "reset", engine.EventStateChanged, engine.EventWeightsConfirmed, engine.EventDecision, engine.EventAction, engine.EventRunEnded:
			refresh()
		}
		v.render(&m)
		if m.Type == engine.EventRunEnded {
			return server.ErrStopStream
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(g.stdio.err, "Stopped watching; run %s goes on.\n", d.Run.ID)
			return silentExit(exitError)
		}
		return remoteError("run "+d.Run.ID, err)
	}
	refresh()
	v.final()
	return remoteExit(v.run)
}

// watchView prints a watched run: a redrawn view on a terminal, lines or JSON otherwise.
type watchView struct {
	g      *globals
	url    string
	tty    bool
	mu     sync.Mutex
	run    server.RunSummary
	recent []server.Message
}

func (v *watchView) render(m *server.Message) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m != nil && m.Type != "reset" {
		v.recent = append(v.recent, *m)
		if len(v.recent) > 200 {
			v.recent = v.recent[len(v.recent)-200:]
		}
	}
	switch {
	case v.g.json():
		if m != nil {
			writeJSON(v.g.stdout, map[string]any{"type": m.Type, "version": jsonVersion, "id": m.ID, "run": m.RunID, "at": m.At, "message": m.Message, "data": m.Data})
		}
	case v.tty:
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J")
		renderRemote(&b, v.url, v.run, v.recent, time.Now())
		fmt.Fprint(v.g.stdout, b.String())
	case m == nil:
		fmt.Fprintf(v.g.stdout, "Watching run %s of %s on %s: %s, step %d/%d\n", v.run.ID, v.run.Experiment, v.url, v.run.State, v.run.Step, v.run.Steps)
	default:
		fmt.Fprintf(v.g.stdout, "%s  %-18s %s\n", m.At.Local().Format(time.TimeOnly), m.Type, firstLine(m.Message))
	}
}

func (v *watchView) final() {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.run
	if v.g.json() {
		writeJSON(v.g.stdout, map[string]any{"type": "run_result", "version": jsonVersion, "run": r.ID, "state": r.State, "verdict": r.Verdict,
			"reason": r.Reason, "exitCode": exitCode(store.Run{State: r.State, Verdict: r.Verdict}), "weights": r.Weights})
		return
	}
	if v.tty {
		fmt.Fprint(v.g.stdout, "\x1b[H\x1b[2J")
		renderRemote(v.g.stdout, v.url, r, v.recent, time.Now())
	}
	fmt.Fprintf(v.g.stdout, "\n%s: %s — %s\nRun %s; report: verdict report %s\n", r.Experiment, strings.ToUpper(strings.ReplaceAll(r.Verdict, "_", " ")), r.Reason, r.ID, r.ID)
}
