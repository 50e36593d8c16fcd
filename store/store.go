// Package store keeps experiment runs durable: their state, every weight intent before it is
// applied, observations, decisions and events. The engine writes here before it acts, so a
// crash at any moment leaves enough behind to resume or roll back.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// State is where a run is in the engine's state machine.
type State string

// States, as in docs/design.md "The engine".
const (
	StatePending     State = "Pending"
	StatePreflight   State = "Preflight"
	StateRamping     State = "Ramping"
	StatePromoting   State = "Promoting"
	StatePromoted    State = "Promoted"
	StateRollingBack State = "RollingBack"
	StateRolledBack  State = "RolledBack"
	StatePaused      State = "Paused"
	StateAborted     State = "Aborted"
	StateFailed      State = "Failed"
)

// Terminal reports whether a run in this state is over: it owns no pool any more.
func (s State) Terminal() bool {
	switch s {
	case StatePromoted, StateRolledBack, StateAborted, StateFailed:
		return true
	}
	return false
}

// Sentinels callers branch on.
var (
	ErrNotFound = errors.New("not found")
	// ErrPoolBusy means another unfinished run owns the pool: one pool, one experiment.
	ErrPoolBusy = errors.New("pool is owned by another unfinished run")
	// ErrConflict means the run changed since it was read (another process saved it).
	ErrConflict = errors.New("run was changed by someone else")
)

// PoolBusyError names the run that holds the pool.
type PoolBusyError struct {
	Pool  string
	RunID string
}

func (e *PoolBusyError) Error() string {
	return "pool " + e.Pool + " is owned by unfinished run " + e.RunID + " (finish, resume or abort it first)"
}

// Is makes errors.Is(err, ErrPoolBusy) true.
func (e *PoolBusyError) Is(target error) bool { return target == ErrPoolBusy }

// Weights maps origin names to weights.
type Weights map[string]float64

// Intent is a weight change recorded before it is applied: on recovery, an intent still
// pending means the write may or may not have reached the provider, and the pool must be
// read to find out.
type Intent struct {
	ID      int64     `json:"id"`
	Purpose string    `json:"purpose"` // e.g. "step 2", "rollback", "promote"
	Want    Weights   `json:"want"`
	Expect  Weights   `json:"expect"`
	At      time.Time `json:"at"`
}

