package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// Origin health is a built-in precondition, shown as the precondition "origin-health":
//
//   - Before any weight moves (preflight, and again right before step 1), an experiment
//     origin the load balancer's monitors find unhealthy ends the run check_failed with
//     nothing changed. An unhealthy origin carries none of its share (the healthy origins
//     take it), so an unhealthy baseline would push its traffic onto the canary unseen,
//     and an unhealthy canary would be judged on no traffic.
//   - While ramping, a step or a promotion is held (not written) while an experiment
//     origin is unhealthy; judging goes on, a rollback is never held, and the step moves
//     on once every origin is healthy again. A long outage ends through noDataTimeout.
//   - The share check expects what the load balancer does: an interval throughout which
//     an origin was unhealthy expects 0 for its cluster (the others renormalised); an
//     interval in which health changed is left out of the share check.
//
// A Steerer that cannot read health (traffic.HealthReader) skips all of this.
const healthPrecondition = "origin-health"

// healthMark is the set of experiment origins found unhealthy from At on.
type healthMark struct {
	At        time.Time `json:"at"`
	Unhealthy []string  `json:"unhealthy,omitempty"`
}

// readHealth reads the pool's origin health and returns the experiment origins found
// unhealthy, sorted, with a message naming them. known is false when the Steerer cannot
// read health or the provider reports none for the pool; a refused health request (4xx
// other than 401, 403 and 429: a pool without a monitor on some accounts) counts as none.
func (r *Run) readHealth(ctx context.Context, now time.Time) (bad []string, msg string, known bool, err error) {
	h, ok, err := traffic.ReadHealth(ctx, r.e.opts.Steerer, r.ref)
	if err != nil {
		var ae *traffic.APIError
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 &&
			ae.Status != http.StatusUnauthorized && ae.Status != http.StatusForbidden && ae.Status != http.StatusTooManyRequests {
			return nil, "", false, nil
		}
		return nil, "", false, err
	}
	if !ok || !h.Monitored {
		return nil, "", false, nil
	}
	var names []string
	for _, c := range r.exp.Spec.Clusters() {
		names = append(names, r.origin[c])
	}
	if herr := traffic.CheckHealthy(h, r.ref, names); herr != nil {
		var ue *traffic.UnhealthyError
		errors.As(herr, &ue)
		bad, msg = ue.Origins, herr.Error()
	}
	r.markHealth(now, bad)
	return bad, msg, true, nil
}

// markHealth records a change in the set of unhealthy experiment origins, and forgets
// marks no interval still to be judged needs.
func (r *Run) markHealth(now time.Time, bad []string) {
	marks := r.book.Health
	if n := len(marks); n == 0 || !slices.Equal(marks[n-1].Unhealthy, bad) {
		marks = append(marks, healthMark{At: now, Unhealthy: bad})
	}
	// Keep the last mark at or before LastEnd (the state when the next interval starts).
	keep := 0
	for i, m := range marks {
		if !m.At.After(r.book.LastEnd) {
			keep = i
		}
	}
	r.book.Health = marks[keep:]
}

// healthDuring says, for each cluster, whether its origin was unhealthy throughout
// [start, end) (true) or only part of it (in mixed), as far as the marks tell.
func (r *Run) healthDuring(start, end time.Time) (down map[string]bool, mixed bool) {
	down = map[string]bool{}
	var states [][]string
	for i, m := range r.book.Health {
		if !m.At.After(start) {
			if i+1 == len(r.book.Health) || r.book.Health[i+1].At.After(start) {
				states = append(states, m.Unhealthy)
			}
			continue
		}
		if m.At.Before(end) {
			states = append(states, m.Unhealthy)
		}
	}
	if len(states) == 0 {
		return down, false
	}
	for _, c := range r.exp.Spec.Clusters() {
		o := r.origin[c]
		n := 0
		for _, s := range states {
			if slices.Contains(s, o) {
				n++
			}
		}
		switch {
		case n == len(states):
			down[c] = true
		case n > 0:
			mixed = true
		}
	}
	return down, mixed
}

// healthEvent is the "origin-health" precondition event.
func (r *Run) healthEvent(now time.Time, bad []string, msg string) store.Event {
	v := float64(len(bad))
	text := "precondition " + healthPrecondition + ": every experiment origin is healthy at the load balancer"
	if len(bad) > 0 {
		text = fmt.Sprintf("precondition %s: %s", healthPrecondition, msg)
	}
	return r.event(EventPrecondition, now, text, PreconditionData{Name: healthPrecondition, Value: &v, Expect: "== 0 unhealthy origins", OK: len(bad) == 0})
}

// healthBeforeChange is the check before any weight moves. ok is false when the run was
// ended (an unhealthy origin: check_failed) or a fault recorded (health unreadable: retried
// until noDataTimeout, then failed).
func (r *Run) healthBeforeChange(ctx context.Context, now time.Time) (ok bool, err error) {
	bad, msg, known, err := r.readHealth(ctx, now)
	if err != nil {
		if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.rec.StartedAt) > timeout {
			return false, r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("origin health could not be read for %s: %v", timeout, err), r.e.opts.Who)
		}
		return false, r.fault(ctx, now, "read origin health of pool "+r.ref.String(), err)
	}
	if !known {
		return true, nil
	}
	if len(bad) == 0 {
		return true, nil // recorded only when it fails, so healthy runs' reports are unchanged
	}
	if err := r.save(ctx, r.healthEvent(now, bad, msg)); err != nil {
		return false, err
	}
	return false, r.end(ctx, now, store.StateFailed, VerdictCheckFailed, "precondition failed before any change: "+msg+"; nothing was changed", r.e.opts.Who)
}

// holdForHealth says whether a step or a promotion must wait because an experiment
// origin is unhealthy (or health could not be read this tick). It records the hold once,
// and its end.
func (r *Run) holdForHealth(ctx context.Context, now time.Time, what string) (hold bool, err error) {
	if !r.healthAt.Equal(now) {
		r.observeHealth(ctx, now, true)
	}
	if !r.healthRead {
		return false, nil
	}
	if r.healthErr != nil {
		return true, r.fault(ctx, now, "read origin health of pool "+r.ref.String()+" before "+what, r.healthErr)
	}
	if len(r.unhealthy) == 0 {
		if r.book.HealthHold == "" {
			return false, nil
		}
		r.book.HealthHold = ""
		return false, r.save(ctx, r.healthEvent(now, nil, ""))
	}
	key := strings.Join(r.unhealthy, ",")
	if r.book.HealthHold == key {
		return true, nil
	}
	r.book.HealthHold = key
	ev := r.healthEvent(now, r.unhealthy, r.healthMsg)
	ev.Message += fmt.Sprintf("; holding %s until it is healthy (a rollback is not held)", what)
	return true, r.save(ctx, ev)
}

// observeHealth reads the origin health while ramping (see Run.healthRead): at most once
// per settle time for the share check's marks, unless force (before a step or a
// promotion, which must see the health of now). Each read costs two API calls.
func (r *Run) observeHealth(ctx context.Context, now time.Time, force bool) {
	if !force && !r.healthAt.IsZero() && now.Sub(r.healthAt) < r.settle() {
		return
	}
	r.healthAt = now
	bad, msg, known, err := r.readHealth(ctx, now)
	r.healthRead = known || err != nil
	r.healthErr, r.unhealthy, r.healthMsg = err, bad, msg
}
