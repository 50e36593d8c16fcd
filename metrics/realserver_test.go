package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

// TestRealPrometheus runs the KPI source against a real Prometheus server (Debian's
// `prometheus` package in CI) and against the embedded one, over the same samples: the
// fixture's OpenMetrics file, loaded with promtool into the real server and with
// LoadOpenMetrics into the embedded one. Every KPI value must agree within 1e-9, and so must
// the Check reports. The one known difference — Prometheus 3 made range selectors left-open —
// is measured on a series with samples exactly on interval boundaries and checked against
// each version's documented semantics. Both servers also scrape one instrumented target.
func TestRealPrometheus(t *testing.T) {
	// Data up to the last whole minute, so that the real server keeps it (retention).
	end := metrics.AlignedRange(time.Now(), fixture.Interval, 0).End

	// A live target instrumented with client_golang, scraped by both servers.
	reg := prometheus.NewRegistry()
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "verdict_test_info", Help: "Constant."})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "verdict_test_latency_seconds", Help: "Latency.", Buckets: []float64{0.25, 1, 2}})
	reg.MustRegister(info, hist)
	info.Set(42)
	for _, v := range []float64{0.1, 0.5, 1.5, 3} {
		hist.Observe(v)
	}
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)
	live := map[string]string{"cluster": "live"}

	real := fixture.StartPrometheus(t, fixture.OpenMetrics(end), []fixture.Target{{HostPort: target.Listener.Addr().String(), Labels: live}})
	t.Logf("real server: %s at %s", real.Version, real.URL)
	major := 3
	if m := regexp.MustCompile(`version (\d+)\.`).FindStringSubmatch(real.Version); m != nil {
		major, _ = strconv.Atoi(m[1])
	}

	emb := fleet(t, end)
	if err := emb.AddTarget(target.URL, live); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	realSrc := source(t, metrics.Options{Address: real.URL})
	embSrc := source(t, metrics.Options{Address: emb.URL()})

	v, err := realSrc.Version(ctx)
	if err != nil {
		t.Fatalf("real server: %v", err)
	}
	t.Logf("real server reports version %s; embedded %s", v, embedded.Version)

	t.Run("KPIs agree", func(t *testing.T) {
		r := metrics.AlignedRange(end, fixture.Interval, 60)
		for _, kpi := range []metrics.KPI{errorRate, latency, cpu, throughput, randomRate} {
			want, err1 := realSrc.Fetch(ctx, kpi, r, fixture.AllClusters)
			got, err2 := embSrc.Fetch(ctx, kpi, r, fixture.AllClusters)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: real %v, embedded %v", kpi.Name, err1, err2)
			}
			compared := 0
			for _, c := range fixture.AllClusters {
				w, g := want.Clusters[c], got.Clusters[c]
				if len(w.Intervals) != len(g.Intervals) || len(w.Missing) != len(g.Missing) || w.EventsAbsent != g.EventsAbsent {
					t.Errorf("%s/%s: real %d intervals (%d missing), embedded %d (%d missing)", kpi.Name, c, len(w.Intervals), len(w.Missing), len(g.Intervals), len(g.Missing))
					continue
				}
				for i := range w.Intervals {
					compared += compareInterval(t, kpi.Name+"/"+c, w.Intervals[i], g.Intervals[i])
				}
			}
			if compared == 0 {
				t.Errorf("%s: nothing compared", kpi.Name)
			}
			t.Logf("%s: %d values equal within 1e-9", kpi.Name, compared)
		}
	})

	t.Run("counter resets agree", func(t *testing.T) {
		r := metrics.AlignedRange(end, fixture.Interval, 60)
		w, err1 := realSrc.CounterResets(ctx, errorRate.Total, r)
		g, err2 := embSrc.CounterResets(ctx, errorRate.Total, r)
		if err1 != nil || err2 != nil || fmt.Sprint(w) != fmt.Sprint(g) || w["http_requests_total"][fixture.Base2] != 2 {
			t.Errorf("real %v (%v), embedded %v (%v)", w, err1, g, err2)
		}
	})

	t.Run("check reports agree", func(t *testing.T) {
		for name, req := range map[string]metrics.CheckRequest{"healthy": healthyRequest(end), "broken": brokenRequest(end)} {
			w, err1 := metrics.Check(ctx, realSrc, req)
			g, err2 := metrics.Check(ctx, embSrc, req)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: real %v, embedded %v", name, err1, err2)
			}
			if w.OK != (name == "healthy") {
				t.Errorf("%s experiment: OK = %v on the real server", name, w.OK)
			}
			w.Prometheus, g.Prometheus = metrics.PrometheusInfo{}, metrics.PrometheusInfo{}
			// Values may differ in the last bits (Prometheus 3 sums avg_over_time with
			// Kahan compensation): compare numbers within 1e-9, everything else exactly.
			wj, _ := json.MarshalIndent(w, "", " ")
			gj, _ := json.MarshalIndent(g, "", " ")
			var wa, ga any
			_ = json.Unmarshal(wj, &wa)
			_ = json.Unmarshal(gj, &ga)
			if diff := jsonDiff("", wa, ga); diff != "" {
				t.Errorf("%s: reports differ at %s\nreal:\n%s\nembedded:\n%s", name, diff, wj, gj)
			}
		}
	})

	t.Run("range selector boundaries", func(t *testing.T) {
		// boundary_total has a sample exactly on every interval end. Prometheus 2 selects
		// [T-1m, T] (five samples: the delta needs no extrapolation); Prometheus 3 selects
		// (T-1m, T] (four samples: the delta over 45s is extrapolated to 60s).
		q := `sum by (cluster) (increase(boundary_total[1m]))`
		r := metrics.AlignedRange(end, fixture.Interval, 10)
		start := end.Add(-fixture.Span)
		value := func(at time.Time) float64 { // the fixture's boundary_total at a sample time
			n := int(at.Sub(start) / (15 * time.Second))
			v := 1000.0
			for j := 0; j <= n; j++ {
				v += float64(1 + 2*(j%2))
			}
			return v
		}
		v2 := func(T time.Time) float64 { return value(T) - value(T.Add(-time.Minute)) }
		v3 := func(T time.Time) float64 { return (value(T) - value(T.Add(-45*time.Second))) * 60 / 45 }
		for name, src := range map[string]*metrics.Source{"real": realSrc, "embedded": embSrc} {
			m, _, err := src.Range(ctx, q, r)
			if err != nil || len(m) != 1 || len(m[0].Values) != 10 {
				t.Fatalf("%s: %v %v", name, m, err)
			}
			semantics := v3
			if name == "real" && major == 2 {
				semantics = v2
			}
			for _, p := range m[0].Values {
				T := p.Timestamp.Time()
				if w := semantics(T); !approxEqual(float64(p.Value), w) {
					t.Errorf("%s at %s: %v, want %v (Prometheus 2: %v, 3: %v)", name, T.Format("15:04"), p.Value, w, v2(T), v3(T))
				}
			}
			t.Logf("%s: increase over an interval with boundary samples = %v (Prometheus 2 semantics give %v, Prometheus 3 give %v)",
				name, m[0].Values[0].Value, v2(m[0].Values[0].Timestamp.Time()), v3(m[0].Values[0].Timestamp.Time()))
		}
	})

	t.Run("both scrape an instrumented target", func(t *testing.T) {
		for range 2 {
			if err := emb.Scrape(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Wait for the real server's first scrapes (it scrapes every second).
		for i := 0; ; i++ {
			val, _, err := realSrc.Instant(ctx, `up{cluster="live"} == 1`, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if len(val.(model.Vector)) == 1 {
				break
			}
			if i > 600 {
				t.Fatal("the real server never scraped the target")
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, q := range []string{
			`verdict_test_info{cluster="live"}`,
			`sum by (cluster) (verdict_test_latency_seconds_count)`,
			`sum by (cluster) (verdict_test_latency_seconds_sum)`,
		} {
			w := instantValues(t, realSrc, q, nil)
			g := instantValues(t, embSrc, q, nil)
			if fmt.Sprint(w) != fmt.Sprint(g) || len(w) != 1 {
				t.Errorf("%s: real %v, embedded %v", q, w, g)
			}
		}
		// Bucket counts agree by bound; the le strings may not: Prometheus 3 (and the
		// embedded server) normalise le="1" to "1.0", Prometheus 2 keeps the exposition's.
		q := `verdict_test_latency_seconds_bucket{cluster="live"}`
		w := instantValues(t, realSrc, q, []string{"le"})
		g := instantValues(t, embSrc, q, []string{"le"})
		if fmt.Sprint(byBound(w)) != fmt.Sprint(byBound(g)) || len(w) != 4 {
			t.Errorf("buckets: real %v, embedded %v", w, g)
		}
		t.Logf("le labels: real %v, embedded %v", sortedLabels(w), sortedLabels(g))
		if major == 2 {
			if _, ok := w["1"]; !ok {
				t.Errorf("Prometheus 2 should keep le=\"1\": %v", w)
			}
		}
		if _, ok := g["1.0"]; !ok {
			t.Errorf("the embedded server should normalise le to \"1.0\": %v", g)
		}
	})

	t.Run("real server stopped", func(t *testing.T) {
		real.Stop()
		src := source(t, metrics.Options{Address: real.URL, MaxAttempts: 2})
		_, err := metrics.Check(ctx, src, healthyRequest(end))
		if want := "cannot reach Prometheus at " + real.URL + ": connection refused"; err == nil || err.Error() != want || !errors.Is(err, metrics.ErrUnreachable) {
			t.Errorf("got %v, want %q", err, want)
		}
	})
}

func approxEqual(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func compareInterval(t *testing.T, what string, w, g metrics.Interval) int {
	t.Helper()
	n := 0
	eq := func(field string, a, b float64) {
		n++
		if !approxEqual(a, b) {
			t.Errorf("%s at %s: %s real %v, embedded %v", what, w.End.Format("15:04"), field, a, b)
		}
	}
	if !w.End.Equal(g.End) {
		t.Errorf("%s: interval ends %v vs %v", what, w.End, g.End)
	}
	eq("events", w.Events, g.Events)
	eq("total", w.Total, g.Total)
	eq("value", w.Value, g.Value)
	eq("count", w.Count, g.Count)
	eq("sum", w.Sum, g.Sum)
	if len(w.Buckets) != len(g.Buckets) {
		t.Errorf("%s: %d vs %d buckets", what, len(w.Buckets), len(g.Buckets))
		return n
	}
	for i := range w.Buckets {
		eq("le="+fmt.Sprint(w.Buckets[i].UpperBound), w.Buckets[i].Count, g.Buckets[i].Count)
		if w.Buckets[i].UpperBound != g.Buckets[i].UpperBound {
			t.Errorf("%s: bucket bounds differ", what)
		}
	}
	return n
}

// instantValues runs an instant query and keys the values by the given labels.
func instantValues(t *testing.T, src *metrics.Source, q string, by []string) map[string]float64 {
	t.Helper()
	val, _, err := src.Instant(context.Background(), q, time.Time{})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out := map[string]float64{}
	for _, s := range val.(model.Vector) {
		var key []string
		for _, l := range by {
			key = append(key, string(s.Metric[model.LabelName(l)]))
		}
		out[strings.Join(key, ",")] = float64(s.Value)
	}
	return out
}

func byBound(m map[string]float64) map[float64]float64 {
	out := map[float64]float64{}
	for le, v := range m {
		f, _ := strconv.ParseFloat(le, 64)
		out[f] = v
	}
	return out
}

func sortedLabels(m map[string]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// jsonDiff returns the path of the first difference between two decoded JSON values,
// comparing numbers within 1e-9.
func jsonDiff(path string, a, b any) string {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return path
		}
		for k, v := range a {
			if d := jsonDiff(path+"."+k, v, bm[k]); d != "" {
				return d
			}
		}
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return path
		}
		for i := range a {
			if d := jsonDiff(fmt.Sprintf("%s[%d]", path, i), a[i], bs[i]); d != "" {
				return d
			}
		}
	case float64:
		if bf, ok := b.(float64); !ok || !approxEqual(a, bf) {
			return path
		}
	default:
		if a != b {
			return path
		}
	}
	return ""
}
