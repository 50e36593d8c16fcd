package metrics_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

func TestAlignedRange(t *testing.T) {
	tests := []struct {
		name      string
		end       time.Time
		interval  time.Duration
		n         int
		wantStart time.Time
		wantEnd   time.Time
	}{
		{"mid-interval", time.Date(2026, 1, 1, 12, 3, 40, 0, time.UTC), time.Minute, 3,
			time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 12, 3, 0, 0, time.UTC)},
		{"on a boundary", time.Date(2026, 1, 1, 12, 3, 0, 0, time.UTC), time.Minute, 1,
			time.Date(2026, 1, 1, 12, 2, 0, 0, time.UTC), time.Date(2026, 1, 1, 12, 3, 0, 0, time.UTC)},
		// 7m does not divide a day: alignment is to the Unix epoch, as Prometheus steps are.
		{"7 minutes", time.Unix(7*60*1000+30, 0).UTC(), 7 * time.Minute, 2,
			time.Unix(7*60*998, 0).UTC(), time.Unix(7*60*1000, 0).UTC()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := metrics.AlignedRange(tt.end, tt.interval, tt.n)
			if !r.Start.Equal(tt.wantStart) || !r.End.Equal(tt.wantEnd) || r.Len() != tt.n {
				t.Errorf("got %v–%v (%d), want %v–%v", r.Start, r.End, r.Len(), tt.wantStart, tt.wantEnd)
			}
			ends := r.Ends()
			if len(ends) != tt.n || !ends[len(ends)-1].Equal(tt.wantEnd) || !ends[0].Equal(tt.wantStart.Add(tt.interval)) {
				t.Errorf("ends %v", ends)
			}
		})
	}
}

func TestFetchRatio(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 25)
	d, err := src.Fetch(context.Background(), errorRate, r, fixture.AllClusters)
	if err != nil {
		t.Fatal(err)
	}
	// Steady clusters: every interval counts exactly four scrapes' worth, with no overlap
	// between intervals, across base2's counter reset too.
	for _, c := range []string{fixture.Canary, fixture.Base1, fixture.Base2} {
		cd := d.Clusters[c]
		if len(cd.Intervals) != 25 || len(cd.Missing) != 0 {
			t.Fatalf("%s: %d intervals, %d missing", c, len(cd.Intervals), len(cd.Missing))
		}
		for i, iv := range cd.Intervals {
			wantE, wantT := fixture.PerInterval(fixture.Errors[c]), fixture.PerInterval(fixture.Requests[c])
			if math.Abs(iv.Events-wantE) > 1e-9 || math.Abs(iv.Total-wantT) > 1e-9 {
				t.Errorf("%s interval %d (%s): %v/%v, want %v/%v", c, i, iv.End.Format("15:04"), iv.Events, iv.Total, wantE, wantT)
			}
			if !iv.End.Equal(r.Ends()[i]) {
				t.Errorf("%s interval %d ends %v, want %v", c, i, iv.End, r.Ends()[i])
			}
		}
	}
	// A cluster with no error series: zero events, counted and flagged, not "no data".
	ne := d.Clusters[fixture.NoErrors]
	if len(ne.Intervals) != 25 || ne.EventsAbsent != 25 || ne.Intervals[0].Events != 0 {
		t.Errorf("noerrors: %d intervals, %d events absent, first %+v", len(ne.Intervals), ne.EventsAbsent, ne.Intervals[0])
	}
	// A cluster that stopped reporting 30 minutes ago: no data, never zero.
	st := d.Clusters[fixture.Stopped]
	if len(st.Intervals) != 0 || len(st.Missing) != 25 || len(st.NoSeries) != 2 {
		t.Errorf("stopped: %d intervals, %d missing, no series from %v", len(st.Intervals), len(st.Missing), st.NoSeries)
	}
	// Before it stopped it has data; the interval in which it stopped is partial but present.
	d, err = src.Fetch(context.Background(), errorRate, metrics.AlignedRange(fixtureEnd.Add(-25*time.Minute), fixture.Interval, 10), []string{fixture.Stopped})
	if err != nil {
		t.Fatal(err)
	}
	st = d.Clusters[fixture.Stopped]
	if len(st.Intervals) != 5 || len(st.Missing) != 5 || st.Intervals[0].Total != fixture.PerInterval(fixture.Requests[fixture.Stopped]) {
		t.Errorf("stopped before it stopped: %+v", st)
	}
	for _, m := range st.Missing {
		if !m.After(fixtureEnd.Add(-fixture.StopBefore)) {
			t.Errorf("stopped: missing interval %v before it stopped", m)
		}
	}
}

