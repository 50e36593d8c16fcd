// Package testworld is a small fleet on virtual time for tests of the packages that run
// experiments (engine, report): the Cloudflare emulator over HTTP, an embedded Prometheus
// whose samples the test writes at virtual timestamps, and a SQLite store.
package testworld

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// Stepper is a run that Drive can step: *engine.Run.
type Stepper interface {
	Step(ctx context.Context, now time.Time) error
	Done() bool
}

// World is a small fleet on virtual time built from the real parts: the Cloudflare emulator
// over HTTP, an embedded Prometheus whose samples the test writes at virtual timestamps, a
// SQLite store. Traffic follows the pool's weights as read from the emulator, so a weight
// change shows up in the counters exactly as it would in production.
type World struct {
	t       *testing.T
	Emu     *cfemu.Server
	Prom    *embedded.Server
	Src     *metrics.Source
	Steer   *traffic.Cloudflare
	St      *store.SQLite
	dir     string
	PoolID  string
	rng     *rand.Rand
	mu      sync.Mutex
	now     time.Time
	written time.Time
	Rate    float64            // requests per second through the pool
	ErrP    map[string]float64 // per cluster error probability
	SlowP   map[string]float64 // per cluster share slower than 0.5s
	MeanLat map[string]float64
	cum     map[string]*counters
	Down    bool // Prometheus gets no new samples (a scrape outage)
	// Dead lists clusters whose samples stop while the rest go on (a federation leaf
	// that died: Prometheus keeps its last samples, which only age).
	Dead map[string]bool
	// Lag delays each cluster's samples: they carry their own time but reach Prometheus
	// only Lag later, as a federation server stores its leaves' samples a scrape late.
	Lag  map[string]time.Duration
	late []lateSample
	down map[string]bool // origins marked unhealthy (SetOriginHealth)
}

type counters struct{ ok, errs, fast, slow, sum float64 }

type lateSample struct {
	release time.Time
	s       embedded.Sample
}

var clusterOrigin = map[string]string{"c1": "o1", "c2": "o2", "c3": "o3"}

const poolJSON = `{"id": "%s", "name": "test-pool", "enabled": true, "minimum_origins": 1,
 "origin_steering": {"policy": "random"}, "monitor": "m1", "description": "keeps every field",
 "origins": [
  {"name": "o1", "address": "c1.example.com", "enabled": true, "weight": 0.26, "header": {"Host": ["api.example.com"]}},
  {"name": "o2", "address": "c2.example.com", "enabled": true, "weight": 0.27},
  {"name": "o3", "address": "c3.example.com", "enabled": true, "weight": 0.27},
  {"name": "standby", "address": "c9.example.com", "enabled": true, "weight": 0.2}
 ]}`

