package traffic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
	"github.com/verdict-dev/verdict/traffic/traffictest"
)

// writerHeader marks the requests of the concurrent writer, so the emulator front end
// tells them from the client under test.
const writerHeader = "X-Concurrent-Writer"

// retryWorld is the emulator behind a front end that, for the client under test, injects
// fault into its first PATCH and starts a concurrent writer over HTTP as soon as that
// PATCH has failed. The client's next read of the pool is held until the writer is done,
// so the writer's change always lands while the client waits to retry (a whole Retry-After
// or backoff), never after.
type retryWorld struct {
	emu    *cfemu.Server
	srv    *httptest.Server
	client *traffic.Cloudflare
	ref    traffic.PoolRef

	fault   cfemu.Fault
	edit    func(origins []map[string]any) []map[string]any // the writer's change; nil: none
	gets    atomic.Int32
	patches atomic.Int32 // the client's PATCHes answered 200
	writing chan struct{}
	done    chan struct{}
	writeMu sync.Mutex
	wErr    error
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func newRetryWorld(t testing.TB, fault cfemu.Fault, edit func([]map[string]any) []map[string]any, mod func(*traffic.CloudflareOptions)) *retryWorld {
	t.Helper()
	w := &retryWorld{fault: fault, edit: edit, writing: make(chan struct{}), done: make(chan struct{})}
	w.emu = cfemu.New(cfemu.Options{Token: testToken, RateLimit: -1})
	ids, err := w.emu.LoadPools([]byte(traffictest.PoolJSON))
	if err != nil {
		t.Fatal(err)
	}
	w.ref = traffic.PoolRef{Pool: ids[0]}
	api := w.emu.Handler()
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get(writerHeader) != "" {
			api.ServeHTTP(rw, r)
			return
		}
		n := int32(0)
		if r.Method == http.MethodGet {
			n = w.gets.Add(1)
			if n == 2 {
				select {
				case <-w.writing:
					<-w.done // the re-read waits for the writer's change to be stored
				default:
				}
			}
		}
		sw := &statusWriter{ResponseWriter: rw}
		api.ServeHTTP(sw, r)
		switch {
		case r.Method == http.MethodGet && n == 1:
			w.emu.SetFault(w.fault) // the client's first PATCH comes next
		case r.Method == http.MethodPatch && sw.status == http.StatusOK:
			w.patches.Add(1)
		case r.Method == http.MethodPatch && w.edit != nil && sw.status == w.fault.Status:
			close(w.writing)
			go func() {
				defer close(w.done)
				err := w.externalEdit(w.edit)
				w.writeMu.Lock()
				w.wErr = err
				w.writeMu.Unlock()
			}()
		}
	}))
	t.Cleanup(w.srv.Close)
	o := traffic.CloudflareOptions{Token: testToken, AccountID: w.emu.AccountID(), BaseURL: w.srv.URL + "/client/v4/"}
	fast(&o)
	// Hundreds of these run at once on a loaded machine: an attempt timing out on the
	// client would send the injected fault to the wrong call.
	o.CallTimeout = time.Minute
	if mod != nil {
		mod(&o)
	}
	if w.client, err = traffic.NewCloudflare(o); err != nil {
		t.Fatal(err)
	}
	return w
}

// externalEdit is another tool changing the pool over the API: it reads the origins,
// edits them and PATCHes them back, as a dashboard save or a Terraform apply does.
func (w *retryWorld) externalEdit(edit func([]map[string]any) []map[string]any) error {
	url := fmt.Sprintf("%s/client/v4/accounts/%s/load_balancers/pools/%s", w.srv.URL, w.emu.AccountID(), w.ref.Pool)
	do := func(method string, body []byte) (map[string]any, error) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(writerHeader, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var env struct {
			Result map[string]any `json:"result"`
		}
		dec := json.NewDecoder(resp.Body)
		dec.UseNumber()
		if err := dec.Decode(&env); err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %d, %v", method, resp.StatusCode, err)
		}
		return env.Result, nil
	}
	pool, err := do(http.MethodGet, nil)
	if err != nil {
		return err
	}
	var origins []map[string]any
	for _, o := range pool["origins"].([]any) {
		m := o.(map[string]any)
		delete(m, "disabled_at")
		origins = append(origins, m)
	}
	body, _ := json.Marshal(map[string]any{"origins": edit(origins)})
	_, err = do(http.MethodPatch, body)
	return err
}

