package traffic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
	"github.com/verdict-dev/verdict/traffic/traffictest"
)

const testToken = "tok-3f9a2c1be7d04e55a1c2d3e4f5a6b7c8"

// fast are retry bounds that keep every retry path in milliseconds.
func fast(o *traffic.CloudflareOptions) {
	o.BackoffBase = time.Millisecond
	o.BackoffMax = 5 * time.Millisecond
	o.CallTimeout = 5 * time.Second
}

type emuSetup struct {
	emu    *cfemu.Server
	client *traffic.Cloudflare
	ref    traffic.PoolRef
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startEmu runs the emulator on loopback with the conformance pool (or poolJSON) and a
// client for it; mod adjusts the client's options.
func startEmu(t *testing.T, eo cfemu.Options, poolJSON string, mod func(*traffic.CloudflareOptions)) emuSetup {
	t.Helper()
	eo.Token = testToken
	emu := cfemu.New(eo)
	if poolJSON == "" {
		poolJSON = traffictest.PoolJSON
	}
	ids, err := emu.LoadPools([]byte(poolJSON))
	if err != nil {
		t.Fatalf("load pool: %v", err)
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	logs := &syncBuffer{}
	o := traffic.CloudflareOptions{
		Token:     testToken,
		AccountID: emu.AccountID(),
		BaseURL:   emu.APIURL(),
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	fast(&o)
	if mod != nil {
		mod(&o)
	}
	c, err := traffic.NewCloudflare(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), testToken) {
			t.Errorf("the API token appeared in the client's logs:\n%s", logs.String())
		}
	})
	return emuSetup{emu: emu, client: c, ref: traffic.PoolRef{Pool: ids[0]}, logs: logs}
}

func TestCloudflareConformance(t *testing.T) {
	setup := func(fault cfemu.Fault) func(t *testing.T) traffictest.Env {
		return func(t *testing.T) traffictest.Env {
			s := startEmu(t, cfemu.Options{}, "", nil)
			s.emu.SetFault(fault)
			return traffictest.Env{
				Steerer: s.client,
				Ref:     s.ref,
				SetExternally: func(origin string, w float64) error {
					return s.emu.SetWeight(s.ref.Pool, origin, w)
				},
			}
		}
	}
	t.Run("healthy API", func(t *testing.T) { traffictest.Run(t, setup(cfemu.Fault{})) })
	// serve's view: reads from the shared listing, writes and claims through the client.
	t.Run("through the pool cache", func(t *testing.T) {
		traffictest.Run(t, func(t *testing.T) traffictest.Env {
			e := setup(cfemu.Fault{})(t)
			e.Steerer = traffic.NewPoolCache(e.Steerer.(*traffic.Cloudflare), traffic.PoolCacheOptions{}).Steerer(e.Steerer)
			return e
		})
	})
	// The same guarantees hold when each test starts into a burst of 5xx.
	t.Run("after a 5xx burst", func(t *testing.T) { traffictest.Run(t, setup(cfemu.Fault{Fail: 2, Status: 502})) })
}

