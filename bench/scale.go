package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// ScaleConfig sizes the scale benchmark.
type ScaleConfig struct {
	// Experiments are the numbers of concurrent experiments to run, one world each.
	Experiments []int
	// Ticks is how many one-minute ticks each world runs (default 16: three steps of a
	// 4-minute hold, and the end).
	Ticks int
	// Workers is how many Run.Step calls run at once (default 8×GOMAXPROCS: steps wait on
	// HTTP and SQLite more than they compute).
	Workers int
	// Dir holds the SQLite stores and TSDBs; default a temporary directory.
	Dir string
	// RateLimited, when > 0, adds a world of that many experiments with the emulator's
	// Cloudflare rate limit on (1,200 calls per 5 minutes, as Cloudflare documents).
	RateLimited int
}

// ScaleResult is one row of results.json's "scale".
type ScaleResult struct {
	Experiments int `json:"experiments"`
	// CPUPerExperimentTick is process CPU seconds (user+system) spent stepping, divided by
	// experiment ticks. It includes the in-process embedded Prometheus answering the
	// queries and the Cloudflare emulator answering the API, so Verdict's own share is
	// lower; it excludes writing the simulated samples.
	CPUPerExperimentTick float64 `json:"cpuPerExperimentTick"`
	// RSSBytes is the process's resident set at the end of the world's last tick.
	RSSBytes uint64 `json:"rssBytes"`
	// HeapBytes is the Go heap in use at the same moment.
	HeapBytes uint64 `json:"heapBytes"`
	// QueriesPerTick is Prometheus HTTP queries per experiment tick that reads KPI data
	// (ticks right after a weight change have no complete interval to read).
	QueriesPerTick float64 `json:"queriesPerTick"`
	// QueriesPerExperimentTick averages over every experiment tick.
	QueriesPerExperimentTick float64 `json:"queriesPerExperimentTick"`
	// KPIs is the number of KPIs per experiment (the target is one query per KPI).
	KPIs int `json:"kpis"`
	// CloudflareCallsPerStep is Cloudflare API calls per weight change (SetWeights).
	CloudflareCallsPerStep float64 `json:"cloudflareCallsPerStep"`
	// PoolReadsPerTick is Cloudflare API calls per experiment per tick outside weight
	// changes (the drift check reads the pool every tick).
	PoolReadsPerTick float64 `json:"poolReadsPerTick"`
	// LateTicks counts experiment ticks whose Step finished more than one interval
	// after the tick was due.
	LateTicks int `json:"lateTicks"`
	// Ticks is the number of tick rounds; ExperimentTicks the Step calls measured.
	Ticks           int `json:"ticks"`
	ExperimentTicks int `json:"experimentTicks"`
	// TickWallP50 and TickWallMax are the wall time (s) of a whole round of Steps.
	TickWallP50 float64 `json:"tickWallP50"`
	TickWallMax float64 `json:"tickWallMax"`
	// StepP99 is the 99th percentile of one Step's wall time (s).
	StepP99 float64 `json:"stepP99"`
	// Errors counts Step errors; Outcomes counts runs by final state.
	Errors   int            `json:"errors"`
	Outcomes map[string]int `json:"outcomes"`
	// WallSeconds is the world's total wall time, data generation included.
	WallSeconds float64 `json:"wallSeconds"`
	// RateLimited is true when the emulator enforced Cloudflare's API rate limit.
	RateLimited bool `json:"rateLimited"`
	// Faults counts fault events (failed Cloudflare or Prometheus calls, retried later).
	Faults int `json:"faults"`
}

// counting counts HTTP requests; a request whose context carries a *int64 under
// callsKey is also counted there, to attribute Cloudflare calls to a SetWeights.
type counting struct {
	base http.RoundTripper
	n    atomic.Int64
}

type callsKey struct{}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if p, ok := r.Context().Value(callsKey{}).(*atomic.Int64); ok {
		p.Add(1)
	}
	return c.base.RoundTrip(r)
}

