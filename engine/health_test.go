package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestUnhealthyOriginStopsTheRunBeforeAnyChange: a baseline origin the load balancer's
// monitors find unhealthy (read over HTTP from the emulator's pool health endpoint) ends
// the run check_failed before any weight moves: its share would go to the canary unseen.
func TestUnhealthyOriginStopsTheRunBeforeAnyChange(t *testing.T) {
	w := newWorld(t)
	w.SetOriginHealth("o2", false)
	r := start(t, w, w.engine())
	w.Drive(r, 10*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	assertWeights(t, w, original)
	if w.eventTypes()[EventWeightsIntent] != 0 {
		t.Error("a weight change was intended while a baseline origin was unhealthy")
	}
	if reason := r.Record().Reason; !strings.Contains(reason, `"o2" UNHEALTHY`) || !strings.Contains(reason, "nothing was changed") {
		t.Errorf("reason does not name the unhealthy origin: %s", reason)
	}
}

// TestUnhealthyOriginHoldsTheStep: once ramping, an experiment origin turning unhealthy
// holds the next step (no write) without a false share mismatch, since the share check
// expects nothing from it; once healthy again, the run moves on.
func TestUnhealthyOriginHoldsTheStep(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine(), "noDataTimeout: 5m", "noDataTimeout: 60m")
	var downAt, upAt time.Time
	w.Drive(r, 40*time.Minute, func(now time.Time) {
		switch {
		case downAt.IsZero() && r.Record().Step == 1:
			downAt = now
			w.SetOriginHealth("o3", false)
		case !downAt.IsZero() && upAt.IsZero() && now.Sub(downAt) >= 20*time.Minute:
			if step := r.Record().Step; step != 1 {
				t.Errorf("step %d while o3 was unhealthy, want held at 1", step)
			}
			upAt = now
			w.SetOriginHealth("o3", true)
		}
	})
	if downAt.IsZero() || upAt.IsZero() {
		t.Fatalf("the run never reached the unhealthy phase: %+v", r.Record())
	}
	if rec := r.Record(); rec.State.Terminal() && rec.State != store.StatePromoted {
		t.Fatalf("run ended %s/%s: %s", rec.State, rec.Verdict, rec.Reason)
	}
	if step := r.Record().Step; step < 2 {
		t.Errorf("step %d after o3 recovered, want the run to move on", step)
	}
	var held bool
	w.mu.Lock()
	for _, e := range w.events {
		if e.Type == EventPrecondition && strings.Contains(e.Message, "holding step 2") && strings.Contains(e.Message, `"o3"`) {
			held = true
		}
		if e.Type == EventDecision && strings.Contains(strings.ToLower(e.Message), "share") && strings.Contains(e.Message, "rollback") {
			t.Errorf("share mismatch while o3 was unhealthy: %s", e.Message)
		}
	}
	w.mu.Unlock()
	if !held {
		t.Error("no precondition event said the step was held for o3")
	}
}

// TestDeadLeafStopsTheRunBeforeAnyChange: one cluster's samples stopped two minutes ago
// (its federation leaf died; Prometheus still serves its last samples). The run must end
// check_failed before moving a weight, naming the cluster and the series.
func TestDeadLeafStopsTheRunBeforeAnyChange(t *testing.T) {
	w := newWorld(t)
	w.Dead = map[string]bool{"c3": true}
	w.Advance(w.Now().Add(2 * time.Minute))
	r := start(t, w, w.engine())
	w.Drive(r, 5*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	assertWeights(t, w, original)
	if w.eventTypes()[EventWeightsIntent] != 0 {
		t.Error("a weight change was intended while c3's series were stale")
	}
	reason := r.Record().Reason
	t.Log(reason)
	for _, want := range []string{"stale KPI series", "cluster c3", "http_requests_total", "nothing was changed"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason lacks %q: %s", want, reason)
		}
	}
	if strings.Contains(reason, "cluster c1") || strings.Contains(reason, "cluster c2") {
		t.Errorf("reason names live clusters: %s", reason)
	}
}
