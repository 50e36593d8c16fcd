package engine

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

var original = map[string]float64{"o1": 0.26, "o2": 0.27, "o3": 0.27, "standby": 0.2}

func start(t *testing.T, w *world, e *Engine, edits ...string) *Run {
	t.Helper()
	r, err := e.Start(context.Background(), w.Experiment(edits...), "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func assertWeights(t *testing.T, w *world, want map[string]float64) {
	t.Helper()
	got := w.PoolWeights()
	for k, v := range want {
		if !traffic.SameWeight(got[k], v) {
			t.Errorf("pool weight of %s = %v, want %v (pool %v)", k, got[k], v, got)
		}
	}
}

func assertEnded(t *testing.T, r *Run, state store.State, verdict string) {
	t.Helper()
	rec := r.Record()
	if rec.State != state || rec.Verdict != verdict {
		t.Fatalf("run ended %s/%s (%s), want %s/%s", rec.State, rec.Verdict, rec.Reason, state, verdict)
	}
}

func TestGoodVariantIsPromoted(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	// 34% of the experiment's 0.80, baselines split the rest in their 27:27 proportion,
	// the standby keeps its 0.2.
	assertWeights(t, w, map[string]float64{"o1": 0.27, "o2": 0.27, "o3": 0.26, "standby": 0.2})
	raw, _ := w.Emu.Pool(w.PoolID)
	// The claim is replaced by the verdict's note; the human text stays.
	if !strings.Contains(string(raw), `"description":"keeps every field [verdict-last: run=`+r.ID()+` verdict=promoted`) || !strings.Contains(string(raw), `"Host":["api.example.com"]`) {
		t.Errorf("fields outside the weights were not kept: %s", raw)
	}
	ds, err := w.St.Decisions(context.Background(), r.ID())
	if err != nil || len(ds) < 15 {
		t.Fatalf("want a decision per interval, got %d (%v)", len(ds), err)
	}
	if last := ds[len(ds)-1]; last.Action != "promote" || len(last.Details) == 0 {
		t.Errorf("last decision %+v", last)
	}
	ev := w.eventTypes()
	if ev[EventWeightsIntent] != 3 || ev[EventWeightsConfirmed] != 3 {
		t.Errorf("want 3 intents each confirmed, got %v", ev)
	}
	if ev[EventPrecondition] < 3 {
		t.Errorf("preconditions not checked before each raise: %v", ev)
	}
	t.Logf("promoted after %s: %s", r.Record().EndedAt.Sub(t0), r.Record().Reason)
}

func TestRegressionIsRolledBack(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.025 // the variant breaks 2.5× more requests
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "error-rate") {
		t.Errorf("reason does not name the KPI: %s", r.Record().Reason)
	}
	t.Logf("rolled back after %s: %s", r.Record().EndedAt.Sub(t0), r.Record().Reason)
}

func TestRollbackDrains(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.MeanLat["c1"], w.SlowP["c1"] = 0.2, 0.15
	r := start(t, w, w.engine(), "onRollback: restore", "onRollback: drain")
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, map[string]float64{"o1": 0, "standby": 0.2})
	got := w.PoolWeights()
	if s := got["o2"] + got["o3"]; s < 0.795 || s > 0.805 {
		t.Errorf("drain must keep the experiment's total of 0.80: %v", got)
	}
}

func TestNoDataRollsBackAndNeverPromotes(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if now.Sub(t0) > 8*time.Minute {
			w.Down = true
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "no complete KPI data") {
		t.Errorf("reason: %s", r.Record().Reason)
	}
	if w.eventTypes()[EventNoData] == 0 {
		t.Error("no no_data event")
	}
}