// fetchCounter wraps the metrics source to count KPI fetches (one per KPI per
// experiment tick that reads data).
type fetchCounter struct {
	engine.KPISource
	n atomic.Int64
}

func (f *fetchCounter) Fetch(ctx context.Context, kpi metrics.KPI, r metrics.Range, clusters []string) (*metrics.Data, error) {
	f.n.Add(1)
	return f.KPISource.Fetch(ctx, kpi, r, clusters)
}

// steerCounter wraps the Cloudflare Steerer to count API calls per SetWeights.
type steerCounter struct {
	traffic.Steerer
	mu     sync.Mutex
	writes int
	calls  int64
}

func (s *steerCounter) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	var n atomic.Int64
	err := s.Steerer.SetWeights(context.WithValue(ctx, callsKey{}, &n), ref, want, expect)
	s.mu.Lock()
	s.writes++
	s.calls += n.Load()
	s.mu.Unlock()
	return err
}

const scalePool = `{"id": "%s", "name": "pool-%d", "enabled": true, "minimum_origins": 1,
 "origin_steering": {"policy": "random"}, "monitor": "m1",
 "origins": [
  {"name": "o1", "address": "c1.example.com", "enabled": true, "weight": 0.33},
  {"name": "o2", "address": "c2.example.com", "enabled": true, "weight": 0.33},
  {"name": "o3", "address": "c3.example.com", "enabled": true, "weight": 0.34}
 ]}`

const scaleExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: scale-%[1]d
spec:
  canary: {cluster: e%[1]d-c1, variant: {release: next}}
  baselines: [e%[1]d-c2, e%[1]d-c3]
  traffic:
    cloudflare:
      accountID: %[2]s
      poolID: %[3]s
      origins: {e%[1]d-c1: o1, e%[1]d-c2: o2, e%[1]d-c3: o3}
    steps:
      - {weight: 10%%, hold: 4m}
      - {weight: 25%%, hold: 4m}
      - {weight: 34%%, hold: 4m}
    onRollback: restore
  prometheus:
    address: %[4]s
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5..", cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      tolerance: 20%%
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      slowerThan: 500ms
      tolerance: 15%%
  analysis:
    interval: 1m
    alpha: 0.05
    prePeriod: 0s
    minIntervals: 3
    maxDuration: 14m
    noDataTimeout: 5m
