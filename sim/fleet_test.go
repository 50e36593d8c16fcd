package sim

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startFleet starts a fleet for a test and closes it at the end.
func startFleet(t testing.TB, scenario string, o Options) *Fleet {
	t.Helper()
	if o.Scenario == nil {
		sc, err := LoadScenario(scenario)
		if err != nil {
			t.Fatal(err)
		}
		o.Scenario = sc
	}
	if o.Seed == 0 {
		o.Seed = 42
	}
	f, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

// flat is a scenario with a constant load, so a measured rate can be compared with it.
func flat(t testing.TB, name string) *Scenario {
	t.Helper()
	sc, err := LoadScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	sc.Load.Amplitude = 0
	return sc
}

// promQuery runs an instant query against the fleet's Prometheus API over HTTP and returns
// the value per cluster.
func promQuery(t testing.TB, f *Fleet, q string) map[string]float64 {
	t.Helper()
	res, err := http.Get(f.PrometheusURL() + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer res.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("query %s: status %s %s (%v)", q, body.Status, body.Error, err)
	}
	out := map[string]float64{}
	for _, r := range body.Data.Result {
		v, _ := strconv.ParseFloat(r.Value[1].(string), 64)
		out[r.Metric["cluster"]] = v
	}
	return out
}

// waitFor polls cond every 20ms until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCloseReleasesEverything checks that a fleet with requests in flight closes without
// leaking a goroutine or a listening port, and removes the experiment directory it made.
func TestCloseReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sc, err := LoadScenario("regression")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Start(Options{Scenario: sc, Seed: 1}) // real waiting: requests are in flight
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "requests in flight", func() bool { return f.Stats().Completed > 50 })
	addrs, dir := f.Addrs(), f.ExperimentFile()
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Close", a)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s after Close: %v, want connection refused", a, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("experiment file %s still exists after Close (%v)", dir, err)
	}
}

// TestFleetTrafficFollowsRateAndWeights checks that traffic flows through the emulator's
// data plane at the configured rate (±10%) and that each cluster's share follows the
// pool's weights, before and after they change.
func TestFleetTrafficFollowsRateAndWeights(t *testing.T) {
	const rate = 300.0
	f := startFleet(t, "", Options{Scenario: flat(t, "good"), Rate: rate, Fast: true})

	time.Sleep(3 * time.Second)
	s0 := f.Stats()
	got := float64(s0.Sent) / s0.Elapsed.Seconds()
	if math.Abs(got-rate)/rate > 0.10 {
		t.Errorf("sent %.1f requests/s over %s, want %g ±10%%", got, s0.Elapsed.Round(time.Millisecond), rate)
	}
	if s0.Failed > 0 || s0.Dropped > 0 || s0.Completed < s0.Sent-int64(rate) {
		t.Errorf("stats %+v: requests failed, were dropped, or never completed", s0)
	}
	if s0.ByCluster[f.Canary()]+s0.ByCluster["prod-use1-monday-snorlax"]+s0.ByCluster["prod-use1-monday-squirtle"] != s0.Completed {
		t.Errorf("stats %+v: not every answer came from a cluster through the data plane", s0)
	}
	checkShares(t, s0, LoadStats{ByCluster: map[string]int64{}}, map[string]float64{
		"prod-use1-monday-snorlax": 0.48, "prod-use1-monday-squirtle": 0.47, "prod-use1-monday-staryu": 0.05,
	})

	// Change the weights as Verdict would, then measure again.
	emu, pool := f.Emulator(), f.PoolID()
	for origin, w := range map[string]float64{"prod-use1-snorlax-ambassador": 0.3, "prod-use1-squirtle-ambassador": 0.3, "prod-use1-staryu-ambassador": 0.4} {
		if err := emu.SetWeight(pool, origin, w); err != nil {
			t.Fatal(err)
		}
	}
	s1 := f.Stats()
	time.Sleep(3 * time.Second)
	checkShares(t, f.Stats(), s1, map[string]float64{
		"prod-use1-monday-snorlax": 0.3, "prod-use1-monday-squirtle": 0.3, "prod-use1-monday-staryu": 0.4,
	})
	if _, ok := f.Triggered(); !ok {
		t.Errorf("the fleet did not notice the weight change")
	}
}

