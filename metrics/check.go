package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Precondition is a query that must meet its expectation before and during a run, e.g. that
// every cluster runs the same application versions.
type Precondition struct {
	Name   string // names the precondition in the report
	Query  string // templated PromQL, evaluated as an instant query
	Expect string // e.g. "== 0"; see ParseExpect
}

// CheckRequest is what `verdict check` asks about: the experiment's KPIs and preconditions
// over the recent past.
type CheckRequest struct {
	// KPIs and Preconditions are the experiment's, with templates already applied.
	KPIs          []KPI
	Preconditions []Precondition
	// Clusters are the experiment's clusters (canary and baselines); each must have data.
	Clusters []string
	// Interval is the analysis interval. Required.
	Interval time.Duration
	// Lookback is how far back to look; rounded up to whole intervals. Default
	// max(30, 2·MinIntervals) intervals.
	Lookback time.Duration
	// MinIntervals is the fewest intervals with traffic a cluster needs. Default 10.
	MinIntervals int
	// End is the end of the window, aligned down to Interval. Default: now.
	End time.Time
}

// Severities of a Problem.
const (
	// SeverityError fails the check.
	SeverityError = "error"
	// SeverityWarning is reported but does not fail the check.
	SeverityWarning = "warning"
)

// Problem is one precise finding about a KPI, in words a user can act on.
type Problem struct {
	Severity string `json:"severity"`          // SeverityError or SeverityWarning
	Cluster  string `json:"cluster,omitempty"` // empty when it concerns the whole KPI
	Message  string `json:"message"`           // names the query or cluster involved
}

// String formats a problem for the human view of `verdict check`.
func (p Problem) String() string {
	if p.Cluster != "" {
		return fmt.Sprintf("%s: cluster %s: %s", p.Severity, p.Cluster, p.Message)
	}
	return p.Severity + ": " + p.Message
}

// PrometheusInfo says which Prometheus answered.
type PrometheusInfo struct {
	Address string `json:"address"` // credentials redacted
	Version string `json:"version"` // from /api/v1/status/buildinfo
}

// Window is the span a check looked at.
type Window struct {
	Start    time.Time `json:"start"`    // start of the first interval
	End      time.Time `json:"end"`      // end of the last interval
	Interval string    `json:"interval"` // Prometheus duration, e.g. "1m"
}

// ClusterReport is one cluster's summary for a KPI: totals (or, for gauges, mean/min/max/
// last) over the intervals with data, and how many intervals had data.
type ClusterReport struct {
	// Values by name: events, total, ratio (ratio); count, sum, mean, le=<bound>
	// (latency); mean, min, max, last (gauge); requests, per_interval (throughput).
	// Empty when the cluster has no data: no data is never shown as zero.
	Values map[string]float64 `json:"values"`
	// Intervals counts the intervals with data and traffic.
	Intervals int `json:"intervals"`
}

// KPIReport is a KPI's check result.
type KPIReport struct {
	Name     string                   `json:"name"`
	Kind     Kind                     `json:"kind"`
	Clusters map[string]ClusterReport `json:"clusters"` // every requested cluster
	Problems []Problem                `json:"problems"` // never null in JSON
}

// PreconditionReport is a precondition's check result. Value is null when the query
// returned no data.
type PreconditionReport struct {
	Name    string   `json:"name"`
	Expect  string   `json:"expect"`            // canonical form, e.g. "== 0"
	Value   *float64 `json:"value"`             // the first failing value, else the first
	OK      bool     `json:"ok"`                // the expectation held for every series
	Problem string   `json:"problem,omitempty"` // why not OK (or no data)
}

// Report is the result of Check, serialisable as `verdict check --output json`.
type Report struct {
	Prometheus    PrometheusInfo       `json:"prometheus"`
	Window        Window               `json:"window"`
	KPIs          []KPIReport          `json:"kpis"`
	Preconditions []PreconditionReport `json:"preconditions"`
	// OK is true when no KPI has an error problem and every precondition holds: the
	// experiment can run.
	OK bool `json:"ok"`
}