func TestFetchLatency(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 5)
	d, err := src.Fetch(context.Background(), latency, r, []string{fixture.Canary, fixture.Base1})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Clusters) != 2 {
		t.Errorf("clusters %v: only the requested ones", d.Clusters)
	}
	for c, cd := range d.Clusters {
		if len(cd.Intervals) != 5 {
			t.Fatalf("%s: %d intervals", c, len(cd.Intervals))
		}
		iv := cd.Intervals[2]
		want := fixture.Buckets[c]
		bounds := []float64{0.1, 0.5, 1, math.Inf(1)}
		if len(iv.Buckets) != 4 {
			t.Fatalf("%s: buckets %v", c, iv.Buckets)
		}
		for i, b := range iv.Buckets {
			if b.UpperBound != bounds[i] || math.Abs(b.Count-fixture.PerInterval(want[i])) > 1e-9 {
				t.Errorf("%s bucket %d: %+v, want le %v count %v", c, i, b, bounds[i], fixture.PerInterval(want[i]))
			}
		}
		if math.Abs(iv.Count-fixture.PerInterval(want[3])) > 1e-9 || math.Abs(iv.Sum-fixture.PerInterval(fixture.SumPerHit[c])) > 1e-9 {
			t.Errorf("%s: count %v sum %v", c, iv.Count, iv.Sum)
		}
	}

	// Without a count query the count is the +Inf bucket; without a sum query Sum is NaN.
	d, err = src.Fetch(context.Background(), metrics.KPI{Name: "l", Kind: metrics.KindLatency, Buckets: latency.Buckets}, r, []string{fixture.Canary})
	if err != nil {
		t.Fatal(err)
	}
	iv := d.Clusters[fixture.Canary].Intervals[0]
	if iv.Count != fixture.PerInterval(fixture.Buckets[fixture.Canary][3]) || !math.IsNaN(iv.Sum) {
		t.Errorf("buckets only: count %v sum %v", iv.Count, iv.Sum)
	}
}

func TestFetchGaugeAndThroughput(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 5)
	d, err := src.Fetch(context.Background(), cpu, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Clusters) != 4 { // all clusters found, the stopped one has no recent data
		t.Errorf("clusters: %v", d.Clusters)
	}
	for _, iv := range d.Clusters[fixture.Canary].Intervals {
		if iv.Value < 0.2 || iv.Value > 1.2 {
			t.Errorf("cpu %v out of the fixture's range", iv.Value)
		}
	}
	d, err = src.Fetch(context.Background(), throughput, r, []string{fixture.Base1})
	if err != nil {
		t.Fatal(err)
	}
	if iv := d.Clusters[fixture.Base1].Intervals[4]; iv.Value != fixture.PerInterval(fixture.Requests[fixture.Base1]) {
		t.Errorf("throughput %v", iv.Value)
	}
}