// checkShares compares each cluster's share of the requests answered between before and
// after with want, allowing four binomial standard deviations.
func checkShares(t *testing.T, after, before LoadStats, want map[string]float64) {
	t.Helper()
	var n float64
	for c := range want {
		n += float64(after.ByCluster[c] - before.ByCluster[c])
	}
	if n < 500 {
		t.Fatalf("only %g requests answered", n)
	}
	for c, w := range want {
		share := float64(after.ByCluster[c]-before.ByCluster[c]) / n
		if sd := math.Sqrt(w * (1 - w) / n); math.Abs(share-w) > 4*sd+0.005 {
			t.Errorf("%s got %.3f of %g requests, want %.2f (±%.3f)", c, share, n, w, 4*sd)
		}
	}
}

// TestPrometheusHasEveryClusterQuickly checks that the embedded Prometheus holds series for
// every cluster, labelled with its name, within two scrape intervals of the start.
func TestPrometheusHasEveryClusterQuickly(t *testing.T) {
	f := startFleet(t, "good", Options{Fast: true})
	interval := f.Scenario().ScrapeInterval.D()
	var got map[string]float64
	waitFor(t, 2*interval, "a series per cluster", func() bool {
		got = promQuery(t, f, `count by (cluster) (http_request_duration_seconds_bucket)`)
		return len(got) == len(f.Clusters())
	})
	for _, c := range f.Clusters() {
		if got[c.Name] == 0 {
			t.Errorf("no series for %s", c.Name)
		}
	}
	// Every metric the experiments use is there.
	for _, m := range []string{"http_requests_total", "http_request_duration_seconds_sum", "http_requests_in_flight", "app_cpu_seconds_total", "app_cpu_seconds_per_request", "app_build_info"} {
		if got := promQuery(t, f, "count by (cluster) ("+m+")"); len(got) != len(f.Clusters()) {
			t.Errorf("%s: series for %d clusters, want %d", m, len(got), len(f.Clusters()))
		}
	}
}

// TestProfileChangeShowsInMetrics injects an error regression into the canary of a
// running fleet and finds it in what Prometheus scraped.
func TestProfileChangeShowsInMetrics(t *testing.T) {
	f := startFleet(t, "", Options{Scenario: flat(t, "good"), Rate: 400, Fast: true})
	if err := f.Emulator().SetWeight(f.PoolID(), "prod-use1-staryu-ambassador", 0.5); err != nil {
		t.Fatal(err)
	}
	// The scenario's variant applies at the trigger; trigger now so that it cannot
	// overwrite the profile set below when the fleet notices the weight change.
	f.Trigger()
	ctx := context.Background()
	counts := func() (errs, total map[string]float64) {
		if err := f.Scrape(ctx); err != nil {
			t.Fatal(err)
		}
		return promQuery(t, f, `sum by (cluster) (http_requests_total{code=~"5.."})`),
			promQuery(t, f, `sum by (cluster) (http_requests_total)`)
	}
	canary := f.Canary()
	p, err := f.Profile(canary)
	if err != nil {
		t.Fatal(err)
	}
	p.ErrorRate, p.BurstProbability, p.ErrorDispersion, p.Drift = 0.5, 0, 0, 0
	e0, n0 := counts()
	before := f.Stats().ByCluster[canary]
	if err := f.SetProfile("canary", p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "400 canary requests", func() bool { return f.Stats().ByCluster[canary]-before >= 400 })
	e1, n1 := counts()
	for _, c := range f.Clusters() {
		share := (e1[c.Name] - e0[c.Name]) / (n1[c.Name] - n0[c.Name])
		switch {
		case c.Canary && (share < 0.35 || share > 0.65):
			t.Errorf("canary error share after the change = %.3f, want ≈ 0.5", share)
		case !c.Canary && share > 0.1:
			t.Errorf("%s error share = %.3f, want ≈ 0.01", c.Name, share)
		}
	}
}