// Check runs every KPI and precondition against Prometheus for the recent past and reports,
// per cluster, the values, the number of intervals with data and precise problems: no series
// for a cluster, series without the cluster label, duplicate series, NaN values, counter
// resets, too few intervals with traffic, failing preconditions with their values.
//
// An error is returned only when the check could not be carried out: Prometheus unreachable
// (errors.Is(err, ErrUnreachable)) or rejecting the credentials (ErrUnauthorized) — exit 1 —,
// an invalid request (ErrInvalidRequest; exit 2), or ctx ending.
// Everything else is in the Report; Report.OK false means the experiment should not start
// (exit 6).
func Check(ctx context.Context, src *Source, req CheckRequest) (*Report, error) {
	if req.Interval <= 0 || req.Interval%time.Millisecond != 0 {
		return nil, fmt.Errorf("%w: interval %s must be a positive whole number of milliseconds", ErrInvalidRequest, req.Interval)
	}
	if req.MinIntervals <= 0 {
		req.MinIntervals = 10
	}
	n := max(30, 2*req.MinIntervals)
	if req.Lookback > 0 {
		n = int((req.Lookback + req.Interval - 1) / req.Interval)
	}
	if req.End.IsZero() {
		req.End = time.Now()
	}
	var verrs []error
	for _, k := range req.KPIs {
		verrs = append(verrs, k.Validate())
	}
	exps := make([]Expect, len(req.Preconditions))
	for i, p := range req.Preconditions {
		e, err := ParseExpect(p.Expect)
		if err != nil {
			verrs = append(verrs, fmt.Errorf("precondition %q: %w", p.Name, err))
		}
		exps[i] = e
	}
	if err := errors.Join(verrs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	r := AlignedRange(req.End, req.Interval, n)

	version, err := src.Version(ctx)
	if err != nil {
		if fatal(err) {
			return nil, err
		}
		version = "unknown (" + err.Error() + ")"
	}
	rep := &Report{
		Prometheus:    PrometheusInfo{Address: src.Address(), Version: version},
		Window:        Window{Start: r.Start, End: r.End, Interval: model.Duration(req.Interval).String()},
		KPIs:          []KPIReport{},
		Preconditions: []PreconditionReport{},
		OK:            true,
	}
	for _, k := range req.KPIs {
		kr, err := checkKPI(ctx, src, k, r, req)
		if err != nil {
			return nil, err
		}
		for _, p := range kr.Problems {
			if p.Severity == SeverityError {
				rep.OK = false
			}
		}
		rep.KPIs = append(rep.KPIs, kr)
	}
	for i, p := range req.Preconditions {
		pr, err := checkPrecondition(ctx, src, p, exps[i], r.End)
		if err != nil {
			return nil, err
		}
		if !pr.OK {
			rep.OK = false
		}
		rep.Preconditions = append(rep.Preconditions, pr)
	}
	return rep, nil
}

// fatal errors abort a check: nothing more can be learned.
func fatal(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrUnauthorized) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func checkKPI(ctx context.Context, src *Source, k KPI, r Range, req CheckRequest) (KPIReport, error) {
	kr := KPIReport{Name: k.Name, Kind: k.Kind, Clusters: map[string]ClusterReport{}, Problems: []Problem{}}
	add := func(sev, cluster, format string, args ...any) {
		kr.Problems = append(kr.Problems, Problem{Severity: sev, Cluster: cluster, Message: fmt.Sprintf(format, args...)})
	}
	d, err := src.Fetch(ctx, k, r, req.Clusters)
	if err != nil && !errors.Is(err, ErrNoData) {
		if fatal(err) {
			return kr, err
		}
		add(SeverityError, "", "%v", err)
		return kr, nil
	}
	for _, w := range d.Warnings {
		add(SeverityWarning, "", "Prometheus warning: %s", w)
	}
	roleQuery := map[string]string{}
	for _, rq := range k.roles() {
		roleQuery[rq.role] = rq.query
	}
	sparse, err := checkSamples(ctx, src, k, r, req, add)
	if err != nil {
		return kr, err
	}
	for _, c := range sortedKeys(d.Clusters) {
		cd := d.Clusters[c]
		cr := summarise(k, cd)
		kr.Clusters[c] = cr
		switch {
		case len(cd.NoSeries) == len(k.roles()) && sparse[c]:
			continue // explained by the sample spacing, reported above
		case len(cd.NoSeries) == len(k.roles()):
			add(SeverityError, c, "no series for this cluster in the last %d intervals; is %s=%q right, and is the cluster scraped?", r.Len(), src.ClusterLabel(), c)
			continue
		case len(cd.NoSeries) > 0 && !(len(cd.NoSeries) == 1 && cd.NoSeries[0] == RoleEvents):
			for _, role := range cd.NoSeries {
				add(SeverityError, c, "no series from the %s query %q", role, roleQuery[role])
			}
		}
		if k.Kind == KindRatio && cd.EventsAbsent > 0 {
			add(SeverityWarning, c, "the events query returned no series in %d interval(s) where the total had data; counted as 0 events", cd.EventsAbsent)
		}
		for _, nf := range groupNonFinite(cd.NonFinite) {
			add(SeverityWarning, c, "%s", nf)
		}
		if cr.Intervals < req.MinIntervals {
			add(SeverityError, c, "too little traffic: %d of the last %d intervals have data, fewer than the minimum of %d", cr.Intervals, r.Len(), req.MinIntervals)
		}
	}
	for _, rq := range k.roles() {
		resets, err := src.CounterResets(ctx, rq.query, r)
		if err != nil {
			if fatal(err) {
				return kr, err
			}
			add(SeverityWarning, "", "could not look for counter resets in the %s query: %v", rq.role, err)
			continue
		}
		for _, sel := range sortedKeys(resets) {
			for _, c := range sortedKeys(resets[sel]) {
				if len(req.Clusters) > 0 && d.Clusters[c] == nil {
					continue
				}
				add(SeverityWarning, c, "%d counter reset(s) of %s in the window (a restart?); increase() compensates, but check the pods", resets[sel][c], sel)
			}
		}
	}
	return kr, nil
}

func groupNonFinite(nfs []NonFinite) []string {
	count := map[string]int{}
	var order []string
	for _, nf := range nfs {
		k := fmt.Sprintf("%s is %s", nf.Role, strconv.FormatFloat(nf.Value, 'g', -1, 64))
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, fmt.Sprintf("%d interval(s) dropped because %s (a division by zero?)", count[k], k))
	}
	return out
}

