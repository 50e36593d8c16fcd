package engine

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/store"
)

// TestEventPayloadsMatchWhatTheEngineWrites encodes each data shape the engine writes (the
// map literals of run.go, apply.go, capacity.go and engine.go, copied) and checks that it
// decodes into its payload type and that the payload encodes back to the same JSON, so
// stored history decodes and a call site can switch to the type without changing a byte
// of meaning.
func TestEventPayloadsMatchWhatTheEngineWrites(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	w := store.Weights{"canary": 0.1, "baseline": 0.9}
	in := &store.Intent{ID: 3, Purpose: "step:2", Want: w, Expect: store.Weights{"canary": 0.05, "baseline": 0.95}, At: at}
	dec := analysis.Decision{Action: analysis.Advance, Reason: "no harm seen", AlphaPerKPI: 0.025}
	vals := []KPIValue{{KPI: "errors", Canary: 0.01, Baseline: 0.012}}
	noise := []KPINoise{{KPI: "errors", HistoryIntervals: 12, Fallback: "too few intervals"}}
	tests := map[string]struct {
		typ   string
		wrote any // as the engine writes it today
		want  any // the decoded payload
	}{
		"run started": {EventRunStarted,
			map[string]any{"experiment": "karpenter", "canary": "use1", "baselines": []string{"usw2"}, "variant": map[string]string{"autoscaler": "karpenter"}},
			&RunStartedData{Experiment: "karpenter", Canary: "use1", Baselines: []string{"usw2"}, Variant: map[string]string{"autoscaler": "karpenter"}}},
		"state changed": {EventStateChanged,
			map[string]any{"from": store.StateRamping, "to": store.StateRollingBack, "reason": "harm", "step": 2},
			&StateChangedData{From: store.StateRamping, To: store.StateRollingBack, Reason: "harm", Step: 2}},
		"state changed by a confirmed first step": {EventStateChanged,
			map[string]any{"to": store.StateRamping, "step": 1},
			&StateChangedData{To: store.StateRamping, Step: 1}},
		"weights intent":    {EventWeightsIntent, in, in},
		"weights confirmed": {EventWeightsConfirmed, in, in},
		"decision": {EventDecision,
			map[string]any{"decision": DecisionOf(dec), "step": 2, "stepElapsed": (90 * time.Second).String(), "values": vals, decidedThroughKey: at},
			&DecisionData{Decision: DecisionOf(dec), Step: 2, StepElapsed: "1m30s", Values: vals, DecidedThrough: at}},
		"drift": {EventDrift,
			map[string]any{"during": "ramp", "onDrift": "pause"},
			&DriftData{During: "ramp", OnDrift: "pause"}},
		"fault of an operation": {EventFault,
			map[string]any{"error": "HTTP 503", "consecutive": 2},
			&FaultData{Error: "HTTP 503", Consecutive: 2}},
		"fault of the apply hook": {EventFault,
			map[string]any{"attempt": 1},
			&FaultData{Attempt: 1}},
		"no data, fetch failed": {EventNoData,
			map[string]any{"error": "prometheus down"},
			&NoDataData{Error: "prometheus down"}},
		"no data for KPIs": {EventNoData,
			map[string]any{"kpis": []string{"errors", "latency"}},
			&NoDataData{KPIs: []string{"errors", "latency"}}},
		"pre-period": {EventPrePeriod,
			map[string]any{"noise": noise, "end": at},
			&PrePeriodData{Noise: noise, End: at}},
		"apply with weights": {EventApply,
			map[string]any{"phase": applyHook, "weights": w},
			&ApplyData{Phase: applyHook, Weights: w}},
		"apply": {EventApply,
			map[string]any{"phase": applyDone},
			&ApplyData{Phase: applyDone}},
		"precondition": {EventPrecondition,
			map[string]any{"name": "healthy", "value": jsonFloat(0.99, true), "expect": "> 0.9", "ok": true},
			&PreconditionData{Name: "healthy", Value: notifyPtr(0.99), Expect: "> 0.9", OK: true}},
		"precondition without a value": {EventPrecondition,
			map[string]any{"name": "healthy", "value": jsonFloat(0, false), "expect": "> 0.9", "ok": false},
			&PreconditionData{Name: "healthy", Expect: "> 0.9"}},
		"capacity": {EventCapacity,
			map[string]any{"cluster": "use1", "min": 3, "max": 12, "percent": 12.5},
			&CapacityData{Cluster: "use1", Min: 3, Max: 12, Percent: 12.5}},
		"action": {EventAction,
			store.Command{ID: 7, RunID: "r", Action: ActionAbort, Who: "ana", Reason: "pager", CreatedAt: at},
			&ActionData{ID: 7, RunID: "r", Action: ActionAbort, Who: "ana", Reason: "pager", CreatedAt: at}},
		"notification": {EventNotification,
			NotificationData{Event: "end", Target: "notify[0] (slack)", Error: "HTTP 503"},
			&NotificationData{Event: "end", Target: "notify[0] (slack)", Error: "HTTP 503"}},
		"run ended": {EventRunEnded,
			map[string]any{"from": store.StateRollingBack, "state": store.StateRolledBack, "verdict": VerdictRolledBack, "reason": "harm", "by": "verdict@ci", "weights": w},
			&RunEndedData{From: store.StateRollingBack, State: store.StateRolledBack, Verdict: VerdictRolledBack, Reason: "harm", By: "verdict@ci", Weights: w}},
		"run ended before any change": {EventRunEnded,
			map[string]any{"from": store.StatePending, "state": store.StateAborted, "verdict": VerdictAborted, "reason": "no", "by": "ana", "weights": store.Weights(nil)},
			&RunEndedData{From: store.StatePending, State: store.StateAborted, Verdict: VerdictAborted, Reason: "no", By: "ana"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stored := mustJSON(tc.wrote)
			got, err := DecodeData(tc.typ, stored)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeData(%s) = %+v, want %+v", stored, got, tc.want)
			}
			if a, b := notifyJSONValue(t, stored), notifyJSONValue(t, mustJSON(got)); !reflect.DeepEqual(a, b) {
				t.Errorf("the payload encodes as %s, the engine wrote %s", mustJSON(got), stored)
			}
		})
	}
}

