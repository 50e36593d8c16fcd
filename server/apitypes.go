package server

import (
	"encoding/json"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// This file is the one definition of every JSON document Verdict prints or serves: the
// API's answers, and the messages of the CLI's -o json. The server encodes them, the
// Client decodes them and the CLI prints them, so the three cannot drift apart. Every
// document starts with TypeMeta; names are camelCase, zero times and empty optional
// values are left out. docs/api.yaml and docs/cli.md describe them.

// APIVersion is the apiVersion of every document; a consumer checks it before reading
// further, and an incompatible change gets a new one.
const APIVersion = "verdict.dev/v1"

// TypeMeta opens every document: which version of the schema and which kind of message.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Meta is the TypeMeta of a document of the given kind.
func Meta(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }

// The kinds of documents.
const (
	KindRunList         = "RunList"
	KindRun             = "Run"
	KindExperimentList  = "ExperimentList"
	KindExperiment      = "Experiment"
	KindFileList        = "FileList"
	KindEventList       = "EventList"
	KindDecisionList    = "DecisionList"
	KindObservationList = "ObservationList"
	KindActionResult    = "ActionResult"
	KindRetryResult     = "RetryResult"
	KindError           = "Error"
	KindHealth          = "Health"
	KindVersion         = "Version"
	KindPlanResult      = "PlanResult"
	KindCheckResult     = "CheckResult"
	KindValidateResult  = "ValidateResult"
	KindDrainResult     = "DrainResult"
	KindRestoreResult   = "RestoreResult"
)

// ErrorDoc is the API's error answer.
type ErrorDoc struct {
	TypeMeta
	Error string `json:"error"`
	// Status is the HTTP status of an API error.
	Status int `json:"status,omitempty"`
	// ExitCode is the CLI's exit code, when the CLI printed the error (under -o json).
	ExitCode int `json:"exitCode,omitempty"`
}

// RunSummary is a run as lists and the run view show it.
type RunSummary struct {
	ID         string `json:"id"`
	Experiment string `json:"experiment"`
	Pool       string `json:"pool"`
	File       string `json:"file,omitempty"`
	// Resume is the verdict command line (without global flags) that drives the unfinished
	// run again: drills and switchovers are resumed by the command that derived them.
	Resume    []string      `json:"resume,omitempty"`
	State     store.State   `json:"state"`
	Step      int           `json:"step"`
	Steps     int           `json:"steps"`
	Verdict   string        `json:"verdict,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	EndedBy   string        `json:"endedBy,omitempty"`
	Canary    string        `json:"canary,omitempty"`
	Baselines []string      `json:"baselines,omitempty"`
	Weights   store.Weights `json:"weights,omitempty"`
	Original  store.Weights `json:"original,omitempty"`
	// ActualWeights are the experiment's origins' weights as the pool had them when the
	// run last saw drift, while that drift is the latest word on the pool (no weights were
	// confirmed since): Weights are then what the run expects, not where traffic goes.
	ActualWeights store.Weights `json:"actualWeights,omitempty"`
	// CanaryShare is the canary's share of the experiment's traffic now (0–1).
	CanaryShare *float64 `json:"canaryShare,omitempty"`
	// Supervised is true when this server drives the run.
	Supervised bool   `json:"supervised"`
	Stalled    string `json:"stalled,omitempty"`
	// DrivenBy is the holder of the run's lease (a serve replica, verdict-run@HOST/PID), or
	// "nobody" for an unfinished run no live process drives; absent for ended runs.
	DrivenBy string `json:"drivenBy,omitempty"`
	// Lease is the run's unexpired lease, when the CLI reads a store that has leases.
	Lease *store.Lease `json:"lease,omitempty"`
	// Orphan is set when no live process drives the run (its lease expired) and this
	// server does not either: who drove it last, since when, and how to finish it.
	Orphan *Orphan `json:"orphan,omitempty"`
	// Decision is the latest decision, KPI by KPI.
	Decision *Decision `json:"decision,omitempty"`
	// RetryOf is the run this one retries (verdict retry).
	RetryOf   string    `json:"retryOf,omitempty"`
	PauseNote string    `json:"pauseNote,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	ReportURL string    `json:"reportURL,omitempty"`
}

// Decision is a decision as the API shows it: the engine's stored form (engine.Decision,
// so the API, the store and the streams name every field alike) with when and at which
// step it was taken.
type Decision struct {
	At   time.Time `json:"at,omitzero"`
	Step int       `json:"step,omitempty"`
	engine.Decision
}

// UnmarshalJSON decodes At and Step beside the embedded decision, whose own
// UnmarshalJSON would otherwise be promoted and drop them.
func (d *Decision) UnmarshalJSON(b []byte) error {
	var when struct {
		At   time.Time `json:"at"`
		Step int       `json:"step"`
	}
	if err := json.Unmarshal(b, &when); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &d.Decision); err != nil {
		return err
	}
	d.At, d.Step = when.At, when.Step
	return nil
}