// TestRoundTripKeepsEveryOriginField writes weights into a pool carrying every documented
// field (and one Cloudflare might add tomorrow) and checks the stored pool differs only in
// the weights written and modified_on.
func TestRoundTripKeepsEveryOriginField(t *testing.T) {
	full, err := os.ReadFile("testdata/pool_full.json")
	if err != nil {
		t.Fatal(err)
	}
	s := startEmu(t, cfemu.Options{}, string(full), nil)
	before, _ := s.emu.Pool(s.ref.Pool)
	err = s.client.SetWeights(context.Background(), s.ref,
		traffic.Weights{"app-server-1": 0.3, "app-server-2": 0.7}, traffic.Weights{"app-server-1": 0.6, "app-server-2": 0.4})
	if err != nil {
		t.Fatalf("SetWeights: %v", err)
	}
	after, _ := s.emu.Pool(s.ref.Pool)

	var b, a map[string]any
	mustJSON(t, before, &b)
	mustJSON(t, after, &a)
	if b["modified_on"] == a["modified_on"] {
		t.Errorf("modified_on did not advance: %v", a["modified_on"])
	}
	delete(b, "modified_on")
	delete(a, "modified_on")
	bo, ao := b["origins"].([]any), a["origins"].([]any)
	delete(b, "origins")
	delete(a, "origins")
	if !reflect.DeepEqual(b, a) {
		t.Errorf("pool fields changed:\nbefore %v\nafter  %v", b, a)
	}
	wantWeights := map[string]float64{"app-server-1": 0.3, "app-server-2": 0.7, "app-server-3": 1}
	for i := range bo {
		ob, oa := bo[i].(map[string]any), ao[i].(map[string]any)
		name := ob["name"].(string)
		if oa["weight"] != wantWeights[name] {
			t.Errorf("origin %s weight = %v, want %v", name, oa["weight"], wantWeights[name])
		}
		delete(ob, "weight")
		delete(oa, "weight")
		if !reflect.DeepEqual(ob, oa) {
			t.Errorf("origin %s fields changed:\nbefore %v\nafter  %v", name, ob, oa)
		}
	}
	if _, ok := ao[2].(map[string]any)["x_field_from_the_future"]; !ok {
		t.Errorf("unknown origin field was dropped")
	}
	if ao[2].(map[string]any)["disabled_at"] != "2019-08-24T14:15:22Z" {
		t.Errorf("disabled_at of the disabled origin = %v, want kept", ao[2].(map[string]any)["disabled_at"])
	}
	patches := 0
	for _, c := range s.emu.Calls() {
		if c.Method == http.MethodPatch {
			patches++
		}
		if c.Method == http.MethodPut {
			t.Errorf("client used PUT; it must PATCH only origins")
		}
	}
	if patches != 1 {
		t.Errorf("PATCH calls = %d, want 1", patches)
	}
}

func TestBadTokenIsReportedWithCloudflareCode(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) { o.Token = "wrong-" + testToken })
	_, err := s.client.Pool(context.Background(), s.ref)
	var ae *traffic.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != http.StatusForbidden || !ae.HasCode(9109) {
		t.Errorf("APIError = %+v, want 403 with code 9109", ae)
	}
	if !strings.Contains(err.Error(), "9109 Invalid access token") || !strings.Contains(err.Error(), s.ref.Pool) {
		t.Errorf("error %q should name the code, message and pool", err)
	}
	if strings.Contains(err.Error(), testToken) {
		t.Errorf("error contains the token: %v", err)
	}
	if n := len(s.emu.Calls()); n != 1 {
		t.Errorf("calls = %d, want 1 (a 403 is not retried)", n)
	}
}

func TestPoolNotFound(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", nil)
	_, err := s.client.Pool(context.Background(), traffic.PoolRef{Pool: "0123456789abcdef0123456789abcdef"})
	if !errors.Is(err, traffic.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestFiveXXBurstsAreRetried(t *testing.T) {
	cases := map[string]cfemu.Fault{
		"503 envelope":   {Fail: 3, Status: 503},
		"502 HTML page":  {Fail: 3, Status: 502, HTML: true},
		"dropped conns":  {Fail: 3, Drop: true},
		"500 then fine":  {Fail: 1, Status: 500},
		"slow and fails": {Fail: 2, Status: 504, Latency: 2 * time.Millisecond},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			s := startEmu(t, cfemu.Options{}, "", nil)
			s.emu.SetFault(f)
			err := s.client.SetWeights(context.Background(), s.ref, traffic.Weights{"canary": 0.05}, traffic.Weights{"canary": 0})
			if err != nil {
				t.Fatalf("SetWeights through %d failures: %v", f.Fail, err)
			}
			raw, _ := s.emu.Pool(s.ref.Pool)
			p, _ := traffic.DecodePool(raw)
			if o, _ := p.Origin("canary"); !traffic.SameWeight(o.Weight, 0.05) {
				t.Errorf("canary = %v, want 0.05", o.Weight)
			}
			failed := 0
			for _, c := range s.emu.Calls() {
				if c.Status >= 500 || c.Status == 0 {
					failed++
				}
			}
			if !f.Drop && failed != f.Fail {
				t.Errorf("failed calls seen = %d, want %d", failed, f.Fail)
			}
		})
	}
}

func TestFiveXXGivesUpAfterMaxAttempts(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) { o.MaxAttempts = 3 })
	s.emu.SetFault(cfemu.Fault{Fail: 100, Status: 503})
	_, err := s.client.Pool(context.Background(), s.ref)
	var ae *traffic.APIError
	if !errors.As(err, &ae) || ae.Status != 503 {
		t.Fatalf("err = %v, want a 503 APIError", err)
	}
	if !strings.Contains(err.Error(), "after 3 attempts") {
		t.Errorf("error %q should say how often it tried", err)
	}
	if n := len(s.emu.Calls()); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
}

