package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// StaleChecker is a KPISource that can tell a series whose source stopped reporting from
// a live one; *metrics.Source implements it. A federation server keeps serving a dead
// leaf's last samples (no staleness markers), so the KPI queries alone would let a run
// move weights while blind on that cluster.
type StaleChecker interface {
	StaleSeries(ctx context.Context, k metrics.KPI, r metrics.Range, t time.Time, clusters []string) ([]metrics.Stale, error)
}

var _ StaleChecker = (*metrics.Source)(nil)

// staleWindow is how many analysis intervals the preflight measures sample spacing over.
const staleWindow = 5

// checkFresh is the preflight's check that every cluster's KPI series still receive
// samples: a series whose newest sample is older than metrics.StaleAge of its spacing ends
// the run check_failed before any change, naming the cluster and the series. ok is false
// when the run ended or a fault was recorded (the check could not run: retried until
// noDataTimeout).
func (r *Run) checkFresh(ctx context.Context, now time.Time) (ok bool, err error) {
	sc, can := r.e.opts.Metrics.(StaleChecker)
	if !can || r.book.FreshChecked {
		return true, nil
	}
	rng := metrics.AlignedRange(now, r.interval(), staleWindow)
	clusters := r.exp.Spec.Clusters()
	var stale []metrics.Stale
	for _, q := range r.ev.Queries() {
		got, err := sc.StaleSeries(ctx, q, rng, now, clusters)
		if err != nil {
			if timeout := r.exp.Spec.Analysis.NoDataTimeout.Std(); now.Sub(r.rec.StartedAt) > timeout {
				return false, r.end(ctx, now, store.StateFailed, VerdictFailed, fmt.Sprintf("sample freshness could not be checked for %s: %v", timeout, err), r.e.opts.Who)
			}
			return false, r.fault(ctx, now, "check that the KPI series are fresh", err)
		}
		stale = append(stale, got...)
	}
	if len(stale) > 0 {
		return false, r.end(ctx, now, store.StateFailed, VerdictCheckFailed,
			"stale KPI series before any change, so the run would be blind: "+describeStale(stale)+"; nothing was changed", r.e.opts.Who)
	}
	r.book.FreshChecked = true
	return true, nil
}

// describeStale says, per cluster, how old its newest samples are and which series.
func describeStale(stale []metrics.Stale) string {
	type agg struct {
		age, spacing time.Duration
		sels         []string
	}
	by := map[string]*agg{}
	for _, s := range stale {
		a := by[s.Cluster]
		if a == nil {
			a = &agg{}
			by[s.Cluster] = a
		}
		a.age, a.spacing = max(a.age, s.Age), max(a.spacing, s.Spacing)
		if !slices.Contains(a.sels, s.Selector) {
			a.sels = append(a.sels, s.Selector)
		}
	}
	var parts []string
	for _, c := range sortedKeys(by) {
		a := by[c]
		if a.spacing == 0 { // no sample in the checked window: found further back
			parts = append(parts, fmt.Sprintf("cluster %s: newest samples %s old, none in the last %d intervals (its target or federation leaf stopped reporting) in %s",
				c, a.age.Round(time.Second), staleWindow, strings.Join(a.sels, ", ")))
			continue
		}
		parts = append(parts, fmt.Sprintf("cluster %s: newest samples %s old while they arrived about every %s (its target or federation leaf stopped reporting) in %s",
			c, a.age.Round(time.Second), a.spacing.Round(time.Second), strings.Join(a.sels, ", ")))
	}
	return strings.Join(parts, "; ")
}
