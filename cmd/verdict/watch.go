package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
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

// watchPoll is how often verdict watch reads a local run from the store; tests make it
// short.
var watchPoll = time.Second

func newWatchCmd(g *globals) *cobra.Command {
	var a watchArgs
	cmd := &cobra.Command{
		Use:   "watch RUN-ID|EXPERIMENT",
		Short: "Follow a run live, until it ends: one in the local store, or on a verdict server",
		Long: `Watch shows a run another process drives, with the live view 'verdict run' shows: on a
terminal a full-screen view (the terminal's alternate screen, so nothing piles up in the
scrollback; the final view stays on the normal screen), one line per event otherwise, JSON
lines with --output json.

Without --server the run is read from the store (the state directory, or --store), every
second: a 'verdict run' in another shell, or a serve process on the same store. With --server
URL (or VERDICT_SERVER) it is fed by that server's event stream; the token comes from
VERDICT_TOKEN.

It ends when the run ends, with the exit status of verdict run (0 promoted, 3 rolled back,
4 aborted, 5 inconclusive, 6 a precondition failed). Ctrl-C stops watching; the run goes on.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run = args[0]
			if a.server == "" {
				return runWatchLocal(cmd.Context(), g, a)
			}
			return runWatch(cmd.Context(), g, a)
		},
	}
	addServerFlag(cmd, &a.server)
	return cmd
}

func remoteExit(r server.RunSummary) error {
	return exitOf(store.Run{State: r.State, Verdict: r.Verdict})
}

func exitOf(rec store.Run) error {
	code := exitCode(rec)
	if code == exitOK {
		return nil
	}
	return silentExit(code)
}

// runWatch follows a run on a server, fed by its event stream.
func runWatch(ctx context.Context, g *globals, a watchArgs) error {
	c, err := remoteClient(a.server)
	if err != nil {
		return err
	}
	d, err := c.Run(ctx, a.run)
	if err != nil {
		return remoteError("run or experiment "+a.run, err)
	}
	v := newWatchView(g, a.server)
	defer v.close()
	v.setDetail(*d)
	if evs, err := c.Events(ctx, d.Run.ID); err == nil {
		v.recent = messagesOf(evs)
	}
	if d.Run.State.Terminal() {
		v.final()
		return remoteExit(d.Run)
	}
	v.open()
	v.render(nil)
	refresh := func() {
		if nd, err := c.Run(ctx, d.Run.ID); err == nil {
			v.setDetail(*nd)
		}
	}
	// The view also redraws on its own every second (time left moves on between events),
	// and the run is re-read every watchPoll: a server that relays another process's run
	// may be slow to stream its events, and the run's end must not be missed.
	stop := v.tick()
	sctx, cancelStream := context.WithCancel(ctx)
	defer cancelStream()
	var ended atomic.Bool
	go func() {
		for {
			select {
			case <-sctx.Done():
				return
			case <-time.After(watchPoll):
			}
			if nd, err := c.Run(sctx, d.Run.ID); err == nil {
				v.setDetail(*nd)
				if nd.Run.State.Terminal() {
					ended.Store(true)
					cancelStream()
					return
				}
			}
		}
	}()
	err = c.Stream(sctx, d.Run.ID, d.Cursor, func(m server.Message) error {
		switch m.Type {
		case "reset", engine.EventStateChanged, engine.EventWeightsConfirmed, engine.EventDecision, engine.EventAction, engine.EventRunEnded, engine.EventDrift:
			refresh()
		}
		v.render(&m)
		if m.Type == engine.EventRunEnded {
			return server.ErrStopStream
		}
		return nil
	})
	stop()
	cancelStream()
	if ended.Load() && ctx.Err() == nil {
		err = nil
	}
	if err != nil {
		v.close()
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(g.stdio.err, "Stopped watching; run %s goes on.\n", safeText(d.Run.ID))
			return silentExit(exitError)
		}
		return remoteError("run "+d.Run.ID, err)
	}
	refresh()
	v.final()
	return remoteExit(v.detail.Run)
}

// runWatchLocal follows a run in the store, reading it every watchPoll.
func runWatchLocal(ctx context.Context, g *globals, a watchArgs) error {
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	rec, err := st.Run(ctx, a.run)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store %s (a run on a verdict server: --server URL)", a.run, storeName(g))
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("read run %s: %w", a.run, err))
	}
	v := newWatchView(g, "")
	defer v.close()
	var (
		events  []store.Event
		lastSeq int64
		last    *store.Decision
		version int64 = -1
	)
	read := func() ([]store.Event, error) {
		evs, err := st.Events(ctx, rec.ID, lastSeq)
		if err != nil {
			return nil, fmt.Errorf("read events of run %s: %w", rec.ID, err)
		}
		if len(evs) > 0 {
			lastSeq = evs[len(evs)-1].Seq
			events = append(events, evs...)
			if len(events) > 200 {
				events = events[len(events)-200:]
			}
		}
		if rec.Version != version {
			version = rec.Version
			ds, err := st.Decisions(ctx, rec.ID)
			if err != nil {
				return nil, fmt.Errorf("read decisions of run %s: %w", rec.ID, err)
			}
			if len(ds) > 0 {
				last = &ds[len(ds)-1]
			}
		}
		v.setLocal(rec, last, events)
		return evs, nil
	}
	if _, err := read(); err != nil {
		return withCode(exitError, err)
	}
	if rec.State.Terminal() {
		v.final()
		return exitOf(*rec)
	}
	v.open()
	v.render(nil)
	failures := 0
	for !rec.State.Terminal() {
		select {
		case <-ctx.Done():
			v.close()
			fmt.Fprintf(g.stdio.err, "Stopped watching; run %s goes on.\n", safeText(rec.ID))
			return silentExit(exitError)
		case <-time.After(watchPoll):
		}
		nrec, err := st.Run(ctx, rec.ID)
		var evs []store.Event
		if err == nil {
			rec = nrec
			evs, err = read()
		}
		if err != nil {
			// A store that is briefly unreadable (a busy SQLite file, a PostgreSQL
			// failover) is retried; one that stays so ends the watch.
			if failures++; failures > 30 || ctx.Err() != nil {
				v.close()
				if ctx.Err() != nil {
					fmt.Fprintf(g.stdio.err, "Stopped watching; run %s goes on.\n", safeText(rec.ID))
					return silentExit(exitError)
				}
				return withCode(exitError, err)
			}
			continue
		}
		failures = 0
		if len(evs) == 0 {
			v.render(nil)
		}
		for i := range evs {
			m := server.Message{ID: fmt.Sprint(evs[i].Seq), Type: evs[i].Type, RunID: evs[i].RunID, At: evs[i].At, Message: evs[i].Message, Data: evs[i].Data}
			v.render(&m)
		}
	}
	v.final()
	return exitOf(*rec)
}

func storeName(g *globals) string {
	if f := strings.TrimSpace(storeFlags(g)); f != "" {
		return f
	}
	return "of the state directory"
}

// watchView prints a watched run: the live view on a terminal (the alternate screen), one
// line per event otherwise, or JSON lines.
type watchView struct {
	g      *globals
	url    string
	tty    bool
	screen *liveScreen
	mu     sync.Mutex
	// model makes the run's live model from what is known now.
	model  func() liveModel
	detail server.RunDetail
	recent []server.Message
	// loc is the time zone of the times shown.
	loc *time.Location
	// headDone is set once the line output has said what it watches.
	headDone bool
}

func newWatchView(g *globals, url string) *watchView {
	v := &watchView{g: g, url: url, tty: isTerminal(g.stdout) && !g.json(), loc: time.Local}
	v.screen = newLiveScreen(g.stdout)
	return v
}

func (v *watchView) setDetail(d server.RunDetail) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.detail = d
	v.model = func() liveModel { return liveFromServer(v.url, v.detail, v.recent) }
}

func (v *watchView) setLocal(rec *store.Run, last *store.Decision, events []store.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.detail.Run = server.RunSummary{ID: rec.ID, Experiment: rec.Experiment, State: rec.State, Step: rec.Step, Verdict: rec.Verdict, Reason: rec.Reason, Weights: rec.Current}
	m := liveFromStore(rec, last, events)
	v.model = func() liveModel { return m }
}

// open enters the alternate screen on a terminal.
func (v *watchView) open() {
	if v.tty {
		v.screen.enter()
	}
}

// close leaves the alternate screen; every way out of watch calls it.
func (v *watchView) close() { v.screen.leave() }

// tick redraws the view every second until the returned function is called.
func (v *watchView) tick() func() {
	if !v.tty {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(liveViewEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v.render(nil)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (v *watchView) render(m *server.Message) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m != nil && m.Type != "reset" && v.url != "" {
		v.recent = append(v.recent, *m)
		if len(v.recent) > 200 {
			v.recent = v.recent[len(v.recent)-200:]
		}
	}
	switch {
	case v.g.json():
		if m != nil {
			writeJSON(v.g.stdout, messageJSON(m))
		}
	case v.tty:
		if v.model == nil {
			return
		}
		model := v.model()
		model.Loc = v.loc
		now := time.Now()
		v.screen.draw(func(w, h int) []string { return liveLines(model, now, w, h) })
	case m == nil:
		if v.model != nil && !v.printedHead() {
			r := v.detail.Run
			where := "the store"
			if v.url != "" {
				where = v.url
			}
			fmt.Fprintf(v.g.stdout, "Watching run %s of %s on %s: %s, step %d/%d\n", safeText(r.ID), safeText(r.Experiment), safeText(where), r.State, r.Step, v.model().Steps)
		}
	default:
		fmt.Fprintf(v.g.stdout, "%s  %-18s %s\n", m.At.In(v.loc).Format(time.TimeOnly), safeText(m.Type), safeText(firstLine(m.Message)))
		v.headDone = true
	}
}

// printedHead reports whether the one-line head of the line output was printed, and
// marks it printed.
func (v *watchView) printedHead() bool {
	done := v.headDone
	v.headDone = true
	return done
}

// final leaves the alternate screen and prints the run's ending where it stays: the full
// view and the verdict on a terminal's normal screen, a run_result JSON message, or a line.
func (v *watchView) final() {
	v.screen.leave()
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.detail.Run
	if v.g.json() {
		writeJSON(v.g.stdout, resultJSON{Type: "run_result", Version: jsonVersion, Run: r.ID, State: r.State, Verdict: r.Verdict,
			Reason: r.Reason, ExitCode: exitCode(store.Run{State: r.State, Verdict: r.Verdict}), Weights: r.Weights})
		return
	}
	if v.tty && v.model != nil {
		model := v.model()
		model.Loc = v.loc
		w, _ := terminalSize(v.g.stdout)
		io.WriteString(v.g.stdout, strings.Join(liveLines(model, time.Now(), w, 0), "\n")+"\n")
	}
	hint := "verdict report " + safeText(r.ID)
	if v.url != "" {
		hint = "verdict report --server " + safeText(v.url) + " " + safeText(r.ID)
	} else if f := storeFlags(v.g); f != "" {
		hint = "verdict" + f + " report " + safeText(r.ID)
	}
	fmt.Fprintf(v.g.stdout, "\n%s: %s — %s\nRun %s; report: %s\n", safeText(r.Experiment), verdictText(r.Verdict), safeText(r.Reason), safeText(r.ID), hint)
}
