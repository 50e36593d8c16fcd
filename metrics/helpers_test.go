package metrics_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixtureEnd is where the fixture data ends in tests that do not need a real Prometheus
// (which would drop data older than its retention).
var fixtureEnd = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// The fixture's KPIs, as the experiments package would template them.
var (
	errorRate = metrics.KPI{
		Name:   "error-rate",
		Kind:   metrics.KindRatio,
		Events: `sum by (cluster) (increase(http_requests_total{code="500"}[1m]))`,
		Total:  `sum by (cluster) (increase(http_requests_total[1m]))`,
	}
	latency = metrics.KPI{
		Name:    "latency",
		Kind:    metrics.KindLatency,
		Buckets: `sum by (cluster, le) (increase(http_request_duration_seconds_bucket[1m]))`,
		Sum:     `sum by (cluster) (increase(http_request_duration_seconds_sum[1m]))`,
		Count:   `sum by (cluster) (increase(http_request_duration_seconds_count[1m]))`,
	}
	cpu = metrics.KPI{
		Name:  "cpu",
		Kind:  metrics.KindGauge,
		Query: `avg by (cluster) (avg_over_time(cpu_usage[1m]))`,
	}
	throughput = metrics.KPI{
		Name:  "throughput",
		Kind:  metrics.KindThroughput,
		Query: `sum by (cluster) (increase(http_requests_total[1m]))`,
	}
	randomRate = metrics.KPI{
		Name:  "random",
		Kind:  metrics.KindGauge,
		Query: `sum by (cluster) (rate(random_total[1m]))`,
	}
)

// fleet starts an embedded Prometheus holding the fixture data up to end.
func fleet(t testing.TB, end time.Time) *embedded.Server {
	t.Helper()
	s, err := embedded.New(embedded.Options{ScrapeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.LoadOpenMetrics(strings.NewReader(fixture.OpenMetrics(end))); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func source(t testing.TB, opts metrics.Options) *metrics.Source {
	t.Helper()
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = time.Millisecond
	}
	s, err := metrics.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
