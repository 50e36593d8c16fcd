package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// Production timings of the federation chain the engine is run against: leaves scrape
// every 30 s, the federation server scrapes each leaf's /federate every 30 s, and the
// analysis interval is a minute (two federated samples each, the shortest interval the
// docs allow at 30 s).
const (
	prodScrape   = 30 * time.Second
	prodInterval = time.Minute
	// prodRate is the fleet's requests per second, split by the pool's weights.
	prodRate = 1000.0
)

// weightedTarget is one cluster's application: its request counter grows at prodRate
// times the cluster's origin's share of its pool's weights, read from the emulator every
// 100 ms, so a weight change reaches the counters as a load balancer's would.
type weightedTarget struct {
	mu       sync.Mutex
	ok, errs float64
	srv      *httptest.Server
}

func (w *weightedTarget) host() string { return strings.TrimPrefix(w.srv.URL, "http://") }

func (w *weightedTarget) add(n float64) {
	w.mu.Lock()
	w.ok += 0.99 * n
	w.errs += 0.01 * n
	w.mu.Unlock()
}

func (w *weightedTarget) ServeHTTP(rw http.ResponseWriter, _ *http.Request) {
	w.mu.Lock()
	ok, errs := w.ok, w.errs
	w.mu.Unlock()
	rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(rw, "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} %g\nhttp_requests_total{code=\"500\"} %g\n", ok, errs)
}

// startWeights are the pools' weights before a run: the experiment's total is 1, so that
// step 1 can give the canary 10% and each baseline 45%.
var startWeights = []float64{0.34, 0.33, 0.33}

// fleetPool is a Cloudflare pool in the emulator whose origins are weightedTargets.
type fleetPool struct {
	id      string
	origins map[string]*weightedTarget // origin name → its cluster's target
}

func startFleetPool(t *testing.T, emu *cfemu.Server, id string, clusters []string) *fleetPool {
	t.Helper()
	var origins []string
	p := &fleetPool{id: id, origins: map[string]*weightedTarget{}}
	for i, c := range clusters {
		origins = append(origins, fmt.Sprintf(`{"name": %q, "address": "%s.example.com", "enabled": true, "weight": %g}`, c, c, startWeights[i]))
		tg := &weightedTarget{}
		tg.srv = httptest.NewServer(tg)
		t.Cleanup(tg.srv.Close)
		p.origins[c] = tg
	}
	if _, err := emu.AddPool([]byte(fmt.Sprintf(`{"id": %q, "name": "pool-%s", "enabled": true, "origins": [%s]}`, id, id, strings.Join(origins, ",")))); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveTraffic sends the fleet's traffic to the pools' origins by weight until ctx ends:
// prodRate requests per second of wall time, however late the loop runs on a busy machine.
func serveTraffic(ctx context.Context, emu *cfemu.Server, pools ...*fleetPool) {
	go func() {
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			now := time.Now()
			elapsed := now.Sub(last)
			last = now
			for _, p := range pools {
				raw, ok := emu.Pool(p.id)
				if !ok {
					continue
				}
				pool, err := traffic.DecodePool(raw)
				if err != nil {
					continue
				}
				w := pool.Weights()
				var total float64
				for _, x := range w {
					total += x
				}
				for o, tg := range p.origins {
					if total > 0 {
						tg.add(prodRate * elapsed.Seconds() * w[o] / total)
					}
				}
			}
		}
	}()
}

func poolWeights(t *testing.T, emu *cfemu.Server, id string) traffic.Weights {
	raw, ok := emu.Pool(id)
	if !ok {
		t.Errorf("pool %s gone from the emulator", id)
		return nil
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		t.Errorf("decode pool %s: %v", id, err)
		return nil
	}
	return p.Weights()
}

const federatedExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: NAME
spec:
  canary: {cluster: CANARY, variant: {probes: tight}}
  baselines: [BASE1, BASE2]
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {CANARY: CANARY, BASE1: BASE1, BASE2: BASE2}
    steps:
      - {weight: 10%, hold: 10m}
    onRollback: restore
  prometheus:
    address: PROM
    clusterLabel: clusterID
  kpis:
    - name: error-rate
      type: ratio
      events: sum by ({{.ClusterLabel}}) (increase(http_requests_total{code="500", {{.ClusterLabel}}=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by ({{.ClusterLabel}}) (increase(http_requests_total{ {{.ClusterLabel}}=~"{{.Clusters}}"}[{{.Interval}}]))
    - name: requests
      type: throughput
      query: sum by ({{.ClusterLabel}}) (increase(http_requests_total{ {{.ClusterLabel}}=~"{{.Clusters}}"}[{{.Interval}}]))
  analysis:
    interval: 1m
    history: 0s
    minIntervals: 10
    noDataTimeout: 5m
`

func loadFederatedExperiment(t *testing.T, name, pool, prom, accountID string, clusters []string) *experiments.Experiment {
	t.Helper()
	y := strings.NewReplacer("NAME", name, "CANARY", clusters[0], "BASE1", clusters[1], "BASE2", clusters[2],
		"ACCOUNT", accountID, "POOL", pool, "PROM", prom).Replace(federatedExperiment)
	exps, err := experiments.Load(name+".yaml", []byte(y), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return exps[0]
}

// TestFederationChainEngineAt30s runs the engine's real decision path, on the wall clock,
// against a federation chain at production scrape intervals: two leaf Prometheus servers
// scrape the clusters every 30 s, a federation server scrapes both leaves' /federate every
// 30 s with honor_labels (the clusters in a clusterID label: target labels on leaf A, an
// external label on leaf B, which holds one cluster), and the engine, with its default
// settle time, steers a Cloudflare emulator whose weights the clusters' request counters
// follow.
//
// Run 1 (c1 canary at 10% against c2 and c3 at 45%) must judge every interval on its
// complete counts: no share mismatch, the observed shares within the share tolerance (5%)
// of the configured. The test measures, per interval, how long after its end the
// federation server's counts stopped changing, and checks the engine judged the final
// counts. Meanwhile leaf B, the only one with cluster d3, is killed once the federation
// server knows d3's sample spacing; run 2 (d1 against d2 and d3, another pool) starts
// three spacings and a half later and must end check_failed in its preflight, naming d3,
// with its pool untouched. About 3.5 minutes of wall time; metrics is not in make test's
// race pass, so it runs once.
func TestFederationChainEngineAt30s(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real Prometheus servers at 30 s scrape intervals for about four minutes")
	}
	fixture.RequirePrometheus(t)
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	began := time.Now()

	emu := cfemu.New(cfemu.Options{RateLimit: -1})
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	run1 := []string{"c1", "c2", "c3"}
	run2 := []string{"d1", "d2", "d3"}
	p1 := startFleetPool(t, emu, "00000000000000000000000000000001", run1)
	p2 := startFleetPool(t, emu, "00000000000000000000000000000002", run2)
	serveTraffic(ctx, emu, p1, p2)

	var leafA strings.Builder
	fmt.Fprintf(&leafA, "global: {scrape_interval: %s, scrape_timeout: 10s}\nscrape_configs:\n  - job_name: app\n    static_configs:\n", model.Duration(prodScrape))
	for _, c := range []string{"c1", "c2", "c3", "d1", "d2"} {
		tg := p1.origins[c]
		if tg == nil {
			tg = p2.origins[c]
		}
		fmt.Fprintf(&leafA, "      - targets: [%q]\n        labels: {clusterID: %s}\n", tg.host(), c)
	}
	a := fixture.StartPrometheusConfig(t, leafA.String())
	b := fixture.StartPrometheusConfig(t, fmt.Sprintf(`global: {scrape_interval: %s, scrape_timeout: 10s, external_labels: {clusterID: d3}}
scrape_configs:
  - job_name: app
    static_configs:
      - targets: [%q]
`, model.Duration(prodScrape), p2.origins["d3"].host()))
	fed := fixture.StartPrometheusConfig(t, fmt.Sprintf(`global: {scrape_interval: %s, scrape_timeout: 10s}
scrape_configs:
  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params: {'match[]': ['{__name__="http_requests_total"}']}
    static_configs:
      - targets: [%q, %q]
`, model.Duration(prodScrape), strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")))

	src, err := metrics.New(metrics.Options{Address: fed.URL, ClusterLabel: "clusterID", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: emu.Token(), AccountID: emu.AccountID(), BaseURL: emu.APIURL(), BackoffBase: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	newEngine := func() (*engine.Engine, store.Store) {
		st, err := store.OpenSQLite(ctx, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// Settle is left at its default (a quarter of the interval, at most 15 s), as
		// `verdict run` has it: the re-reads, not a tuned settle, must find the late data.
		e, err := engine.New(engine.Options{Store: st, Steerer: steer, Metrics: src, Who: "federation test"})
		if err != nil {
			t.Fatal(err)
		}
		return e, st
	}
	exp1 := loadFederatedExperiment(t, "federated-shares", p1.id, fed.URL, emu.AccountID(), run1)
	exp2 := loadFederatedExperiment(t, "federated-dead-leaf", p2.id, fed.URL, emu.AccountID(), run2)
	e1, st1 := newEngine()
	e2, st2 := newEngine()
	r1, err := e1.Start(ctx, exp1, "federated-shares.yaml", time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// The lag: every second, the federation server's counts of the two newest ended
	// intervals, and when they last changed.
	query := fmt.Sprintf(`sum by (clusterID) (increase(http_requests_total{clusterID=~"c1|c2|c3"}[%s]))`, model.Duration(prodInterval))
	lastChange := map[int64]time.Time{} // by the interval's end in Unix milliseconds
	lastCounts := map[int64]map[string]float64{}
	pollLag := func(now time.Time) {
		newest := now.Truncate(prodInterval)
		for _, end := range []time.Time{newest, newest.Add(-prodInterval)} {
			if !end.After(began) {
				continue
			}
			got := instantByCluster(ctx, t, src, query, end)
			k := end.UnixMilli()
			if prev, seen := lastCounts[k]; !seen || !sameByCluster(prev, got) {
				lastCounts[k], lastChange[k] = got, now
			}
		}
	}

	deadAt := time.Time{}
	var r2 *engine.Run
	judgedAt := map[int64]time.Time{}
	deadline := began.Add(6 * time.Minute)
	for time.Now().Before(deadline) {
		now := time.Now()
		pollLag(now)
		if !r1.Done() {
			if err := r1.Step(ctx, now); err != nil {
				t.Fatalf("run 1 step: %v", err)
			}
			for _, o := range runObservations(ctx, t, st1, r1.ID(), "requests") {
				if _, ok := judgedAt[o.end.UnixMilli()]; !ok {
					judgedAt[o.end.UnixMilli()] = time.Now()
				}
			}
		}
		// Leaf B dies once the federation server has a full interval of d3's samples in
		// the preflight's window, enough to tell how often they arrive, as it would for a
		// leaf that had run for hours.
		if deadAt.IsZero() {
			if h := d3Health(ctx, t, src, now); h.Intervals >= 2 && h.Spacing <= prodScrape+prodScrape/10 {
				b.Stop()
				deadAt = time.Now()
				t.Logf("leaf B (cluster d3) killed %s after the start; d3's samples %s apart at the federation server", deadAt.Sub(began).Round(time.Second), h.Spacing)
			}
		}
		// A run started once the dead leaf's newest samples are older than three spacings.
		if r2 == nil && !deadAt.IsZero() && time.Since(deadAt) > metrics.StaleAge(prodScrape)+prodScrape/2 {
			h := d3Health(ctx, t, src, time.Now())
			t.Logf("run 2 starts %s after leaf B died: d3's newest sample %s old, samples %s apart, stale after %s",
				time.Since(deadAt).Round(time.Second), h.Age.Round(time.Second), h.Spacing, metrics.StaleAge(h.Spacing))
			if r2, err = e2.Start(ctx, exp2, "federated-dead-leaf.yaml", time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if r2 != nil && !r2.Done() {
			if err := r2.Step(ctx, time.Now()); err != nil {
				t.Fatalf("run 2 step: %v", err)
			}
		}
		if r2 != nil && r2.Done() && len(judgedComplete(runObservations(ctx, t, st1, r1.ID(), "requests"))) >= 2 {
			break
		}
		if r1.Done() {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("wall time %s", time.Since(began).Round(time.Second))

	// Run 1: judged on complete intervals, no share mismatch.
	rec1 := r1.Record()
	if rec1.State.Terminal() {
		t.Fatalf("run 1 ended %s/%s: %s", rec1.State, rec1.Verdict, rec1.Reason)
	}
	if got := poolWeights(t, emu, p1.id); !traffic.SameWeight(got["c1"]/(got["c1"]+got["c2"]+got["c3"]), 0.1) {
		t.Errorf("run 1's pool %v: step 1 (c1 at 10%%) never landed", got)
	}
	obs := judgedComplete(runObservations(ctx, t, st1, r1.ID(), "requests"))
	if len(obs) < 2 {
		t.Fatalf("run 1 judged %d complete intervals in %s, want at least 2", len(obs), time.Since(began).Round(time.Second))
	}
	for _, o := range obs {
		final := instantByCluster(ctx, t, src, query, o.end)
		var tot float64
		for _, c := range run1 {
			tot += o.counts[c]
		}
		t.Logf("interval ending %s: counts settled %s after its end, judged %s after it: c1 %.0f c2 %.0f c3 %.0f, shares %.1f/%.1f/%.1f%%",
			o.end.Format(time.TimeOnly), lastChange[o.end.UnixMilli()].Sub(o.end).Round(time.Second), judgedAt[o.end.UnixMilli()].Sub(o.end).Round(time.Second),
			o.counts["c1"], o.counts["c2"], o.counts["c3"], 100*o.counts["c1"]/tot, 100*o.counts["c2"]/tot, 100*o.counts["c3"]/tot)
		if !sameByCluster(o.counts, final) {
			t.Errorf("interval ending %s judged on %v, but the federation server's complete counts are %v", o.end.Format(time.TimeOnly), o.counts, final)
		}
		// One interval's increase() is extrapolated from two samples 30 s apart, so it
		// carries the traffic's wobble; a missed federation scrape would cost a cluster
		// about half its count.
		for c, want := range map[string]float64{"c1": 0.1, "c2": 0.45, "c3": 0.45} {
			if got := o.counts[c] / tot; math.Abs(got/want-1) > 0.1 {
				t.Errorf("interval ending %s: %s's share %.2f%%, configured %.0f%% (±10%%)", o.end.Format(time.TimeOnly), c, 100*got, 100*want)
			}
		}
	}
	share := r1.Snapshot().Share
	if share.Mismatch {
		t.Errorf("share mismatch on a federation chain: %s", share.Reason)
	}
	if len(share.Observed) != 3 {
		t.Errorf("share check observed %v, want three clusters' shares", share.Observed)
	}
	for i := range share.Observed {
		if math.Abs(share.Observed[i]/share.Expected[i]-1) > float64(exp1.Spec.Analysis.ShareTolerance) {
			t.Errorf("share check: observed %v, configured %v (±%.0f%%)", share.Observed, share.Expected, 100*float64(exp1.Spec.Analysis.ShareTolerance))
			break
		}
	}
	t.Logf("share check: observed %v against %v, log BF %.2f", share.Observed, share.Expected, share.LogBayesFactor)
	ds, err := st1.Decisions(ctx, r1.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if strings.Contains(strings.ToLower(d.Reason), "share") && (d.Action == "rollback" || strings.Contains(d.Reason, "differ")) {
			t.Errorf("decision %s at %s: %s", d.Action, d.At.Format(time.TimeOnly), d.Reason)
		}
	}

	// Run 2: the dead leaf stops it before any weight moves.
	if r2 == nil {
		t.Fatal("run 2 was never started: d3's samples never reached three intervals at the federation server")
	}
	rec2 := r2.Record()
	t.Logf("run 2, started %s after leaf B died: %s/%s: %s", rec2.StartedAt.Sub(deadAt).Round(time.Second), rec2.State, rec2.Verdict, rec2.Reason)
	if rec2.State != store.StateFailed || rec2.Verdict != engine.VerdictCheckFailed {
		t.Errorf("run 2 ended %s/%s, want failed/%s", rec2.State, rec2.Verdict, engine.VerdictCheckFailed)
	}
	for _, want := range []string{"stale KPI series", "cluster d3", "nothing was changed"} {
		if !strings.Contains(rec2.Reason, want) {
			t.Errorf("run 2's reason lacks %q: %s", want, rec2.Reason)
		}
	}
	if strings.Contains(rec2.Reason, "cluster d1") || strings.Contains(rec2.Reason, "cluster d2") {
		t.Errorf("run 2's reason names live clusters: %s", rec2.Reason)
	}
	after := poolWeights(t, emu, p2.id)
	for i, c := range run2 {
		if !traffic.SameWeight(after[c], startWeights[i]) {
			t.Errorf("run 2 moved origin %s from %v to %v", c, startWeights[i], after[c])
		}
	}
	evs, err := st2.Events(ctx, r2.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == engine.EventWeightsIntent {
			t.Errorf("run 2 intended a weight change with d3's leaf dead: %s", ev.Message)
		}
	}
}

// d3Health is the sample health of d3's requests at the federation server over the
// preflight's window (five intervals).
func d3Health(ctx context.Context, t *testing.T, src *metrics.Source, now time.Time) metrics.SeriesHealth {
	t.Helper()
	h, err := src.SampleHealth(ctx, `sum by (clusterID) (increase(http_requests_total{clusterID="d3", code="200"}[1m]))`, metrics.AlignedRange(now, prodInterval, 5), now)
	if err != nil {
		t.Fatal(err)
	}
	for _, byCluster := range h {
		return byCluster["d3"]
	}
	return metrics.SeriesHealth{}
}

// judgedObservation is one live interval of a KPI as the engine stored it.
type judgedObservation struct {
	end    time.Time
	counts map[string]float64
}

// runObservations returns the live intervals of KPI kpi the engine stored for run id,
// with each cluster's throughput count.
func runObservations(ctx context.Context, t *testing.T, st store.Store, id, kpi string) []judgedObservation {
	t.Helper()
	stored, err := st.Observations(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []judgedObservation
	for _, so := range stored {
		if so.Phase != engine.PhaseRun || so.KPI != kpi {
			continue
		}
		var o engine.Observation
		if err := json.Unmarshal(so.Values, &o); err != nil {
			t.Fatalf("observation of %s at %s: %v", kpi, so.End, err)
		}
		j := judgedObservation{end: so.End, counts: map[string]float64{}}
		for c, v := range o.Clusters {
			if v.Value != nil {
				j.counts[c] = *v.Value
			}
		}
		out = append(out, j)
	}
	return out
}

// judgedComplete keeps the intervals judged with every cluster's count.
func judgedComplete(obs []judgedObservation) []judgedObservation {
	return slices.DeleteFunc(obs, func(o judgedObservation) bool { return len(o.counts) < 3 })
}

// instantByCluster evaluates query at t: each clusterID's value.
func instantByCluster(ctx context.Context, t *testing.T, src *metrics.Source, query string, at time.Time) map[string]float64 {
	t.Helper()
	v, _, err := src.Instant(ctx, query, at)
	if err != nil {
		t.Fatalf("%s at %s: %v", query, at.Format(time.TimeOnly), err)
	}
	out := map[string]float64{}
	vec, _ := v.(model.Vector)
	for _, s := range vec {
		out[string(s.Metric["clusterID"])] = float64(s.Value)
	}
	return out
}

// sameByCluster says whether two reads of an interval agree within the engine's 0.1%.
func sameByCluster(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for c, x := range a {
		y, ok := b[c]
		if !ok || math.Abs(x-y) > 1e-3*math.Max(math.Abs(x), math.Abs(y)) {
			return false
		}
	}
	return true
}
