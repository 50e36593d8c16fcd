package metrics_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

// closedAddress is a loopback address where nothing listens.
func closedAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestUnreachableIsOneClearError(t *testing.T) {
	addr := closedAddress(t)
	src := source(t, metrics.Options{Address: addr, MaxAttempts: 2})
	_, err := src.Version(context.Background())
	if !errors.Is(err, metrics.ErrUnreachable) {
		t.Fatalf("want ErrUnreachable, got %v", err)
	}
	var ue *metrics.UnreachableError
	if !errors.As(err, &ue) || ue.Attempts != 2 {
		t.Fatalf("want *UnreachableError after 2 attempts, got %#v", err)
	}
	want := "cannot reach Prometheus at " + addr + ": connection refused"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	// Fetch and Check report the same single error.
	_, err = src.Fetch(context.Background(), cpu, metrics.AlignedRange(fixtureEnd, time.Minute, 3), nil)
	if err == nil || err.Error() != want {
		t.Errorf("Fetch: %v", err)
	}
	_, err = metrics.Check(context.Background(), src, metrics.CheckRequest{KPIs: []metrics.KPI{cpu}, Interval: time.Minute})
	if err == nil || err.Error() != want {
		t.Errorf("Check: %v", err)
	}
}

func TestUnknownHost(t *testing.T) {
	src := source(t, metrics.Options{Address: "http://prometheus.invalid:9090", MaxAttempts: 1})
	_, err := src.Version(context.Background())
	if !errors.Is(err, metrics.ErrUnreachable) || !strings.HasPrefix(err.Error(), "cannot reach Prometheus at http://prometheus.invalid:9090: ") {
		t.Errorf("got %v", err)
	}
}

// flaky is a Prometheus stand-in whose behaviour per request the test scripts.
type flaky struct {
	srv   *httptest.Server
	calls atomic.Int32
}

