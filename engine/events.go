package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// Event types, shared by the store's history, the CLI's JSON stream and notifications.
const (
	EventRunStarted       = "run_started"
	EventStateChanged     = "state_changed"
	EventWeightsIntent    = "weights_intent"
	EventWeightsConfirmed = "weights_confirmed"
	EventDecision         = "decision"
	EventDrift            = "drift"
	EventFault            = "fault"
	EventNoData           = "no_data"
	EventPrePeriod        = "pre_period"
	EventApply            = "apply"
	EventPrecondition     = "precondition"
	EventCapacity         = "capacity"
	EventAction           = "action"
	EventNotification     = "notification"
	EventRunEnded         = "run_ended"
)

// Event is something that happened to a run, for live views and notifications. Every
// event is also stored.
type Event struct {
	Type    string          `json:"type"`
	RunID   string          `json:"run"`
	At      time.Time       `json:"at"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Observer receives every event of every run, in order. It must not block.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Event)

// Observe implements Observer.
func (f ObserverFunc) Observe(e Event) { f(e) }

// NewEvent makes an Event with data encoded as the engine encodes it, for a process that
// drives runs and reports its own faults (the store unreachable, say) next to the runs'.
func NewEvent(typ, runID string, at time.Time, msg string, data any) Event {
	e := Event{Type: typ, RunID: runID, At: at, Message: msg}
	if data != nil {
		e.Data = mustJSON(data)
	}
	return e
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{"error":"unencodable"}`)
	}
	return b
}

// ---- payloads ----------------------------------------------------------------------------

// The types below are the Data of each event type. Their JSON keys are the ones the engine
// has always written, so stored history decodes into them; DecodeData picks the type.
// Where an event type is written in several shapes, the keys not in every shape are
// omitempty.

// RunStartedData is the data of EventRunStarted.
type RunStartedData struct {
	Experiment string            `json:"experiment"`
	Canary     string            `json:"canary"`
	Baselines  []string          `json:"baselines"`
	Variant    map[string]string `json:"variant"`
}

// StateChangedData is the data of EventStateChanged. From and Reason are empty when a
// confirmed first step moves a run from Preflight to Ramping.
type StateChangedData struct {
	From   store.State `json:"from,omitempty"`
	To     store.State `json:"to"`
	Reason string      `json:"reason,omitempty"`
	Step   int         `json:"step"`
}

// WeightsData is the data of EventWeightsIntent and EventWeightsConfirmed: the intent
// being written or just confirmed.
type WeightsData = store.Intent

// DecisionData is the data of EventDecision, also stored as the decision's details.
type DecisionData struct {
	Decision Decision `json:"decision"`
	Step     int      `json:"step"`
	// StepElapsed is a time.Duration in its String form ("1m30s").
	StepElapsed string     `json:"stepElapsed"`
	Values      []KPIValue `json:"values"`
	// DecidedThrough is the end of the last interval the decision had seen.
	DecidedThrough time.Time `json:"decidedThrough"`
}

// DriftData is the data of EventDrift; a drift found while reconciling a rollback has
// none.
type DriftData struct {
	During  string `json:"during"` // "ramp", or the purpose of the write it interrupted
	OnDrift string `json:"onDrift"`
	// Actual is the experiment's origins' weights in the pool as the drift was seen.
	Actual store.Weights `json:"actual,omitempty"`
}

// FaultData is the data of EventFault: Error and Consecutive for a failed pool or KPI
// operation, Attempt for a failed apply hook; capacity hook faults have none.
type FaultData struct {
	Error       string `json:"error,omitempty"`
	Consecutive int    `json:"consecutive,omitempty"`
	Attempt     int    `json:"attempt,omitempty"`
}

// NoDataData is the data of EventNoData: Error when the KPIs could not be fetched, KPIs
// when some had no data; none when data is back.
type NoDataData struct {
	Error string   `json:"error,omitempty"`
	KPIs  []string `json:"kpis,omitempty"`
}

