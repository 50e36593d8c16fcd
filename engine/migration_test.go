package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestMigrationCutsOverOnPromotion: a final step of 100% is the cut-over of a migration on
// a Cloudflare pool: the step before it is the last one judged, the promotion writes it,
// the legacy origins end at 0 (the standby outside the experiment keeps its weight), and
// the ending says the legacy clusters can be removed.
func TestMigrationCutsOverOnPromotion(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	exp := w.Experiment("      - {weight: 25%, hold: 10m}\n      - {weight: 34%, hold: 15m}\n", "      - {weight: 50%, hold: 15m}\n      - {weight: 100%}\n")
	if !exp.Spec.Traffic.Migration() {
		t.Fatal("not a migration")
	}
	r, err := w.engine().Start(t.Context(), exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	assertWeights(t, w, map[string]float64{"o1": 0.8, "o2": 0, "o3": 0, "standby": 0.2})
	rec := r.Record()
	if rec.Step != 2 {
		t.Errorf("ended at step %d, want 2: the cut-over is the promotion, not a judged step", rec.Step)
	}
	const note = "migration: after promotion the legacy clusters carry no traffic and can be removed (c2: o2, c3: o3)"
	if ev := w.eventTypes(); ev[EventWeightsConfirmed] != 3 {
		t.Errorf("want steps 1, 2 and the cut-over confirmed, got %v", ev)
	}
	if !strings.Contains(rec.Reason, note) {
		t.Errorf("reason %q does not say %q", rec.Reason, note)
	}
	ended := false
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Type == EventRunEnded && strings.Contains(e.Message, note) {
			ended = true
		}
	}
	if !ended {
		t.Error("the end event does not say the legacy clusters can be removed")
	}
	if r.Snapshot().TTL != 0 {
		t.Errorf("a Cloudflare pool has no DNS TTL, Snapshot says %s", r.Snapshot().TTL)
	}
}
