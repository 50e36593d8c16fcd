package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// Apply phases, in the run's bookkeeping. The baseline (history window) is always captured
// before the first: a variant that arrives after it cannot leak into it.
const (
	applyHook  = "hook"  // the apply hook is to run (again, after a crash: hooks must be idempotent)
	applyReady = "ready" // waiting for the readiness query
	applyDone  = "done"
)

// applyHookAttempts is how many times a failing apply hook is tried before the run rolls
// back: the variant is not there, so there is nothing to judge.
const applyHookAttempts = 3

// historyEnd is where the baseline window ends: at the declared appliedAt for a variant
// already live, else now (less the settle time), before any hook runs.
func (r *Run) historyEnd(now time.Time) (time.Time, error) {
	iv := r.interval()
	end := now.Add(-r.settle())
	if a := r.exp.Spec.Canary.Apply; a != nil && a.AppliedAt != nil {
		at := *a.AppliedAt
		if at.After(now) {
			return time.Time{}, fmt.Errorf("spec.canary.apply.appliedAt %s is in the future: the variant is not live yet; declare apply.hook or apply.readiness instead", at.UTC().Format(time.RFC3339))
		}
		if at.Before(end) {
			end = at
		}
	}
	// the interval in progress at appliedAt saw the variant for part of it: it is left out
	return end.Truncate(iv), nil
}

// applyDeclared says whether the engine itself brings the variant in (hook or readiness).
func (r *Run) applyDeclared() bool {
	a := r.exp.Spec.Canary.Apply
	return a != nil && (a.Hook != nil || a.Readiness != nil)
}

// readinessHolds evaluates the readiness query now: every series must satisfy expect, and
// no data is not ready.
func (r *Run) readinessHolds(ctx context.Context, now time.Time) (bool, string, error) {
	rd := r.exp.Spec.Canary.Apply.Readiness
	q, err := r.exp.ReadinessQuery()
	if err != nil {
		return false, "", err
	}
	expect, err := metrics.ParseExpect(rd.Expect)
	if err != nil {
		return false, "", fmt.Errorf("readiness: %w", err)
	}
	val, _, err := r.e.opts.Metrics.Instant(ctx, q, now)
	if err != nil {
		return false, "", fmt.Errorf("readiness: %w", err)
	}
	values := valuesOf(val)
	if len(values) == 0 {
		return false, "no data", nil
	}
	for _, v := range values {
		if !expect.Holds(v) {
			return false, formatValue(v, true), nil
		}
	}
	return true, formatValue(values[0], true), nil
}

// applyWeights are the weights the canary runs at while the variant arrives: the first
// step's, or none (drained) when apply.during is drained.
func (r *Run) applyWeights() store.Weights {
	if a := r.exp.Spec.Canary.Apply; a != nil && a.During == experiments.ApplyDuringDrained && r.book.Drained != nil {
		return r.book.Drained
	}
	return r.book.Plan[1]
}

// applyVariant brings the variant in after the baseline was captured: the canary is moved
// to its apply weights, the hook runs, the readiness query is awaited. done is true once the
// variant is in (or was never the engine's to bring in).
func (r *Run) applyVariant(ctx context.Context, now time.Time) (done bool, err error) {
	if !r.applyDeclared() || r.book.Apply == applyDone {
		return true, nil
	}
	a := r.exp.Spec.Canary.Apply
	want := r.applyWeights()
	if r.book.Apply == "" {
		if !sameWeights(r.rec.Current, want) {
			return false, r.setWeights(ctx, now, "apply", want)
		}
		r.book.Apply, r.book.ApplyAt = applyReady, now
		msg := "canary at its apply weights; waiting for the variant to be ready"
		if a.Hook != nil {
			r.book.Apply = applyHook
			msg = "canary at its apply weights; applying the variant with the hook"
		}
		if err := r.save(ctx, r.event(EventApply, now, msg, map[string]any{"phase": r.book.Apply, "weights": want})); err != nil {
			return false, err
		}
	}
	if r.book.Apply == applyHook {
		args, err := r.exp.ApplyHookCommand()
		if err != nil {
			return false, err
		}
		if err := r.e.opts.Hooks.RunHook(ctx, args, a.Hook.Timeout.Std()); err != nil {
			r.book.ApplyFails++
			if r.book.ApplyFails >= applyHookAttempts {
				return false, r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("the apply hook failed %d times: %v", r.book.ApplyFails, err), r.e.opts.Who, store.StateFailed)
			}
			return false, r.save(ctx, r.event(EventFault, now, "apply hook failed (will retry): "+err.Error(), map[string]any{"attempt": r.book.ApplyFails}))
		}
		r.book.Apply, r.book.ApplyAt = applyDone, now
		if a.Readiness != nil {
			r.book.Apply = applyReady
		}
		if err := r.save(ctx, r.event(EventApply, now, "apply hook succeeded: "+args[0], map[string]any{"phase": r.book.Apply})); err != nil {
			return false, err
		}
	}
	if r.book.Apply == applyReady {
		ok, got, err := r.readinessHolds(ctx, now)
		if err != nil {
			return false, r.fault(ctx, now, "evaluate readiness", err)
		}
		if !ok {
			if wait := now.Sub(r.book.ApplyAt); wait > a.Readiness.Timeout.Std() {
				return false, r.rollback(ctx, now, VerdictFailed, fmt.Sprintf("the variant was not ready after %s (readiness %s, got %s)", a.Readiness.Timeout, a.Readiness.Expect, got), r.e.opts.Who, store.StateFailed)
			}
			return false, nil
		}
		r.book.Apply = applyDone
		if err := r.save(ctx, r.event(EventApply, now, fmt.Sprintf("the variant is ready (readiness %s, got %s); the ramp starts", a.Readiness.Expect, got), map[string]any{"phase": applyDone})); err != nil {
			return false, err
		}
	}
	return r.book.Apply == applyDone, nil
}