// TestRateLimitRetryAfterIsHonoured runs into the emulator's real limiter (2 requests per
// second): the third call is told to come back in 1 s, waits, and succeeds.
func TestRateLimitRetryAfterIsHonoured(t *testing.T) {
	s := startEmu(t, cfemu.Options{RateLimit: 2, RateWindow: time.Second}, "", nil)
	ctx := context.Background()
	for range 2 {
		if _, err := s.client.Pool(ctx, s.ref); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := s.client.Pool(ctx, s.ref); err != nil {
		t.Fatalf("third call: %v", err)
	}
	waited := time.Since(start)
	// The emulator blocks until its window ends, so a client that came back before
	// Retry-After would have met a second 429: exactly one 429 then a 200 proves it waited.
	calls := s.emu.Calls()
	if len(calls) != 4 || calls[2].Status != http.StatusTooManyRequests || calls[3].Status != http.StatusOK {
		t.Fatalf("calls = %+v, want 200 200 429 200", calls)
	}
	t.Logf("429 with Retry-After: 1 recovered after %v", waited.Round(time.Millisecond))
}

// TestRateLimitStormGivesUp: every call answers 429 Retry-After 1; with a 2.5 s bound the
// client waits twice (2 s) and gives up on the third 429 with a clear error.
func TestRateLimitStormGivesUp(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) { o.MaxRateLimitWait = 2500 * time.Millisecond })
	s.emu.SetFault(cfemu.Fault{Fail: 1000, Status: 429, RetryAfter: time.Second})
	start := time.Now()
	_, err := s.client.Pool(context.Background(), s.ref)
	took := time.Since(start)
	var rl *traffic.RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, traffic.ErrRateLimited) {
		t.Fatalf("err = %v, want *RateLimitError", err)
	}
	if rl.Waited != 2*time.Second || rl.RetryAfter != time.Second || !rl.Last.HasCode(971) {
		t.Errorf("RateLimitError = %+v, want waited 2s, retry-after 1s, code 971", rl)
	}
	if n := len(s.emu.Calls()); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
	for _, want := range []string{"rate limited by Cloudflare", "waited 2s", "2.5s bound", "971"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Logf("429 storm (Retry-After 1s, bound 2.5s): gave up after %v and %d calls", took.Round(time.Millisecond), len(s.emu.Calls()))
}

// TestRateLimitBlockBeyondBoundFailsAtOnce: Cloudflare's real block is 5 minutes; the
// client does not wait for it.
func TestRateLimitBlockBeyondBoundFailsAtOnce(t *testing.T) {
	s := startEmu(t, cfemu.Options{RateLimit: 1}, "", nil) // default window: 5 minutes
	ctx := context.Background()
	if _, err := s.client.Pool(ctx, s.ref); err != nil {
		t.Fatal(err)
	}
	_, err := s.client.Pool(ctx, s.ref)
	var rl *traffic.RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter != 5*time.Minute || rl.Waited != 0 {
		t.Fatalf("err = %v, want an immediate RateLimitError asking for 5m", err)
	}
	if n := len(s.emu.Calls()); n != 2 {
		t.Errorf("calls = %d, want 2", n)
	}
}

