package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// standbyWorld is the world with c1 as a standby at weight 0 for longer than the history
// window (c2 and c3 carry its 0.26), and the switchover from c2 to c1 derived from the
// world's experiment file, as verdict switchover derives it.
func standbyWorld(t *testing.T) (*world, *experiments.Experiment) {
	t.Helper()
	w := newWorld(t)
	w.Rate = 1000
	ref := traffic.PoolRef{Account: w.Emu.AccountID(), Pool: w.PoolID}
	if err := w.Steer.SetWeights(t.Context(), ref, traffic.Weights{"o1": 0, "o2": 0.4, "o3": 0.4}, traffic.Weights{"o1": 0.26, "o2": 0.27, "o3": 0.27}); err != nil {
		t.Fatal(err)
	}
	w.Advance(w.Now().Add(70 * time.Minute)) // the whole history window without c1
	// The file's precondition counts the pods of its three clusters; the switchover has two.
	file := w.Experiment(`expect: ">= 3"`, `expect: ">= 2"`)
	exp, err := experiments.Switchover(file, experiments.SwitchoverOptions{From: "c2", To: "c1", Steps: "25%,50%,100%", Hold: experiments.Duration(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return w, exp
}

// TestSwitchoverOfStandby: a healthy standby (c1 at weight 0, so it has no history to
// compare against) takes over c2's traffic in steps judged live against c2, and the
// promotion writes the cut-over: c2 at 0, c1 with the pair's whole 0.4; c3 and the standby
// origin outside the switchover keep their weights.
func TestSwitchoverOfStandby(t *testing.T) {
	w, exp := standbyWorld(t)
	r, err := w.engine().Start(t.Context(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	assertWeights(t, w, map[string]float64{"o1": 0.4, "o2": 0, "o3": 0.4, "standby": 0.2})
	rec := r.Record()
	if rec.Original["o1"] != 0 || rec.Original["o2"] != 0.4 {
		t.Errorf("original weights %v", rec.Original)
	}
	if !strings.Contains(rec.Reason, "c2 (o2) carries no traffic and stands by at weight 0") || strings.Contains(rec.Reason, "can be removed") {
		t.Errorf("reason %q does not say the source carries no traffic now", rec.Reason)
	}
	assertSkippedHistory(t, w)
	obs, err := w.St.Observations(t.Context(), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Phase == PhaseHistory {
			t.Fatalf("a history observation was stored for a canary that carried no traffic: %+v", o)
		}
	}
	if took := rec.EndedAt.Sub(rec.StartedAt); took > 40*time.Minute {
		t.Errorf("switchover took %s for 20m of holds", took)
	}
	t.Logf("switched over in %s: %s", rec.EndedAt.Sub(rec.StartedAt), rec.Reason)

	// Resuming the ended run rebuilds the same evidence (no history to replay).
	again, err := w.engine().Resume(t.Context(), r.ID(), exp)
	if err != nil {
		t.Fatal(err)
	}
	if again.Record().State != store.StatePromoted {
		t.Errorf("resumed run is %s", again.Record().State)
	}
}

// TestSwitchoverToHarmfulStandbyRollsBack: a standby that fails three times as many
// requests is rolled back: c2 gets its 0.4 back and c1 returns to 0.
func TestSwitchoverToHarmfulStandbyRollsBack(t *testing.T) {
	w, exp := standbyWorld(t)
	w.ErrP["c1"] = 3 * w.ErrP["c2"]
	r, err := w.engine().Start(t.Context(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, map[string]float64{"o1": 0, "o2": 0.4, "o3": 0.4, "standby": 0.2})
	rec := r.Record()
	if rec.Step > 1 {
		t.Errorf("rolled back at step %d: three times the errors should not pass the first step", rec.Step)
	}
	t.Logf("rolled back after %s: %s", rec.EndedAt.Sub(rec.StartedAt), rec.Reason)
	assertSkippedHistory(t, w)
}

// TestSwitchoverAbortRestores: an abort at the second step puts both clusters back: the
// standby to 0, the active to its original weight.
func TestSwitchoverAbortRestores(t *testing.T) {
	w, exp := standbyWorld(t)
	r, err := w.engine().Start(t.Context(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	posted := false
	w.Drive(r, 3*time.Hour, func(time.Time) {
		if rec := r.Record(); !posted && rec.Step == 2 && rec.State == store.StateRamping {
			posted = true
			assertWeights(t, w, map[string]float64{"o1": 0.2, "o2": 0.2})
			if err := w.St.PostCommand(t.Context(), &store.Command{RunID: r.ID(), Action: ActionAbort, Who: "oncall", Reason: "drill over"}); err != nil {
				t.Fatal(err)
			}
		}
	})
	assertEnded(t, r, store.StateAborted, VerdictAborted)
	assertWeights(t, w, map[string]float64{"o1": 0, "o2": 0.4, "o3": 0.4, "standby": 0.2})
}

// TestSwitchoverOfLiveClusterReadsHistory: a target that carries traffic (active/active)
// keeps the normal history window.
func TestSwitchoverOfLiveClusterReadsHistory(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	exp, err := experiments.Switchover(w.Experiment(`expect: ">= 3"`, `expect: ">= 2"`), experiments.SwitchoverOptions{From: "c2", To: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.engine().Start(t.Context(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	assertWeights(t, w, map[string]float64{"o1": 0.53, "o2": 0, "o3": 0.27})
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Type == EventPrePeriod && !strings.HasPrefix(e.Message, "history: ") {
			t.Errorf("history of a canary with traffic not read: %s", e.Message)
		}
	}
}

func assertSkippedHistory(t *testing.T, w *world) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Type == EventPrePeriod {
			const want = "history skipped: the canary c1 (origin o1) has weight 0 in the pool"
			if !strings.HasPrefix(e.Message, want) {
				t.Errorf("pre-period event %q, want it to start %q", e.Message, want)
			}
			return
		}
	}
	t.Error("no pre-period event")
}
