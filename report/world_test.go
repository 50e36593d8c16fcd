package report

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// This file copies the engine's test world (engine/world_test.go) to record real runs on
// virtual time for the golden reports: the Cloudflare emulator, an embedded Prometheus with
// appended samples, a SQLite store and engine.Step.

// world is a small fleet on virtual time built from the real parts: the Cloudflare emulator
// over HTTP, an embedded Prometheus whose samples the test writes at virtual timestamps, a
// SQLite store. Traffic follows the pool's weights as read from the emulator, so a weight
// change shows up in the counters exactly as it would in production.
type world struct {
	t       *testing.T
	emu     *cfemu.Server
	prom    *embedded.Server
	src     *metrics.Source
	steer   *traffic.Cloudflare
	st      *store.SQLite
	dir     string
	poolID  string
	rng     *rand.Rand
	mu      sync.Mutex
	now     time.Time
	written time.Time
	rate    float64            // requests per second through the pool
	errP    map[string]float64 // per cluster error probability
	slowP   map[string]float64 // per cluster share slower than 0.5s
	meanLat map[string]float64
	cum     map[string]*counters
	down    bool // Prometheus gets no new samples (a scrape outage)
}

type counters struct{ ok, errs, fast, slow, sum float64 }

var clusterOrigin = map[string]string{"c1": "o1", "c2": "o2", "c3": "o3"}

const poolJSON = `{"id": "%s", "name": "test-pool", "enabled": true, "minimum_origins": 1,
 "origin_steering": {"policy": "random"}, "monitor": "m1", "description": "keeps every field",
 "origins": [
  {"name": "o1", "address": "c1.example.com", "enabled": true, "weight": 0.26, "header": {"Host": ["api.example.com"]}},
  {"name": "o2", "address": "c2.example.com", "enabled": true, "weight": 0.27},
  {"name": "o3", "address": "c3.example.com", "enabled": true, "weight": 0.27},
  {"name": "standby", "address": "c9.example.com", "enabled": true, "weight": 0.2}
 ]}`

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), poolID: "0123456789abcdef0123456789abcdef", rng: rand.New(rand.NewPCG(7, 11)),
		now: t0.Add(-65 * time.Minute), rate: 200,
		errP:    map[string]float64{"c1": 0.01, "c2": 0.01, "c3": 0.01},
		slowP:   map[string]float64{"c1": 0.05, "c2": 0.05, "c3": 0.05},
		meanLat: map[string]float64{"c1": 0.12, "c2": 0.12, "c3": 0.12},
		cum:     map[string]*counters{"c1": {}, "c2": {}, "c3": {}},
	}
	w.emu = cfemu.New(cfemu.Options{RateLimit: -1, Now: w.Now})
	if _, err := w.emu.AddPool([]byte(fmt.Sprintf(poolJSON, w.poolID))); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.emu.Close() })
	var err error
	w.prom, err = embedded.New(embedded.Options{Now: w.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.prom.Close() })
	w.src, err = metrics.New(metrics.Options{Address: w.prom.URL(), MaxAttempts: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.src.Close)
	w.steer, err = traffic.NewCloudflare(traffic.CloudflareOptions{Token: w.emu.Token(), AccountID: w.emu.AccountID(), BaseURL: w.emu.APIURL(),
		MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRateLimitWait: 10 * time.Millisecond, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.st = w.openStore()
	w.advance(t0)
	return w
}

func (w *world) openStore() *store.SQLite {
	st, err := store.OpenSQLite(context.Background(), w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	return st
}

func (w *world) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) weights() map[string]float64 {
	raw, ok := w.emu.Pool(w.poolID)
	if !ok {
		w.t.Fatal("pool gone")
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]float64{}
	total := 0.0
	for _, o := range p.Origins {
		total += o.Weight
	}
	for c, o := range clusterOrigin {
		oo, _ := p.Origin(o)
		out[c] = oo.Weight / total
	}
	return out
}

func poisson(r *rand.Rand, mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*r.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// advance writes 15-second samples for every cluster up to to, with traffic split by the
// pool's current weights.
func (w *world) advance(to time.Time) {
	w.t.Helper()
	const step = 15 * time.Second
	for w.now.Before(to) {
		w.mu.Lock()
		w.now = w.now.Add(step)
		at := w.now
		w.mu.Unlock()
		share := w.weights()
		var samples []embedded.Sample
		for _, c := range []string{"c1", "c2", "c3"} {
			n := poisson(w.rng, w.rate*share[c]*step.Seconds())
			e := poisson(w.rng, n*w.errP[c])
			slow := poisson(w.rng, (n-e)*w.slowP[c])
			cc := w.cum[c]
			cc.ok += n - e
			cc.errs += e
			cc.slow += slow
			cc.fast += n - slow
			cc.sum += n * w.meanLat[c] * (1 + 0.02*w.rng.NormFloat64())
			if w.down {
				continue
			}
			lbl := func(kv ...string) map[string]string {
				m := map[string]string{"cluster": c}
				for i := 0; i+1 < len(kv); i += 2 {
					m[kv[i]] = kv[i+1]
				}
				return m
			}
			samples = append(samples,
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "200"), Time: at, Value: cc.ok},
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "500"), Time: at, Value: cc.errs},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "0.5"), Time: at, Value: cc.fast},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "+Inf"), Time: at, Value: cc.fast + cc.slow},
				embedded.Sample{Metric: "http_request_duration_seconds_sum", Labels: lbl(), Time: at, Value: cc.sum},
				embedded.Sample{Metric: "http_request_duration_seconds_count", Labels: lbl(), Time: at, Value: cc.fast + cc.slow},
				embedded.Sample{Metric: "kube_pod_info", Labels: lbl("pod", "p1"), Time: at, Value: 1},
			)
		}
		if len(samples) > 0 {
			if err := w.prom.Append(samples...); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

const experimentYAML = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: world-test
spec:
  canary: {cluster: c1, variant: {cni: cilium}}
  baselines: [c2, c3]
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {c1: o1, c2: o2, c3: o3}
    steps:
      - {weight: 10%, hold: 10m}
      - {weight: 25%, hold: 10m}
      - {weight: 34%, hold: 15m}
    onRollback: ROLLBACK
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
      guardrail: {max: 20%, for: 2}
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count[{{.Interval}}]))
      slowerThan: 500ms
      tolerance: 15%
  analysis:
    interval: 1m
    alpha: 0.05
    prePeriod: 60m
    minIntervals: 5
    maxDuration: 2h
    noDataTimeout: 5m
    onDrift: DRIFT
  preconditions:
    - name: pods-everywhere
      query: count(kube_pod_info{cluster=~"{{.Clusters}}"})
      expect: ">= 3"