func newFlaky(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) *flaky {
	t.Helper()
	f := &flaky{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(int(f.calls.Add(1)), w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// hangUp closes the connection without an answer: Prometheus dying mid-query.
func hangUp(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	conn.Close()
}

func TestDownMidQuery(t *testing.T) {
	backend := fleet(t, fixtureEnd)
	target, _ := url.Parse(backend.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	proxy.Transport = tr
	var down atomic.Bool
	f := newFlaky(t, func(n int, w http.ResponseWriter, r *http.Request) {
		// The second request (the total query of the ratio KPI) dies once.
		if n == 2 || (down.Load() && n > 1) {
			hangUp(t, w)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	r := metrics.AlignedRange(fixtureEnd, fixture.Interval, 5)

	// With retries, a connection lost once is retried and the result is complete.
	src := source(t, metrics.Options{Address: f.srv.URL, MaxAttempts: 3})
	d, err := src.Fetch(context.Background(), errorRate, r, []string{fixture.Canary})
	if err != nil {
		t.Fatalf("want the retry to succeed, got %v", err)
	}
	if len(d.Clusters[fixture.Canary].Intervals) != 5 || f.calls.Load() != 3 {
		t.Errorf("intervals %d, calls %d", len(d.Clusters[fixture.Canary].Intervals), f.calls.Load())
	}

	// Down for good after the first query: one clear error, no partial result.
	f.calls.Store(0)
	down.Store(true)
	src = source(t, metrics.Options{Address: f.srv.URL, MaxAttempts: 2})
	d, err = src.Fetch(context.Background(), metrics.KPI{Name: "x", Kind: metrics.KindRatio, Events: errorRate.Events, Total: errorRate.Total}, r, nil)
	if !errors.Is(err, metrics.ErrUnreachable) || d != nil {
		t.Fatalf("want ErrUnreachable, got %v (%v)", err, d)
	}
	if strings.Count(err.Error(), ":") > 3 || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("error should be one line ending in the cause: %q", err)
	}

	// The embedded server shut down between queries.
	down.Store(false)
	_ = backend.Close()
	src = source(t, metrics.Options{Address: backend.URL(), MaxAttempts: 1})
	if _, err := src.Fetch(context.Background(), cpu, r, nil); !errors.Is(err, metrics.ErrUnreachable) {
		t.Errorf("closed embedded server: %v", err)
	}
}

func TestSlowPrometheusTimesOut(t *testing.T) {
	release := make(chan struct{})
	f := newFlaky(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	src := source(t, metrics.Options{Address: f.srv.URL, Timeout: 50 * time.Millisecond, MaxAttempts: 2})
	_, _, err := src.Instant(context.Background(), "up", time.Time{})
	if !errors.Is(err, metrics.ErrTimeout) || !errors.Is(err, metrics.ErrUnreachable) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	if want := "cannot reach Prometheus at " + f.srv.URL + ": no answer within 50ms"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if f.calls.Load() != 2 {
		t.Errorf("calls %d, want 2 (timeouts are retried)", f.calls.Load())
	}

	// The caller's own deadline is not retried and says so.
	f.calls.Store(0)
	src = source(t, metrics.Options{Address: f.srv.URL, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err = src.Instant(ctx, "up", time.Time{})
	if !errors.Is(err, context.DeadlineExceeded) || f.calls.Load() != 1 {
		t.Errorf("caller deadline: %v after %d calls", err, f.calls.Load())
	}
}

func TestMalformedAndErrorResponses(t *testing.T) {
	const vectorBody = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"cluster":"a"},"value":[1,"1"]}]}}`
	const matrixBody = `{"status":"success","data":{"resultType":"matrix","result":[]}}`
	tests := []struct {
		name      string
		handler   func(n int, w http.ResponseWriter)
		wantType  string
		wantMsg   string
		wantCalls int32
		wantOK    bool
	}{
		{"not JSON", func(_ int, w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, "<html>proxy login</html>")
		}, "bad_response", "invalid character", 1, false},
		{"truncated JSON", func(_ int, w http.ResponseWriter) {
			fmt.Fprint(w, matrixBody[:30])
		}, "bad_response", "unexpected end of JSON", 1, false},
		{"wrong result type", func(_ int, w http.ResponseWriter) {
			fmt.Fprint(w, vectorBody)
		}, metrics.TypeInvalidResult, "returned a vector, want a matrix", 1, false},
		{"bad_data is not retried", func(_ int, w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}`)
		}, "bad_data", "parse error", 1, false},
		{"server-side timeout is retried", func(_ int, w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`)
		}, "timeout", "query timed out in expression evaluation", 3, false},
		{"502 from a proxy", func(_ int, w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "upstream connect error\nmore detail")
		}, "server_error", "server error: 502: upstream connect error", 3, false},
		{"503 then success", func(n int, w http.ResponseWriter) {
			if n == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, matrixBody)
		}, "", "", 2, true},
		{"429 is retried", func(n int, w http.ResponseWriter) {
			if n < 3 {
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			fmt.Fprint(w, matrixBody)
		}, "", "", 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlaky(t, func(n int, w http.ResponseWriter, _ *http.Request) { tt.handler(n, w) })
			src := source(t, metrics.Options{Address: f.srv.URL, MaxAttempts: 3})
			_, _, err := src.Range(context.Background(), "up", metrics.AlignedRange(fixtureEnd, time.Minute, 2))
			if got := f.calls.Load(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			if tt.wantOK {
				if err != nil {
					t.Errorf("want success, got %v", err)
				}
				return
			}
			var qe *metrics.QueryError
			if !errors.As(err, &qe) {
				t.Fatalf("want a *QueryError, got %v", err)
			}
			if qe.Type != tt.wantType || !strings.Contains(qe.Msg, tt.wantMsg) || qe.Query != "up" {
				t.Errorf("got type %q msg %q query %q", qe.Type, qe.Msg, qe.Query)
			}
			if errors.Is(err, metrics.ErrUnreachable) {
				t.Error("an answer, even a bad one, is not unreachable")
			}
			if tt.wantType == "timeout" && !errors.Is(err, metrics.ErrTimeout) {
				t.Error("a Prometheus-side timeout should match ErrTimeout")
			}
		})
	}
}

// TestSecretsStayOutOfErrorsAndLogs sends credentials to a Prometheus that rejects them,
// to one that is down, and through failing credential files, and looks for the secrets in
// every error and log line.
func TestSecretsStayOutOfErrorsAndLogs(t *testing.T) {
	const token, password, urlPassword = "tok-s3cr3t-123", "pw-s3cr3t-456", "urlpw-s3cr3t-789"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var gotAuth, gotTenant atomic.Value
	f := newFlaky(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		gotTenant.Store(r.Header.Get("X-Scope-OrgID"))
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, "unauthorized")
	})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("want an error")
		}
		for _, s := range []string{token, password, urlPassword} {
			if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%#v", err), s) || strings.Contains(logs.String(), s) {
				t.Errorf("secret %q leaked: error %q, logs %q", s, err, logs.String())
			}
		}
	}

	t.Run("bearer token rejected", func(t *testing.T) {
		src := source(t, metrics.Options{Address: f.srv.URL, BearerTokenFile: tokenFile, Headers: map[string]string{"X-Scope-OrgID": "team-a"}, Logger: logger})
		_, err := src.Version(context.Background())
		check(t, err)
		if gotAuth.Load() != "Bearer "+token || gotTenant.Load() != "team-a" {
			t.Errorf("server saw Authorization %q, X-Scope-OrgID %q", gotAuth.Load(), gotTenant.Load())
		}
		if !strings.Contains(err.Error(), "401") || !errors.Is(err, metrics.ErrUnauthorized) {
			t.Errorf("error should say the credentials were rejected: %v", err)
		}
		// Check stops at once with the same error.
		_, cerr := metrics.Check(context.Background(), src, metrics.CheckRequest{KPIs: []metrics.KPI{cpu}, Interval: time.Minute})
		check(t, cerr)
		if !errors.Is(cerr, metrics.ErrUnauthorized) {
			t.Errorf("Check: %v", cerr)
		}
	})
	t.Run("basic auth rejected", func(t *testing.T) {
		src := source(t, metrics.Options{Address: f.srv.URL, BasicAuth: &metrics.BasicAuth{Username: "u", Password: password}, Logger: logger})
		_, err := src.Version(context.Background())
		check(t, err)
		if gotAuth.Load() == "" || !strings.HasPrefix(gotAuth.Load().(string), "Basic ") {
			t.Errorf("server saw Authorization %q", gotAuth.Load())
		}
	})
	t.Run("password in the address, Prometheus down", func(t *testing.T) {
		addr := strings.Replace(closedAddress(t), "http://", "http://u:"+urlPassword+"@", 1)
		src := source(t, metrics.Options{Address: addr, MaxAttempts: 2, Logger: logger})
		_, err := src.Version(context.Background())
		check(t, err)
		if strings.Contains(src.Address(), urlPassword) {
			t.Errorf("Address() leaks the password: %s", src.Address())
		}
		// Unwrapping reaches the transport error, which must be clean too.
		for e := err; e != nil; e = errors.Unwrap(e) {
			check(t, e)
		}
	})
	t.Run("unreadable credential files", func(t *testing.T) {
		src := source(t, metrics.Options{Address: f.srv.URL, BearerTokenFile: filepath.Join(dir, "missing"), Logger: logger})
		_, err := src.Version(context.Background())
		check(t, err)
		if !strings.Contains(err.Error(), "bearer token file") || errors.Is(err, metrics.ErrUnreachable) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("unparseable address", func(t *testing.T) {
		_, err := metrics.New(metrics.Options{Address: "ftp://u:" + urlPassword + "@host"})
		check(t, err)
	})
}

func TestTLSCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"success","data":{"version":"2.42.0"}}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	src := source(t, metrics.Options{Address: srv.URL, TLSCAFile: caFile})
	if v, err := src.Version(context.Background()); err != nil || v != "2.42.0" {
		t.Errorf("with the CA: %q, %v", v, err)
	}
	src = source(t, metrics.Options{Address: srv.URL, MaxAttempts: 1})
	_, err := src.Version(context.Background())
	if !errors.Is(err, metrics.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v", err)
	}
	if _, err := metrics.New(metrics.Options{Address: srv.URL, TLSCAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("missing CA file: want an error")
	}
}

func TestNewValidatesOptions(t *testing.T) {
	for _, o := range []metrics.Options{
		{},
		{Address: "prometheus:9090"},
		{Address: "http://"},
		{Address: "http://p:9090", BasicAuth: &metrics.BasicAuth{Username: "u", Password: "a", PasswordFile: "b"}},
	} {
		if _, err := metrics.New(o); err == nil {
			t.Errorf("New(%+v): want an error", o)
		}
	}
}
