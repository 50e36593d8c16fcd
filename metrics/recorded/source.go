package recorded

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/metrics"
)

// KPI is one of the experiment's KPIs as a Source needs to know it: the queries the engine
// fetches it with (only which are set matters) and, for a latency, the limit that records
// giving "slow" count above.
type KPI struct {
	metrics.KPI
	// SlowerThan is a latency KPI's slowerThan; zero when it has none.
	SlowerThan time.Duration
}

// Options bind a File to an experiment. Zero fields skip their checks.
type Options struct {
	// KPIs are the experiment's KPIs: each needs records for every cluster, and every record
	// must fit its KPI's kind. Records of other KPIs are ignored (see Notes). Without KPIs,
	// every KPI in the file is served with the kind its records have (value: gauge or
	// throughput), and "slow" records cannot be read.
	KPIs []KPI
	// Clusters are the experiment's clusters: each needs a weight in the header and records
	// for every KPI.
	Clusters []string
	// Interval is the experiment's analysis interval, which the file's must equal.
	Interval time.Duration
	// ClusterLabel names the cluster in instant query results. Default "cluster".
	ClusterLabel string
	// Queries maps an instant query, as the engine renders it, to the name its instant
	// records use (the precondition's name). A query not in it is looked up by its text.
	Queries map[string]string
}

// Source serves a recorded File as Prometheus serves live data: it implements the engine's
// KPI source (Fetch and Instant), returning exactly the shapes metrics.Source returns, so
// the engine cannot tell recorded data from live data. It is safe for concurrent use (it
// never changes after New).
type Source struct {
	file     *File
	opts     Options
	kpis     map[string]*kpiData
	instants map[string][]Instant // by name, sorted by At
	notes    []string
}

type kpiData struct {
	shape     Shape
	byCluster map[string]map[int64]stored // cluster → interval end (ms) → values
}

// stored is one record ready to serve; hasSum tells a latency's sum of 0 from none.
type stored struct {
	iv     metrics.Interval
	hasSum bool
}

func shapeOf(k metrics.Kind) Shape {
	switch k {
	case metrics.KindRatio:
		return ShapeRatio
	case metrics.KindLatency:
		return ShapeLatency
	case metrics.KindGauge, metrics.KindThroughput:
		return ShapeValue
	}
	return ""
}

func shapeHint(s Shape) string {
	switch s {
	case ShapeRatio:
		return "events and total"
	case ShapeLatency:
		return "count with buckets or slow"
	}
	return "value"
}