// TestPrometheusOutage takes the Prometheus API away and back: unreachable, then erroring,
// then answering on the same address with the data scraped meanwhile.
func TestPrometheusOutage(t *testing.T) {
	f := startFleet(t, "outage", Options{Fast: true})
	addr := f.PrometheusURL()
	get := func() (int, error) {
		res, err := http.Get(addr + "/api/v1/query?query=up")
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	if code, err := get(); err != nil || code != 200 {
		t.Fatalf("before the outage: %d %v", code, err)
	}
	if err := f.SetPrometheus(PrometheusDown); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	if _, err := get(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("down: %v, want connection refused", err)
	}
	if f.PrometheusState() != PrometheusDown {
		t.Errorf("state %q", f.PrometheusState())
	}
	if err := f.Scrape(context.Background()); err != nil {
		t.Errorf("scraping stopped during the outage: %v", err)
	}
	if err := f.SetPrometheus(PrometheusErrors); err != nil {
		t.Fatal(err)
	}
	if code, err := get(); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("errors: %d %v, want 503", code, err)
	}
	if err := f.SetPrometheus(PrometheusUp); err != nil {
		t.Fatal(err)
	}
	if f.PrometheusURL() != addr {
		t.Errorf("address changed from %s to %s", addr, f.PrometheusURL())
	}
	if code, err := get(); err != nil || code != 200 {
		t.Errorf("after the outage: %d %v", code, err)
	}
	for c, ts := range promQuery(t, f, `timestamp(up)`) {
		if ts < float64(downAt.UnixMilli())/1000 {
			t.Errorf("%s: last scrape at %v, before the outage began at %v", c, ts, downAt)
		}
	}
}

// TestScheduleFromTrigger checks the time-varying part of a scenario: nothing scheduled
// from the trigger happens before it; at the trigger the variant and the events due apply.
func TestScheduleFromTrigger(t *testing.T) {
	sc := flat(t, "good")
	sc.Variant = Variant{Effect: Effect{Errors: 3}, From: FromTrigger}
	sc.Events = []Event{
		{At: 0, From: FromTrigger, Prometheus: PrometheusDown},
		{At: Duration(time.Hour), From: FromStart, Rate: 5},
	}
	var mu sync.Mutex
	var notices []string
	f := startFleet(t, "", Options{Scenario: sc, NoLoad: true, OnNotice: func(n Notice) {
		mu.Lock()
		notices = append(notices, n.What)
		mu.Unlock()
	}})
	base, _ := sc.cluster("canary")
	if p, _ := f.Profile("canary"); p != base.Profile {
		t.Errorf("variant in effect before the trigger")
	}
	if f.PrometheusState() != PrometheusUp {
		t.Errorf("Prometheus %s before the trigger", f.PrometheusState())
	}
	f.Trigger()
	if p, _ := f.Profile("canary"); p != base.Profile.With(Effect{Errors: 3}) {
		t.Errorf("variant not applied at the trigger: %+v", p)
	}
	if f.PrometheusState() != PrometheusDown {
		t.Errorf("Prometheus %s after the trigger, want down", f.PrometheusState())
	}
	mu.Lock()
	if len(notices) != 3 {
		t.Errorf("notices = %q, want the trigger, the variant and the outage", notices)
	}
	mu.Unlock()
	if err := f.ClearVariant(); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.Profile("canary"); p != base.Profile {
		t.Errorf("ClearVariant left %+v", p)
	}
}

// TestNoTrafficHonour checks the session-affinity scenario: after the canary's weight
// rises to half, pinned sessions keep going where they went, so the canary's observed share
// stays far below its weight.
func TestNoTrafficHonour(t *testing.T) {
	f := startFleet(t, "", Options{Scenario: flat(t, "no-traffic-honour"), Rate: 400, Fast: true})
	emu, pool := f.Emulator(), f.PoolID()
	for origin, w := range map[string]float64{"prod-use1-snorlax-ambassador": 0.25, "prod-use1-squirtle-ambassador": 0.25, "prod-use1-staryu-ambassador": 0.5} {
		if err := emu.SetWeight(pool, origin, w); err != nil {
			t.Fatal(err)
		}
	}
	s0 := f.Stats()
	time.Sleep(3 * time.Second)
	s1 := f.Stats()
	n := float64(s1.Completed - s0.Completed)
	canary := float64(s1.ByCluster[f.Canary()]-s0.ByCluster[f.Canary()]) / n
	pinned := float64(s1.Pinned-s0.Pinned) / n
	// Half the sessions pinned at 5%, half following the new 50%: 27.5%.
	if canary < 0.2 || canary > 0.35 {
		t.Errorf("canary share %.3f of %g requests, want ≈ 0.275", canary, n)
	}
	if pinned < 0.4 || pinned > 0.6 {
		t.Errorf("pinned share %.3f, want ≈ 0.5", pinned)
	}
}