// PrePeriodData is the data of EventPrePeriod once the history window is read; none when
// there is no history window.
type PrePeriodData struct {
	Noise []KPINoise `json:"noise"`
	End   time.Time  `json:"end"`
}

// ApplyData is the data of EventApply: the variant's arrival phase, and the canary's apply
// weights when it is moved to them.
type ApplyData struct {
	Phase   string        `json:"phase"`
	Weights store.Weights `json:"weights,omitempty"`
}

// PreconditionData is the data of EventPrecondition. Value is nil when the query had no
// finite value.
type PreconditionData struct {
	Name   string   `json:"name"`
	Value  *float64 `json:"value"`
	Expect string   `json:"expect"`
	OK     bool     `json:"ok"`
}

// CapacityData is the data of EventCapacity: the replicas a cluster was scaled to for its
// share of the traffic.
type CapacityData struct {
	Cluster string  `json:"cluster"`
	Min     int     `json:"min"`
	Max     int     `json:"max"`
	Percent float64 `json:"percent"`
}

// ActionData is the data of EventAction: the command being applied.
type ActionData = store.Command

// NotificationData is the data of EventNotification: a notification that was not
// delivered. Target names the target by position and kind, never by URL.
type NotificationData struct {
	Event  string `json:"event"`
	Target string `json:"target"`
	Error  string `json:"error"`
}

// RunEndedData is the data of EventRunEnded.
type RunEndedData struct {
	From    store.State   `json:"from"`
	State   store.State   `json:"state"`
	Verdict string        `json:"verdict"`
	Reason  string        `json:"reason"`
	By      string        `json:"by"`
	Weights store.Weights `json:"weights"`
}

// ErrUnknownEvent means DecodeData has no payload type for an event type (one written by
// a newer Verdict, say).
var ErrUnknownEvent = errors.New("unknown event type")

// payloads makes a pointer to the payload of each event type.
var payloads = map[string]func() any{
	EventRunStarted:       func() any { return new(RunStartedData) },
	EventStateChanged:     func() any { return new(StateChangedData) },
	EventWeightsIntent:    func() any { return new(WeightsData) },
	EventWeightsConfirmed: func() any { return new(WeightsData) },
	EventDecision:         func() any { return new(DecisionData) },
	EventDrift:            func() any { return new(DriftData) },
	EventFault:            func() any { return new(FaultData) },
	EventNoData:           func() any { return new(NoDataData) },
	EventPrePeriod:        func() any { return new(PrePeriodData) },
	EventApply:            func() any { return new(ApplyData) },
	EventPrecondition:     func() any { return new(PreconditionData) },
	EventCapacity:         func() any { return new(CapacityData) },
	EventAction:           func() any { return new(ActionData) },
	EventNotification:     func() any { return new(NotificationData) },
	EventRunEnded:         func() any { return new(RunEndedData) },
	EventSourceChecked:    func() any { return new(SourceCheckData) },
	EventSourceSynced:     func() any { return new(SourceSyncData) },
}

// DecodeData decodes the data of an event of type typ into its payload type, returned as
// a pointer (*StateChangedData for EventStateChanged, and so on). An event stored without
// data gives the zero payload. An unknown type fails with ErrUnknownEvent.
func DecodeData(typ string, data json.RawMessage) (any, error) {
	mk, ok := payloads[typ]
	if !ok {
		return nil, fmt.Errorf("decode data of a %q event: %w", typ, ErrUnknownEvent)
	}
	p := mk()
	if len(data) == 0 {
		return p, nil
	}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("decode data of a %q event: %w", typ, err)
	}
	return p, nil
}

// DecodeEventData decodes data into T, the payload type the caller expects (for instance
// DecodeEventData[RunEndedData](ev.Data)); no data gives T's zero value.
func DecodeEventData[T any](data json.RawMessage) (T, error) {
	var v T
	if len(data) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}
