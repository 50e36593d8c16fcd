package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/internal/testworld"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// fastClock is compressed real time: virtual time runs speed times faster than the wall
// clock, so a run with minute intervals and ten-minute steps takes seconds, while every
// part (HTTP, SQLite, the embedded Prometheus) runs for real.
type fastClock struct {
	base  time.Time
	start time.Time
	speed float64
}

func (c *fastClock) Now() time.Time {
	return c.base.Add(time.Duration(float64(time.Since(c.start)) * c.speed))
}

func (c *fastClock) After(d time.Duration) <-chan time.Time {
	return time.After(time.Duration(float64(d) / c.speed))
}

// world is a fleet of three pools of three clusters each, on compressed real time: the
// Cloudflare emulator over HTTP holds the pools, a writer goroutine puts the clusters'
// request counters into an embedded Prometheus every 15 virtual seconds, split by the
// weights the emulator holds at that moment, so a weight change shows up in the data as
// it would in production.
type world struct {
	t      *testing.T
	clk    *fastClock
	emu    *cfemu.Server
	prom   *embedded.Server
	steer  *traffic.Cloudflare
	tel    *Telemetry
	state  string
	dir    string
	stores []*store.SQLite

	sample time.Duration // spacing of the samples written to Prometheus
	rate   float64       // requests per second through each pool

	mu      sync.Mutex
	rng     *rand.Rand
	written time.Time
	errP    map[string]float64 // per cluster error probability
	slowP   map[string]float64
	cum     map[string]*counters
	stop    chan struct{}
	stopped chan struct{}

	// claimWrites counts, per pool ID, the writes that changed only the pool's description
	// (a run's claim on it, traffic.Claimer), so that poolWrites counts weight writes.
	claimMu     sync.Mutex
	claimWrites map[string]int
	lastSeen    map[string]traffic.Pool
}

type counters struct{ ok, errs, fast, slow, sum float64 }

// pools: pool letter -> pool ID; clusters a1..c3, origins oa1..oc3.
var pools = map[string]string{
	"a": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	"b": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
	"c": "cccccccccccccccccccccccccccccccc",
}

const poolRate = 1500.0 // requests per second through each pool

var wt0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldAt(t, &fastClock{base: wt0, start: time.Now(), speed: 120}, 15*time.Second, poolRate)
}

// newWorldAt is newWorld on clk, writing a sample every sample with rate requests per
// second through each pool.
func newWorldAt(t *testing.T, clk *fastClock, sample time.Duration, rate float64) *world {
	t.Helper()
	w := &world{t: t, state: t.TempDir(), dir: t.TempDir(), rng: rand.New(rand.NewPCG(3, 5)),
		errP: map[string]float64{}, slowP: map[string]float64{}, cum: map[string]*counters{},
		stop: make(chan struct{}), stopped: make(chan struct{}), sample: sample, rate: rate}
	w.clk = clk
	w.claimWrites, w.lastSeen = map[string]int{}, map[string]traffic.Pool{}
	w.emu = cfemu.New(cfemu.Options{RateLimit: -1, Now: w.clk.Now, AfterRequest: w.afterRequest})
	for letter, id := range pools {
		var origins []string
		for i := 1; i <= 3; i++ {
			c := fmt.Sprintf("%s%d", letter, i)
			w.errP[c], w.slowP[c], w.cum[c] = 0.01, 0.05, &counters{}
			origins = append(origins, fmt.Sprintf(`{"name": "o%s", "address": "%s.example.com", "enabled": true, "weight": %.2f}`, c, c, []float64{0.33, 0.33, 0.34}[i-1]))
		}
		js := fmt.Sprintf(`{"id": "%s", "name": "pool-%s", "enabled": true, "minimum_origins": 1, "origins": [%s]}`, id, letter, strings.Join(origins, ","))
		if _, err := w.emu.AddPool([]byte(js)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range pools {
		w.notePool(id)
	}
	if err := w.emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.emu.Close() })
	var err error
	w.prom, err = embedded.New(embedded.Options{Now: w.clk.Now, ScrapeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.prom.Close() })
	w.tel = NewTelemetry()
	w.steer, err = traffic.NewCloudflare(traffic.CloudflareOptions{Token: w.emu.Token(), AccountID: w.emu.AccountID(), BaseURL: w.emu.APIURL(),
		HTTPClient:  &http.Client{Transport: w.tel.CloudflareTransport(nil)},
		MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRateLimitWait: 10 * time.Millisecond, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Ten virtual minutes of history, then keep writing as virtual time passes.
	w.written = w.clk.Now().Add(-10 * time.Minute).Truncate(w.sample)
	w.writeUntil(w.clk.Now())
	go w.writer()
	t.Cleanup(func() { close(w.stop); <-w.stopped })
	return w
}

// notePool reads a pool and says whether the change since the last read touched only its
// description.
func (w *world) notePool(id string) (descriptionOnly bool) {
	raw, ok := w.emu.Pool(id)
	if !ok {
		return false
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		return false
	}
	w.claimMu.Lock()
	defer w.claimMu.Unlock()
	prev, seen := w.lastSeen[id]
	w.lastSeen[id] = p
	return seen && prev.Description != p.Description && maps.Equal(prev.Weights(), p.Weights())
}

// afterRequest counts the successful pool writes that changed only the description.
func (w *world) afterRequest(r *http.Request, status int) {
	if (r.Method != "PATCH" && r.Method != "PUT") || status >= 300 {
		return
	}
	for _, id := range pools {
		if strings.Contains(r.URL.Path, id) && w.notePool(id) {
			w.claimMu.Lock()
			w.claimWrites[id]++
			w.claimMu.Unlock()
		}
	}
}

func (w *world) writer() {
	defer close(w.stopped)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.writeUntil(w.clk.Now())
		}
	}
}