// DecisionOf is the API's view of an engine decision.
func DecisionOf(d *engine.Decision) *Decision {
	if d == nil {
		return nil
	}
	return &Decision{Decision: *d}
}

// StoredDecisionOf is the API's view of a stored decision: its details are the engine's
// DecisionData when they decode, else only the action and reason are known.
func StoredDecisionOf(d store.Decision) *Decision {
	var data engine.DecisionData
	out := &Decision{Decision: engine.Decision{Action: analysis.Action(d.Action), Reason: d.Reason, KPIs: []engine.KPIVerdict{}}}
	if len(d.Details) > 0 && json.Unmarshal(d.Details, &data) == nil && data.Decision.Action != "" {
		out = DecisionOf(&data.Decision)
	}
	out.At, out.Step = d.At, d.Step
	return out
}

// Share is the traffic-share check as the API shows it: the configured and observed
// shares of each cluster (canary first) in the current segment.
type Share struct {
	Mismatch bool `json:"mismatch"`
	// Checked is true once the current weights have had enough intervals for a mismatch
	// to be found; a run is not promoted on a check that is not.
	Checked bool `json:"checked"`
	// Intervals is how many intervals the current weights have had.
	Intervals int       `json:"intervals"`
	Expected  []float64 `json:"expected"`
	Observed  []float64 `json:"observed"`
	Reason    string    `json:"reason,omitempty"`
}

// RunList is GET /api/v1/runs, verdict list and verdict status without an argument.
type RunList struct {
	TypeMeta
	// Server is the server the CLI asked; absent for the local store and in the API.
	Server  string       `json:"server,omitempty"`
	Runs    []RunSummary `json:"runs"`
	Orphans []Orphan     `json:"orphans,omitempty"`
	Cursor  string       `json:"cursor,omitempty"`
}

// RunDetail is GET /api/v1/runs/{id}, verdict get and verdict status RUN-ID: the run, its
// latest events and, while a process shows it, where the current step stands.
type RunDetail struct {
	TypeMeta
	Server   string          `json:"server,omitempty"`
	Run      RunSummary      `json:"run"`
	Spec     json.RawMessage `json:"spec,omitempty"`
	Intent   *store.Intent   `json:"intent,omitempty"`
	Messages []Message       `json:"messages"`
	Cursor   string          `json:"cursor,omitempty"`
	// Values are the KPIs' latest per-interval values, canary and baseline.
	Values      []engine.KPIValue `json:"values,omitempty"`
	Share       *Share            `json:"share,omitempty"`
	Hold        string            `json:"hold,omitempty"`
	StepElapsed string            `json:"stepElapsed,omitempty"`
	RampStart   time.Time         `json:"rampStart,omitzero"`
	MaxDuration string            `json:"maxDuration,omitempty"`
}

// ExperimentView is an experiment as the API shows it: where it is declared, what the
// watcher made of it, and its runs, latest first.
type ExperimentView struct {
	Name string       `json:"name"`
	File string       `json:"file,omitempty"`
	Note string       `json:"note,omitempty"`
	Runs []RunSummary `json:"runs"`
}

// ExperimentList is GET /api/v1/experiments.
type ExperimentList struct {
	TypeMeta
	Experiments []ExperimentView `json:"experiments"`
	Cursor      string           `json:"cursor,omitempty"`
}

// ExperimentDetail is GET /api/v1/experiments/{name}.
type ExperimentDetail struct {
	TypeMeta
	Experiment ExperimentView `json:"experiment"`
}

// FileList is GET /api/v1/files.
type FileList struct {
	TypeMeta
	Dir   string       `json:"dir,omitempty"`
	Files []FileStatus `json:"files"`
}

// EventList is GET /api/v1/runs/{id}/events.
type EventList struct {
	TypeMeta
	Run    string        `json:"run"`
	Events []store.Event `json:"events"`
}

// DecisionList is GET /api/v1/runs/{id}/decisions; Details are the engine's record of
// each decision (docs/report-json.md).
type DecisionList struct {
	TypeMeta
	Run       string           `json:"run"`
	Decisions []store.Decision `json:"decisions"`
}

// ObservationList is GET /api/v1/runs/{id}/observations.
type ObservationList struct {
	TypeMeta
	Run          string              `json:"run"`
	Observations []store.Observation `json:"observations"`
}

// ActionRequest is the body of an action: who asks, and why.
type ActionRequest struct {
	Who    string `json:"who"`
	Reason string `json:"reason"`
}

