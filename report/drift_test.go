package report

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestWeightsChartFollowsDrift: someone moves the pool mid-run; the report's weights show
// the pool's weights from the drift on, not the ones the run last set.
func TestWeightsChartFollowsDrift(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	exp := w.Experiment() // onDrift: pause
	r, err := w.engine().Start(context.Background(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	drifted, aborted := false, false
	w.Drive(r, 2*time.Hour, func(time.Time) {
		rec := r.Record()
		if !drifted && rec.State == store.StateRamping && rec.Step == 1 && rec.Intent == nil {
			drifted = true
			if err := w.Emu.SetWeight(w.PoolID, "o1", 0.9); err != nil {
				t.Fatal(err)
			}
		}
		if drifted && rec.State == store.StatePaused && !aborted {
			aborted = true
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: "abort", Who: "alice", Reason: "unplanned change"}); err != nil {
				t.Fatal(err)
			}
		}
	})
	rep, err := FromStore(context.Background(), w.St, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Weights {
		if strings.Contains(p.Why, "outside Verdict") {
			found = true
			if p.Shares["c1"] < 0.5 {
				t.Errorf("weights after the drift %v: the canary had o1=0.9 of the pool", p.Shares)
			}
		}
	}
	if !found {
		t.Errorf("no weights point for the drift: %+v", rep.Weights)
	}
}
