package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Kind is a KPI's kind; it decides which queries a KPI has and how its intervals are read
// (docs/statistics.md §2).
type Kind string

// The KPI kinds.
const (
	// KindRatio: events out of a total per interval (errors/requests).
	KindRatio Kind = "ratio"
	// KindLatency: histogram bucket increases per le, with optional sum and count.
	KindLatency Kind = "latency"
	// KindGauge: one value per interval (CPU per request, an interval mean).
	KindGauge Kind = "gauge"
	// KindThroughput: a request count per interval.
	KindThroughput Kind = "throughput"
)

// Query roles: which of a KPI's queries a value came from. They key ClusterReport.Values and
// name the query in problems.
const (
	RoleEvents  = "events"
	RoleTotal   = "total"
	RoleBuckets = "buckets"
	RoleSum     = "sum"
	RoleCount   = "count"
	RoleValue   = "value"
)

// KPI is one key performance indicator with its already-templated PromQL (the interval
// substituted into `[...]`). Each query must return one series per cluster, grouped by the
// cluster label — e.g. `sum by (cluster) (increase(x[1m]))` — and, for Buckets, per cluster
// and le.
type KPI struct {
	// Name identifies the KPI in reports and errors.
	Name string
	// Kind decides which of the query fields are used.
	Kind Kind
	// Events and Total are the ratio's numerator and denominator counts.
	Events, Total string
	// Buckets is the latency histogram's bucket increases per le; Sum and Count are optional
	// (Count defaults to the +Inf bucket).
	Buckets, Sum, Count string
	// Query is the gauge's value or the throughput's request count.
	Query string
}

type roleQuery struct {
	role  string
	query string
	byLE  bool
}

func (k KPI) roles() []roleQuery {
	var out []roleQuery
	add := func(role, q string, byLE bool) {
		if q != "" {
			out = append(out, roleQuery{role, q, byLE})
		}
	}
	switch k.Kind {
	case KindRatio:
		add(RoleEvents, k.Events, false)
		add(RoleTotal, k.Total, false)
	case KindLatency:
		add(RoleBuckets, k.Buckets, true)
		add(RoleSum, k.Sum, false)
		add(RoleCount, k.Count, false)
	case KindGauge, KindThroughput:
		add(RoleValue, k.Query, false)
	}
	return out
}

// Validate reports a KPI whose kind is unknown or whose required queries are empty.
func (k KPI) Validate() error {
	var missing []string
	switch k.Kind {
	case KindRatio:
		if k.Events == "" {
			missing = append(missing, "events")
		}
		if k.Total == "" {
			missing = append(missing, "total")
		}
	case KindLatency:
		if k.Buckets == "" {
			missing = append(missing, "buckets")
		}
	case KindGauge, KindThroughput:
		if k.Query == "" {
			missing = append(missing, "query")
		}
	default:
		return fmt.Errorf("KPI %q: unknown kind %q (want ratio, latency, gauge or throughput)", k.Name, k.Kind)
	}
	if len(missing) > 0 {
		return fmt.Errorf("KPI %q (%s): missing %s query", k.Name, k.Kind, strings.Join(missing, " and "))
	}
	return nil
}

// Range is a run of non-overlapping intervals aligned to multiples of Interval since the
// Unix epoch: interval k covers (Start+(k-1)·Interval, Start+k·Interval]. Range queries are
// evaluated at the interval ends, so `increase(x[Interval])` at each end counts exactly that
// interval and no sample is counted twice.
type Range struct {
	// Start is the start of the first interval, End the end of the last; both multiples
	// of Interval.
	Start, End time.Time
	// Interval is the length of one interval: the step of the range query and the range
	// of `increase(...[I])` in the KPI's queries.
	Interval time.Duration
}

// AlignedRange is the range of the n whole intervals ending at or before end.
func AlignedRange(end time.Time, interval time.Duration, n int) Range {
	step := interval.Milliseconds()
	if step <= 0 {
		return Range{End: end, Interval: interval}
	}
	ms := end.UnixMilli()
	e := ms - ((ms%step)+step)%step
	return Range{
		Start:    time.UnixMilli(e - int64(n)*step).UTC(),
		End:      time.UnixMilli(e).UTC(),
		Interval: interval,
	}
}

// First is the end of the first interval, where a range query starts.
func (r Range) First() time.Time { return r.Start.Add(r.Interval) }

// Len is the number of intervals.
func (r Range) Len() int {
	if r.Interval <= 0 {
		return 0
	}
	return int(r.End.Sub(r.Start) / r.Interval)
}

// Ends lists the interval ends, oldest first.
func (r Range) Ends() []time.Time {
	out := make([]time.Time, 0, r.Len())
	for t := r.First(); !t.After(r.End); t = t.Add(r.Interval) {
		out = append(out, t)
	}
	return out
}