// summarise totals a cluster's intervals. Only intervals with traffic count toward
// Intervals (total > 0 for ratio, count > 0 for latency, requests > 0 for throughput).
func summarise(k KPI, cd *ClusterData) ClusterReport {
	cr := ClusterReport{Values: map[string]float64{}}
	ivs := cd.Intervals
	if len(ivs) == 0 {
		return cr // no data is not zero: no values at all
	}
	switch k.Kind {
	case KindRatio:
		var e, t float64
		for _, iv := range ivs {
			e += iv.Events
			t += iv.Total
			if iv.Total > 0 {
				cr.Intervals++
			}
		}
		cr.Values[RoleEvents], cr.Values[RoleTotal] = e, t
		if t > 0 {
			cr.Values["ratio"] = e / t
		}
	case KindLatency:
		var cnt, sum float64
		buckets := map[float64]float64{}
		for _, iv := range ivs {
			cnt += iv.Count
			sum += iv.Sum
			for _, b := range iv.Buckets {
				buckets[b.UpperBound] += b.Count
			}
			if iv.Count > 0 {
				cr.Intervals++
			}
		}
		cr.Values[RoleCount] = cnt
		if k.Sum != "" {
			cr.Values[RoleSum] = sum
			if cnt > 0 {
				cr.Values["mean"] = sum / cnt
			}
		}
		for ub, c := range buckets {
			cr.Values["le="+formatLE(ub)] = c
		}
	case KindGauge:
		if len(ivs) > 0 {
			mn, mx, s := math.Inf(1), math.Inf(-1), 0.0
			for _, iv := range ivs {
				mn, mx, s = math.Min(mn, iv.Value), math.Max(mx, iv.Value), s+iv.Value
			}
			cr.Values["mean"] = s / float64(len(ivs))
			cr.Values["min"], cr.Values["max"] = mn, mx
			cr.Values["last"] = ivs[len(ivs)-1].Value
		}
		cr.Intervals = len(ivs)
	case KindThroughput:
		var s float64
		for _, iv := range ivs {
			s += iv.Value
			if iv.Value > 0 {
				cr.Intervals++
			}
		}
		cr.Values["requests"] = s
		if cr.Intervals > 0 {
			cr.Values["per_interval"] = s / float64(cr.Intervals)
		}
	}
	return cr
}