func TestFetchProblems(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 5)
	ctx := context.Background()
	queryErr := func(t *testing.T, kpi metrics.KPI, wantQuery, wantMsg string) {
		t.Helper()
		_, err := src.Fetch(ctx, kpi, r, nil)
		var qe *metrics.QueryError
		if !errors.As(err, &qe) {
			t.Fatalf("want a *QueryError, got %v", err)
		}
		if qe.Query != wantQuery || qe.Type != metrics.TypeInvalidResult || !strings.Contains(qe.Msg, wantMsg) {
			t.Errorf("got %v", err)
		}
		if !strings.Contains(err.Error(), wantQuery) {
			t.Errorf("the error does not name the query: %v", err)
		}
	}
	t.Run("no cluster label", func(t *testing.T) {
		q := `sum(increase(http_requests_total[1m]))`
		queryErr(t, metrics.KPI{Name: "x", Kind: metrics.KindThroughput, Query: q}, q, `has no "cluster" label`)
	})
	t.Run("duplicate series", func(t *testing.T) {
		q := `increase(http_requests_total[1m])`
		queryErr(t, metrics.KPI{Name: "x", Kind: metrics.KindThroughput, Query: q}, q, `two series for cluster=`)
	})
	t.Run("buckets without le", func(t *testing.T) {
		q := `sum by (cluster) (increase(http_request_duration_seconds_bucket[1m]))`
		queryErr(t, metrics.KPI{Name: "x", Kind: metrics.KindLatency, Buckets: q}, q, `no "le" label`)
	})
	t.Run("no data", func(t *testing.T) {
		d, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: metrics.KindGauge, Query: `sum by (cluster) (nonexistent)`}, r, []string{"canary"})
		if !errors.Is(err, metrics.ErrNoData) || d == nil || len(d.Clusters["canary"].Missing) != 5 {
			t.Errorf("got %v, %+v", err, d)
		}
	})
	t.Run("NaN", func(t *testing.T) {
		q := `sum by (cluster) (increase(idle_total[1m])) / sum by (cluster) (increase(idle_total[1m]))`
		d, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: metrics.KindGauge, Query: q}, r, []string{"canary"})
		if !errors.Is(err, metrics.ErrNoData) {
			t.Errorf("all-NaN: want ErrNoData, got %v", err)
		}
		nf := d.Clusters["canary"].NonFinite
		if len(nf) != 5 || !math.IsNaN(nf[0].Value) || nf[0].Role != metrics.RoleValue {
			t.Errorf("NaN intervals not reported: %+v", nf)
		}
	})
	t.Run("warnings", func(t *testing.T) {
		q := `histogram_quantile(0.9, sum by (cluster) (rate(cpu_usage[1m])))`
		d, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: metrics.KindGauge, Query: q}, r, []string{"canary"})
		if !errors.Is(err, metrics.ErrNoData) || len(d.Warnings) == 0 {
			t.Errorf("want Prometheus's warning, got %v, %v", err, d)
		}
	})
	t.Run("bad PromQL", func(t *testing.T) {
		_, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: metrics.KindGauge, Query: `sum by (cluster) (`}, r, nil)
		var qe *metrics.QueryError
		if !errors.As(err, &qe) || qe.Type != "bad_data" {
			t.Errorf("got %v", err)
		}
	})
	t.Run("invalid KPI and range", func(t *testing.T) {
		if _, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: "median"}, r, nil); err == nil {
			t.Error("unknown kind: want an error")
		}
		if _, err := src.Fetch(ctx, metrics.KPI{Name: "x", Kind: metrics.KindRatio, Events: "a"}, r, nil); err == nil || !strings.Contains(err.Error(), "missing total") {
			t.Errorf("missing total: %v", err)
		}
		bad := metrics.Range{Start: r.Start.Add(time.Second), End: r.End, Interval: time.Minute}
		if _, err := src.Fetch(ctx, cpu, bad, nil); err == nil || !strings.Contains(err.Error(), "not aligned") {
			t.Errorf("misaligned range: %v", err)
		}
	})
}

func TestCounterResets(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	got, err := src.CounterResets(context.Background(), errorRate.Total, metrics.AlignedRange(fixtureEnd, fixture.Interval, 30))
	if err != nil {
		t.Fatal(err)
	}
	// base2 restarted once; both of its http_requests_total series (200 and 500) reset.
	if len(got) != 1 || len(got["http_requests_total"]) != 1 || got["http_requests_total"][fixture.Base2] != 2 {
		t.Errorf("resets %v", got)
	}
	got, err = src.CounterResets(context.Background(), errorRate.Total, metrics.AlignedRange(fixtureEnd, fixture.Interval, 10))
	if err != nil || len(got) != 0 {
		t.Errorf("after the reset: %v, %v", got, err)
	}
}

func TestCounterSelectors(t *testing.T) {
	got, err := metrics.CounterSelectors(`sum by (cluster) (rate(a_total{x="1"}[5m] offset 1m)) / sum(increase(b_total[1m])) + avg(c) + irate(a_total{x="1"}[1m] offset 1m)`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`a_total{x="1"} offset 1m`, `b_total`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := metrics.CounterSelectors("sum("); err == nil {
		t.Error("want a parse error")
	}
}

func BenchmarkFetchLatency(b *testing.B) {
	src := source(b, metrics.Options{Address: fleet(b, fixtureEnd).URL()})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 60)
	for b.Loop() {
		if _, err := src.Fetch(context.Background(), latency, r, nil); err != nil {
			b.Fatal(err)
		}
	}
}