// T0 is the virtual time at which experiments start; the world has an hour of history before it.
var T0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// New starts a world whose pool splits traffic 0.26/0.27/0.27 between c1, c2 and c3, with a
// standby origin at 0.2 outside the experiment, and writes its first hour of samples.
func New(t *testing.T) *World {
	t.Helper()
	w := &World{t: t, dir: t.TempDir(), PoolID: "0123456789abcdef0123456789abcdef", rng: rand.New(rand.NewPCG(7, 11)),
		now: T0.Add(-65 * time.Minute), Rate: 200,
		ErrP:    map[string]float64{"c1": 0.01, "c2": 0.01, "c3": 0.01},
		SlowP:   map[string]float64{"c1": 0.05, "c2": 0.05, "c3": 0.05},
		MeanLat: map[string]float64{"c1": 0.12, "c2": 0.12, "c3": 0.12},
		cum:     map[string]*counters{"c1": {}, "c2": {}, "c3": {}},
	}
	w.Emu = cfemu.New(cfemu.Options{RateLimit: -1, Now: w.Now})
	if _, err := w.Emu.AddPool([]byte(fmt.Sprintf(poolJSON, w.PoolID))); err != nil {
		t.Fatal(err)
	}
	if err := w.Emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Emu.Close() })
	var err error
	w.Prom, err = embedded.New(embedded.Options{Now: w.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Prom.Close() })
	w.Src, err = metrics.New(metrics.Options{Address: w.Prom.URL(), MaxAttempts: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Src.Close)
	w.Steer, err = traffic.NewCloudflare(traffic.CloudflareOptions{Token: w.Emu.Token(), AccountID: w.Emu.AccountID(), BaseURL: w.Emu.APIURL(),
		MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRateLimitWait: 10 * time.Millisecond, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.St = w.OpenStore()
	w.Advance(T0)
	return w
}

// OpenStore opens the world's state directory again, as a restarted process would.
func (w *World) OpenStore() *store.SQLite {
	st, err := store.OpenSQLite(context.Background(), w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	return st
}

// Now is the world's virtual clock.
func (w *World) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *World) weights() map[string]float64 {
	raw, ok := w.Emu.Pool(w.PoolID)
	if !ok {
		w.t.Fatal("pool gone")
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]float64{}
	total := 0.0
	w.mu.Lock()
	down := maps.Clone(w.down)
	w.mu.Unlock()
	for _, o := range p.Origins {
		if !down[o.Name] {
			total += o.Weight
		}
	}
	for c, o := range clusterOrigin {
		oo, _ := p.Origin(o)
		if !down[o] && total > 0 {
			out[c] = oo.Weight / total
		}
	}
	return out
}

// SetOriginHealth marks an origin unhealthy (or healthy again) at the emulator, whose
// health endpoint then reports it, and in the world's traffic, which then sends it
// nothing and splits its share over the healthy origins, as Cloudflare does.
func (w *World) SetOriginHealth(origin string, healthy bool) {
	w.t.Helper()
	if err := w.Emu.SetOriginHealth(w.PoolID, origin, healthy); err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down == nil {
		w.down = map[string]bool{}
	}
	w.down[origin] = !healthy
}

// Poisson draws a Poisson count (normal above a mean of 50, where the two agree closely).
func Poisson(r *rand.Rand, mean float64) float64 {
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

// Advance writes 15-second samples for every cluster up to to, with traffic split by the
// pool's current weights.
func (w *World) Advance(to time.Time) {
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
			n := Poisson(w.rng, w.Rate*share[c]*step.Seconds())
			e := Poisson(w.rng, n*w.ErrP[c])
			slow := Poisson(w.rng, (n-e)*w.SlowP[c])
			cc := w.cum[c]
			cc.ok += n - e
			cc.errs += e
			cc.slow += slow
			cc.fast += n - slow
			cc.sum += n * w.MeanLat[c] * (1 + 0.02*w.rng.NormFloat64())
			if w.Down || w.Dead[c] {
				continue
			}
			lbl := func(kv ...string) map[string]string {
				m := map[string]string{"cluster": c}
				for i := 0; i+1 < len(kv); i += 2 {
					m[kv[i]] = kv[i+1]
				}
				return m
			}
			out := &samples
			var delayed []embedded.Sample
			if w.Lag[c] > 0 {
				out = &delayed
			}
			*out = append(*out,
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "200"), Time: at, Value: cc.ok},
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "500"), Time: at, Value: cc.errs},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "0.5"), Time: at, Value: cc.fast},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "+Inf"), Time: at, Value: cc.fast + cc.slow},
				embedded.Sample{Metric: "http_request_duration_seconds_sum", Labels: lbl(), Time: at, Value: cc.sum},
				embedded.Sample{Metric: "http_request_duration_seconds_count", Labels: lbl(), Time: at, Value: cc.fast + cc.slow},
				embedded.Sample{Metric: "kube_pod_info", Labels: lbl("pod", "p1"), Time: at, Value: 1},
			)
			for _, d := range delayed {
				w.late = append(w.late, lateSample{release: at.Add(w.Lag[c]), s: d})
			}
		}
		kept := w.late[:0]
		for _, l := range w.late {
			if l.release.After(at) {
				kept = append(kept, l)
				continue
			}
			samples = append(samples, l.s)
		}
		w.late = kept
		if len(samples) > 0 {
			if err := w.Prom.Append(samples...); err != nil {
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

// Experiment loads the test experiment pointed at this world, with edits applied as
// old, new pairs of text.
func (w *World) Experiment(edits ...string) *experiments.Experiment {
	w.t.Helper()
	y := strings.NewReplacer("ACCOUNT", w.Emu.AccountID(), "POOL", w.PoolID, "PROM", w.Prom.URL(), "ROLLBACK", "restore", "DRIFT", "pause").Replace(experimentYAML)
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

// Drive steps the run every 30 virtual seconds until it ends or limit passes; between
// steps, before is called (to inject faults at given times).
func (w *World) Drive(r Stepper, limit time.Duration, before func(now time.Time)) {
	w.t.Helper()
	end := w.Now().Add(limit)
	for !r.Done() && w.Now().Before(end) {
		w.Advance(w.Now().Add(30 * time.Second))
		if before != nil {
			before(w.Now())
		}
		if err := r.Step(context.Background(), w.Now()); err != nil {
			w.t.Fatalf("step at %s: %v", w.Now().Format(time.TimeOnly), err)
		}
	}
}

// PoolWeights reads every origin's weight from the emulator.
func (w *World) PoolWeights() map[string]float64 {
	raw, _ := w.Emu.Pool(w.PoolID)
	p, err := traffic.DecodePool(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	return p.Weights()
}
