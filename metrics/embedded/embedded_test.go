package embedded_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start returns a started server with a long scrape interval, so that only explicit
// Scrape calls scrape during a test (the first, immediate scrape aside).
func start(t *testing.T, opts embedded.Options) *embedded.Server {
	t.Helper()
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Hour
	}
	s, err := embedded.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func client(t *testing.T, s *embedded.Server) v1.API {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := api.NewClient(api.Config{Address: s.URL(), RoundTripper: tr})
	if err != nil {
		t.Fatal(err)
	}
	return v1.NewAPI(c)
}

func get(t *testing.T, rawURL string) (int, map[string]any) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v\n%s", rawURL, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", rawURL, ct)
	}
	return resp.StatusCode, m
}

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func TestAPIResponseShapes(t *testing.T) {
	s := start(t, embedded.Options{})
	var samples []embedded.Sample
	for i := range 5 {
		for _, c := range []string{"a", "b"} {
			samples = append(samples, embedded.Sample{Metric: "reqs_total", Labels: map[string]string{"cluster": c}, Time: t0.Add(time.Duration(i) * 15 * time.Second), Value: float64(10 * i)})
		}
	}
	if err := s.Append(samples...); err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) string {
		return url.QueryEscape(t0.Add(d).Format(time.RFC3339))
	}
	tests := []struct {
		name, path string
		code       int
		check      func(t *testing.T, m map[string]any)
	}{
		{"vector", "/api/v1/query?query=sum+by+(cluster)(reqs_total)&time=" + at(time.Minute), 200, func(t *testing.T, m map[string]any) {
			data := m["data"].(map[string]any)
			if data["resultType"] != "vector" {
				t.Errorf("resultType %v", data["resultType"])
			}
			res := data["result"].([]any)
			if len(res) != 2 {
				t.Fatalf("want 2 samples, got %v", res)
			}
			first := res[0].(map[string]any)
			val := first["value"].([]any)
			if val[0].(float64) != float64(t0.Add(time.Minute).Unix()) || val[1] != "40" {
				t.Errorf("value %v, want [%d, \"40\"]", val, t0.Add(time.Minute).Unix())
			}
		}},
		{"matrix", "/api/v1/query_range?query=reqs_total&start=" + at(0) + "&end=" + at(time.Minute) + "&step=30", 200, func(t *testing.T, m map[string]any) {
			data := m["data"].(map[string]any)
			if data["resultType"] != "matrix" {
				t.Errorf("resultType %v", data["resultType"])
			}
			ser := data["result"].([]any)[0].(map[string]any)
			if got := len(ser["values"].([]any)); got != 3 {
				t.Errorf("want 3 points, got %d", got)
			}
			if ser["metric"].(map[string]any)["__name__"] != "reqs_total" {
				t.Errorf("metric %v", ser["metric"])
			}
		}},
		{"scalar", "/api/v1/query?query=1.5&time=1700000000.123", 200, func(t *testing.T, m map[string]any) {
			data := m["data"].(map[string]any)
			res := data["result"].([]any)
			if data["resultType"] != "scalar" || res[0].(float64) != 1700000000.123 || res[1] != "1.5" {
				t.Errorf("scalar %v", data)
			}
		}},
		{"infinity and NaN", "/api/v1/query?query=vector(1/0)+or+label_replace(vector(0/0),\"x\",\"y\",\"\",\"\")&time=" + at(0), 200, func(t *testing.T, m map[string]any) {
			var vals []string
			for _, r := range m["data"].(map[string]any)["result"].([]any) {
				vals = append(vals, r.(map[string]any)["value"].([]any)[1].(string))
			}
			slices.Sort(vals)
			if !slices.Equal(vals, []string{"+Inf", "NaN"}) {
				t.Errorf("values %v", vals)
			}
		}},
		{"parse error", "/api/v1/query?query=sum(", 400, func(t *testing.T, m map[string]any) {
			if m["status"] != "error" || m["errorType"] != "bad_data" || !strings.HasPrefix(m["error"].(string), `invalid parameter "query"`) {
				t.Errorf("got %v", m)
			}
		}},
		{"negative step", "/api/v1/query_range?query=1&start=0&end=10&step=-1", 400, func(t *testing.T, m map[string]any) {
			if m["errorType"] != "bad_data" || !strings.Contains(m["error"].(string), "zero or negative query resolution step") {
				t.Errorf("got %v", m)
			}
		}},
		{"end before start", "/api/v1/query_range?query=1&start=10&end=0&step=1", 400, func(t *testing.T, m map[string]any) {
			if !strings.Contains(m["error"].(string), "end timestamp must not be before start time") {
				t.Errorf("got %v", m)
			}
		}},
		{"too many points", "/api/v1/query_range?query=1&start=0&end=100000&step=1", 400, func(t *testing.T, m map[string]any) {
			if !strings.Contains(m["error"].(string), "exceeded maximum resolution of 11,000 points") {
				t.Errorf("got %v", m)
			}
		}},
		{"execution error", "/api/v1/query?query=reqs_total+*+on()+reqs_total&time=" + at(time.Minute), 422, func(t *testing.T, m map[string]any) {
			if m["errorType"] != "execution" {
				t.Errorf("got %v", m)
			}
		}},
		{"warning", "/api/v1/query?query=histogram_quantile(0.9,reqs_total)&time=" + at(time.Minute), 200, func(t *testing.T, m map[string]any) {
			w, _ := m["warnings"].([]any)
			if len(w) == 0 || !strings.Contains(w[0].(string), `"le"`) {
				t.Errorf("want a warning about the le label, got %v", m)
			}
		}},
		{"series", "/api/v1/series?match[]=reqs_total{cluster=\"a\"}", 200, func(t *testing.T, m map[string]any) {
			res := m["data"].([]any)
			if len(res) != 1 || res[0].(map[string]any)["cluster"] != "a" {
				t.Errorf("got %v", res)
			}
		}},
		{"series without match", "/api/v1/series", 400, func(t *testing.T, m map[string]any) {
			if m["error"] != "no match[] parameter provided" {
				t.Errorf("got %v", m)
			}
		}},
		{"labels", "/api/v1/labels", 200, func(t *testing.T, m map[string]any) {
			got := m["data"].([]any)
			if len(got) != 2 || got[0] != "__name__" || got[1] != "cluster" {
				t.Errorf("got %v", got)
			}
		}},
		{"label values", "/api/v1/label/cluster/values", 200, func(t *testing.T, m map[string]any) {
			got := m["data"].([]any)
			if len(got) != 2 || got[0] != "a" || got[1] != "b" {
				t.Errorf("got %v", got)
			}
		}},
		{"buildinfo", "/api/v1/status/buildinfo", 200, func(t *testing.T, m map[string]any) {
			if m["data"].(map[string]any)["version"] != embedded.Version {
				t.Errorf("got %v", m)
			}
		}},
		{"unknown endpoint", "/api/v1/rules", 404, func(t *testing.T, m map[string]any) {
			if m["errorType"] != "not_found" {
				t.Errorf("got %v", m)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, m := get(t, s.URL()+tt.path)
			if code != tt.code {
				t.Errorf("status %d, want %d: %v", code, tt.code, m)
			}
			tt.check(t, m)
		})
	}
}