// TestDriftBetweenReadAndWrite: the caller read the pool, Terraform changed it, the caller
// writes with what it read: refused, and nothing written.
func TestDriftBetweenReadAndWrite(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", nil)
	ctx := context.Background()
	p, err := s.client.Pool(ctx, s.ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.emu.SetWeight(s.ref.Pool, "eu-central", 0.7); err != nil {
		t.Fatal(err)
	}
	err = s.client.SetWeights(ctx, s.ref, traffic.Weights{"canary": 0.1, "eu-central": 0.4}, p.Weights())
	var de *traffic.DriftError
	if !errors.As(err, &de) || de.Phase != "before write" {
		t.Fatalf("err = %v, want a before-write DriftError", err)
	}
	if !strings.Contains(err.Error(), `origin "eu-central" expected weight 0.5, found 0.7`) {
		t.Errorf("error %q should name the origin and both weights", err)
	}
	for _, c := range s.emu.Calls() {
		if c.Method != http.MethodGet {
			t.Errorf("a %s was sent despite drift", c.Method)
		}
	}
}

// TestDriftAfterWrite: someone writes right after Verdict's PATCH; the read-back catches it.
func TestDriftAfterWrite(t *testing.T) {
	var s emuSetup
	var once sync.Once
	s = startEmu(t, cfemu.Options{AfterRequest: func(r *http.Request, status int) {
		if r.Method == http.MethodPatch && status == http.StatusOK {
			once.Do(func() {
				if err := s.emu.SetWeight(s.ref.Pool, "eu-west", 0.9); err != nil {
					t.Error(err)
				}
			})
		}
	}}, "", nil)
	err := s.client.SetWeights(context.Background(), s.ref, traffic.Weights{"canary": 0.1}, traffic.Weights{"canary": 0})
	var de *traffic.DriftError
	if !errors.As(err, &de) || de.Phase != "after write" {
		t.Fatalf("err = %v, want an after-write DriftError", err)
	}
	if len(de.Origins) != 1 || de.Origins[0].Name != "eu-west" {
		t.Errorf("drift = %+v, want eu-west", de.Origins)
	}
}

func TestPerCallDeadline(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) {
		o.CallTimeout = 20 * time.Millisecond
		o.MaxAttempts = 2
	})
	s.emu.SetFault(cfemu.Fault{Latency: time.Second})
	_, err := s.client.Pool(context.Background(), s.ref)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "after 2 attempts") {
		t.Errorf("err = %v, want 2 attempts", err)
	}
}