func formatLE(ub float64) string {
	if math.IsInf(ub, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(ub, 'g', -1, 64)
}

func checkPrecondition(ctx context.Context, src *Source, p Precondition, e Expect, at time.Time) (PreconditionReport, error) {
	pr := PreconditionReport{Name: p.Name, Expect: e.String()}
	v, warnings, err := src.Instant(ctx, p.Query, at)
	if err != nil {
		if fatal(err) {
			return pr, err
		}
		pr.Problem = err.Error()
		return pr, nil
	}
	var vals []float64
	switch v := v.(type) {
	case *model.Scalar:
		vals = []float64{float64(v.Value)}
	case model.Vector:
		for _, s := range v {
			vals = append(vals, float64(s.Value))
		}
	default:
		pr.Problem = fmt.Sprintf("query returned a %s, want a scalar or an instant vector", typeName(v))
		return pr, nil
	}
	if len(vals) == 0 {
		pr.Problem = "query returned no data; a precondition cannot pass without a value"
		return pr, nil
	}
	pr.OK = true
	shown := vals[0]
	for _, x := range vals {
		if !e.Holds(x) {
			if pr.OK {
				shown = x // report the first failing value
			}
			pr.OK = false
		}
	}
	switch {
	case math.IsNaN(shown) || math.IsInf(shown, 0):
		pr.Problem = fmt.Sprintf("value is %v", shown)
	default:
		pr.Value = &shown
		if !pr.OK {
			pr.Problem = fmt.Sprintf("value %s does not satisfy %s", strconv.FormatFloat(shown, 'g', -1, 64), e)
		}
	}
	if len(vals) > 1 && !pr.OK {
		msg := fmt.Sprintf("query returned %d series; every one must satisfy %s", len(vals), e)
		pr.Problem = strings.TrimPrefix(pr.Problem+"; "+msg, "; ")
	}
	if len(warnings) > 0 {
		pr.Problem = strings.TrimPrefix(pr.Problem+"; Prometheus warning: "+strings.Join(warnings, "; "), "; ")
	}
	return pr, nil
}

// checkSamples reports, for the experiment's clusters, samples too far apart for the
// interval and series that stopped being updated, and returns the clusters whose samples
// are so sparse that the KPI cannot have data.
func checkSamples(ctx context.Context, src *Source, k KPI, r Range, req CheckRequest, add func(sev, cluster, format string, args ...any)) (map[string]bool, error) {
	want := map[string]bool{}
	for _, c := range req.Clusters {
		want[c] = true
	}
	sparse := map[string]bool{}
	seen := map[string]bool{}
	for _, rq := range k.roles() {
		health, err := src.SampleHealth(ctx, rq.query, r, req.End)
		if err != nil {
			if fatal(err) {
				return nil, err
			}
			add(SeverityWarning, "", "could not measure sample spacing of the %s query: %v", rq.role, err)
			continue
		}
		for _, sel := range sortedKeys(health) {
			for _, c := range sortedKeys(health[sel]) {
				h := health[sel][c]
				key := sel + "\x00" + c
				if (len(want) > 0 && !want[c]) || seen[key] {
					continue
				}
				seen[key] = true
				sp, iv := h.Spacing.Round(time.Second), model.Duration(req.Interval)
				safe := model.Duration((2 * h.Spacing).Round(time.Second))
				switch {
				case h.Short == h.Intervals:
					sparse[c] = true
					add(SeverityError, c, "samples of %s are about %s apart, as far as the %s interval: every interval holds one sample, and increase() and rate() need two, so they return nothing; make analysis.interval at least %s or scrape (federate) more often",
						sel, sp, iv, safe)
				case h.Short > 0:
					add(SeverityWarning, c, "samples of %s are about %s apart: %d of %d intervals hold one sample and will be dropped; an interval of %s or more is safer",
						sel, sp, h.Short, h.Intervals, safe)
				}
				if h.Age > StaleAge(h.Spacing) {
					add(SeverityError, c, "the newest sample of %s is %s old while samples arrive about every %s: the series is stale (its target, or a federation leaf, stopped reporting) and the run would be blind",
						sel, h.Age.Round(time.Second), sp)
				}
			}
		}
	}
	return sparse, nil
}
