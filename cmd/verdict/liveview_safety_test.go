package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/store"
)

// TestLiveViewRace drives a run in-process with the terminal view's render loop redrawing
// every few milliseconds while the engine steps, then aborts it through the store. Under
// -race (make test puts ./cmd/verdict in the race set) it fails if the view reads the run
// while Step changes it.
func TestLiveViewRace(t *testing.T) {
	if testing.Short() && !raceEnabled {
		t.Skip("starts a fleet; skipped with -short (except under -race, which it is for)")
	}
	fleet, err := sim.Start(sim.Options{Scenario: crashScenario(t), Rate: 400, Fast: true, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	for _, kv := range fleet.Env() {
		t.Setenv(kv[0], kv[1])
	}
	oldTTY, oldEvery := isTerminal, liveViewEvery
	isTerminal = func(io.Writer) bool { return true }
	liveViewEvery = 5 * time.Millisecond
	defer func() { isTerminal, liveViewEvery = oldTTY, oldEvery }()

	state := t.TempDir()
	var out, errOut lockedBuffer
	codes := make(chan int, 1)
	go func() {
		codes <- run([]string{"--state", state, "run", fleet.ExperimentFile(), "--tick", "1s"}, strings.NewReader(""), &out, &errOut)
	}()

	st, err := store.OpenSQLite(context.Background(), state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var id string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the run never reached a confirmed step 1:\n%s", errOut.String())
		}
		select {
		case code := <-codes:
			t.Fatalf("run exited %d early:\n%s", code, errOut.String())
		case <-time.After(100 * time.Millisecond):
		}
		runs, err := st.ListRuns(ctx, store.ListOptions{Unfinished: true})
		if err != nil || len(runs) == 0 {
			continue
		}
		r := runs[0]
		id = r.ID
		if r.Step >= 1 && r.Intent == nil && r.State == store.StateRamping {
			break
		}
	}
	// Stepping with the view redrawing all the while.
	time.Sleep(2 * time.Second)
	if err := st.PostCommand(ctx, &store.Command{RunID: id, Action: engine.ActionAbort, Who: "test\x1b[2J", Reason: "live view \x1b]0;pwned\x07test"}); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case code = <-codes:
	case <-time.After(time.Minute):
		t.Fatal("the run did not end after the abort")
	}
	rec, err := st.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Under the race detector the fleet is slow enough that the run may end on its own
	// (no data in time, say) before the abort is applied: the view was exercised all the same.
	aborted := code == exitAborted
	if !aborted && (code == exitError || code == exitInvalid || !rec.State.Terminal()) {
		t.Fatalf("exit %d, run %s (%s), want %d:\n%s", code, rec.State, rec.Reason, exitAborted, errOut.String())
	}
	if !aborted {
		t.Logf("the run ended on its own before the abort (exit %d): %s — %s", code, rec.State, rec.Reason)
	}
	o := out.String()
	// The live view runs on the alternate screen, which it leaves before the final view and
	// the verdict are printed: those stay on the normal screen, in the scrollback.
	on, off := strings.Index(o, ansiAltScreenOn), strings.LastIndex(o, ansiAltScreenOff)
	if on < 0 || off < on || strings.Count(o, ansiAltScreenOn) != 1 || strings.Count(o, ansiAltScreenOff) != 1 {
		t.Fatalf("the live view did not enter the alternate screen once and leave it once (enter at %d, leave at %d):\n%q", on, off, o[max(0, len(o)-2000):])
	}
	live, after := o[on:off], o[off:]
	if n := strings.Count(live, ansiHome); n < 10 {
		t.Errorf("the live view was drawn %d times, want many", n)
	}
	if strings.Contains(after, ansiHome) || strings.Contains(after, "\x1b[2J") {
		t.Errorf("a frame was drawn on the normal screen after leaving the alternate one")
	}
	if !strings.Contains(after, "Weights") || !strings.Contains(after, strings.ToUpper(strings.ReplaceAll(rec.Verdict, "_", " "))) {
		t.Errorf("no final view or ending on the normal screen:\n%s", after)
	}
	// The only escape sequences on the terminal are the view's own.
	rest := o
	for _, seq := range []string{ansiAltScreenOn, ansiAltScreenOff, ansiHome, ansiEraseLine, ansiEraseDown, ansiHideCursor, ansiShowCursor} {
		rest = strings.ReplaceAll(rest, seq, "")
	}
	if strings.ContainsAny(rest, "\x1b\x07") {
		i := strings.IndexAny(rest, "\x1b\x07")
		t.Errorf("a control character from user text reached the terminal: %q", rest[max(0, i-80):min(len(rest), i+80)])
	}
	if aborted && !strings.Contains(o, `live view \x1b]0;pwned\x07test`) {
		t.Errorf("the abort reason is not shown escaped:\n%s", o[max(0, len(o)-2000):])
	}
}