func TestCallerCancellationStopsRetries(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) { o.MaxRateLimitWait = time.Hour })
	s.emu.SetFault(cfemu.Fault{Fail: 100, Status: 429, RetryAfter: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { _, err = s.client.Pool(ctx, s.ref) })
	for len(s.emu.Calls()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// recordedServer answers every request with one recorded Cloudflare response.
func recordedServer(t *testing.T, status int, body string, header http.Header) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func clientFor(t *testing.T, url string, logs *syncBuffer) *traffic.Cloudflare {
	t.Helper()
	o := traffic.CloudflareOptions{Token: testToken, AccountID: "023e105f4ecef8ad9ca31a8372d0c353", BaseURL: url + "/client/v4/"}
	fast(&o)
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := traffic.NewCloudflare(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRecordedResponses(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("cfemu", "testdata", "recorded", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ref := traffic.PoolRef{Pool: "17b5962d775c646f3f9725cbc7a53df4"}
	t.Run("pool", func(t *testing.T) {
		srv, _ := recordedServer(t, 200, read("200_pool_get.json"), nil)
		p, err := clientFor(t, srv.URL, nil).Pool(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name != "primary-dc-1" || len(p.Origins) != 1 || p.Origins[0].Weight != 0.6 || p.ModifiedOn.IsZero() {
			t.Errorf("decoded %+v", p)
		}
	})
	errCases := []struct {
		file   string
		status int
		code   int64
		calls  int32
	}{
		{"403_no_auth.json", 403, 10000, 1},
		{"403_bad_token.json", 403, 9109, 1},
		{"400_bad_auth_header.json", 400, 6003, 1},
		{"400_validation.json", 400, 1002, 1},
		{"404_no_route.json", 404, 7003, 1},
	}
	for _, c := range errCases {
		t.Run(c.file, func(t *testing.T) {
			srv, n := recordedServer(t, c.status, read(c.file), nil)
			_, err := clientFor(t, srv.URL, nil).Pool(context.Background(), ref)
			var ae *traffic.APIError
			if !errors.As(err, &ae) || ae.Status != c.status || !ae.HasCode(c.code) {
				t.Fatalf("err = %v, want HTTP %d code %d", err, c.status, c.code)
			}
			if n.Load() != c.calls {
				t.Errorf("calls = %d, want %d", n.Load(), c.calls)
			}
			if c.code == 6003 && !strings.Contains(err.Error(), "(6111 Invalid format for Authorization header)") {
				t.Errorf("error_chain missing from %q", err)
			}
		})
	}
	t.Run("429 with Retry-After beyond the bound", func(t *testing.T) {
		srv, n := recordedServer(t, 429, read("429_rate_limited.json"), http.Header{"Retry-After": {"300"}, "Ratelimit": {`"default";r=0;t=300`}})
		_, err := clientFor(t, srv.URL, nil).Pool(context.Background(), ref)
		if !errors.Is(err, traffic.ErrRateLimited) || n.Load() != 1 {
			t.Fatalf("err = %v after %d calls, want ErrRateLimited after 1", err, n.Load())
		}
	})
}

// TestTokenIsScrubbed: a server that echoes the token into its error message, and a dead
// server, must not get the token into errors or logs.
func TestTokenIsScrubbed(t *testing.T) {
	srv, _ := recordedServer(t, 400, `{"success":false,"errors":[{"code":6003,"message":"Invalid request headers: Bearer `+testToken+`"}],"messages":[],"result":null}`, nil)
	logs := &syncBuffer{}
	_, err := clientFor(t, srv.URL, logs).Pool(context.Background(), traffic.PoolRef{Pool: "p1"})
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), testToken) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("error not scrubbed: %v", err)
	}

	srv5, _ := recordedServer(t, 502, `{"success":false,"errors":[{"code":10001,"message":"upstream said `+testToken+`"}]}`, nil)
	_, err = clientFor(t, srv5.URL, logs).Pool(context.Background(), traffic.PoolRef{Pool: "p1"})
	if err == nil || strings.Contains(err.Error(), testToken) {
		t.Errorf("5xx error not scrubbed: %v", err)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	_, err = clientFor(t, url, logs).Pool(context.Background(), traffic.PoolRef{Pool: "p1"})
	if err == nil || strings.Contains(err.Error(), testToken) {
		t.Errorf("network error: %v", err)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Errorf("token in logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("expected retry logs, got:\n%s", logs.String())
	}
}

func TestCloudflareOptionsFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	o, err := traffic.CloudflareOptionsFromEnv(env(map[string]string{
		"CLOUDFLARE_API_TOKEN": " t1 ", "CLOUDFLARE_ACCOUNT_ID": "acc", "CLOUDFLARE_BASE_URL": "http://127.0.0.1:1/client/v4/",
	}))
	if err != nil || o.Token != "t1" || o.AccountID != "acc" || o.BaseURL != "http://127.0.0.1:1/client/v4/" {
		t.Errorf("got %+v, %v", o, err)
	}
	if _, err := traffic.CloudflareOptionsFromEnv(env(nil)); !errors.Is(err, traffic.ErrNoCredentials) {
		t.Errorf("no token: err = %v, want ErrNoCredentials", err)
	}

	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err = traffic.CloudflareOptionsFromEnv(env(map[string]string{"CLOUDFLARE_API_TOKEN_FILE": file}))
	if err != nil {
		t.Fatal(err)
	}
	emu := cfemu.New(cfemu.Options{Token: testToken})
	ids, err := emu.LoadPools([]byte(traffictest.PoolJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	o.BaseURL, o.AccountID = emu.APIURL(), emu.AccountID()
	c, err := traffic.NewCloudflare(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pool(context.Background(), traffic.PoolRef{Pool: ids[0]}); err != nil {
		t.Errorf("token from file: %v", err)
	}

	if _, err := traffic.NewCloudflare(traffic.CloudflareOptions{TokenFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Errorf("missing token file accepted")
	}
	if _, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: "x", BaseURL: "ftp://x"}); err == nil {
		t.Errorf("ftp base URL accepted")
	}
	c, _ = traffic.NewCloudflare(traffic.CloudflareOptions{Token: "x"})
	if _, err := c.Pool(context.Background(), traffic.PoolRef{Pool: "p"}); err == nil || !strings.Contains(err.Error(), "CLOUDFLARE_ACCOUNT_ID") {
		t.Errorf("no account: err = %v", err)
	}
	if _, err := c.Pool(context.Background(), traffic.PoolRef{Account: "a", Pool: "../../zones"}); err == nil {
		t.Errorf("path-like pool ID accepted")
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSetWeights measures one verified weight change (GET, PATCH, GET) against the
// emulator over loopback.
func BenchmarkSetWeights(b *testing.B) {
	emu := cfemu.New(cfemu.Options{Token: testToken, RateLimit: -1})
	ids, err := emu.LoadPools([]byte(traffictest.PoolJSON))
	if err != nil {
		b.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		b.Fatal(err)
	}
	defer emu.Close()
	c, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: testToken, AccountID: emu.AccountID(), BaseURL: emu.APIURL()})
	if err != nil {
		b.Fatal(err)
	}
	ref := traffic.PoolRef{Pool: ids[0]}
	cur := 0.0
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		next := float64(i%50+1) / 100
		if err := c.SetWeights(ctx, ref, traffic.Weights{"canary": next}, traffic.Weights{"canary": cur}); err != nil {
			b.Fatal(err)
		}
		cur = next
	}
}