func TestClientGolangAgainstEmbedded(t *testing.T) {
	s := start(t, embedded.Options{})
	if err := s.Append(
		embedded.Sample{Metric: "up", Labels: map[string]string{"cluster": "a", "job": "x"}, Time: t0, Value: 1},
		embedded.Sample{Metric: "up", Labels: map[string]string{"cluster": "b", "job": "x"}, Time: t0, Value: 0},
	); err != nil {
		t.Fatal(err)
	}
	a := client(t, s)
	ctx := context.Background()
	info, err := a.Buildinfo(ctx)
	if err != nil || info.Version != embedded.Version {
		t.Errorf("Buildinfo = %+v, %v", info, err)
	}
	v, _, _, err := a.Query(ctx, "up == 0", t0)
	if err != nil {
		t.Fatal(err)
	}
	vec := v.(model.Vector)
	if len(vec) != 1 || vec[0].Metric["cluster"] != "b" {
		t.Errorf("up == 0: %v", vec)
	}
	series, _, _, err := a.Series(ctx, []string{"up"}, t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil || len(series) != 2 {
		t.Errorf("Series = %v, %v", series, err)
	}
	names, _, _, err := a.LabelNames(ctx, []string{`up{cluster="a"}`}, time.Time{}, time.Time{})
	if err != nil || !slices.Equal([]string{"__name__", "cluster", "job"}, toStrings(names)) {
		t.Errorf("LabelNames = %v, %v", names, err)
	}
	vals, _, _, err := a.LabelValues(ctx, "cluster", nil, time.Time{}, time.Time{})
	if err != nil || len(vals) != 2 {
		t.Errorf("LabelValues = %v, %v", vals, err)
	}
	_, _, _, err = a.Query(ctx, "rate(up[", t0)
	var apiErr *v1.Error
	if !errors.As(err, &apiErr) || apiErr.Type != v1.ErrBadData {
		t.Errorf("bad query: %v", err)
	}
}

func toStrings(ns model.LabelNames) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return out
}

