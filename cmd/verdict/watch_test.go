package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// watchFixture is a run in a fresh state directory, as verdict run would have stored it at
// step 2 with one decision; change moves it on as the driving process would.
type watchFixture struct {
	t     *testing.T
	state string
	st    *store.SQLite
	id    string
	o     []string // canary, baseline, baseline origins
	at    time.Time
}

func newWatchFixture(t *testing.T) *watchFixture {
	t.Helper()
	exp, err := loadExperiment("../../examples/karpenter.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(exp)
	if err != nil {
		t.Fatal(err)
	}
	f := &watchFixture{t: t, state: t.TempDir(), id: "r-watch1", at: time.Now().Add(-10 * time.Minute)}
	f.st, err = store.OpenSQLite(context.Background(), f.state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	org := exp.Spec.Traffic.Origins()
	f.o = []string{org[exp.Spec.Canary.Cluster], org[exp.Spec.Baselines[0]], org[exp.Spec.Baselines[1]]}
	rec := &store.Run{ID: f.id, Experiment: exp.Metadata.Name, Spec: spec, Pool: "pool-1", State: store.StateRamping, Step: 2, StepElapsed: 2 * time.Minute,
		Original: store.Weights{f.o[0]: 0.33, f.o[1]: 0.33, f.o[2]: 0.34}, Current: store.Weights{f.o[0]: 0.15, f.o[1]: 0.42, f.o[2]: 0.43}}
	if err := f.st.CreateRun(context.Background(), rec, store.Event{RunID: f.id, At: f.at, Type: engine.EventRunStarted, Message: "run started"}); err != nil {
		t.Fatal(err)
	}
	details, _ := json.Marshal(engine.DecisionData{Step: 2, StepElapsed: "2m0s", Decision: engine.Decision{Action: analysis.Continue, Reason: "not proven yet",
		KPIs: []engine.KPIVerdict{{Name: "error-rate", Status: analysis.Inconclusive, Tolerance: 0.1,
			Interval: engine.Interval{Estimate: 0.3, Lower: 0.1, Upper: 0.6, LowerBounded: true, UpperBounded: true, Ready: true, Alpha: 0.025}}}},
		Values: []engine.KPIValue{{KPI: "error-rate", Canary: 0.0242, Baseline: 0.0161}}})
	if err := f.st.AddDecision(context.Background(), &store.Decision{RunID: f.id, At: f.at.Add(time.Minute), Step: 2, Action: "continue", Reason: "not proven yet", Details: details}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *watchFixture) change(edit func(*store.Run), events ...store.Event) {
	f.t.Helper()
	rec, err := f.st.Run(context.Background(), f.id)
	if err != nil {
		f.t.Fatal(err)
	}
	edit(rec)
	for i := range events {
		events[i].RunID = f.id
	}
	if err := f.st.SaveRun(context.Background(), rec, events...); err != nil {
		f.t.Fatal(err)
	}
}

// TestWatchLocalRun: verdict watch follows a run in the local store with no server, on a
// terminal with the live view run shows (the alternate screen, the actual weights after
// drift), and ends with the run: the final view and verdict on the normal screen and
// verdict run's exit status.
func TestWatchLocalRun(t *testing.T) {
	f := newWatchFixture(t)
	oldTTY, oldPoll := isTerminal, watchPoll
	isTerminal = func(io.Writer) bool { return true }
	watchPoll = 20 * time.Millisecond
	defer func() { isTerminal, watchPoll = oldTTY, oldPoll }()

	var out, errOut lockedBuffer
	codes := make(chan int, 1)
	go func() {
		codes <- run([]string{"--state", f.state, "watch", f.id}, strings.NewReader(""), &out, &errOut)
	}()
	waitFor := func(what string, cond func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond(out.String()) {
			select {
			case code := <-codes:
				t.Fatalf("watch exited %d while waiting for %s:\n%s\n%s", code, what, out.String(), errOut.String())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				o := out.String()
				t.Fatalf("no %s in the watch output; its end:\n%q", what, o[max(0, len(o)-3000):])
			}
		}
	}
	waitFor("live frame", func(o string) bool {
		return strings.Contains(o, ansiAltScreenOn) && strings.Contains(o, "Ramping — step 2/3") && strings.Contains(o, "LAST 1m CANARY")
	})

	// Someone changes the pool by hand: the run pauses, and the view shows where traffic
	// really goes next to the confirmed weights.
	drift, _ := json.Marshal(engine.DriftData{During: "ramp", OnDrift: "pause", Actual: store.Weights{f.o[0]: 0.5, f.o[1]: 0.25, f.o[2]: 0.25}})
	f.change(func(r *store.Run) { r.State, r.PausedFrom = store.StatePaused, store.StateRamping },
		store.Event{At: time.Now(), Type: engine.EventDrift, Message: "pool changed outside Verdict", Data: drift})
	waitFor("actual weights", func(o string) bool {
		return strings.Contains(o, "ACTUAL IN POOL") && strings.Contains(o, "0.5 ≠")
	})

	f.change(func(r *store.Run) {
		r.State, r.Verdict, r.Reason, r.EndedBy, r.Current, r.EndedAt = store.StateRolledBack, engine.VerdictRolledBack, "aborted after drift", "test", r.Original, time.Now()
	}, store.Event{At: time.Now(), Type: engine.EventRunEnded, Message: "rolled back"})
	var code int
	select {
	case code = <-codes:
	case <-time.After(20 * time.Second):
		o := out.String()
		t.Fatalf("watch did not end with the run; its output ends:\n%q", o[max(0, len(o)-3000):])
	}
	if code != exitRolledBack {
		t.Errorf("exit %d, want %d (rolled back):\n%s", code, exitRolledBack, errOut.String())
	}
	o := out.String()
	off := strings.LastIndex(o, ansiAltScreenOff)
	if off < 0 || strings.Count(o, ansiAltScreenOn) != 1 {
		t.Fatalf("the alternate screen was not entered once and left; output ends:\n%q", o[max(0, len(o)-3000):])
	}
	after := o[off:]
	for _, want := range []string{"State      RolledBack", "Verdict    ROLLED BACK — aborted after drift", "report: verdict --state"} {
		if !strings.Contains(after, want) {
			t.Errorf("the normal screen after the watch lacks %q:\n%s", want, after)
		}
	}
	if strings.Contains(after, "ACTUAL IN POOL") {
		t.Errorf("an ended run still shows drifted weights:\n%s", after)
	}
}

// TestWatchLocalLines: without a terminal, watch prints what it watches and then one line
// per event, and a run that has already ended prints its ending at once.
func TestWatchLocalLines(t *testing.T) {
	f := newWatchFixture(t)
	oldPoll := watchPoll
	watchPoll = 20 * time.Millisecond
	defer func() { watchPoll = oldPoll }()
	var out, errOut lockedBuffer
	codes := make(chan int, 1)
	go func() {
		codes <- run([]string{"--state", f.state, "watch", "karpenter-on-snorlax"}, strings.NewReader(""), &out, &errOut)
	}()
	time.Sleep(200 * time.Millisecond)
	f.change(func(r *store.Run) {
		r.State, r.Verdict, r.Reason, r.EndedBy = store.StatePromoted, engine.VerdictPromoted, "every KPI non-inferior", "verdict"
	}, store.Event{At: time.Now(), Type: engine.EventRunEnded, Message: "promoted"})
	select {
	case code := <-codes:
		if code != exitOK {
			t.Errorf("exit %d, want 0:\n%s", code, errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not end")
	}
	o := out.String()
	if strings.ContainsRune(o, '\x1b') {
		t.Errorf("escape sequences without a terminal:\n%q", o)
	}
	for _, want := range []string{"Watching run r-watch1 of karpenter-on-snorlax on the store: Ramping, step 2/3", "run_ended", "promoted", "PROMOTED — every KPI non-inferior"} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	// Watching a run that has ended: its ending at once, with its exit status.
	out = lockedBuffer{}
	if code := run([]string{"--state", f.state, "watch", f.id}, strings.NewReader(""), &out, &errOut); code != exitOK || !strings.Contains(out.String(), "PROMOTED") {
		t.Errorf("watch of an ended run: exit %d, output:\n%s", code, out.String())
	}
	if code := run([]string{"--state", f.state, "watch", "no-such-run"}, strings.NewReader(""), &out, &errOut); code != exitInvalid {
		t.Errorf("watch of an unknown run: exit %d, want %d", code, exitInvalid)
	}
}

// TestWatchServerRun: verdict watch --server shows the same live view as a local watch, fed
// by the server's event stream: the actual weights after drift (the API's actualWeights),
// then the ending on the normal screen with the exit status of verdict run.
func TestWatchServerRun(t *testing.T) {
	f := newWatchFixture(t)
	srv, err := server.New(server.Options{Store: f.st, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), EventPoll: 20 * time.Millisecond,
		SteererFor: func(*experiments.Experiment, *slog.Logger) (traffic.Steerer, error) {
			return nil, errors.New("no steering in this test")
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	oldTTY, oldEvery := isTerminal, liveViewEvery
	isTerminal = func(io.Writer) bool { return true }
	liveViewEvery = 20 * time.Millisecond
	defer func() { isTerminal, liveViewEvery = oldTTY, oldEvery }()

	var out, errOut lockedBuffer
	codes := make(chan int, 1)
	go func() {
		codes <- run([]string{"watch", "--server", srv.URL(), f.id}, strings.NewReader(""), &out, &errOut)
	}()
	waitFor := func(what string, cond func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond(out.String()) {
			select {
			case code := <-codes:
				t.Fatalf("watch exited %d while waiting for %s:\n%s\n%s", code, what, out.String(), errOut.String())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				o := out.String()
				t.Fatalf("no %s in the watch output; its end:\n%q", what, o[max(0, len(o)-3000):])
			}
		}
	}
	waitFor("live frame", func(o string) bool {
		return strings.Contains(o, ansiAltScreenOn) && strings.Contains(o, "Ramping — step 2/3") && strings.Contains(o, "on "+srv.URL())
	})
	drift, _ := json.Marshal(engine.DriftData{During: "ramp", OnDrift: "pause", Actual: store.Weights{f.o[0]: 0.5, f.o[1]: 0.25, f.o[2]: 0.25}})
	f.change(func(r *store.Run) { r.State, r.PausedFrom = store.StatePaused, store.StateRamping },
		store.Event{At: time.Now(), Type: engine.EventDrift, Message: "pool changed outside Verdict", Data: drift})
	waitFor("actual weights", func(o string) bool { return strings.Contains(o, "ACTUAL IN POOL") && strings.Contains(o, "0.5 ≠") })
	f.change(func(r *store.Run) {
		r.State, r.Verdict, r.Reason, r.EndedBy, r.Current, r.EndedAt = store.StateAborted, engine.VerdictAborted, "aborted by hand", "test", r.Original, time.Now()
	}, store.Event{At: time.Now(), Type: engine.EventRunEnded, Message: "aborted"})
	select {
	case code := <-codes:
		if code != exitAborted {
			t.Errorf("exit %d, want %d (aborted):\n%s", code, exitAborted, errOut.String())
		}
	case <-time.After(20 * time.Second):
		o := out.String()
		t.Fatalf("watch did not end with the run; its output ends:\n%q", o[max(0, len(o)-3000):])
	}
	o := out.String()
	off := strings.LastIndex(o, ansiAltScreenOff)
	if off < 0 || !strings.Contains(o[off:], "Verdict    ABORTED — aborted by hand") || !strings.Contains(o[off:], "report: verdict report --server "+srv.URL()) {
		t.Errorf("no ending on the normal screen after the watch; output ends:\n%q", o[max(0, len(o)-3000):])
	}
}
