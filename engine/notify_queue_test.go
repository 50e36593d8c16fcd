package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
)

// notifyServer is a webhook receiver whose first answers can be failures.
type notifyServer struct {
	*httptest.Server
	mu    sync.Mutex
	hits  int            // requests, failed ones included
	got   []Notification // delivered, in arrival order
	times []time.Time    // of every request
	// answer, when set, picks the status of request number i (from 1) and may set
	// headers; 0 means 200.
	answer func(i int, h http.Header) int
	// hold, when set, is waited on before answering (the request is then in flight).
	hold    chan struct{}
	arrived chan struct{}
}

func newNotifyServer(t *testing.T, answer func(i int, h http.Header) int) *notifyServer {
	s := &notifyServer{answer: answer, arrived: make(chan struct{}, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hits++
		i := s.hits
		s.times = append(s.times, time.Now())
		hold := s.hold
		s.mu.Unlock()
		s.arrived <- struct{}{}
		if hold != nil {
			<-hold
		}
		if s.answer != nil {
			if code := s.answer(i, rw.Header()); code != 0 {
				rw.WriteHeader(code)
				return
			}
		}
		var n Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("undecodable notification %q: %v", b, err)
		}
		s.mu.Lock()
		s.got = append(s.got, n)
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *notifyServer) received() (hits int, got []Notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits, append([]Notification(nil), s.got...)
}

// notifyFailures records what a notifier reported to Failed.
type notifyFailures struct {
	mu   sync.Mutex
	list []string // "event target: error"
	errs []error
}

func (f *notifyFailures) record(n Notification, target string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, fmt.Sprintf("%s#%d %s: %v", n.Event, n.Step, target, err))
	f.errs = append(f.errs, err)
}

func (f *notifyFailures) get() ([]string, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.list...), append([]error(nil), f.errs...)
}

// fastNotifier retries quickly, for tests.
func fastNotifier(f *notifyFailures) *HTTPNotifier {
	return &HTTPNotifier{Failed: f.record, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxRetryAfter: 50 * time.Millisecond, Timeout: 2 * time.Second}
}

func notifyWebhook(url string) experiments.Notify {
	return experiments.Notify{Webhook: &experiments.WebhookNotify{URL: url}}
}

func notifyNote(event string, step int) Notification {
	return Notification{Experiment: "e", RunID: "run-1", Event: event, Step: step, Text: fmt.Sprintf("%s %d", event, step)}
}

func closeNotifier(t *testing.T, h *HTTPNotifier, within time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return h.Close(ctx)
}

func TestNotifierRetriesTransientFailures(t *testing.T) {
	tests := map[string]struct {
		answer      func(i int, h http.Header) int
		attempts    int
		wantHits    int
		wantFailed  int
		wantInError string
	}{
		"503 then delivered": {
			answer:   func(i int, _ http.Header) int { return map[int]int{1: 503, 2: 503}[i] },
			wantHits: 3,
		},
		"429 with Retry-After then delivered": {
			answer: func(i int, h http.Header) int {
				if i == 1 {
					h.Set("Retry-After", "3600") // bounded by MaxRetryAfter
					return http.StatusTooManyRequests
				}
				return 0
			},
			wantHits: 2,
		},
		"500 every time: given up": {
			answer: func(int, http.Header) int { return 500 }, attempts: 3,
			wantHits: 3, wantFailed: 1, wantInError: "HTTP 500 (gave up after 3 attempts)",
		},
		"400 is not retried": {
			answer:   func(int, http.Header) int { return 400 },
			wantHits: 1, wantFailed: 1, wantInError: "HTTP 400",
		},
		"404 is not retried": {
			answer:   func(int, http.Header) int { return 404 },
			wantHits: 1, wantFailed: 1, wantInError: "HTTP 404",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newNotifyServer(t, tc.answer)
			var f notifyFailures
			h := fastNotifier(&f)
			h.Attempts = tc.attempts
			h.Notify(context.Background(), []experiments.Notify{notifyWebhook(srv.URL + "/secret-path")}, notifyNote("verdict", 1))
			if err := closeNotifier(t, h, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			hits, got := srv.received()
			if hits != tc.wantHits {
				t.Errorf("server saw %d requests, want %d", hits, tc.wantHits)
			}
			st := h.Stats()
			if st.Retries != tc.wantHits-1 {
				t.Errorf("stats count %d retries, want %d", st.Retries, tc.wantHits-1)
			}
			list, _ := f.get()
			if len(list) != tc.wantFailed {
				t.Fatalf("Failed told %v, want %d failure(s)", list, tc.wantFailed)
			}
			if tc.wantFailed == 0 && (len(got) != 1 || got[0].Event != "verdict" || st.Delivered != 1) {
				t.Errorf("delivered %v (stats %+v), want the verdict once", got, st)
			}
			if tc.wantInError != "" && !strings.Contains(list[0], tc.wantInError) {
				t.Errorf("failure %q does not say %q", list[0], tc.wantInError)
			}
		})
	}
}