func TestReadiness(t *testing.T) {
	s, err := embedded.New(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Start: %d", rec.Code)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "Ready") {
		t.Errorf("after Start: %d %q", rec.Code, rec.Body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d", rec.Code)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s1, err := embedded.New(embedded.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Append(embedded.Sample{Metric: "x", Labels: map[string]string{"cluster": "a"}, Time: t0, Value: 7}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := start(t, embedded.Options{Dir: dir})
	v, _, _, err := client(t, s2).Query(context.Background(), "x", t0)
	if err != nil {
		t.Fatal(err)
	}
	if vec := v.(model.Vector); len(vec) != 1 || vec[0].Value != 7 {
		t.Errorf("after restart: %v", vec)
	}
}

func TestAppendRejectsOutOfOrder(t *testing.T) {
	s := start(t, embedded.Options{})
	l := map[string]string{"cluster": "a"}
	if err := s.Append(embedded.Sample{Metric: "x", Labels: l, Time: t0, Value: 1}); err != nil {
		t.Fatal(err)
	}
	err := s.Append(embedded.Sample{Metric: "x", Labels: l, Time: t0.Add(-time.Minute), Value: 1})
	if err == nil || !strings.Contains(err.Error(), `x{cluster="a"}`) {
		t.Errorf("want an error naming the series, got %v", err)
	}
	if err := s.Append(embedded.Sample{Labels: l, Time: t0, Value: 1}); err == nil {
		t.Error("want an error for a sample without a metric name")
	}
}

func TestLoadOpenMetrics(t *testing.T) {
	s := start(t, embedded.Options{})
	end := t0
	n, err := s.LoadOpenMetrics(strings.NewReader(fixture.OpenMetrics(end)))
	if err != nil {
		t.Fatal(err)
	}
	if n < 10000 {
		t.Errorf("loaded %d samples", n)
	}
	v, _, _, err := client(t, s).Query(context.Background(), `sum by (cluster) (increase(http_requests_total[1m]))`, end)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, smp := range v.(model.Vector) {
		got[string(smp.Metric["cluster"])] = float64(smp.Value)
	}
	want := map[string]float64{
		fixture.Canary: fixture.PerInterval(fixture.Requests[fixture.Canary]),
		fixture.Base1:  fixture.PerInterval(fixture.Requests[fixture.Base1]),
		fixture.Base2:  fixture.PerInterval(fixture.Requests[fixture.Base2]),
		// stopped has no samples in the last minute
		fixture.NoErrors: fixture.PerInterval(fixture.Requests[fixture.NoErrors]),
	}
	if len(got) != len(want) {
		t.Errorf("clusters %v, want %v", got, want)
	}
	for c, w := range want {
		if math.Abs(got[c]-w) > 1e-9 {
			t.Errorf("%s: increase %v, want %v", c, got[c], w)
		}
	}
	for _, bad := range []string{
		"x{cluster=\"a\"} 1\n",     // no timestamp
		"x{cluster=\"a\" 1 2\n",    // unterminated labels
		"x{cluster=a} 1 2\n",       // unquoted value
		"x{cluster=\"a\"} one 2\n", // bad value
	} {
		if _, err := s.LoadOpenMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("LoadOpenMetrics(%q): want an error", bad)
		}
	}
}

// fleetTarget is an instrumented HTTP server like a demo cluster's.
type fleetTarget struct {
	srv      *httptest.Server
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	fail     atomic.Bool
}

func newTarget(t *testing.T) *fleetTarget {
	t.Helper()
	reg := prometheus.NewRegistry()
	ft := &fleetTarget{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "Requests."}, []string{"code", "cluster"}),
		latency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "http_request_duration_seconds", Help: "Latency.", Buckets: []float64{0.1, 1}}),
	}
	reg.MustRegister(ft.requests, ft.latency)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	ft.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ft.fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ft.srv.Close)
	return ft
}