// TestDecodeStoredEvents decodes payloads as they sit in a store written before the types
// existed.
func TestDecodeStoredEvents(t *testing.T) {
	stored := []store.Event{
		{Type: EventStateChanged, Data: json.RawMessage(`{"from":"Preflight","reason":"checking","step":0,"to":"Ramping"}`)},
		{Type: EventRunEnded, Data: json.RawMessage(`{"by":"verdict@host","from":"RollingBack","reason":"errors up","state":"RolledBack","verdict":"rolled_back","weights":{"a":1,"b":0}}`)},
		{Type: EventDrift, Data: nil},
		{Type: EventFault, Data: json.RawMessage(`{"error":"unencodable"}`)},
		{Type: EventDecision, Data: json.RawMessage(`{"decidedThrough":"2026-03-04T05:06:00Z","decision":{"action":"continue","reason":"r","kpis":null,"alpha_per_kpi":0.05,"share_mismatch":false},"step":1,"stepElapsed":"4m0s","values":null}`)},
		{Type: EventPrecondition, Data: json.RawMessage(`{"expect":"> 0","name":"up","ok":false,"value":null}`)},
	}
	got := make([]any, len(stored))
	for i, ev := range stored {
		p, err := DecodeData(ev.Type, ev.Data)
		if err != nil {
			t.Fatalf("%s: %v", ev.Type, err)
		}
		got[i] = p
	}
	if sc := got[0].(*StateChangedData); sc.From != store.StatePreflight || sc.To != store.StateRamping || sc.Reason != "checking" {
		t.Errorf("state changed = %+v", sc)
	}
	if re := got[1].(*RunEndedData); re.State != store.StateRolledBack || re.Verdict != VerdictRolledBack || re.Weights["a"] != 1 || re.By != "verdict@host" {
		t.Errorf("run ended = %+v", re)
	}
	if d := got[2].(*DriftData); d.During != "" || d.OnDrift != "" || d.Actual != nil {
		t.Errorf("drift without data = %+v, want zero", d)
	}
	if f := got[3].(*FaultData); f.Error != "unencodable" {
		t.Errorf("fault = %+v", f)
	}
	if d := got[4].(*DecisionData); d.Decision.Action != analysis.Continue || d.StepElapsed != "4m0s" || d.DecidedThrough.IsZero() {
		t.Errorf("decision = %+v", d)
	}
	if p := got[5].(*PreconditionData); p.Value != nil || p.Name != "up" {
		t.Errorf("precondition = %+v", p)
	}

	re, err := DecodeEventData[RunEndedData](stored[1].Data)
	if err != nil || re.Verdict != VerdictRolledBack {
		t.Errorf("DecodeEventData = %+v, %v", re, err)
	}
	if _, err := DecodeData("from_the_future", []byte(`{}`)); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown type: %v, want ErrUnknownEvent", err)
	}
	if _, err := DecodeData(EventRunEnded, []byte(`{"state":7}`)); err == nil {
		t.Error("mistyped data decoded")
	}
}

// TestEveryEventTypeHasAPayload keeps payloads in step with the event types.
func TestEveryEventTypeHasAPayload(t *testing.T) {
	for _, typ := range []string{EventRunStarted, EventStateChanged, EventWeightsIntent, EventWeightsConfirmed, EventDecision, EventDrift,
		EventFault, EventNoData, EventPrePeriod, EventApply, EventPrecondition, EventCapacity, EventAction, EventNotification, EventRunEnded} {
		if _, err := DecodeData(typ, nil); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

func notifyJSONValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func notifyPtr[T any](v T) *T { return &v }