// ActionResult says what became of an action (POST /api/v1/runs/{id}/{action}, verdict
// pause|resume|promote|abort|rollback).
type ActionResult struct {
	TypeMeta
	Run     string `json:"run"`
	Action  string `json:"action"`
	Command int64  `json:"command"`
	// Who is the principal recorded for the action: the name of the token that
	// authenticated the request when it is a named token, else the who of the request.
	Who string `json:"who"`
	// OnBehalfOf is the who the client sent when a named token made it not the principal;
	// it is recorded in the reason as a note, never as who.
	OnBehalfOf string `json:"onBehalfOf,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Applied is true when the run has taken the action; false means it is queued for the
	// process running the experiment (202 Accepted). The engine may take an action and
	// ignore it (pausing a run that is rolling back): State against Previous tells.
	Applied  bool          `json:"applied"`
	State    store.State   `json:"state,omitempty"`
	Previous store.State   `json:"previous,omitempty"`
	Summary  *RunSummary   `json:"summary,omitempty"`
	Weights  store.Weights `json:"weights,omitempty"`
}

// RetryResult is verdict retry: the new run started from an ended run's stored spec.
type RetryResult struct {
	TypeMeta
	Run     string `json:"run"`
	RetryOf string `json:"retryOf"`
	Who     string `json:"who,omitempty"`
	// Result is how the new run ended, when the command drove it to its end.
	Result *RunSummary `json:"result,omitempty"`
}

// VersionInfo is verdict version -o json.
type VersionInfo struct {
	TypeMeta
	Version string `json:"version"`
}

// Health is GET /healthz.
type Health struct {
	TypeMeta
	Status string `json:"status"`
}

// The events a retry records: EventRetryOf on the new run (when the CLI starts it) and
// EventRetried on the ended run it retries; both carry RetryData.
const (
	EventRetryOf = "retry_of"
	EventRetried = "retried"
)

// RetryData is the data of EventRetryOf and EventRetried: the other run, and who asked.
type RetryData struct {
	Run string `json:"run"`
	Who string `json:"who,omitempty"`
}

// ValidateResult is verdict validate -o json: every file's experiments, errors (with file,
// line, column and field) and warnings.
type ValidateResult struct {
	TypeMeta
	Valid bool           `json:"valid"`
	Files []ValidateFile `json:"files"`
}

// ValidateFile is one file's part of a ValidateResult.
type ValidateFile struct {
	File        string   `json:"file"`
	Valid       bool     `json:"valid"`
	Experiments []string `json:"experiments"`
	// Drills names the drills of a kind: Drill file (experiments is empty then).
	Drills   []string                  `json:"drills,omitempty"`
	Errors   []*experiments.FieldError `json:"errors"`
	Warnings []ValidateWarning         `json:"warnings"`
}

// ValidateWarning is a warning about a valid experiment: it does not fail validation.
type ValidateWarning struct {
	experiments.Pos
	Experiment string `json:"experiment"`
	Msg        string `json:"message"`
}

// DrainResult is verdict drain -o json (kind DrainResult) and verdict restore -o json
// (kind RestoreResult): the pool's origins before and after, applied or previewed.
type DrainResult struct {
	TypeMeta
	Pool     string `json:"pool"`
	PoolName string `json:"poolName"`
	// Origin is the origin drained or restored; Cluster is the cluster it serves, when the
	// command was given a cluster name (resolved through an experiment's origins map).
	Origin  string        `json:"origin,omitempty"`
	Cluster string        `json:"cluster,omitempty"`
	Applied bool          `json:"applied"`
	Message string        `json:"message,omitempty"`
	Origins []DrainOrigin `json:"origins"`
	// Claim is the run claim the pool carries, if any; ClaimOverridden says --force went
	// past it.
	Claim           *PoolClaim `json:"claim,omitempty"`
	ClaimOverridden bool       `json:"claimOverridden,omitempty"`
}

// DrainOrigin is one origin of a DrainResult: its weight and share of the pool's traffic
// before and after.
type DrainOrigin struct {
	Name         string  `json:"name"`
	Enabled      bool    `json:"enabled"`
	WeightBefore float64 `json:"weightBefore"`
	WeightAfter  float64 `json:"weightAfter"`
	ShareBefore  float64 `json:"shareBefore"`
	ShareAfter   float64 `json:"shareAfter"`
	// Healthy is the load balancer's health verdict, absent when health was not read or
	// no monitor reports on the origin; Health says it in words.
	Healthy *bool  `json:"healthy,omitempty"`
	Health  string `json:"health,omitempty"`
}

// PoolClaim is the mark a run leaves in the pool it steers.
type PoolClaim struct {
	Run   string    `json:"run"`
	Owner string    `json:"owner"`
	Since time.Time `json:"since"`
}
