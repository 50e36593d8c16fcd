package recorded_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
	"github.com/verdict-dev/verdict/metrics/recorded"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

const header = `{"verdictReplay": 1, "interval": "1m", "start": "2026-11-23T08:00:00Z", "weights": {"c1": 0.33, "c2": 0.33, "c3": 0.34}}`

// The experiment's KPIs as the engine hands them to a KPI source (queries rendered).
var (
	errorRate = metrics.KPI{Name: "error-rate", Kind: metrics.KindRatio, Events: "e", Total: "t"}
	latency   = metrics.KPI{Name: "latency", Kind: metrics.KindLatency, Buckets: "b", Sum: "s", Count: "c"}
	slowOnly  = metrics.KPI{Name: "slow", Kind: metrics.KindLatency, Buckets: "b"}
	cpu       = metrics.KPI{Name: "cpu", Kind: metrics.KindGauge, Query: "q"}
	rps       = metrics.KPI{Name: "rps", Kind: metrics.KindThroughput, Query: "q"}
)

func parse(t *testing.T, lines ...string) *recorded.File {
	t.Helper()
	f, err := recorded.Parse("rec.jsonl", strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestParseErrors(t *testing.T) {
	rec := func(fields string) string {
		return `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "error-rate", ` + fields + `}`
	}
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"empty", nil, "rec.jsonl: empty file: the first line must be the header"},
		{"no header", []string{rec(`"events": 1, "total": 10`)}, `rec.jsonl:1: verdictReplay: the first line must be the header`},
		{"not JSON", []string{header, `{"end": `}, "rec.jsonl:2: not a JSON object: unexpected end of JSON input"},
		{"JSON array", []string{header, `[1, 2]`}, "rec.jsonl:2: not a JSON object"},
		{"future version", []string{strings.Replace(header, `"verdictReplay": 1`, `"verdictReplay": 2`, 1)}, "rec.jsonl:1: verdictReplay: version 2 is not supported: this verdict reads version 1"},
		{"bad interval", []string{strings.Replace(header, `"1m"`, `"1 minute"`, 1)}, `rec.jsonl:1: interval: "1 minute" is not a duration such as 1m or 30s`},
		{"bad start", []string{strings.Replace(header, `2026-11-23T08:00:00Z`, `yesterday`, 1)}, `rec.jsonl:1: start: "yesterday" is not an RFC 3339 time`},
		{"bad weight", []string{strings.Replace(header, `"c3": 0.34`, `"c3": 34`, 1)}, "rec.jsonl:1: weights.c3: must be a weight between 0 and 1, got 34"},
		{"no weights", []string{`{"verdictReplay": 1, "interval": "1m", "start": "2026-11-23T08:00:00Z"}`}, "rec.jsonl:1: weights: missing"},
		{"second header", []string{header, header}, "rec.jsonl:2: verdictReplay: a second header (the header is on line 1)"},
		{"typo", []string{header, "", rec(`"evnets": 1, "total": 10`)}, `rec.jsonl:3: evnets: unknown field in a KPI record; did you mean "events"?`},
		{"string count", []string{header, rec(`"events": "1", "total": 10`)}, `rec.jsonl:2: events: must be a number, got "1"`},
		{"negative", []string{header, rec(`"events": -1, "total": 10`)}, "rec.jsonl:2: events: must not be negative, got -1"},
		{"no total", []string{header, rec(`"events": 1`)}, "rec.jsonl:2: total: missing: a ratio record needs events and total"},
		{"no values", []string{header, rec(`"note": 1`)}, "rec.jsonl:2: note: unknown field"},
		{"nothing", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "error-rate"}`}, "rec.jsonl:2: kpi: no values: give events and total"},
		{"mixed", []string{header, rec(`"events": 1, "total": 10, "value": 3`)}, "rec.jsonl:2: value: a record holds one kind of KPI"},
		{"no cluster", []string{header, `{"end": "2026-11-23T08:01:00Z", "kpi": "x", "value": 1}`}, "rec.jsonl:2: cluster: missing"},
		{"unaligned end", []string{header, `{"end": "2026-11-23T08:01:30Z", "cluster": "c1", "kpi": "cpu", "value": 1}`},
			"rec.jsonl:2: end: 2026-11-23T08:01:30Z is not an interval end: ends are multiples of the interval (1m) since the Unix epoch, e.g. 2026-11-23T08:01:00Z"},
		{"duplicate", []string{header, rec(`"events": 1, "total": 10`), rec(`"events": 2, "total": 10`)},
			"rec.jsonl:3: end: KPI error-rate, cluster c1, interval ending 2026-11-23T08:01:00Z is already recorded on line 2"},
		{"latency without count", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "slow": 3}`}, "rec.jsonl:2: count: missing"},
		{"latency without buckets", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 3, "sum": 1}`}, "rec.jsonl:2: buckets: missing"},
		{"slow above count", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 3, "slow": 4}`}, "rec.jsonl:2: slow: 4 slow requests out of a count of 3"},
		{"buckets not cumulative", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 100, "buckets": {"0.1": 80, "0.5": 15, "+Inf": 100}}`},
			"rec.jsonl:2: buckets.0.5: 15 is less than 80 at le 0.1: bucket counts are cumulative"},
		{"+Inf is not count", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 100, "buckets": {"0.1": 80, "+Inf": 90}}`},
			"rec.jsonl:2: buckets.+Inf: 90 differs from count 100"},
		{"bad le", []string{header, `{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 100, "buckets": {"fast": 80, "+Inf": 100}}`},
			`rec.jsonl:2: buckets.fast: "fast" is not an upper bound`},
		{"instant without value", []string{header, `{"instant": "pods", "at": "2026-11-23T08:00:00Z"}`}, "rec.jsonl:2: value: missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := recorded.Parse("rec.jsonl", strings.NewReader(strings.Join(tc.lines, "\n")))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
			var le *recorded.LineError
			if !errors.As(err, &le) {
				t.Errorf("%T is not a *LineError", err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := recorded.Parse("rec.jsonl", strings.NewReader(header+"\n{\"end\": 1}\n{\"value\": \"x\"}\n"))
	for _, want := range []string{"rec.jsonl:2: end: must be a string", "rec.jsonl:2: cluster: missing", "rec.jsonl:3: value: must be a number"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

func TestNewChecksAgainstTheExperiment(t *testing.T) {
	rec := func(kpi, fields string) string {
		return fmt.Sprintf(`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": %q, %s}`, kpi, fields)
	}
	kpis := []recorded.KPI{{KPI: errorRate}, {KPI: latency, SlowerThan: 500 * time.Millisecond}, {KPI: slowOnly}}
	all := []string{"c1", "c2", "c3"}
	cases := []struct {
		name  string
		lines []string
		opts  recorded.Options
		want  string
	}{
		{"kind", []string{header, rec("error-rate", `"value": 1`)}, recorded.Options{KPIs: kpis[:1]},
			"rec.jsonl:2: kpi: error-rate is a ratio KPI in the experiment: its records give events and total"},
		{"sum", []string{header, rec("latency", `"count": 10, "slow": 1`)}, recorded.Options{KPIs: kpis[1:2]},
			"rec.jsonl:2: sum: missing: KPI latency has a sum query in the experiment"},
		{"slowerThan", []string{header, rec("slow", `"count": 10, "slow": 1`)}, recorded.Options{KPIs: kpis[2:]},
			"rec.jsonl:2: slow: KPI slow has no slowerThan in the experiment: give buckets instead"},
		{"no records", []string{header, rec("error-rate", `"events": 1, "total": 10`)}, recorded.Options{KPIs: kpis},
			"rec.jsonl: no records for KPI latency: the experiment judges it"},
		{"a cluster without records", []string{header, rec("error-rate", `"events": 1, "total": 10`)}, recorded.Options{KPIs: kpis[:1], Clusters: all},
			"rec.jsonl: no records for KPI error-rate on cluster(s) c2, c3"},
		{"interval", []string{header}, recorded.Options{Interval: 2 * time.Minute},
			"rec.jsonl:1: interval: 1m, but the experiment's analysis interval is 2m"},
		{"weights", []string{header}, recorded.Options{Clusters: []string{"c1", "c2", "c4"}},
			"rec.jsonl:1: weights: no weight for cluster c4"},
		{"foreign weight", []string{header}, recorded.Options{Clusters: []string{"c1", "c2", "c4"}},
			"rec.jsonl:1: weights.c3: not a cluster of the experiment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := recorded.New(parse(t, tc.lines...), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

func TestNotes(t *testing.T) {
	f := parse(t, header,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "cpu", "value": 1}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c9", "kpi": "cpu", "value": 1}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "mem", "value": 1}`)
	s, err := recorded.New(f, recorded.Options{KPIs: []recorded.KPI{{KPI: cpu}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rec.jsonl: 1 record(s) of KPI mem ignored: the experiment has no KPI of that name"}
	if got := s.Notes(); !slices.Equal(got, want) {
		t.Errorf("notes = %q, want %q", got, want)
	}
}

// dump renders Data canonically (NaN equal to NaN), for comparisons.
func dump(d *metrics.Data) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %v–%v/%v\n", d.KPI, d.Kind, d.Range.Start, d.Range.End, d.Range.Interval)
	for _, c := range slices.Sorted(func(yield func(string) bool) {
		for c := range d.Clusters {
			if !yield(c) {
				return
			}
		}
	}) {
		cd := d.Clusters[c]
		fmt.Fprintf(&b, "%s: missing %v noSeries %v nonFinite %v\n", c, cd.Missing, cd.NoSeries, cd.NonFinite)
		for _, iv := range cd.Intervals {
			fmt.Fprintf(&b, "  %+v\n", iv)
		}
	}
	return b.String()
}

// TestFetchMatchesPrometheus writes what metrics.Source.Fetch reads from Prometheus (the
// metrics tests' fixture fleet, with a cluster that stops reporting, a counter reset and a
// cluster with no error series) as a recorded file, reads it back, and checks that the
// recorded Source returns the same Data for every kind of KPI.
func TestFetchMatchesPrometheus(t *testing.T) {
	end := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	prom, err := embedded.New(embedded.Options{ScrapeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Close() })
	if _, err := prom.LoadOpenMetrics(strings.NewReader(fixture.OpenMetrics(end))); err != nil {
		t.Fatal(err)
	}
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	live, err := metrics.New(metrics.Options{Address: prom.URL(), RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(live.Close)
	kpis := []metrics.KPI{
		{Name: "error-rate", Kind: metrics.KindRatio,
			Events: `sum by (cluster) (increase(http_requests_total{code="500"}[1m]))`,
			Total:  `sum by (cluster) (increase(http_requests_total[1m]))`},
		{Name: "latency", Kind: metrics.KindLatency,
			Buckets: `sum by (cluster, le) (increase(http_request_duration_seconds_bucket[1m]))`,
			Sum:     `sum by (cluster) (increase(http_request_duration_seconds_sum[1m]))`,
			Count:   `sum by (cluster) (increase(http_request_duration_seconds_count[1m]))`},
		{Name: "buckets-only", Kind: metrics.KindLatency,
			Buckets: `sum by (cluster, le) (increase(http_request_duration_seconds_bucket[1m]))`},
		{Name: "cpu", Kind: metrics.KindGauge, Query: `avg by (cluster) (avg_over_time(cpu_usage[1m]))`},
		{Name: "throughput", Kind: metrics.KindThroughput, Query: `sum by (cluster) (increase(http_requests_total[1m]))`},
	}
	ctx := context.Background()
	rng := metrics.AlignedRange(end, time.Minute, 40)
	var buf bytes.Buffer
	w, err := recorded.NewWriter(&buf, recorded.Header{Interval: time.Minute, Start: end.Add(-20 * time.Minute), Weights: map[string]float64{fixture.Canary: 0.5, fixture.Base1: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*metrics.Data{}
	var opts recorded.Options
	for _, k := range kpis {
		d, err := live.Fetch(ctx, k, rng, fixture.AllClusters)
		if err != nil {
			t.Fatalf("live %s: %v", k.Name, err)
		}
		want[k.Name] = d
		if err := w.Data(d); err != nil {
			t.Fatal(err)
		}
		opts.KPIs = append(opts.KPIs, recorded.KPI{KPI: k})
	}
	f, err := recorded.Parse("fixture.jsonl", &buf)
	if err != nil {
		t.Fatal(err)
	}
	src, err := recorded.New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kpis {
		t.Run(k.Name, func(t *testing.T) {
			got, err := src.Fetch(ctx, k, rng, fixture.AllClusters)
			if err != nil {
				t.Fatal(err)
			}
			w := want[k.Name]
			// A recorded file cannot tell an absent events series from zero events: the
			// cluster without errors has events 0 and an events series.
			if k.Kind == metrics.KindRatio {
				cd := w.Clusters[fixture.NoErrors]
				if cd.EventsAbsent == 0 || !slices.Equal(cd.NoSeries, []string{metrics.RoleEvents}) {
					t.Fatalf("fixture changed: %s has EventsAbsent %d, NoSeries %v", fixture.NoErrors, cd.EventsAbsent, cd.NoSeries)
				}
				cd.EventsAbsent, cd.NoSeries = 0, nil
			}
			if g, w := dump(got), dump(w); g != w {
				t.Errorf("recorded Fetch differs from Prometheus's:\n--- recorded\n%s--- prometheus\n%s", g, w)
			}
			if len(w.Clusters[fixture.Stopped].Missing) == 0 {
				t.Errorf("fixture changed: %s has no missing intervals", fixture.Stopped)
			}
		})
	}
}

func TestFetchShapes(t *testing.T) {
	f := parse(t, header,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "error-rate", "events": 12, "total": 10000}`,
		`{"end": "2026-11-23T08:03:00Z", "cluster": "c1", "kpi": "error-rate", "events": 0, "total": 9000}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "latency", "count": 10000, "sum": 1234.5, "buckets": {"0.1": 8000, "0.25": 9500}}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c2", "kpi": "latency", "count": 10000, "sum": 1000, "slow": 500}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "slow", "count": 200, "buckets": {"0.5": 190, "+Inf": 200}}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "cpu", "value": 0.31}`,
		`{"end": "2026-11-23T08:01:00Z", "cluster": "c1", "kpi": "rps", "value": 12000}`,
	)
	src, err := recorded.New(f, recorded.Options{KPIs: []recorded.KPI{{KPI: errorRate}, {KPI: latency, SlowerThan: 250 * time.Millisecond}, {KPI: slowOnly}, {KPI: cpu}, {KPI: rps}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rng := metrics.Range{Start: t0, End: t0.Add(3 * time.Minute), Interval: time.Minute}
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	nan := math.NaN()
	b := func(ub, n float64) metrics.Bucket { return metrics.Bucket{UpperBound: ub, Count: n} }
	inf := math.Inf(1)
	cases := []struct {
		kpi      metrics.KPI
		clusters []string
		want     map[string]*metrics.ClusterData
	}{
		{errorRate, []string{"c1", "c2"}, map[string]*metrics.ClusterData{
			"c1": {Intervals: []metrics.Interval{{End: at(1), Events: 12, Total: 10000, Sum: nan}, {End: at(3), Events: 0, Total: 9000, Sum: nan}}, Missing: []time.Time{at(2)}},
			"c2": {Missing: []time.Time{at(1), at(2), at(3)}, NoSeries: []string{"events", "total"}},
		}},
		// +Inf is added from count; "slow" becomes a bucket at slowerThan.
		{latency, nil, map[string]*metrics.ClusterData{
			"c1": {Intervals: []metrics.Interval{{End: at(1), Buckets: []metrics.Bucket{b(0.1, 8000), b(0.25, 9500), b(inf, 10000)}, Count: 10000, Sum: 1234.5}}, Missing: []time.Time{at(2), at(3)}},
			"c2": {Intervals: []metrics.Interval{{End: at(1), Buckets: []metrics.Bucket{b(0.25, 9500), b(inf, 10000)}, Count: 10000, Sum: 1000}}, Missing: []time.Time{at(2), at(3)}},
		}},
		// Without a sum query Sum is NaN, as Prometheus's Fetch leaves it.
		{slowOnly, []string{"c1"}, map[string]*metrics.ClusterData{
			"c1": {Intervals: []metrics.Interval{{End: at(1), Buckets: []metrics.Bucket{b(0.5, 190), b(inf, 200)}, Count: 200, Sum: nan}}, Missing: []time.Time{at(2), at(3)}},
		}},
		{cpu, []string{"c1"}, map[string]*metrics.ClusterData{
			"c1": {Intervals: []metrics.Interval{{End: at(1), Value: 0.31, Sum: nan}}, Missing: []time.Time{at(2), at(3)}},
		}},
		{rps, []string{"c1"}, map[string]*metrics.ClusterData{
			"c1": {Intervals: []metrics.Interval{{End: at(1), Value: 12000, Sum: nan}}, Missing: []time.Time{at(2), at(3)}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.kpi.Name, func(t *testing.T) {
			got, err := src.Fetch(ctx, tc.kpi, rng, tc.clusters)
			if err != nil {
				t.Fatal(err)
			}
			want := &metrics.Data{KPI: tc.kpi.Name, Kind: tc.kpi.Kind, Range: rng, Clusters: tc.want}
			if g, w := dump(got), dump(want); g != w {
				t.Errorf("got\n%swant\n%s", g, w)
			}
		})
	}

	t.Run("no data", func(t *testing.T) {
		later := metrics.Range{Start: at(10), End: at(12), Interval: time.Minute}
		d, err := src.Fetch(ctx, errorRate, later, []string{"c1"})
		if !errors.Is(err, metrics.ErrNoData) || d == nil || len(d.Clusters["c1"].Missing) != 2 {
			t.Errorf("Fetch after the records: %v, %+v; want ErrNoData with the Data", err, d)
		}
	})
	t.Run("unaligned range", func(t *testing.T) {
		_, err := src.Fetch(ctx, errorRate, metrics.Range{Start: t0.Add(time.Second), End: at(2), Interval: time.Minute}, nil)
		if err == nil || !strings.Contains(err.Error(), "not aligned") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("another interval", func(t *testing.T) {
		_, err := src.Fetch(ctx, errorRate, metrics.Range{Start: t0, End: at(4), Interval: 2 * time.Minute}, nil)
		if err == nil || !strings.Contains(err.Error(), "interval 2m asked, but rec.jsonl is recorded at 1m") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("kind", func(t *testing.T) {
		_, err := src.Fetch(ctx, metrics.KPI{Name: "cpu", Kind: metrics.KindRatio, Events: "e", Total: "t"}, rng, nil)
		if err == nil || !strings.Contains(err.Error(), `KPI "cpu" is a ratio KPI, but rec.jsonl records value for it`) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestInstant(t *testing.T) {
	f := parse(t, header,
		`{"instant": "pods", "at": "2026-11-23T07:00:00Z", "value": 3}`,
		`{"instant": "pods", "at": "2026-11-23T08:30:00Z", "value": 1}`,
		`{"instant": "versions", "at": "2026-11-23T07:00:00Z", "cluster": "c2", "value": 2}`,
		`{"instant": "versions", "at": "2026-11-23T07:00:00Z", "cluster": "c1", "value": 1}`,
	)
	src, err := recorded.New(f, recorded.Options{Queries: map[string]string{`count(kube_pod_info)`: "pods"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cases := []struct {
		query string
		at    time.Time
		want  string
	}{
		{`count(kube_pod_info)`, t0, "{} => 3"},
		{"pods", t0.Add(29 * time.Minute), "{} => 3"},
		{"pods", t0.Add(30 * time.Minute), "{} => 1"},
		{"versions", t0, `{cluster="c1"} => 1, {cluster="c2"} => 2`},
	}
	for _, tc := range cases {
		v, _, err := src.Instant(ctx, tc.query, tc.at)
		if err != nil {
			t.Fatalf("%s at %s: %v", tc.query, tc.at, err)
		}
		var parts []string
		for _, s := range v.(model.Vector) {
			parts = append(parts, fmt.Sprintf("%s => %v", s.Metric, s.Value))
		}
		if got := strings.Join(parts, ", "); got != tc.want {
			t.Errorf("%s at %s = %s, want %s", tc.query, tc.at.Format(time.TimeOnly), got, tc.want)
		}
	}
	v, _, err := src.Instant(ctx, "pods", t0.Add(-2*time.Hour))
	if !errors.Is(err, metrics.ErrNoData) || len(v.(model.Vector)) != 0 || !strings.Contains(err.Error(), `rec.jsonl has no instant record for "pods" at or before 2026-11-23T06:00:00Z`) {
		t.Errorf("before any record: %v, %v", v, err)
	}
}