func (w *world) shares(letter string) map[string]float64 {
	raw, ok := w.emu.Pool(pools[letter])
	if !ok {
		return nil
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		return nil
	}
	total := 0.0
	for _, o := range p.Origins {
		total += o.Weight
	}
	out := map[string]float64{}
	for _, o := range p.Origins {
		out[strings.TrimPrefix(o.Name, "o")] = o.Weight / total
	}
	return out
}

// writeUntil writes a sample every w.sample for every cluster up to to.
func (w *world) writeUntil(to time.Time) {
	step := w.sample
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.written.Add(step).After(to) {
		w.written = w.written.Add(step)
		at := w.written
		var samples []embedded.Sample
		for letter := range pools {
			share := w.shares(letter)
			for i := 1; i <= 3; i++ {
				c := fmt.Sprintf("%s%d", letter, i)
				n := testworld.Poisson(w.rng, w.rate*share[c]*step.Seconds())
				e := testworld.Poisson(w.rng, n*w.errP[c])
				slow := testworld.Poisson(w.rng, (n-e)*w.slowP[c])
				cc := w.cum[c]
				cc.ok += n - e
				cc.errs += e
				cc.slow += slow
				cc.fast += n - slow
				cc.sum += n * 0.12
				l := func(kv ...string) map[string]string {
					m := map[string]string{"cluster": c}
					for i := 0; i+1 < len(kv); i += 2 {
						m[kv[i]] = kv[i+1]
					}
					return m
				}
				samples = append(samples,
					embedded.Sample{Metric: "http_requests_total", Labels: l("code", "200"), Time: at, Value: cc.ok},
					embedded.Sample{Metric: "http_requests_total", Labels: l("code", "500"), Time: at, Value: cc.errs},
					embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: l("le", "0.5"), Time: at, Value: cc.fast},
					embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: l("le", "+Inf"), Time: at, Value: cc.fast + cc.slow},
					embedded.Sample{Metric: "http_request_duration_seconds_sum", Labels: l(), Time: at, Value: cc.sum},
					embedded.Sample{Metric: "http_request_duration_seconds_count", Labels: l(), Time: at, Value: cc.fast + cc.slow},
				)
			}
		}
		if err := w.prom.Append(samples...); err != nil {
			w.t.Errorf("append samples: %v", err)
			return
		}
	}
}

// setErrors changes a cluster's error probability (a variant that breaks requests).
func (w *world) setErrors(cluster string, p float64) {
	w.mu.Lock()
	w.errP[cluster] = p
	w.mu.Unlock()
}

