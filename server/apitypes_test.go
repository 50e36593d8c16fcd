package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// TestActualWeightsAfterDrift: a run's summary carries actualWeights while its latest drift
// is newer than its latest confirmed weights, and drops them once weights are confirmed
// again; live runs have no endedAt.
func TestActualWeightsAfterDrift(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	expected := store.Weights{"oa": 0.1, "ob": 0.45, "oc": 0.45}
	rec := &store.Run{ID: "r1", Experiment: "exp", Pool: "pool-1", State: store.StateRamping, Step: 1, Current: expected,
		Original: store.Weights{"oa": 0.33, "ob": 0.33, "oc": 0.34}, Spec: json.RawMessage(`{"spec":{}}`)}
	confirm := func(at time.Time) store.Event {
		data, _ := json.Marshal(engine.WeightsData{Purpose: "step 1", Want: expected})
		return store.Event{RunID: "r1", At: at, Type: engine.EventWeightsConfirmed, Message: "confirmed", Data: data}
	}
	if err := st.CreateRun(ctx, rec, confirm(t0)); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: st, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
		SteererFor: func(*experiments.Experiment, *slog.Logger) (traffic.Steerer, error) {
			return nil, errors.New("no steering in this test")
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := NewClient(s.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	get := func() (RunSummary, string) {
		t.Helper()
		d, err := c.Run(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(d.Run)
		return d.Run, string(raw)
	}
	if r, raw := get(); r.ActualWeights != nil || strings.Contains(raw, "actualWeights") || strings.Contains(raw, "endedAt") {
		t.Fatalf("before any drift: %s", raw)
	}

	actual := store.Weights{"oa": 0.5, "ob": 0.25, "oc": 0.25}
	data, _ := json.Marshal(engine.DriftData{During: "ramp", OnDrift: "pause", Actual: actual})
	rec, _ = st.Run(ctx, "r1")
	rec.State = store.StatePaused
	if err := st.SaveRun(ctx, rec, store.Event{RunID: "r1", At: t0.Add(time.Minute), Type: engine.EventDrift, Message: "drift", Data: data}); err != nil {
		t.Fatal(err)
	}
	r, raw := get()
	if r.ActualWeights["oa"] != 0.5 || r.Weights["oa"] != 0.1 || !strings.Contains(raw, `"actualWeights":{"oa":0.5,"ob":0.25,"oc":0.25}`) {
		t.Fatalf("after drift: want actualWeights next to the expected weights, got %s", raw)
	}
	// The list shows the same, from the cached events.
	runs, err := c.Runs(ctx, true)
	if err != nil || len(runs) != 1 || runs[0].ActualWeights["oa"] != 0.5 {
		t.Fatalf("list after drift: %+v, %v", runs, err)
	}

	rec, _ = st.Run(ctx, "r1")
	rec.State = store.StateRamping
	if err := st.SaveRun(ctx, rec, confirm(t0.Add(2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if r, raw := get(); r.ActualWeights != nil {
		t.Fatalf("after weights were confirmed again: %s", raw)
	}

	// Errors are typed documents too.
	resp, err := http.Get(s.URL() + "/api/v1/runs/no-such-run")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e ErrorDoc
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 404 || e.APIVersion != APIVersion || e.Kind != KindError || e.Status != 404 || e.Error == "" {
		t.Errorf("error document: %d %+v %v", resp.StatusCode, e, err)
	}
}

// TestDecisionRoundTrip: a decision the API writes decodes to the same value, when and at
// which step included. The embedded engine.Decision has its own UnmarshalJSON, which
// would be promoted and drop at and step; the CLI's remote status prints both.
func TestDecisionRoundTrip(t *testing.T) {
	want := Decision{At: time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC), Step: 2, Decision: engine.Decision{
		Action: analysis.Rollback, Reason: "error-rate: harm", AlphaPerKPI: 0.0125,
		KPIs: []engine.KPIVerdict{{Name: "error-rate", Status: analysis.Harm, Tolerance: 0.1, Harm: analysis.Increase,
			Interval: engine.Interval{Estimate: 0.5, Lower: 0.2, Upper: 0.9, LowerBounded: true, UpperBounded: true, Relative: true, Alpha: 0.0125, Intervals: 12, Informative: 12, Ready: true}}},
	}}
	b, err := json.Marshal(RunSummary{Decision: &want})
	if err != nil {
		t.Fatal(err)
	}
	var got RunSummary
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Decision == nil || !reflect.DeepEqual(*got.Decision, want) {
		t.Fatalf("decoded %+v, want %+v (from %s)", got.Decision, want, b)
	}
}
