package metrics_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

// Federation chain timings: a leaf Prometheus scrapes the clusters every second, a
// federation server scrapes the leaf's /federate every 5 s (honor_labels, the clusters in
// a clusterID label). Production federates every 30–60 s; 5 s keeps the test under a
// minute and still makes an interval read right after its end miss up to one federation
// scrape of samples. The analysis interval is 20 s (four federated samples).
const (
	fedLeafScrape = time.Second
	fedScrape     = 5 * time.Second
	fedInterval   = 20 * time.Second
)

// counterTarget serves one cluster's request counter growing at rate per second.
func counterTarget(t *testing.T, rate float64) *httptest.Server {
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} %g\n", rate*time.Since(start).Seconds())
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFederationChainLateData runs two Debian prometheus processes as a federation chain
// and checks what the engine relies on: the federation server's sample spacing is the
// federation interval (SampleHealth measures it), and an interval re-read at the settle
// time (one federation interval) until its counts stop changing gives the true shares,
// whatever the first read, made right after the interval's end, said. Each cluster's
// counter grows linearly here, so increase()'s extrapolation usually hides the missing
// tail of a first read; the under-count itself, and the false share mismatch it causes
// without re-reading, are shown deterministically on virtual time by the engine's
// TestLateSamplesAreWaitedFor.
func TestFederationChainLateData(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real Prometheus servers for about a minute")
	}
	fixture.RequirePrometheus(t)
	a, b := counterTarget(t, 100), counterTarget(t, 300) // true shares 25% / 75%
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	leaf := fixture.StartPrometheusConfig(t, fmt.Sprintf(`global: {scrape_interval: %s, scrape_timeout: %s}
scrape_configs:
  - job_name: app
    static_configs:
      - targets: [%q]
        labels: {clusterID: a}
      - targets: [%q]
        labels: {clusterID: b}
`, model.Duration(fedLeafScrape), model.Duration(fedLeafScrape), host(a), host(b)))
	fed := fixture.StartPrometheusConfig(t, fmt.Sprintf(`global: {scrape_interval: %s, scrape_timeout: 4s}
scrape_configs:
  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params: {'match[]': ['{__name__="http_requests_total"}']}
    static_configs:
      - targets: [%q]
`, model.Duration(fedScrape), strings.TrimPrefix(leaf.URL, "http://")))
	src, err := metrics.New(metrics.Options{Address: fed.URL, ClusterLabel: "clusterID", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	query := fmt.Sprintf(`sum by (clusterID) (increase(http_requests_total[%s]))`, model.Duration(fedInterval))

	// Federated samples from before the start of the interval read, then its end.
	time.Sleep(fedInterval + fedScrape)
	end := time.Now().Truncate(fedInterval).Add(fedInterval)
	time.Sleep(time.Until(end) + 200*time.Millisecond)

	read := func() map[string]float64 {
		t.Helper()
		v, _, err := src.Instant(ctx, query, end)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range v.(model.Vector) {
			out[string(s.Metric["clusterID"])] = float64(s.Value)
		}
		return out
	}
	share := func(m map[string]float64) float64 { return m["a"] / (m["a"] + m["b"]) }
	first := read()
	t.Logf("first read %s after the interval's end: a %.0f, b %.0f requests, a's share %.1f%% (true 25%%)",
		time.Since(end).Round(time.Millisecond), first["a"], first["b"], 100*share(first))

	// The engine's rule: re-read until the counts stay the same (within 0.1%) over reads
	// spanning a federation scrape, at most three re-reads.
	prev, reads := first, 1
	for ; reads <= 4; reads++ {
		time.Sleep(fedScrape + 500*time.Millisecond)
		cur := read()
		same := len(cur) == 2 && len(prev) == 2
		for k, x := range cur {
			if y := prev[k]; math.Abs(x-y) > 1e-3*math.Max(x, y) {
				same = false
			}
		}
		prev = cur
		if same {
			break
		}
	}
	settled := prev
	t.Logf("settled after %d reads, %s after the end: a %.0f, b %.0f, a's share %.1f%%",
		reads+1, time.Since(end).Round(time.Millisecond), settled["a"], settled["b"], 100*share(settled))
	if reads > 4 {
		t.Fatalf("the interval's counts never settled: %v", settled)
	}
	if s := share(settled); math.Abs(s-0.25) > 0.03 {
		t.Errorf("settled share of a = %.1f%%, want 25%% ± 3", 100*s)
	}

	// SampleHealth sees the federation interval, not the leaf's scrape interval.
	rng := metrics.AlignedRange(end, fedInterval, 1)
	h, err := src.SampleHealth(ctx, query, rng, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"a", "b"} {
		x := h[`http_requests_total`][c]
		if x.Spacing < 3*time.Second || x.Spacing > 8*time.Second {
			t.Errorf("cluster %s: spacing %s at the federation server, want about %s", c, x.Spacing, fedScrape)
		}
		if x.Age > metrics.StaleAge(x.Spacing) {
			t.Errorf("cluster %s: live series reported stale (age %s, spacing %s)", c, x.Age, x.Spacing)
		}
	}

	// A dead leaf: the federation server keeps what it had, and StaleSeries (the run's
	// preflight) names both clusters once the newest samples outlive StaleAge (or vanish).
	kpi := metrics.KPI{Name: "requests", Kind: metrics.KindThroughput, Query: query}
	if got, err := src.StaleSeries(ctx, kpi, metrics.AlignedRange(time.Now(), fedInterval, 2), time.Now(), nil); err != nil || len(got) != 0 {
		t.Fatalf("before the leaf died: stale %v, %v", got, err)
	}
	leaf.Stop()
	time.Sleep(metrics.StaleAge(fedScrape) + fedScrape)
	got, err := src.StaleSeries(ctx, kpi, metrics.AlignedRange(time.Now(), fedInterval, 3), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stale := map[string]bool{}
	for _, s := range got {
		stale[s.Cluster] = true
		t.Logf("after the leaf died: %s", s)
	}
	if !stale["a"] || !stale["b"] {
		t.Errorf("dead leaf: stale clusters %v, want a and b", stale)
	}
}