func TestDriftPausesThenResumes(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	e := w.engine()
	r := start(t, w, e)
	drifted := false
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if !drifted && r.Record().Step == 2 && r.Record().Intent == nil {
			drifted = true
			if err := w.Emu.SetWeight(w.PoolID, "o2", 0.5); err != nil { // someone ran Terraform
				t.Fatal(err)
			}
		}
		if r.Record().State == store.StatePaused {
			if !strings.Contains(r.Snapshot().PauseNote, "changed outside Verdict") {
				t.Errorf("pause note: %q", r.Snapshot().PauseNote)
			}
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionResume, Who: "alice", Reason: "accepted the change"}); err != nil {
				t.Fatal(err)
			}
		}
	})
	if !drifted || w.eventTypes()[EventDrift] == 0 {
		t.Fatal("drift was not detected")
	}
	evs, err := w.St.Events(context.Background(), r.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type != EventDrift {
			continue
		}
		var d DriftData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		// The stored event says where the traffic really went, not the last confirmed weights.
		if d.Actual["o2"] != 0.5 || d.Actual["o1"] == 0 {
			t.Errorf("drift event's actual weights %v, want o2=0.5 as set outside Verdict", d.Actual)
		}
	}
	if r.Record().State == store.StatePaused {
		t.Fatal("still paused")
	}
	if !r.Done() {
		t.Fatalf("run did not end: %s", r.Record().State)
	}
	t.Logf("after drift and resume: %s (%s)", r.Record().State, r.Record().Reason)
}

func TestDriftRollsBackWhenAsked(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine(), "onDrift: pause", "onDrift: rollback")
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if r.Record().Step == 1 && r.Record().State == store.StateRamping && now.Sub(t0) > 3*time.Minute {
			w.Emu.SetWeight(w.PoolID, "o3", 0.9)
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
}

func TestAbortRestoresAtOnce(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if now.Sub(t0) > 12*time.Minute && r.Record().State == store.StateRamping {
			w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionAbort, Who: "bob", Reason: "incident elsewhere"})
		}
	})
	assertEnded(t, r, store.StateAborted, VerdictAborted)
	assertWeights(t, w, original)
	if r.Record().EndedBy != "bob" || !strings.Contains(r.Record().Reason, "incident elsewhere") {
		t.Errorf("who and why not recorded: %+v", r.Record())
	}
}

func TestManualPromoteSkipsSteps(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if r.Record().Step == 1 && r.Record().State == store.StateRamping {
			w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionPromote, Who: "carol", Reason: "looks great"})
		}
	})
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	assertWeights(t, w, map[string]float64{"o1": 0.27, "standby": 0.2})
}

func TestPreconditionFailureTouchesNothing(t *testing.T) {
	w := newWorld(t)
	r := start(t, w, w.engine(), `expect: ">= 3"`, `expect: ">= 4"`)
	w.Drive(r, 10*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	assertWeights(t, w, original)
	if w.eventTypes()[EventWeightsIntent] != 0 {
		t.Error("a weight change was intended despite a failing precondition")
	}
}

func TestMissingOriginFailsBeforeAnyChange(t *testing.T) {
	w := newWorld(t)
	r := start(t, w, w.engine(), "c3: o3}", "c3: o-gone}")
	w.Drive(r, 5*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictFailed)
	if !strings.Contains(r.Record().Reason, `"o-gone" is not in the pool`) {
		t.Errorf("reason: %s", r.Record().Reason)
	}
	assertWeights(t, w, original)
}

// lossySteerer performs writes but reports them failed, as when a response is lost after
// Cloudflare applied the change.
type lossySteerer struct {
	traffic.Steerer
	mu    sync.Mutex
	loses int
}

func (l *lossySteerer) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	err := l.Steerer.SetWeights(ctx, ref, want, expect)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.loses > 0 {
		l.loses--
		return errors.New("read tcp: connection reset by peer")
	}
	return err
}

func TestLostResponseIsReconciled(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	lossy := &lossySteerer{Steerer: w.Steer, loses: 2}
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = lossy }))
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	ev := w.eventTypes()
	if ev[EventFault] < 2 || ev[EventWeightsIntent] != 3 || ev[EventWeightsConfirmed] != 3 {
		t.Errorf("want two faults and every intent confirmed once, got %v", ev)
	}
}