// New checks f against the experiment that opts describe and returns a Source serving it.
// Problems are *LineErrors naming the line, joined, up to 20.
func New(f *File, opts Options) (*Source, error) {
	if opts.ClusterLabel == "" {
		opts.ClusterLabel = "cluster"
	}
	s := &Source{file: f, opts: opts, kpis: map[string]*kpiData{}, instants: map[string][]Instant{}}
	p := &problems{file: f.Name}
	h := f.Header
	if opts.Interval > 0 && h.Interval != opts.Interval {
		p.add(f.HeaderLine, "interval", "%s, but the experiment's analysis interval is %s: record the data at the experiment's interval",
			formatDuration(h.Interval), formatDuration(opts.Interval))
	}
	if len(opts.Clusters) > 0 {
		for _, c := range opts.Clusters {
			if _, ok := h.Weights[c]; !ok {
				p.add(f.HeaderLine, "weights", "no weight for cluster %s (the experiment's clusters are %s)", c, strings.Join(opts.Clusters, ", "))
			}
		}
		for _, c := range slices.Sorted(maps.Keys(h.Weights)) {
			if !slices.Contains(opts.Clusters, c) {
				p.add(f.HeaderLine, "weights."+c, "not a cluster of the experiment (its clusters are %s)", strings.Join(opts.Clusters, ", "))
			}
		}
	}
	spec := map[string]KPI{}
	for _, k := range opts.KPIs {
		spec[k.Name] = k
	}
	ignored := map[string]int{}
	foreign := map[string]int{}
	for _, r := range f.Records {
		k, known := spec[r.KPI]
		shape := r.Shape()
		if !known && len(opts.KPIs) > 0 {
			ignored[r.KPI]++
			continue
		}
		if known {
			if want := shapeOf(k.Kind); shape != want {
				p.add(r.Line, "kpi", "%s is a %s KPI in the experiment: its records give %s", r.KPI, k.Kind, shapeHint(want))
				continue
			}
			if shape == ShapeLatency && r.Sum == nil && k.Sum != "" {
				p.add(r.Line, "sum", "missing: KPI %s has a sum query in the experiment (its mean is judged), so every record needs sum", r.KPI)
				continue
			}
		}
		if r.Slow != nil && k.SlowerThan <= 0 {
			if known {
				p.add(r.Line, "slow", "KPI %s has no slowerThan in the experiment: give buckets instead", r.KPI)
			} else {
				p.add(r.Line, "slow", "no slowerThan is known for KPI %s: give buckets instead", r.KPI)
			}
			continue
		}
		if len(opts.Clusters) > 0 && !slices.Contains(opts.Clusters, r.Cluster) {
			foreign[r.Cluster]++
		}
		kd := s.kpis[r.KPI]
		if kd == nil {
			kd = &kpiData{shape: shape, byCluster: map[string]map[int64]stored{}}
			s.kpis[r.KPI] = kd
		} else if kd.shape != shape {
			p.add(r.Line, "kpi", "%s has %s records elsewhere in the file; this one gives %s", r.KPI, shapeHint(kd.shape), shapeHint(shape))
			continue
		}
		byEnd := kd.byCluster[r.Cluster]
		if byEnd == nil {
			byEnd = map[int64]stored{}
			kd.byCluster[r.Cluster] = byEnd
		}
		byEnd[r.End.UnixMilli()] = toInterval(r, k.SlowerThan)
	}
	for _, k := range opts.KPIs {
		kd := s.kpis[k.Name]
		if kd == nil {
			p.add(0, "", "no records for KPI %s: the experiment judges it, so the file needs its values", k.Name)
			continue
		}
		var none []string
		for _, c := range opts.Clusters {
			if len(kd.byCluster[c]) == 0 {
				none = append(none, c)
			}
		}
		if len(none) > 0 {
			p.add(0, "", "no records for KPI %s on cluster(s) %s", k.Name, strings.Join(none, ", "))
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(ignored)) {
		s.notes = append(s.notes, fmt.Sprintf("%s: %d record(s) of KPI %s ignored: the experiment has no KPI of that name", f.Name, ignored[name], name))
	}
	for _, c := range slices.Sorted(maps.Keys(foreign)) {
		s.notes = append(s.notes, fmt.Sprintf("%s: %d record(s) of cluster %s ignored: not a cluster of the experiment", f.Name, foreign[c], c))
	}
	for _, in := range f.Instants {
		s.instants[in.Name] = append(s.instants[in.Name], in)
	}
	for _, list := range s.instants {
		sort.SliceStable(list, func(i, j int) bool { return list[i].At.Before(list[j].At) })
	}
	return s, nil
}

// toInterval turns a record into the metrics.Interval Prometheus would give for it.
func toInterval(r Record, slowerThan time.Duration) stored {
	iv := metrics.Interval{End: r.End, Sum: math.NaN()}
	st := stored{}
	switch r.Shape() {
	case ShapeRatio:
		iv.Events, iv.Total = *r.Events, *r.Total
	case ShapeValue:
		iv.Value = *r.Value
	case ShapeLatency:
		iv.Count = *r.Count
		if r.Sum != nil {
			iv.Sum, st.hasSum = *r.Sum, true
		}
		if r.Slow != nil {
			// One bucket at the limit reproduces the slow count exactly: the engine counts
			// requests above the largest bound at or below slowerThan as slow.
			iv.Buckets = []metrics.Bucket{{UpperBound: slowerThan.Seconds(), Count: *r.Count - *r.Slow}, {UpperBound: math.Inf(1), Count: *r.Count}}
			break
		}
		for le, n := range r.Buckets {
			ub, _ := strconv.ParseFloat(le, 64)
			iv.Buckets = append(iv.Buckets, metrics.Bucket{UpperBound: ub, Count: n})
		}
		sort.Slice(iv.Buckets, func(i, j int) bool { return iv.Buckets[i].UpperBound < iv.Buckets[j].UpperBound })
		if !math.IsInf(iv.Buckets[len(iv.Buckets)-1].UpperBound, 1) {
			iv.Buckets = append(iv.Buckets, metrics.Bucket{UpperBound: math.Inf(1), Count: *r.Count})
		}
	}
	st.iv = iv
	return st
}

// File is the file the Source serves.
func (s *Source) File() *File { return s.file }

// Notes says which records New ignored (KPIs or clusters the experiment does not have).
func (s *Source) Notes() []string { return slices.Clone(s.notes) }

// HasInstant reports whether the file has instant records under name.
func (s *Source) HasInstant(name string) bool { return len(s.instants[name]) > 0 }

// Fetch returns the KPI's recorded values over r, per cluster, as metrics.Source.Fetch
// does: an entry for every requested cluster (nil: every cluster recorded), the intervals
// with a record oldest first, the others in Missing, and every query role in NoSeries for a
// cluster without any record in r. When no cluster has a record in r the Data comes with an
// error matching metrics.ErrNoData. A recorded file cannot tell an absent events series
// from zero events: EventsAbsent is always 0.
func (s *Source) Fetch(_ context.Context, kpi metrics.KPI, r metrics.Range, clusters []string) (*metrics.Data, error) {
	if err := kpi.Validate(); err != nil {
		return nil, err
	}
	if err := s.checkRange(r); err != nil {
		return nil, fmt.Errorf("KPI %q: %w", kpi.Name, err)
	}
	kd := s.kpis[kpi.Name]
	if kd != nil && kd.shape != shapeOf(kpi.Kind) {
		return nil, fmt.Errorf("KPI %q is a %s KPI, but %s records %s for it", kpi.Name, kpi.Kind, s.file.Name, shapeHint(kd.shape))
	}
	want := clusters
	if len(want) == 0 && kd != nil {
		want = slices.Sorted(maps.Keys(kd.byCluster))
	}
	d := &metrics.Data{KPI: kpi.Name, Kind: kpi.Kind, Range: r, Clusters: map[string]*metrics.ClusterData{}}
	found := false
	for _, c := range want {
		cd := &metrics.ClusterData{}
		var byEnd map[int64]stored
		if kd != nil {
			byEnd = kd.byCluster[c]
		}
		seen := false
		for _, end := range r.Ends() {
			st, ok := byEnd[end.UnixMilli()]
			if !ok {
				cd.Missing = append(cd.Missing, end)
				continue
			}
			seen = true
			iv := st.iv
			if kpi.Kind == metrics.KindLatency {
				if kpi.Sum != "" && !st.hasSum {
					cd.Missing = append(cd.Missing, end) // as Prometheus: the sum query has no value
					continue
				}
				if kpi.Sum == "" {
					iv.Sum = math.NaN()
				}
				iv.Buckets = slices.Clone(iv.Buckets)
			}
			iv.End = end
			cd.Intervals = append(cd.Intervals, iv)
		}
		if !seen {
			cd.NoSeries = roles(kpi)
		}
		if len(cd.Intervals) > 0 {
			found = true
		}
		d.Clusters[c] = cd
	}
	if !found {
		return d, fmt.Errorf("KPI %q: %w for clusters %s in %d intervals up to %s (recorded in %s)", kpi.Name, metrics.ErrNoData,
			strings.Join(slices.Sorted(slices.Values(want)), ", "), r.Len(), r.End.Format(time.RFC3339), s.file.Name)
	}
	return d, nil
}

// roles lists the query roles of a KPI, as metrics reports them in NoSeries.
func roles(k metrics.KPI) []string {
	var out []string
	add := func(role, q string) {
		if q != "" {
			out = append(out, role)
		}
	}
	switch k.Kind {
	case metrics.KindRatio:
		add(metrics.RoleEvents, k.Events)
		add(metrics.RoleTotal, k.Total)
	case metrics.KindLatency:
		add(metrics.RoleBuckets, k.Buckets)
		add(metrics.RoleSum, k.Sum)
		add(metrics.RoleCount, k.Count)
	default:
		add(metrics.RoleValue, k.Query)
	}
	return out
}

func (s *Source) checkRange(r metrics.Range) error {
	step := r.Interval.Milliseconds()
	switch {
	case step <= 0 || r.Interval%time.Millisecond != 0:
		return fmt.Errorf("interval %s must be a positive whole number of milliseconds", r.Interval)
	case r.Interval != s.file.Header.Interval:
		return fmt.Errorf("interval %s asked, but %s is recorded at %s", formatDuration(r.Interval), s.file.Name, formatDuration(s.file.Header.Interval))
	case r.Start.UnixMilli()%step != 0 || r.End.UnixMilli()%step != 0:
		return fmt.Errorf("range %s–%s is not aligned to %s boundaries (use AlignedRange)", r.Start.Format(time.RFC3339), r.End.Format(time.RFC3339), r.Interval)
	case !r.End.After(r.Start):
		return fmt.Errorf("range is empty: end must be after start")
	}
	return nil
}

// Instant answers an instant query from the file's instant records: the query's name is
// Options.Queries[query], else the query itself; the answer is the value of the latest
// record with that name at or before t (one sample per cluster when several records share
// that time), which holds until the next. Without such a record it returns an empty vector
// and an error matching metrics.ErrNoData that says which line to add.
func (s *Source) Instant(_ context.Context, query string, t time.Time) (model.Value, []string, error) {
	name := query
	if n, ok := s.opts.Queries[query]; ok {
		name = n
	}
	list := s.instants[name]
	i := sort.Search(len(list), func(i int) bool { return list[i].At.After(t) }) - 1
	if i < 0 {
		return model.Vector{}, nil, fmt.Errorf("%w: %s has no instant record for %q at or before %s; add a line such as {\"instant\": %q, \"at\": %q, \"value\": 1}",
			metrics.ErrNoData, s.file.Name, name, t.UTC().Format(time.RFC3339), name, s.file.Header.Start.Format(time.RFC3339))
	}
	at := list[i].At
	vec := model.Vector{}
	for j := i; j >= 0 && list[j].At.Equal(at); j-- {
		m := model.Metric{}
		if list[j].Cluster != "" {
			m[model.LabelName(s.opts.ClusterLabel)] = model.LabelValue(list[j].Cluster)
		}
		vec = append(vec, &model.Sample{Metric: m, Value: model.SampleValue(list[j].Value), Timestamp: model.TimeFromUnixNano(t.UnixNano())})
	}
	sort.Slice(vec, func(a, b int) bool { return vec[a].Metric.String() < vec[b].Metric.String() })
	return vec, nil, nil
}
