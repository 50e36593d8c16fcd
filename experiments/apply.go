package experiments

import (
	"fmt"
	"time"
)

// Phase names, in the order a run goes through them (see Spec.Phases).
const (
	PhaseBaseline = "baseline" // the history window the engine learns offset and noise from
	PhaseApply    = "apply"    // the apply hook runs
	PhaseReady    = "ready"    // waiting for the readiness query to hold
	PhaseRamp     = "ramp"     // the traffic steps, under analysis
)

// Declared reports whether the file says when the variant reaches the canary: appliedAt,
// a hook or a readiness query. Without that the engine cannot know that the baseline window
// ends before the variant.
func (a *Apply) Declared() bool {
	return a != nil && (a.AppliedAt != nil || a.Hook != nil || a.Readiness != nil)
}

// Phases returns the run's phases in order, for display: the baseline window, then what
// the engine does to bring the variant in (apply, ready), then the ramp. An undeclared or
// already-applied variant has only the baseline and the ramp, the baseline saying where it
// ends.
func (s *Spec) Phases() []string {
	a := s.Canary.Apply
	switch {
	case !a.Declared():
		return []string{PhaseBaseline + " (variant arrival not declared)", PhaseRamp}
	case a.AppliedAt != nil:
		return []string{PhaseBaseline + " (before appliedAt " + a.AppliedAt.UTC().Format(time.RFC3339) + ")", PhaseRamp}
	}
	out := []string{PhaseBaseline}
	if a.Hook != nil {
		out = append(out, PhaseApply)
	}
	if a.Readiness != nil {
		out = append(out, PhaseReady)
	}
	return append(out, PhaseRamp)
}

// RenderApplyHookArg expands one apply hook argument with the query variables
// (Experiment.Vars of the canary).
func RenderApplyHookArg(arg string, vars QueryVars) (string, error) {
	return RenderQuery(arg, vars)
}

// ApplyHookCommand returns the apply hook's program and arguments, rendered for the
// canary; nil without an apply hook.
func (e *Experiment) ApplyHookCommand() ([]string, error) {
	a := e.Spec.Canary.Apply
	if a == nil || a.Hook == nil {
		return nil, nil
	}
	vars := e.rawVars(e.Spec.Canary.Cluster)
	out := make([]string, len(a.Hook.Command))
	for i, arg := range a.Hook.Command {
		v, err := RenderApplyHookArg(arg, vars)
		if err != nil {
			return nil, fmt.Errorf("spec.canary.apply.hook.command[%d]: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

// ReadinessQuery returns the readiness query rendered for the canary; "" without one.
func (e *Experiment) ReadinessQuery() (string, error) {
	a := e.Spec.Canary.Apply
	if a == nil || a.Readiness == nil {
		return "", nil
	}
	q, err := RenderQuery(a.Readiness.Query, e.Vars(e.Spec.Canary.Cluster))
	if err != nil {
		return "", fmt.Errorf("spec.canary.apply.readiness.query: %w", err)
	}
	return q, nil
}

// WarningApplyNotSet is the warning for an experiment that does not declare how its variant
// reaches the canary.
const WarningApplyNotSet = "spec.canary.apply is not set: Verdict cannot know that the baseline window ends before the variant; " +
	"declare apply.appliedAt, apply.hook or apply.readiness (the comparison then assumes the clusters were equal before the change)"

// Warnings returns what is valid but probably not what the author meant; unlike Validate's
// errors, they do not stop a run. Each names the field it is about.
func (e *Experiment) Warnings() []string {
	var w []string
	if !e.Spec.Canary.Apply.Declared() {
		w = append(w, WarningApplyNotSet)
	}
	return w
}