`

// scaleCluster is one simulated cluster's cumulative counters.
type scaleCluster struct {
	name                      string
	ok, errs, fast, slow, sum float64
}

// RunScale runs each world size in turn.
func RunScale(ctx context.Context, cfg ScaleConfig) ([]ScaleResult, error) {
	var out []ScaleResult
	sizes := slices.Clone(cfg.Experiments)
	if cfg.RateLimited > 0 {
		sizes = append(sizes, -cfg.RateLimited)
	}
	for _, n := range sizes {
		limited := n < 0
		n = max(n, -n)
		r, err := runScaleWorld(ctx, cfg, n, limited)
		if err != nil {
			return out, fmt.Errorf("scale world of %d experiments: %w", n, err)
		}
		out = append(out, r)
		runtime.GC()
	}
	return out, nil
}

func runScaleWorld(ctx context.Context, cfg ScaleConfig, n int, limited bool) (ScaleResult, error) {
	started := time.Now()
	res := ScaleResult{Experiments: n, KPIs: 2, Outcomes: map[string]int{}, RateLimited: limited}
	ticks := cfg.Ticks
	if ticks <= 0 {
		ticks = 16
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 8 * runtime.GOMAXPROCS(0)
	}
	dir, err := os.MkdirTemp(cfg.Dir, "verdict-scale-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	var mu sync.Mutex
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	now := t0.Add(-5 * time.Minute)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	limit := -1
	if limited {
		limit = 0 // the emulator's default: Cloudflare's 1,200 per 5 minutes
	}
	emu := cfemu.New(cfemu.Options{RateLimit: limit, Now: clock})
	poolIDs := make([]string, n)
	for i := range n {
		poolIDs[i] = fmt.Sprintf("%032x", i+1)
		if _, err := emu.AddPool(fmt.Appendf(nil, scalePool, poolIDs[i], i)); err != nil {
			return res, err
		}
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		return res, err
	}
	defer emu.Close()
	prom, err := embedded.New(embedded.Options{Dir: dir + "/tsdb", Now: clock})
	if err != nil {
		return res, err
	}
	if err := prom.Start(); err != nil {
		return res, err
	}
	defer prom.Close()
	promHTTP := &counting{base: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: 0}}
	src, err := metrics.New(metrics.Options{Address: prom.URL(), MaxAttempts: 2, Timeout: 30 * time.Second, Transport: promHTTP})
	if err != nil {
		return res, err
	}
	defer src.Close()
	cfHTTP := &counting{base: &http.Transport{MaxIdleConnsPerHost: workers}}
	cf, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: emu.Token(), AccountID: emu.AccountID(), BaseURL: emu.APIURL(),
		HTTPClient: &http.Client{Transport: cfHTTP}, MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRateLimitWait: 10 * time.Millisecond, CallTimeout: 30 * time.Second})
	if err != nil {
		return res, err
	}
	// As verdict serve does: the runs' pool reads share one listing of the account.
	cache := traffic.NewPoolCache(cf, traffic.PoolCacheOptions{MaxAge: 10 * time.Second, Now: clock})
	steer := &steerCounter{Steerer: cache.Steerer(cf)}
	st, err := store.OpenSQLite(ctx, dir+"/store")
	if err != nil {
		return res, err
	}
	defer st.Close()
	fetches := &fetchCounter{KPISource: src}
	var faults atomic.Int64
	obs := engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventFault {
			faults.Add(1)
		}
	})
	eng, err := engine.New(engine.Options{Store: st, Steerer: steer, Metrics: fetches, Who: "bench", Observer: obs})
	if err != nil {
		return res, err
	}

	// The world: three clusters per experiment, counters written every 15 s with the
	// traffic split by the pool's weights.
	clusters := make([][3]*scaleCluster, n)
	for i := range n {
		for j := range 3 {
			clusters[i][j] = &scaleCluster{name: fmt.Sprintf("e%d-c%d", i, j+1)}
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	weights := func(i int) [3]float64 {
		raw, _ := emu.Pool(poolIDs[i])
		p, err := traffic.DecodePool(raw)
		if err != nil {
			return [3]float64{1, 1, 1}
		}
		var w [3]float64
		for j := range 3 {
			if o, ok := p.Origin("o" + strconv.Itoa(j+1)); ok {
				w[j] = o.Weight
			}
		}
		return w
	}
	advance := func(to time.Time) error {
		for clock().Before(to) {
			mu.Lock()
			now = now.Add(15 * time.Second)
			at := now
			mu.Unlock()
			samples := make([]embedded.Sample, 0, n*3*7)
			for i := range n {
				w := weights(i)
				tot := w[0] + w[1] + w[2]
				for j, c := range clusters[i] {
					req := 200 * 15 * w[j] / tot
					req = math.Max(0, math.Round(req+math.Sqrt(req)*rng.NormFloat64()))
					e := math.Round(req * 0.01)
					slow := math.Round(req * 0.02)
					c.ok += req - e
					c.errs += e
					c.slow += slow
					c.fast += req - slow
					c.sum += req * 0.12
					lbl := func(kv ...string) map[string]string {
						m := map[string]string{"cluster": c.name}
						for k := 0; k+1 < len(kv); k += 2 {
							m[kv[k]] = kv[k+1]
						}
						return m
					}
					samples = append(samples,
						embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "200"), Time: at, Value: c.ok},
						embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "500"), Time: at, Value: c.errs},
						embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "0.5"), Time: at, Value: c.fast},
						embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "+Inf"), Time: at, Value: c.fast + c.slow},
						embedded.Sample{Metric: "http_request_duration_seconds_sum", Labels: lbl(), Time: at, Value: c.sum},
						embedded.Sample{Metric: "http_request_duration_seconds_count", Labels: lbl(), Time: at, Value: c.fast + c.slow},
					)
				}
			}
			if err := prom.Append(samples...); err != nil {
				return err
			}
		}
		return nil
	}
	if err := advance(t0); err != nil {
		return res, err
	}

	runs := make([]*engine.Run, n)
	for i := range n {
		y := fmt.Sprintf(scaleExperiment, i, emu.AccountID(), poolIDs[i], prom.URL())
		exps, err := experiments.Load(fmt.Sprintf("scale-%d.yaml", i), []byte(y), experiments.LoadOptions{})
		if err != nil {
			return res, err
		}
		if runs[i], err = eng.Start(ctx, exps[0], "", clock()); err != nil {
			return res, err
		}
	}

	const interval = time.Minute
	var cpu time.Duration
	var stepWalls, roundWalls []float64
	var readCalls, readTicks int64
	promBefore, fetchBefore := promHTTP.n.Load(), fetches.n.Load()
	for tick := range ticks {
		// Each tick is due 30 s into the minute, after the last interval has settled.
		if err := advance(t0.Add(time.Duration(tick)*interval + 30*time.Second)); err != nil {
			return res, err
		}
		at := clock()
		cfBefore := cfHTTP.n.Load()
		steer.mu.Lock()
		wBefore := steer.calls
		steer.mu.Unlock()
		cpu0 := cpuTime()
		round := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		var lmu sync.Mutex
		var errs, active int
		var late int
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					s := time.Now()
					err := runs[i].Step(ctx, at)
					d := time.Since(s)
					lmu.Lock()
					stepWalls = append(stepWalls, d.Seconds())
					if err != nil {
						errs++
					}
					if time.Since(round) > interval {
						late++
					}
					lmu.Unlock()
				}
			}()
		}
		for i := range n {
			if !runs[i].Done() {
				active++
				next <- i
			}
		}
		close(next)
		wg.Wait()
		roundWalls = append(roundWalls, time.Since(round).Seconds())
		cpu += cpuTime() - cpu0
		res.ExperimentTicks += active
		res.Errors += errs
		res.LateTicks += late
		res.Ticks++
		steer.mu.Lock()
		wAfter := steer.calls
		steer.mu.Unlock()
		readCalls += (cfHTTP.n.Load() - cfBefore) - (wAfter - wBefore)
		readTicks += int64(active)
		if active == 0 {
			break
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.RSSBytes = rss()
	res.HeapBytes = ms.HeapInuse
	if res.ExperimentTicks > 0 {
		res.CPUPerExperimentTick = cpu.Seconds() / float64(res.ExperimentTicks)
		res.PoolReadsPerTick = float64(readCalls) / float64(readTicks)
	}
	queries := promHTTP.n.Load() - promBefore
	if f := fetches.n.Load() - fetchBefore; f > 0 {
		res.QueriesPerTick = float64(queries) / (float64(f) / float64(res.KPIs))
	}
	if res.ExperimentTicks > 0 {
		res.QueriesPerExperimentTick = float64(queries) / float64(res.ExperimentTicks)
	}
	if steer.writes > 0 {
		res.CloudflareCallsPerStep = float64(steer.calls) / float64(steer.writes)
	}
	slices.Sort(stepWalls)
	slices.Sort(roundWalls)
	if len(stepWalls) > 0 {
		res.StepP99 = stepWalls[int(math.Ceil(0.99*float64(len(stepWalls))))-1]
	}
	if len(roundWalls) > 0 {
		res.TickWallP50 = roundWalls[(len(roundWalls)-1)/2]
		res.TickWallMax = roundWalls[len(roundWalls)-1]
	}
	for _, r := range runs {
		res.Outcomes[string(r.Record().State)]++
	}
	res.Faults = int(faults.Load())
	res.WallSeconds = time.Since(started).Seconds()
	return res, nil
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's resident set size from /proc (0 where there is none).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
}