func (r Range) validate() error {
	step := r.Interval.Milliseconds()
	switch {
	case step <= 0 || r.Interval%time.Millisecond != 0:
		return fmt.Errorf("interval %s must be a positive whole number of milliseconds", r.Interval)
	case r.Start.UnixMilli()%step != 0 || r.End.UnixMilli()%step != 0:
		return fmt.Errorf("range %s–%s is not aligned to %s boundaries (use AlignedRange)", r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339), r.Interval)
	case !r.End.After(r.Start):
		return errors.New("range is empty: end must be after start")
	}
	return nil
}

// Bucket is one histogram bucket's count of observations ≤ UpperBound in an interval.
type Bucket struct {
	UpperBound float64 // the le label as a number; +Inf for the last bucket
	Count      float64 // cumulative: observations ≤ UpperBound
}

// Interval holds one cluster's values for one interval. Which fields are set depends on the
// KPI's kind: Events and Total for ratio; Buckets, Count and Sum for latency (Sum is NaN when
// the KPI has no sum query); Value for gauge and throughput.
type Interval struct {
	End           time.Time // the interval is (End-Interval, End]
	Events, Total float64   // ratio
	Buckets       []Bucket  // latency, sorted by UpperBound
	Sum, Count    float64   // latency
	Value         float64   // gauge, throughput
}

// NonFinite records an interval dropped because a query returned NaN or ±Inf for it (0/0 in
// a gauge, for example). It is reported, never silently turned into a number.
type NonFinite struct {
	End   time.Time // the interval's end
	Role  string    // which query (RoleEvents, RoleValue, …)
	Value float64   // NaN, +Inf or -Inf
}

// ClusterData is one cluster's values for a KPI over a Range.
type ClusterData struct {
	// Intervals with usable data, oldest first. A missing interval means no data, never zero.
	Intervals []Interval
	// Missing lists the interval ends without data.
	Missing []time.Time
	// NonFinite lists intervals dropped for NaN or Inf values.
	NonFinite []NonFinite
	// NoSeries lists the roles whose query returned no series at all for this cluster.
	NoSeries []string
	// EventsAbsent counts ratio intervals where the total had a value but the events query
	// returned no series; they are counted as zero events (a counter that has never been
	// incremented often does not exist yet).
	EventsAbsent int
}

// Data is a KPI's values over a Range, per cluster.
type Data struct {
	KPI   string // the KPI's name
	Kind  Kind
	Range Range // what was queried
	// Clusters has an entry for every requested cluster, with or without data.
	Clusters map[string]*ClusterData
	// Warnings are Prometheus's warnings for the KPI's queries.
	Warnings []string
}

// series is one role's values: cluster → le key ("" unless by le) → time (ms) → value.
type series map[string]map[string]map[int64]float64

// Fetch queries a KPI over r, one range query per role, and returns each cluster's values
// per interval. clusters limits the result to the experiment's clusters (nil: all found).
// A malformed result — a series without the cluster label, two series for one cluster —
// is a *QueryError naming the query. When no requested cluster has any usable interval,
// Fetch returns the Data together with an error matching ErrNoData.
func (s *Source) Fetch(ctx context.Context, kpi KPI, r Range, clusters []string) (*Data, error) {
	if err := kpi.Validate(); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("KPI %q: %w", kpi.Name, err)
	}
	want := map[string]bool{}
	for _, c := range clusters {
		want[c] = true
	}
	roles := kpi.roles()
	got := map[string]series{}
	var warnings []string
	for _, rq := range roles {
		m, w, err := s.Range(ctx, rq.query, r)
		warnings = append(warnings, w...)
		if err != nil {
			return nil, err
		}
		sr, err := s.index(rq, m)
		if err != nil {
			return nil, err
		}
		got[rq.role] = sr
	}
	d := &Data{KPI: kpi.Name, Kind: kpi.Kind, Range: r, Clusters: map[string]*ClusterData{}, Warnings: dedupe(warnings)}
	if len(clusters) == 0 {
		for _, sr := range got {
			for c := range sr {
				want[c] = true
			}
		}
	}
	found := false
	for c := range want {
		cd := &ClusterData{}
		for _, rq := range roles {
			if len(got[rq.role][c]) == 0 {
				cd.NoSeries = append(cd.NoSeries, rq.role)
			}
		}
		for _, end := range r.Ends() {
			assemble(kpi, cd, got, c, end)
		}
		if len(cd.Intervals) > 0 {
			found = true
		}
		d.Clusters[c] = cd
	}
	if !found {
		return d, fmt.Errorf("KPI %q: %w for clusters %s in %d intervals up to %s", kpi.Name, ErrNoData, strings.Join(sortedKeys(want), ", "), r.Len(), r.End.Format(time.RFC3339))
	}
	return d, nil
}

