package engine

import (
	"encoding/json"
	"time"
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