// Run is one execution of an experiment.
type Run struct {
	ID         string `json:"id"`
	Experiment string `json:"experiment"`
	// Spec is the experiment as loaded (secrets are excluded by the spec's JSON encoding).
	Spec     json.RawMessage `json:"spec"`
	SpecFile string          `json:"specFile,omitempty"`
	// Pool is the provider's pool reference, the key of the one-run-per-pool lease.
	Pool string `json:"pool"`

	State State `json:"state"`
	// Step is the current step, 1-based; 0 before the first weight change.
	Step int `json:"step"`
	// StepElapsed is how much analysed time the current step has accumulated: the step
	// clock stops while data is missing, so it is not simply now − start.
	StepElapsed time.Duration `json:"stepElapsed"`
	// PausedFrom is the state to return to on resume.
	PausedFrom State `json:"pausedFrom,omitempty"`

	Original Weights `json:"original,omitempty"` // the experiment's origins before any change
	Current  Weights `json:"current,omitempty"`  // last weights confirmed by read-back
	Intent   *Intent `json:"intent,omitempty"`   // a write in flight

	// Verdict is promoted, rolled_back, aborted, inconclusive or failed once the run ends,
	// with Reason the sentence saying why and EndedBy who or what ended it.
	Verdict string `json:"verdict,omitempty"`
	Reason  string `json:"reason,omitempty"`
	EndedBy string `json:"endedBy,omitempty"`

	// Data holds engine bookkeeping the store does not interpret (last data time, the
	// pre-period window, ...).
	Data json.RawMessage `json:"data,omitempty"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	EndedAt   time.Time `json:"endedAt,omitzero"`

	// Version increases on every save; a save with a stale version fails with ErrConflict.
	Version int64 `json:"version"`

	// Fence, when not zero, is the token of the caller's lease on the run (see Leaser):
	// SaveRun then fails with ErrLeaseLost unless that lease is still current, checked in the
	// same transaction as the write. Zero means no check, as for a single process. It is an
	// argument of the save, never stored: a run read back has Fence 0.
	Fence int64 `json:"-"`
}

// Event is one thing that happened to a run, in order. Types follow the CLI's JSON
// messages: run_started, state_changed, weights_intent, weights_confirmed, decision,
// drift, fault, notification, action, run_ended.
type Event struct {
	RunID   string          `json:"runID"`
	Seq     int64           `json:"seq"`
	At      time.Time       `json:"at"`
	Type    string          `json:"type"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Observation is one KPI's per-cluster values for one interval; Values is the metrics
// layer's JSON, opaque here.
type Observation struct {
	RunID  string          `json:"runID"`
	KPI    string          `json:"kpi"`
	Start  time.Time       `json:"start"`
	End    time.Time       `json:"end"`
	Step   int             `json:"step"`
	Phase  string          `json:"phase"` // "pre" for the pre-period, "run" after the first change
	Values json.RawMessage `json:"values"`
}

// Decision is what the engine concluded at an interval, with the numbers behind it.
type Decision struct {
	RunID   string          `json:"runID"`
	Seq     int64           `json:"seq"`
	At      time.Time       `json:"at"`
	Step    int             `json:"step"`
	Action  string          `json:"action"` // continue, advance, promote, rollback, hold
	Reason  string          `json:"reason"`
	Details json.RawMessage `json:"details,omitempty"`

	// Fence, when not zero, makes AddDecision fail with ErrLeaseLost unless it is the token
	// of the run's current lease, as Run.Fence does for SaveRun. Never stored.
	Fence int64 `json:"-"`
}

// Command is a manual action asked of a run (pause, resume, promote, abort), possibly by
// another process than the one running it.
type Command struct {
	ID        int64     `json:"id"`
	RunID     string    `json:"runID"`
	Action    string    `json:"action"`
	Who       string    `json:"who"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"createdAt"`
	DoneAt    time.Time `json:"doneAt,omitzero"`
	Result    string    `json:"result,omitempty"`
}

// ListOptions filters ListRuns.
type ListOptions struct {
	Experiment string
	Unfinished bool // only runs not in a terminal state
	Limit      int
}

// Store is the durable state behind the engine. Implementations must make every method
// atomic and durable when it returns: the engine applies a change only after the store has
// it. Narrow on purpose: SQLite and PostgreSQL implement it in a file each, and both also
// implement Leaser. Open picks one from a --store value.
type Store interface {
	// CreateRun inserts a run and takes its pool: it fails with *PoolBusyError when another
	// unfinished run has the same pool.
	CreateRun(ctx context.Context, r *Run, events ...Event) error
	// SaveRun writes the run's new state with the events that explain it, in one
	// transaction. It fails with ErrConflict when r.Version is not the stored version; on
	// success r.Version and r.UpdatedAt are updated. With r.Fence set it also fails with
	// ErrLeaseLost when the caller no longer holds the run's lease.
	SaveRun(ctx context.Context, r *Run, events ...Event) error
	// Run returns a run by ID, or by experiment name (its latest run).
	Run(ctx context.Context, idOrName string) (*Run, error)
	ListRuns(ctx context.Context, opts ListOptions) ([]*Run, error)

	AddObservations(ctx context.Context, obs []Observation) error
	Observations(ctx context.Context, runID string) ([]Observation, error)
	// AddDecision records a decision; with d.Fence set it fails with ErrLeaseLost when the
	// caller no longer holds the run's lease.
	AddDecision(ctx context.Context, d *Decision) error
	Decisions(ctx context.Context, runID string) ([]Decision, error)
	// Events returns a run's events after seq (0 for all); runID "" means every run.
	Events(ctx context.Context, runID string, afterSeq int64) ([]Event, error)

	PostCommand(ctx context.Context, c *Command) error
	PendingCommands(ctx context.Context, runID string) ([]Command, error)
	CompleteCommand(ctx context.Context, id int64, result string, at time.Time) error

	Close() error
}