// waitWriter waits for the concurrent writer, which the client's failed PATCH started
// before the client could see the failure, and returns its error.
func (w *retryWorld) waitWriter() error {
	select {
	case <-w.writing:
	default:
		return fmt.Errorf("the client's PATCH never met the injected fault, so no concurrent change was made; calls: %+v", w.emu.Calls())
	}
	<-w.done
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	return w.wErr
}

func (w *retryWorld) pool(t testing.TB) traffic.Pool {
	t.Helper()
	raw, _ := w.emu.Pool(w.ref.Pool)
	p, err := traffic.DecodePool(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func setOrigin(name, field string, value any) func([]map[string]any) []map[string]any {
	return func(os []map[string]any) []map[string]any {
		for _, o := range os {
			if o["name"] == name {
				o[field] = value
			}
		}
		return os
	}
}

// concurrentChanges are the changes another tool makes while Verdict waits to retry a
// write; each must come back as drift naming the origin, and survive in the pool.
var concurrentChanges = []struct {
	name   string
	edit   func([]map[string]any) []map[string]any
	origin string
	// survived checks the pool still holds the change.
	survived func(p traffic.Pool) bool
	// field is the changed field DriftError names ("" for a weight, "+"/"-" for an
	// origin added or removed).
	field string
}{
	{"experiment origin's weight", setOrigin("canary", "weight", 0.3), "canary",
		func(p traffic.Pool) bool { o, _ := p.Origin("canary"); return traffic.SameWeight(o.Weight, 0.3) }, ""},
	{"other origin's weight", setOrigin("eu-central", "weight", 0.8), "eu-central",
		func(p traffic.Pool) bool { o, _ := p.Origin("eu-central"); return traffic.SameWeight(o.Weight, 0.8) }, ""},
	{"other origin's address", setOrigin("eu-central", "address", "10.0.2.99"), "eu-central",
		func(p traffic.Pool) bool { o, _ := p.Origin("eu-central"); return o.Address == "10.0.2.99" }, "address"},
	{"experiment origin disabled", setOrigin("eu-west", "enabled", false), "eu-west",
		func(p traffic.Pool) bool { o, _ := p.Origin("eu-west"); return !o.Enabled }, "enabled"},
	{"origin added", func(os []map[string]any) []map[string]any {
		return append(os, map[string]any{"name": "eu-north", "address": "10.0.4.10", "weight": 0.2})
	}, "eu-north", func(p traffic.Pool) bool { _, ok := p.Origin("eu-north"); return ok }, "+"},
	{"origin removed", func(os []map[string]any) []map[string]any {
		return slices.DeleteFunc(os, func(o map[string]any) bool { return o["name"] == "standby" })
	}, "standby", func(p traffic.Pool) bool { _, ok := p.Origin("standby"); return !ok }, "-"},
}

var (
	retryWant   = traffic.Weights{"canary": 0.1, "eu-west": 0.45}
	retryExpect = traffic.Weights{"canary": 0, "eu-west": 0.5}
)

// TestConcurrentChangeDuringRetryIsDrift: Verdict's PATCH is refused (429 with
// Retry-After 1 s, or a 503 and backoff), and while it waits another tool changes the
// pool over the API. The retry must not revert that change: every kind of change comes
// back as drift between attempts, naming the origin, and is still in the pool after.
// 20 trials per kind and fault run in parallel, each against its own emulator.
func TestConcurrentChangeDuringRetryIsDrift(t *testing.T) {
	const trials = 20
	faults := []struct {
		name  string
		fault cfemu.Fault
		mod   func(*traffic.CloudflareOptions)
	}{
		{"429 Retry-After 1s", cfemu.Fault{Fail: 1, Status: http.StatusTooManyRequests, RetryAfter: time.Second},
			func(o *traffic.CloudflareOptions) { o.MaxRateLimitWait = 2 * time.Second }},
		{"503 backoff", cfemu.Fault{Fail: 1, Status: http.StatusServiceUnavailable},
			func(o *traffic.CloudflareOptions) {
				o.BackoffBase, o.BackoffMax = 300*time.Millisecond, 300*time.Millisecond
			}},
	}
	var mu sync.Mutex
	tried, detected := map[string]int{}, map[string]int{}
	// t.Run from many goroutines runs the trials at once without t.Parallel's GOMAXPROCS
	// cap: they spend their time waiting, so 240 of them take about one Retry-After.
	var wg sync.WaitGroup
	for _, f := range faults {
		for _, c := range concurrentChanges {
			for i := range trials {
				wg.Go(func() {
					t.Run(fmt.Sprintf("%s/%s/%d", f.name, c.name, i), func(t *testing.T) {
						w := newRetryWorld(t, f.fault, c.edit, f.mod)
						err := w.client.SetWeights(context.Background(), w.ref, retryWant, retryExpect)
						if werr := w.waitWriter(); werr != nil {
							t.Fatalf("concurrent writer: %v", werr)
						}
						mu.Lock()
						tried[f.name]++
						mu.Unlock()
						var de *traffic.DriftError
						if !errors.As(err, &de) {
							t.Fatalf("SetWeights = %v, want a *DriftError", err)
						}
						if de.Phase != traffic.PhaseBetweenAttempts {
							t.Errorf("phase = %q, want %q (nothing was written)", de.Phase, traffic.PhaseBetweenAttempts)
						}
						if !namesChange(de, c.origin, c.field) {
							t.Errorf("drift %v does not report %s (%q)", de, c.origin, c.field)
						}
						p := w.pool(t)
						if !c.survived(p) {
							t.Errorf("the concurrent change was reverted: pool now %s", w.rawPool())
						}
						if n := w.patches.Load(); n != 0 {
							t.Errorf("the client's PATCH was sent and accepted %d times", n)
						}
						if o, _ := p.Origin("eu-west"); !traffic.SameWeight(o.Weight, 0.5) {
							t.Errorf("eu-west = %v, want 0.5 untouched", o.Weight)
						}
						if !t.Failed() {
							mu.Lock()
							detected[f.name]++
							mu.Unlock()
						}
					})
				})
			}
		}
	}
	wg.Wait()
	for _, f := range faults {
		t.Logf("%s: concurrent changes tried during retries: %d, detected as drift (and kept in the pool): %d",
			f.name, tried[f.name], detected[f.name])
		if tried[f.name] != trials*len(concurrentChanges) || detected[f.name] != tried[f.name] {
			t.Errorf("%s: tried %d, detected %d; want %d of %d", f.name, tried[f.name], detected[f.name],
				trials*len(concurrentChanges), trials*len(concurrentChanges))
		}
	}
}

func namesChange(de *traffic.DriftError, origin, field string) bool {
	for _, d := range de.Origins {
		if d.Name != origin {
			continue
		}
		switch field {
		case "":
			return !traffic.SameWeight(d.Expect, d.Actual)
		case "+":
			return d.Added && strings.Contains(de.Error(), fmt.Sprintf("origin %q was added", origin))
		case "-":
			return d.Missing && strings.Contains(de.Error(), fmt.Sprintf("origin %q expected weight", origin))
		default:
			return slices.Contains(d.Fields, field) && strings.Contains(de.Error(), "changed "+field)
		}
	}
	return false
}

func (w *retryWorld) rawPool() string {
	raw, _ := w.emu.Pool(w.ref.Pool)
	return string(raw)
}

// TestRetryWithoutConcurrentChangeWrites: the same faults with nobody else writing: the
// re-read finds the pool as first read and the retry goes through.
func TestRetryWithoutConcurrentChangeWrites(t *testing.T) {
	for name, f := range map[string]cfemu.Fault{
		"429": {Fail: 1, Status: http.StatusTooManyRequests},
		"503": {Fail: 1, Status: http.StatusServiceUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			w := newRetryWorld(t, f, nil, func(o *traffic.CloudflareOptions) { o.MaxRateLimitWait = 2 * time.Second })
			if err := w.client.SetWeights(context.Background(), w.ref, retryWant, retryExpect); err != nil {
				t.Fatalf("SetWeights after one %s: %v", name, err)
			}
			got := w.pool(t).Weights()
			if !traffic.SameWeight(got["canary"], 0.1) || !traffic.SameWeight(got["eu-west"], 0.45) {
				t.Errorf("weights = %v, want canary 0.1, eu-west 0.45", got)
			}
			if n := w.gets.Load(); n != 3 {
				t.Errorf("client GETs = %d, want 3 (read, re-read before the retry, read-back)", n)
			}
		})
	}
}

// TestWriteAppliedBehind5xxIsNotResent: the PATCH is applied but answered 502 (an edge
// timing out behind a working API). The re-read finds this call's own weights: nothing is
// sent again and the read-back confirms.
func TestWriteAppliedBehind5xxIsNotResent(t *testing.T) {
	w := newRetryWorld(t, cfemu.Fault{Fail: 1, Status: http.StatusBadGateway, Applied: true}, nil, nil)
	if err := w.client.SetWeights(context.Background(), w.ref, retryWant, retryExpect); err != nil {
		t.Fatalf("SetWeights: %v", err)
	}
	patches := 0
	for _, c := range w.emu.Calls() {
		if c.Method == http.MethodPatch {
			patches++
		}
	}
	if patches != 1 {
		t.Errorf("PATCH calls = %d, want 1 (the applied one is not sent again)", patches)
	}
	if got := w.pool(t).Weights(); !traffic.SameWeight(got["canary"], 0.1) {
		t.Errorf("weights = %v", got)
	}
}

// TestChangeAfterWriteAppliedBehind5xxIsAfterWrite: the PATCH was applied behind a 502 and
// someone else changed another origin during the backoff. The pool holds this call's
// weights, so the drift must not claim that nothing was written.
func TestChangeAfterWriteAppliedBehind5xxIsAfterWrite(t *testing.T) {
	w := newRetryWorld(t, cfemu.Fault{Fail: 1, Status: http.StatusBadGateway, Applied: true}, setOrigin("eu-central", "weight", 0.8), nil)
	err := w.client.SetWeights(context.Background(), w.ref, retryWant, retryExpect)
	if werr := w.waitWriter(); werr != nil {
		t.Fatal(werr)
	}
	var de *traffic.DriftError
	if !errors.As(err, &de) || de.Phase != traffic.PhaseAfterWrite {
		t.Fatalf("SetWeights = %v, want an after-write DriftError", err)
	}
	if !namesChange(de, "eu-central", "") {
		t.Errorf("drift %v does not name eu-central", de)
	}
	if o, _ := w.pool(t).Origin("eu-central"); !traffic.SameWeight(o.Weight, 0.8) {
		t.Errorf("eu-central = %v, want the concurrent 0.8 kept", o.Weight)
	}
}

// BenchmarkGetPatchWindow measures the window a retried write leaves open: from the
// emulator answering the client's last GET of the pool to the PATCH arriving, over
// loopback HTTP, for the first attempt and for a retry after a 503 (re-read, then PATCH).
// A change landing in that window would be reverted (Cloudflare has no conditional writes).
func BenchmarkGetPatchWindow(b *testing.B) {
	emu := cfemu.New(cfemu.Options{Token: testToken, RateLimit: -1})
	ids, err := emu.LoadPools([]byte(traffictest.PoolJSON))
	if err != nil {
		b.Fatal(err)
	}
	api := emu.Handler()
	var (
		mu       sync.Mutex
		lastGET  time.Time
		windows  []time.Duration
		failNext atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			mu.Lock()
			windows = append(windows, time.Since(lastGET))
			mu.Unlock()
		}
		api.ServeHTTP(w, r)
		if r.Method == http.MethodGet {
			mu.Lock()
			lastGET = time.Now()
			mu.Unlock()
			if failNext.CompareAndSwap(true, false) {
				emu.SetFault(cfemu.Fault{Fail: 1, Status: http.StatusServiceUnavailable})
			}
		}
	}))
	defer srv.Close()
	c, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: testToken, AccountID: emu.AccountID(), BaseURL: srv.URL + "/client/v4/",
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ref := traffic.PoolRef{Pool: ids[0]}
	cur := 0.0
	for i := 0; b.Loop(); i++ {
		next := float64(i%50+1) / 100
		failNext.Store(true) // every write's first PATCH fails: one first-attempt window, one retry window
		if err := c.SetWeights(context.Background(), ref, traffic.Weights{"canary": next}, traffic.Weights{"canary": cur}); err != nil {
			b.Fatal(err)
		}
		cur = next
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(windows) == 0 {
		b.Fatal("no PATCH seen")
	}
	// PATCHes alternate: each write's first attempt (answered 503), then its retry.
	var firsts, retries []time.Duration
	for i, d := range windows {
		if i%2 == 0 {
			firsts = append(firsts, d)
		} else {
			retries = append(retries, d)
		}
	}
	stats := func(ds []time.Duration) (med, p99, mx time.Duration) {
		ds = slices.Clone(ds)
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], ds[len(ds)*99/100], ds[len(ds)-1]
	}
	med, p99, mx := stats(windows)
	b.ReportMetric(float64(med.Microseconds()), "window-median-µs")
	b.ReportMetric(float64(mx.Microseconds()), "window-max-µs")
	b.Logf("GET→PATCH window over %d PATCHes: median %v, p99 %v, max %v", len(windows), med, p99, mx)
	if len(retries) > 0 {
		fm, _, fx := stats(firsts)
		rm, _, rx := stats(retries)
		b.Logf("first attempts: median %v, max %v; retries (re-read then PATCH): median %v, max %v", fm, fx, rm, rx)
	}
}