// index checks a role's matrix and indexes it by cluster (and le).
func (s *Source) index(rq roleQuery, m model.Matrix) (series, error) {
	cl := model.LabelName(s.opts.ClusterLabel)
	out := series{}
	seen := map[string]model.Metric{}
	for _, ss := range m {
		c, ok := ss.Metric[cl]
		if !ok || c == "" {
			by := s.opts.ClusterLabel
			if rq.byLE {
				by += ", le"
			}
			return nil, &QueryError{Query: rq.query, Type: TypeInvalidResult, Msg: fmt.Sprintf(
				"series %s has no %q label; group the %s query by it, e.g. sum by (%s) (...)", ss.Metric, s.opts.ClusterLabel, rq.role, by)}
		}
		le := ""
		if rq.byLE {
			v, ok := ss.Metric[model.BucketLabel]
			if !ok {
				return nil, &QueryError{Query: rq.query, Type: TypeInvalidResult, Msg: fmt.Sprintf(
					"series %s has no \"le\" label; the buckets query must keep it, e.g. sum by (%s, le) (increase(x_bucket[1m]))", ss.Metric, s.opts.ClusterLabel)}
			}
			ub, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return nil, &QueryError{Query: rq.query, Type: TypeInvalidResult, Msg: fmt.Sprintf("series %s: le %q is not a number", ss.Metric, v)}
			}
			le = strconv.FormatFloat(ub, 'g', -1, 64)
		}
		key := string(c) + "\xff" + le
		if prev, dup := seen[key]; dup {
			return nil, &QueryError{Query: rq.query, Type: TypeInvalidResult, Msg: fmt.Sprintf(
				"two series for %s=%q: %s and %s; aggregate them, e.g. sum by (%s) (...)", s.opts.ClusterLabel, c, prev, ss.Metric, s.opts.ClusterLabel)}
		}
		seen[key] = ss.Metric
		byLE := out[string(c)]
		if byLE == nil {
			byLE = map[string]map[int64]float64{}
			out[string(c)] = byLE
		}
		vals := make(map[int64]float64, len(ss.Values))
		for _, p := range ss.Values {
			vals[int64(p.Timestamp)] = float64(p.Value)
		}
		byLE[le] = vals
	}
	return out, nil
}

func assemble(kpi KPI, cd *ClusterData, got map[string]series, c string, end time.Time) {
	t := end.UnixMilli()
	val := func(role string) (float64, bool) {
		v, ok := got[role][c][""][t]
		return v, ok
	}
	iv := Interval{End: end, Sum: math.NaN()}
	bad := func(role string, v float64) bool {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			cd.NonFinite = append(cd.NonFinite, NonFinite{End: end, Role: role, Value: v})
			return true
		}
		return false
	}
	missing := func() { cd.Missing = append(cd.Missing, end) }
	switch kpi.Kind {
	case KindRatio:
		total, ok := val(RoleTotal)
		if !ok {
			missing()
			return
		}
		events, ok := val(RoleEvents)
		if !ok {
			cd.EventsAbsent++
		}
		if bad(RoleTotal, total) || bad(RoleEvents, events) {
			return
		}
		iv.Events, iv.Total = events, total
	case KindLatency:
		for le, vals := range got[RoleBuckets][c] {
			v, ok := vals[t]
			if !ok {
				continue
			}
			ub, _ := strconv.ParseFloat(le, 64)
			iv.Buckets = append(iv.Buckets, Bucket{UpperBound: ub, Count: v})
		}
		if len(iv.Buckets) == 0 {
			missing()
			return
		}
		sort.Slice(iv.Buckets, func(i, j int) bool { return iv.Buckets[i].UpperBound < iv.Buckets[j].UpperBound })
		for _, b := range iv.Buckets {
			if bad(RoleBuckets, b.Count) {
				return
			}
		}
		if kpi.Count != "" {
			v, ok := val(RoleCount)
			if !ok {
				missing()
				return
			}
			iv.Count = v
		} else if last := iv.Buckets[len(iv.Buckets)-1]; math.IsInf(last.UpperBound, 1) {
			iv.Count = last.Count
		} else {
			missing()
			return
		}
		if kpi.Sum != "" {
			v, ok := val(RoleSum)
			if !ok {
				missing()
				return
			}
			iv.Sum = v
			if bad(RoleSum, v) {
				return
			}
		}
		if bad(RoleCount, iv.Count) {
			return
		}
	case KindGauge, KindThroughput:
		v, ok := val(RoleValue)
		if !ok {
			missing()
			return
		}
		if bad(RoleValue, v) {
			return
		}
		iv.Value = v
	}
	cd.Intervals = append(cd.Intervals, iv)
}

func dedupe(xs []string) []string {
	if len(xs) == 0 {
		return nil
	}
	out := slices.Clone(xs)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