func TestScrape(t *testing.T) {
	s := start(t, embedded.Options{})
	ft := newTarget(t)
	ft.requests.WithLabelValues("200", "scraped-label").Add(5)
	ft.latency.Observe(0.5)
	if err := s.AddTarget(ft.srv.URL, map[string]string{"cluster": "canary"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTarget(ft.srv.URL+"/metrics", map[string]string{"cluster": "canary"}); err == nil {
		t.Error("adding the same target twice: want an error")
	}
	if err := s.AddTarget("http://127.0.0.1:1/metrics", nil); err == nil {
		t.Error("a target without a cluster label: want an error")
	}
	ctx := context.Background()
	if err := s.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	a := client(t, s)
	query := func(q string) model.Vector {
		t.Helper()
		// A second ahead: a staleness marker may sit a millisecond after the last scrape.
		v, _, _, err := a.Query(ctx, q, time.Now().Add(time.Second))
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return v.(model.Vector)
	}
	vec := query(`http_requests_total`)
	if len(vec) != 1 {
		t.Fatalf("http_requests_total: %v", vec)
	}
	m := vec[0].Metric
	if m["cluster"] != "canary" || m["exported_cluster"] != "scraped-label" || m["job"] != "verdict" || m["instance"] != model.LabelValue(ft.srv.Listener.Addr().String()) || vec[0].Value != 5 {
		t.Errorf("scraped series %v = %v", m, vec[0].Value)
	}
	var les []string
	for _, smp := range query(`http_request_duration_seconds_bucket`) {
		les = append(les, string(smp.Metric["le"]))
	}
	slices.Sort(les)
	if !slices.Equal(les, []string{"+Inf", "0.1", "1.0"}) {
		t.Errorf("le values %v, want Prometheus 3's normalised +Inf, 0.1, 1.0", les)
	}
	if v := query(`up{cluster="canary"}`); len(v) != 1 || v[0].Value != 1 {
		t.Errorf("up = %v", v)
	}

	// The target fails: up drops to 0 and its series go stale at once.
	ft.fail.Store(true)
	if err := s.Scrape(ctx); err == nil {
		t.Error("scraping a failing target: want an error")
	}
	if v := query(`up{cluster="canary"}`); len(v) != 1 || v[0].Value != 0 {
		t.Errorf("up after failure = %v", v)
	}
	if v := query(`http_requests_total`); len(v) != 0 {
		t.Errorf("series of a failed target should be stale, got %v", v)
	}

	// It recovers, then is removed: everything goes stale, up included.
	ft.fail.Store(false)
	if err := s.Scrape(ctx); err != nil {
		t.Fatal(err)
	}
	if v := query(`http_requests_total`); len(v) != 1 {
		t.Errorf("after recovery: %v", v)
	}
	if err := s.RemoveTarget(ft.srv.URL); err != nil {
		t.Fatal(err)
	}
	if v := query(`{cluster="canary"}`); len(v) != 0 {
		t.Errorf("after RemoveTarget: %v", v)
	}
	if err := s.RemoveTarget(ft.srv.URL); err == nil {
		t.Error("removing an unknown target: want an error")
	}
}

// TestScrapeLoop runs the periodic loop: a fast interval, waiting (without asserting any
// duration) until the counter's growth shows up.
func TestScrapeLoop(t *testing.T) {
	s := start(t, embedded.Options{ScrapeInterval: 20 * time.Millisecond})
	ft := newTarget(t)
	if err := s.AddTarget(ft.srv.URL, map[string]string{"cluster": "a"}); err != nil {
		t.Fatal(err)
	}
	a := client(t, s)
	for i := 0; ; i++ {
		ft.requests.WithLabelValues("200", "").Inc()
		v, _, _, err := a.Query(context.Background(), `count_over_time(http_requests_total{cluster="a"}[1m])`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if vec := v.(model.Vector); len(vec) == 1 && vec[0].Value >= 3 {
			break
		}
		if i > 2000 {
			t.Fatal("the scrape loop never produced three samples")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func BenchmarkRangeQuery(b *testing.B) {
	s, err := embedded.New(embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.LoadOpenMetrics(strings.NewReader(fixture.OpenMetrics(t0))); err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c, _ := api.NewClient(api.Config{Address: s.URL(), RoundTripper: tr})
	a := v1.NewAPI(c)
	r := v1.Range{Start: t0.Add(-59 * time.Minute), End: t0, Step: time.Minute}
	for b.Loop() {
		if _, _, _, err := a.QueryRange(context.Background(), `sum by (cluster, le) (increase(http_request_duration_seconds_bucket[1m]))`, r); err != nil {
			b.Fatal(err)
		}
	}
}
