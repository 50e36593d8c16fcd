package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/gitops"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// Event types of the declared source of truth (spec.traffic.sourceOfTruth).
const (
	// EventSourceChecked: preflight compared the declared weights with the live pool.
	EventSourceChecked = "source_checked"
	// EventSourceSynced: after an ending that changed the intended weights, the new
	// weights were written back (a file, a branch, a pull request) or could not be.
	EventSourceSynced = "source_synced"
)

// DefaultSyncTimeout bounds the write-back at the end of a run (git fetch, push, GitHub).
const DefaultSyncTimeout = 2 * time.Minute

// SourceCheckData is the data of EventSourceChecked.
type SourceCheckData struct {
	Source string `json:"source"`
	InSync bool   `json:"inSync"`
	// Accepted: the mismatch was accepted (onMismatch: warn) and the run went on.
	Accepted bool         `json:"accepted,omitempty"`
	Plan     *gitops.Plan `json:"plan,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// SourceSyncData is the data of EventSourceSynced, also kept in the run's bookkeeping: what
// the write-back did, or why it failed. A failure never changes the verdict.
type SourceSyncData struct {
	Source string `json:"source"`
	Ending string `json:"ending"`
	// Changes is how many weights the write-back changed in the file.
	Changes int `json:"changes"`
	// Written: the file was rewritten in place (no git settings).
	Written     bool   `json:"written,omitempty"`
	Branch      string `json:"branch,omitempty"`
	Commit      string `json:"commit,omitempty"`
	Base        string `json:"base,omitempty"`
	Pushed      bool   `json:"pushed,omitempty"`
	PullRequest string `json:"pullRequest,omitempty"` // its URL
	PRNumber    int    `json:"pullRequestNumber,omitempty"`
	// UpToDate: the file already held the weights; nothing was committed.
	UpToDate bool   `json:"upToDate,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Summary is the one line reports and views show.
func (d SourceSyncData) Summary() string {
	switch {
	case d.Error != "":
		return "write-back to " + d.Source + " failed: " + d.Error
	case d.PullRequest != "":
		return fmt.Sprintf("pull request #%d %s (branch %s, commit %s) writes the weights into %s", d.PRNumber, d.PullRequest, d.Branch, shortCommit(d.Commit), d.Source)
	case d.Branch != "" && !d.UpToDate:
		return fmt.Sprintf("branch %s (commit %s, from %s) writes the weights into %s", d.Branch, shortCommit(d.Commit), d.Base, d.Source)
	case d.Written:
		return fmt.Sprintf("wrote the weights into %s (%d changed)", d.Source, d.Changes)
	}
	return d.Source + " already holds the weights: nothing written"
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// checkSource compares the declared source of truth with the pool before any change. A
// mismatch (or a file that cannot be read) ends the run check_failed unless the spec says
// onMismatch: warn. It returns false when the run ended.
func (r *Run) checkSource(ctx context.Context, now time.Time, pool traffic.Pool) (bool, error) {
	sot := r.exp.Spec.Traffic.SourceOfTruth
	if sot == nil || r.book.SourceChecked {
		return true, nil
	}
	r.book.SourceChecked = true
	src, err := r.exp.Spec.Traffic.Source()
	data := SourceCheckData{Source: src.String()}
	var plan gitops.Plan
	if err == nil {
		var d *gitops.Declared
		if d, err = gitops.Read(src); err == nil {
			plan = gitops.Diff(d, pool.Weights())
			data.Plan, data.InSync = &plan, plan.InSync()
		}
	}
	if err != nil {
		data.Error = err.Error()
		reason := fmt.Sprintf("the source of truth %s could not be read before any change: %v", src, err)
		if err := r.save(ctx, r.event(EventSourceChecked, now, reason, data)); err != nil {
			return false, err
		}
		return false, r.end(ctx, now, store.StateFailed, VerdictCheckFailed, reason, r.e.opts.Who)
	}
	if data.InSync {
		return true, r.save(ctx, r.event(EventSourceChecked, now, fmt.Sprintf("source of truth %s agrees with the live pool", src), data))
	}
	var b strings.Builder
	_ = plan.Render(&b, gitops.ToPool)
	if sot.OnMismatch == experiments.OnMismatchWarn {
		data.Accepted = true
		msg := "onMismatch: warn, so the run goes on; the next apply would move traffic. " + b.String()
		return true, r.save(ctx, r.event(EventSourceChecked, now, msg, data), r.event(EventWarning, now, msg, nil))
	}
	reason := "source of truth disagrees with the live pool before any change (fix the file or the pool, run verdict sync, or set sourceOfTruth.onMismatch: warn): " + b.String()
	if err := r.save(ctx, r.event(EventSourceChecked, now, reason, data)); err != nil {
		return false, err
	}
	return false, r.end(ctx, now, store.StateFailed, VerdictCheckFailed, reason, r.e.opts.Who)
}

// changedIntent reports the ending's name when the run ended in a way that changes the
// weights the pool is meant to have: a promotion that keeps its weights (a migration
// included) or a rollback that drains the canary. "" when nothing is to be written back.
func (r *Run) changedIntent() string {
	if r.rec.Current == nil || r.rec.Original == nil || sameWeights(r.rec.Current, r.rec.Original) {
		return ""
	}
	t := &r.exp.Spec.Traffic
	switch r.rec.State {
	case store.StatePromoted:
		if t.OnPromote == experiments.OnPromoteKeep {
			if t.Migration() {
				return "promote (keep, migration)"
			}
			return "promote (keep)"
		}
	case store.StateRolledBack, store.StateAborted:
		if t.OnRollback == experiments.OnRollbackDrain {
			return "rollback (drain)"
		}
	}
	return ""
}

// syncSource writes the run's final weights back into the declared source of truth, once,
// at the end, within the sync timeout. The result is an event and bookkeeping; a failure is
// an alert and never changes the verdict.
func (r *Run) syncSource(ctx context.Context, now time.Time) error {
	ending := r.changedIntent()
	if r.exp.Spec.Traffic.SourceOfTruth == nil || ending == "" || r.book.Sync != nil {
		return nil
	}
	src, err := r.exp.Spec.Traffic.Source()
	data := &SourceSyncData{Source: src.String(), Ending: ending}
	run := gitops.RunInfo{ID: r.rec.ID, Verdict: r.rec.Verdict, Ending: ending, ReportURL: r.e.reportLink(r.rec.ID)}
	var res gitops.Result
	if err == nil {
		var opts gitops.SyncOptions
		if opts, err = r.exp.Spec.Traffic.SyncOptions(run); err == nil {
			opts.Logger = r.e.opts.Logger
			sctx, cancel := context.WithTimeout(ctx, r.e.syncTimeout())
			res, err = gitops.Sync(sctx, src, toTraffic(r.rec.Current), opts)
			cancel()
		}
	}
	for _, c := range res.Plan.Changes {
		if c.Action == gitops.Update {
			data.Changes++
		}
	}
	data.Written = res.Written
	if p := res.Published; p != nil {
		data.Branch, data.Commit, data.Base, data.Pushed = p.Branch, p.Commit, p.Base, p.Pushed
		data.UpToDate = !p.Changed && err == nil
	} else if !res.Written && err == nil {
		data.UpToDate = true
	}
	if pr := res.PullRequest; pr != nil {
		data.PullRequest, data.PRNumber = pr.HTMLURL, pr.Number
	}
	if err != nil {
		data.Error = err.Error()
	}
	r.book.Sync = data
	if err := r.save(ctx, r.event(EventSourceSynced, now, data.Summary(), data)); err != nil {
		return err
	}
	if data.Error != "" {
		r.notify(ctx, "verdict", fmt.Sprintf("ALERT %s: the run ended %s but its weights were not written back: %s; run `verdict sync %s`", r.exp.Metadata.Name, strings.ReplaceAll(r.rec.Verdict, "_", " "), data.Summary(), r.rec.ID))
	}
	return nil
}

func (e *Engine) syncTimeout() time.Duration {
	if e.opts.SyncTimeout > 0 {
		return e.opts.SyncTimeout
	}
	return DefaultSyncTimeout
}

func (e *Engine) reportLink(runID string) string {
	if e.opts.ReportLink != nil {
		return e.opts.ReportLink(runID)
	}
	return "verdict report " + runID
}