// experimentYAML is an experiment on pool LETTER with canary LETTER1; HOLD is each step's
// hold. Intervals are one virtual minute, half a real second.
const experimentYAML = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: NAME
spec:
  description: DESCRIPTION
  canary: {cluster: LETTER1, variant: {release: "2.0"}}
  baselines: [LETTER2, LETTER3]
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {LETTER1: oLETTER1, LETTER2: oLETTER2, LETTER3: oLETTER3}
    steps:
      - {weight: 10%, hold: HOLD}
      - {weight: 25%, hold: HOLD}
      - {weight: 34%, hold: HOLD}
    onRollback: restore
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5..", cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      tolerance: 20%
      guardrail: {max: 20%, for: 2}
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      slowerThan: 500ms
      tolerance: 15%
  analysis:
    interval: 1m
    alpha: 0.05
    prePeriod: 0s
    minIntervals: 4
    maxDuration: 12h
    noDataTimeout: 10m
`

// experiment returns the YAML of experiment name on pool letter.
func (w *world) experiment(name, letter, hold string) string {
	return strings.NewReplacer("NAME", name, "DESCRIPTION", "test experiment "+name, "LETTER", letter, "ACCOUNT", w.emu.AccountID(),
		"POOL", pools[letter], "PROM", w.prom.URL(), "HOLD", hold).Replace(experimentYAML)
}

// write puts an experiment file into the watched directory.
func (w *world) write(file, content string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, file)
	if err := os.WriteFile(p+".tmp", []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *world) openStore() *store.SQLite {
	w.t.Helper()
	st, err := store.OpenSQLite(context.Background(), w.state)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	return st
}

// server starts a server on the world; edit changes its options first.
func (w *world) server(edit ...func(*Options)) *Server {
	w.t.Helper()
	o := Options{Store: w.openStore(), Steerer: w.steer, Dir: w.dir, Listen: "127.0.0.1:0", Clock: w.clk, Settle: 5 * time.Second,
		Poll: 50 * time.Millisecond, Tick: 10 * time.Second, Telemetry: w.tel, Who: "verdict-test", ActionWait: 5 * time.Second}
	if testing.Verbose() {
		o.Logger = testLogger(w.t)
	}
	for _, e := range edit {
		e(&o)
	}
	s, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { s.Close() })
	return s
}

func (w *world) poolWeights(letter string) traffic.Weights {
	raw, _ := w.emu.Pool(pools[letter])
	p, err := traffic.DecodePool(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	return p.Weights()
}

// client is a small JSON client for the tests.
type client struct {
	t     *testing.T
	base  string
	token string
}

func (c *client) do(method, path string, body any, out any) int {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func (c *client) run(id string) RunSummary {
	c.t.Helper()
	var out struct {
		Run RunSummary `json:"run"`
	}
	if code := c.do("GET", "/api/v1/runs/"+id, nil, &out); code != 200 {
		c.t.Fatalf("GET run %s: %d", id, code)
	}
	return out.Run
}

// eventually polls cond until it holds; the limit is generous, so it only bounds a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRun waits for the latest run of experiment to exist and returns its ID.
func (c *client) waitRun(experiment string) string {
	c.t.Helper()
	var id string
	eventually(c.t, "a run of "+experiment, func() bool {
		var out struct {
			Runs []RunSummary `json:"runs"`
		}
		c.do("GET", "/api/v1/runs?all=true&experiment="+experiment, nil, &out)
		if len(out.Runs) > 0 {
			id = out.Runs[0].ID
		}
		return id != ""
	})
	return id
}

// sse reads server-sent events.
type sse struct {
	resp *http.Response
	sc   *bufio.Scanner
}

type sseEvent struct {
	ID, Event string
	Msg       Message
}

func (c *client) stream(path, lastID string) *sse {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+path, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		c.t.Fatalf("stream %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &sse{resp: resp, sc: sc}
}

// next returns the next event (not comments, not retry lines).
func (s *sse) next(t *testing.T) sseEvent {
	t.Helper()
	var e sseEvent
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if e.ID != "" || e.Event != "" {
				return e
			}
		case strings.HasPrefix(line, "id: "):
			e.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if e.Event == "" {
				if err := json.Unmarshal([]byte(line[6:]), &e.Msg); err != nil {
					t.Fatalf("event data %q: %v", line, err)
				}
			}
		}
	}
	t.Fatalf("stream ended: %v", s.sc.Err())
	return e
}

func (s *sse) close() { s.resp.Body.Close() }
