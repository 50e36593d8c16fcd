package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestGuardrailsWatchedWhilePaused: a person pauses a ramping run; the canary then breaks
// its error-rate guardrail (20%). The run is rolled back while still paused, instead of
// carrying the breach until someone resumes it.
func TestGuardrailsWatchedWhilePaused(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	paused := time.Time{}
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		rec := r.Record()
		if paused.IsZero() && rec.State == store.StateRamping && rec.Step == 1 && rec.Intent == nil {
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionPause, Who: "alice", Reason: "lunch"}); err != nil {
				t.Fatal(err)
			}
			paused = now
		}
		if !paused.IsZero() && rec.State == store.StatePaused && now.Sub(paused) > 5*time.Minute {
			w.ErrP["c1"] = 0.5 // far beyond the 20% guardrail
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "guardrail broken while paused (error-rate)") {
		t.Errorf("reason: %s", r.Record().Reason)
	}
	if took := r.Record().EndedAt.Sub(paused); took > 15*time.Minute {
		t.Errorf("rolled back %s after the pause; the breach began 5m in", took)
	}
}

// TestPauseDoesNotUseUpMaxDuration: a run paused by hand for longer than its maxDuration
// (2h) still has its whole maxDuration to judge after resuming: it is promoted, not ended
// inconclusive at the first tick after the resume.
func TestPauseDoesNotUseUpMaxDuration(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	var paused, resumed time.Time
	w.Drive(r, 6*time.Hour, func(now time.Time) {
		rec := r.Record()
		switch {
		case paused.IsZero() && rec.State == store.StateRamping && rec.Step == 1 && rec.Intent == nil:
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionPause, Who: "alice", Reason: "change freeze"}); err != nil {
				t.Fatal(err)
			}
			paused = now
		case !paused.IsZero() && resumed.IsZero() && rec.State == store.StatePaused && now.Sub(paused) >= 150*time.Minute:
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionResume, Who: "alice", Reason: "freeze over"}); err != nil {
				t.Fatal(err)
			}
			resumed = now
		}
	})
	if resumed.IsZero() {
		t.Fatalf("never paused and resumed: %s", r.Record().State)
	}
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	t.Logf("paused %s, promoted %s after the resume", resumed.Sub(paused), r.Record().EndedAt.Sub(resumed))
}