func TestCloudflareStormsAreSurvived(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	stormed := 0
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		switch {
		case stormed == 0 && r.Record().Step == 1 && now.Sub(t0) > 9*time.Minute:
			w.Emu.SetFault(cfemu.Fault{Fail: 12, Status: 503})
			stormed++
		case stormed == 1 && r.Record().Step == 2 && now.Sub(t0) > 19*time.Minute:
			w.Emu.SetFault(cfemu.Fault{Fail: 12, Status: 429, RetryAfter: time.Second})
			stormed++
		}
	})
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	if stormed != 2 || w.eventTypes()[EventFault] == 0 {
		t.Errorf("storms %d, faults %v", stormed, w.eventTypes())
	}
}

func TestCrashAndResume(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	e := w.engine()
	r := start(t, w, e)
	w.Drive(r, 16*time.Minute, nil)
	if r.Record().Step != 2 {
		t.Fatalf("test setup: want step 2 at the crash, at %d (%s)", r.Record().Step, r.Record().State)
	}
	before := r.Snapshot()
	// The process dies: a new one opens the same state directory and resumes.
	w.St = w.OpenStore()
	e2 := w.engine()
	r2, err := e2.Resume(context.Background(), r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	d1 := r.decide(w.Now())
	d2 := r2.decide(w.Now())
	for i := range d1.KPIs {
		a, b := d1.KPIs[i].Interval, d2.KPIs[i].Interval
		if a.Lower != b.Lower || a.Upper != b.Upper || a.Intervals != b.Intervals {
			t.Errorf("replayed analysis differs for %s: %+v vs %+v", d1.KPIs[i].Name, a, b)
		}
	}
	if r2.Record().Step != before.Run.Step || r2.Record().StepElapsed != before.Run.StepElapsed {
		t.Errorf("resumed at step %d/%s, crashed at %d/%s", r2.Record().Step, r2.Record().StepElapsed, before.Run.Step, before.Run.StepElapsed)
	}
	if _, err := e2.Resume(context.Background(), r.ID(), w.Experiment("tolerance: 20%", "tolerance: 30%")); !errors.Is(err, ErrSpecChanged) {
		t.Errorf("resume with a changed file: %v", err)
	}
	w.Drive(r2, 3*time.Hour, nil)
	assertEnded(t, r2, store.StatePromoted, VerdictPromoted)
}

func TestOnePoolOneRun(t *testing.T) {
	w := newWorld(t)
	e := w.engine()
	start(t, w, e)
	_, err := e.Start(context.Background(), w.Experiment(), "world.yaml", w.Now())
	if !errors.Is(err, store.ErrPoolBusy) {
		t.Fatalf("second run on the same pool: %v", err)
	}
}

type recordingHooks struct {
	mu    sync.Mutex
	calls [][]string
}

func (h *recordingHooks) RunHook(_ context.Context, args []string, _ time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, args)
	return nil
}

func TestCapacityHooksScaleUpBeforeAndDownAfter(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	hooks := &recordingHooks{}
	r := start(t, w, w.engine(func(o *Options) { o.Hooks = hooks }),
		"  preconditions:", "  capacity:\n    hpa: {minReplicas: 100, maxReplicas: 1000}\n    hook: {command: [scale, \"{{.Cluster}}\", \"{{.MinReplicas}}\", \"{{.MaxReplicas}}\"]}\n  preconditions:")
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	// Step 1: the canary drops from 26% to 8% of the pool (after the write), the
	// baselines rise (before it).
	if len(hooks.calls) < 3 {
		t.Fatalf("hook calls %v", hooks.calls)
	}
	first := strings.Join(hooks.calls[0], " ")
	if !strings.HasPrefix(first, "scale c2 ") {
		t.Errorf("first hook call %q: baselines must scale up before the canary scales down", first)
	}
	sawCanaryDown := false
	for _, c := range hooks.calls[:3] {
		if c[1] == "c1" {
			sawCanaryDown = c[2] == "8"
		}
	}
	if !sawCanaryDown {
		t.Errorf("canary not scaled to 8 replicas at 8%% of the traffic: %v", hooks.calls[:3])
	}
}