`

func (w *world) experiment(edits ...string) *experiments.Experiment {
	w.t.Helper()
	y := strings.NewReplacer("ACCOUNT", w.emu.AccountID(), "POOL", w.poolID, "PROM", w.prom.URL(), "ROLLBACK", "restore", "DRIFT", "pause").Replace(experimentYAML)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(y, edits[i]) {
			w.t.Fatalf("test bug: %q not in experiment", edits[i])
		}
		y = strings.Replace(y, edits[i], edits[i+1], 1)
	}
	exps, err := experiments.Load("world.yaml", []byte(y), experiments.LoadOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return exps[0]
}

func (w *world) engine() *engine.Engine {
	w.t.Helper()
	o := engine.Options{Store: w.st, Steerer: w.steer, Metrics: w.src, Settle: 5 * time.Second, Who: "verdict@test"}
	e, err := engine.New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// drive steps the run every 30 virtual seconds until it ends or limit passes; between
// steps, before is called (to inject faults at given times).
func (w *world) drive(r *engine.Run, limit time.Duration, before func(now time.Time)) {
	w.t.Helper()
	end := w.Now().Add(limit)
	for !r.Done() && w.Now().Before(end) {
		w.advance(w.Now().Add(30 * time.Second))
		if before != nil {
			before(w.Now())
		}
		if err := r.Step(context.Background(), w.Now()); err != nil {
			w.t.Fatalf("step at %s: %v", w.Now().Format(time.TimeOnly), err)
		}
	}
}