func TestNotifierHonoursRetryAfter(t *testing.T) {
	srv := newNotifyServer(t, func(i int, h http.Header) int {
		if i == 1 {
			h.Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return 0
	})
	h := fastNotifier(&notifyFailures{})
	h.MaxRetryAfter = 5 * time.Second
	h.Notify(context.Background(), []experiments.Notify{notifyWebhook(srv.URL)}, notifyNote("end", 1))
	if err := closeNotifier(t, h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.times) != 2 {
		t.Fatalf("%d requests, want 2", len(srv.times))
	}
	if gap := srv.times[1].Sub(srv.times[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want the 1s of Retry-After", gap)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		" 2 ":                           2 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:35 GMT": 30 * time.Second,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0, // in the past
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNotifierBackoffGrowsWithJitter(t *testing.T) {
	h := &HTTPNotifier{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	transient := &postError{status: 503, msg: "HTTP 503"}
	for attempt, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 9: time.Second} {
		for range 50 {
			wait, retry := h.retryWait(attempt, transient)
			if !retry || wait < base/2 || wait > base {
				t.Fatalf("attempt %d: wait %s (retry %v), want within [%s, %s]", attempt, wait, retry, base/2, base)
			}
		}
	}
	if _, retry := h.retryWait(1, &postError{status: 403, msg: "HTTP 403"}); retry {
		t.Error("403 retried")
	}
	if _, retry := h.retryWait(1, &postError{msg: "post failed: connection refused"}); !retry {
		t.Error("network error not retried")
	}
	if wait, _ := h.retryWait(1, &postError{status: 429, retryAfter: time.Hour}); wait != 30*time.Second {
		t.Errorf("Retry-After of an hour waited %s, want the 30s default bound", wait)
	}
}

func TestNotifierKeepsOrderPerTarget(t *testing.T) {
	// Target a fails its first 3 requests, b every third one: both must still see 1..n.
	a := newNotifyServer(t, func(i int, _ http.Header) int { return map[int]int{1: 503, 2: 429, 3: 502}[i] })
	b := newNotifyServer(t, func(i int, _ http.Header) int {
		if i%3 == 0 {
			return 503
		}
		return 0
	})
	var f notifyFailures
	h := fastNotifier(&f)
	targets := []experiments.Notify{notifyWebhook(a.URL + "/a"), notifyWebhook(b.URL + "/b"), {Webhook: &experiments.WebhookNotify{URL: b.URL + "/only-end"}, On: []string{"end"}}}
	const n = 30
	for i := 1; i <= n; i++ {
		h.Notify(context.Background(), targets, notifyNote("step", i))
	}
	h.Notify(context.Background(), targets, notifyNote("end", n+1))
	if err := closeNotifier(t, h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.get(); len(list) > 0 {
		t.Fatalf("failures: %v", list)
	}
	for name, srv := range map[string]*notifyServer{"a": a, "b": b} {
		_, got := srv.received()
		var steps []int
		for _, g := range got {
			if g.Event == "step" {
				steps = append(steps, g.Step)
			}
		}
		if len(steps) != n {
			t.Fatalf("%s received %d steps, want %d", name, len(steps), n)
		}
		for i, s := range steps {
			if s != i+1 {
				t.Fatalf("%s received steps out of order: %v", name, steps)
			}
		}
	}
	if hits, _ := a.received(); hits != n+1+3 {
		t.Errorf("a saw %d requests, want %d (3 retried)", hits, n+1+3)
	}
	if st := h.Stats(); st.Delivered != 2*(n+1)+1 || st.Queued != st.Delivered {
		t.Errorf("stats %+v, want %d delivered of as many queued", st, 2*(n+1)+1)
	}
}

func TestNotifierFullQueueDropsOldestNonFinal(t *testing.T) {
	srv := newNotifyServer(t, nil)
	release := make(chan struct{})
	srv.hold = release
	var f notifyFailures
	h := fastNotifier(&f)
	h.QueueSize = 3
	targets := []experiments.Notify{notifyWebhook(srv.URL)}
	send := func(event string, step int) { h.Notify(context.Background(), targets, notifyNote(event, step)) }

	send("step", 1)
	select { // step 1 is in flight, outside the queue
	case <-srv.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("first notification never arrived")
	}
	began := time.Now()
	send("step", 2)
	send("step", 3)
	send("verdict", 4) // queue full: step 2, step 3, verdict
	send("step", 5)    // drops step 2
	send("end", 6)     // drops step 3
	send("step", 7)    // drops step 5
	send("verdict", 8) // drops step 7: verdict 4, end 6, verdict 8
	send("step", 9)    // nothing but finals wait: step 9 itself is dropped
	if took := time.Since(began); took > time.Second {
		t.Errorf("Notify blocked for %s on a full queue", took)
	}
	list, errs := f.get()
	want := []string{"step#2", "step#3", "step#5", "step#7", "step#9"}
	if len(list) != len(want) {
		t.Fatalf("dropped %v, want %v", list, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i], w+" ") || !errors.Is(errs[i], ErrNotificationDropped) {
			t.Errorf("failure %d = %q (%v), want %s dropped", i, list[i], errs[i], w)
		}
	}
	close(release)
	if err := closeNotifier(t, h, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	_, got := srv.received()
	var seen []string
	for _, g := range got {
		seen = append(seen, fmt.Sprintf("%s#%d", g.Event, g.Step))
	}
	if strings.Join(seen, " ") != "step#1 verdict#4 end#6 verdict#8" {
		t.Errorf("delivered %v, want step#1 verdict#4 end#6 verdict#8", seen)
	}
	if st := h.Stats(); st.Dropped != 5 || st.Delivered != 4 {
		t.Errorf("stats %+v, want 5 dropped and 4 delivered", st)
	}
}

func TestNotifierCloseWaitsForFinalNotifications(t *testing.T) {
	srv := newNotifyServer(t, func(i int, _ http.Header) int { return map[int]int{1: 503, 2: 503}[i] })
	var f notifyFailures
	h := fastNotifier(&f)
	h.Backoff, h.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond
	targets := []experiments.Notify{notifyWebhook(srv.URL)}
	h.Notify(context.Background(), targets, notifyNote("verdict", 3))
	h.Notify(context.Background(), targets, notifyNote("end", 3))
	if err := closeNotifier(t, h, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, got := srv.received()
	if len(got) != 2 || got[0].Event != "verdict" || got[1].Event != "end" {
		t.Fatalf("Close returned with %v delivered, want verdict and end", got)
	}
	// Closed: later notifications are refused, and said so.
	h.Notify(context.Background(), targets, notifyNote("start", 0))
	list, errs := f.get()
	if len(list) != 1 || !errors.Is(errs[0], ErrNotifierClosed) {
		t.Errorf("after Close, Failed told %v, want the start refused", list)
	}
	if err := closeNotifier(t, h, time.Second); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNotifierCloseIsBounded(t *testing.T) {
	srv := newNotifyServer(t, func(int, http.Header) int { return 503 })
	hung := newNotifyServer(t, nil)
	hung.hold = make(chan struct{})
	t.Cleanup(func() { close(hung.hold) }) // runs before the servers' Close
	var f notifyFailures
	h := fastNotifier(&f)
	h.Attempts = 1000
	h.Timeout = time.Minute
	for i := range 3 {
		h.Notify(context.Background(), []experiments.Notify{notifyWebhook(srv.URL), notifyWebhook(hung.URL)}, notifyNote("step", i))
	}
	began := time.Now()
	err := closeNotifier(t, h, 300*time.Millisecond)
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Close took %s with a 300ms bound", took)
	}
	var ue *UndeliveredError
	if !errors.As(err, &ue) || ue.Count != 6 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want 6 undelivered and the deadline", err)
	}
	list, errs := f.get()
	if len(list) != 6 {
		t.Fatalf("Failed told %d: %v, want all 6 abandoned", len(list), list)
	}
	for i, e := range errs {
		if !errors.Is(e, ErrNotifierClosed) {
			t.Errorf("failure %q does not match ErrNotifierClosed", list[i])
		}
	}
	if st := h.Stats(); st.Failed != 6 || st.Delivered != 0 {
		t.Errorf("stats %+v, want 6 failed", st)
	}
}

func TestNotifierFlushLeavesItOpen(t *testing.T) {
	srv := newNotifyServer(t, func(i int, _ http.Header) int { return map[int]int{1: 503}[i] })
	h := fastNotifier(&notifyFailures{})
	targets := []experiments.Notify{notifyWebhook(srv.URL)}
	h.Notify(context.Background(), targets, notifyNote("verdict", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h.Notify(context.Background(), targets, notifyNote("end", 1))
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, got := srv.received(); len(got) != 2 {
		t.Errorf("delivered %v, want verdict and end", got)
	}
}

// TestNotifierFlushWaitsForFailedToBeTold: Flush and Close return only once Failed has
// been told about what they waited for; the engine reads the failures right after a flush
// (a slow Failed makes the once-rare interleaving certain).
func TestNotifierFlushWaitsForFailedToBeTold(t *testing.T) {
	refused := newNotifyServer(t, func(int, http.Header) int { return http.StatusBadRequest })
	for _, how := range []string{"flush", "close"} {
		t.Run(how, func(t *testing.T) {
			var f notifyFailures
			h := fastNotifier(&f)
			h.Failed = func(n Notification, target string, err error) {
				time.Sleep(100 * time.Millisecond)
				f.record(n, target, err)
			}
			h.Notify(context.Background(), []experiments.Notify{notifyWebhook(refused.URL)}, notifyNote("end", 1))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			if how == "flush" {
				err = h.Flush(ctx)
				defer closeNotifier(t, h, 5*time.Second)
			} else {
				err = h.Close(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			if list, _ := f.get(); len(list) != 1 || !strings.Contains(list[0], "HTTP 400") {
				t.Errorf("Failed told %v when %s returned, want the HTTP 400", list, how)
			}
		})
	}
}
