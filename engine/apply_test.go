package engine

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// TestVariantAppliedBeforeTheRunIsJudgedAgainstTheHistoryBeforeIt is issue 15's case: the
// variant went live on the canary half an hour before verdict run, making its errors 1.3×.
// Declared with apply.appliedAt, the baseline is the history before that moment, so the
// 1.3× worse canary is rolled back — where a baseline of "the last hour" would have
// absorbed the variant's own effect into the offset.
func TestVariantAppliedBeforeTheRunIsJudgedAgainstTheHistoryBeforeIt(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.Advance(t0.Add(3 * time.Hour)) // three hours of history at this traffic
	arrived := w.Now()
	w.ErrP["c1"] = 0.013 // the variant arrives
	w.Advance(arrived.Add(30 * time.Minute))
	r := start(t, w, w.engine(),
		"variant: {cni: cilium}}", "variant: {cni: cilium}, apply: {appliedAt: "+arrived.Format(time.RFC3339)+"}}",
		"prePeriod: 60m", "history: 3h",
		"tolerance: 20%", "tolerance: 10%",
		"maxDuration: 2h", "maxDuration: 4h")
	w.Drive(r, 4*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "error-rate") {
		t.Errorf("reason does not name the KPI: %s", r.Record().Reason)
	}
	obs, err := w.St.Observations(context.Background(), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Phase == PhaseHistory && o.End.After(arrived) {
			t.Fatalf("history interval ending %s is after the variant arrived at %s", o.End, arrived)
		}
	}
	t.Logf("rolled back %s after the run started: %s", r.Record().EndedAt.Sub(r.Record().StartedAt), r.Record().Reason)
}

// hookRecorder applies the variant to the test fleet when the apply hook runs.
type hookRecorder struct {
	mu    sync.Mutex
	calls [][]string
	apply func()
	fail  int // fail this many calls first
}

func (h *hookRecorder) RunHook(_ context.Context, args []string, _ time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, args)
	if h.fail > 0 {
		h.fail--
		return errTest
	}
	if h.apply != nil {
		h.apply()
	}
	return nil
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("kubectl: connection refused")

// TestApplyHookRunsAfterTheBaselineWithTheCanaryDrained drives drain → upgrade → ramp: the
// baseline is captured first, the canary is drained, the hook applies a variant that breaks
// 1.3× more requests, and the ramp that follows rolls it back.
func TestApplyHookRunsAfterTheBaselineWithTheCanaryDrained(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.Advance(t0.Add(3 * time.Hour)) // three hours of history at this traffic
	h := &hookRecorder{fail: 1}
	var appliedAt time.Time
	var drainedWhenApplied map[string]float64
	var r *Run
	var phaseWhenApplied string
	h.apply = func() {
		phaseWhenApplied = r.Snapshot().Phase
		appliedAt = w.Now()
		drainedWhenApplied = w.PoolWeights()
		w.ErrP["c1"] = 0.013
	}
	e := w.engine(func(o *Options) { o.Hooks = h })
	r = start(t, w, e,
		"variant: {cni: cilium}}", "variant: {cni: cilium}, apply: {hook: {command: [upgrade, '{{.Cluster}}']}, during: drained}}",
		"prePeriod: 60m", "history: 3h",
		"tolerance: 20%", "tolerance: 10%",
		"maxDuration: 2h", "maxDuration: 4h")
	w.Drive(r, 4*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	if len(h.calls) != 2 || strings.Join(h.calls[1], " ") != "upgrade c1" {
		t.Fatalf("hook calls %v, want one failure then `upgrade c1`", h.calls)
	}
	if phaseWhenApplied != "apply" {
		t.Errorf("phase while the hook ran: %q, want apply", phaseWhenApplied)
	}
	if drainedWhenApplied["o1"] != 0 {
		t.Errorf("the canary was not drained while the variant was applied: %v", drainedWhenApplied)
	}
	obs, err := w.St.Observations(context.Background(), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	var lastHistory, firstRun time.Time
	for _, o := range obs {
		if o.Phase == PhaseHistory && o.End.After(lastHistory) {
			lastHistory = o.End
		}
		if o.Phase == PhaseRun && (firstRun.IsZero() || o.Start.Before(firstRun)) {
			firstRun = o.Start
		}
	}
	if !lastHistory.Before(appliedAt) || firstRun.Before(appliedAt) {
		t.Errorf("history ends %s, the hook ran at %s, the run's first interval starts %s", lastHistory, appliedAt, firstRun)
	}
	if w.eventTypes()[EventApply] < 2 {
		t.Errorf("apply phases were not reported: %v", w.eventTypes())
	}
}

// TestReadinessThatAlreadyHoldsStopsTheRunBeforeAnyChange: a readiness query that is
// already true before the variant was applied means the canary may run it already, so no
// baseline can be taken: the run fails with the pool untouched.
func TestReadinessThatAlreadyHoldsStopsTheRunBeforeAnyChange(t *testing.T) {
	w := newWorld(t)
	r := start(t, w, w.engine(),
		"variant: {cni: cilium}}", `variant: {cni: cilium}, apply: {readiness: {query: 'count(kube_pod_info{cluster="c1"})', expect: ">= 1"}}}`)
	w.Drive(r, 10*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "already holds") {
		t.Errorf("reason: %s", r.Record().Reason)
	}
}

// TestMinHoldAdvancesAsSoonAsTheEvidenceSuffices: at high traffic a healthy canary is
// non-inferior long before its holds end; with minHold each step moves on once it is.
func TestMinHoldAdvancesAsSoonAsTheEvidenceSuffices(t *testing.T) {
	w := newWorld(t)
	w.Rate = 5000
	r := start(t, w, w.engine(),
		"{weight: 10%, hold: 10m}", "{weight: 10%, hold: 30m, minHold: 3m}",
		"{weight: 25%, hold: 10m}", "{weight: 25%, hold: 30m, minHold: 3m}",
		"{weight: 34%, hold: 15m}", "{weight: 34%, hold: 30m, minHold: 3m}",
		"tolerance: 20%", "tolerance: 30%",
		"tolerance: 15%", "tolerance: 30%")
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	if took := r.Record().EndedAt.Sub(t0); took >= 90*time.Minute {
		t.Errorf("promoted after %s: the holds were waited out in full", took)
	}
	t.Logf("promoted after %s: %s", r.Record().EndedAt.Sub(t0), r.Record().Reason)
}
