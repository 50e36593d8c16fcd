package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestLongDeadLeafStopsTheRunBeforeAnyChange: c3's leaf died twelve minutes before the
// run, longer ago than the preflight's five 1m intervals reach back, so its series have no
// sample in them at all. The run must still end check_failed before any change, naming c3
// as stale. (Before, the freshness check saw nothing to measure and said nothing: the run
// was stopped only by the pod-count precondition this experiment happens to have, with a
// reason that did not say why.)
func TestLongDeadLeafStopsTheRunBeforeAnyChange(t *testing.T) {
	w := newWorld(t)
	w.Dead = map[string]bool{"c3": true}
	w.Advance(w.Now().Add(12 * time.Minute))
	r := start(t, w, w.engine())
	w.Drive(r, 5*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	assertWeights(t, w, original)
	if w.eventTypes()[EventWeightsIntent] != 0 {
		t.Error("a weight change was intended while c3's leaf was dead")
	}
	reason := r.Record().Reason
	t.Log(reason)
	for _, want := range []string{"stale KPI series", "cluster c3: newest samples 12m", "nothing was changed"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason lacks %q: %s", want, reason)
		}
	}
	if strings.Contains(reason, "cluster c1") || strings.Contains(reason, "cluster c2") {
		t.Errorf("reason names live clusters: %s", reason)
	}
}
