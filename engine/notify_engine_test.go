package engine

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// TestNotifyEngineCloseDeliversTheFinalNotifications is `verdict run`'s exit: the run
// ends, the webhook is failing, and Engine.Close waits for the verdict and the end.
func TestNotifyEngineCloseDeliversTheFinalNotifications(t *testing.T) {
	var failing atomic.Bool
	hook := newNotifyServer(t, func(int, http.Header) int {
		if failing.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	refused := newNotifyServer(t, func(int, http.Header) int { return http.StatusForbidden })

	w := newWorld(t)
	w.Rate = 1000
	var inside, overlapped atomic.Bool
	var notices []Event
	e := w.engine(func(o *Options) {
		o.Observer = ObserverFunc(func(ev Event) {
			if !inside.CompareAndSwap(false, true) {
				overlapped.Store(true)
			}
			defer inside.Store(false)
			if ev.Type == EventNotification {
				notices = append(notices, ev)
			}
		})
	})
	notify := "  notify:\n    - webhook: {url: " + hook.URL + "/hook/secret}\n      on: [start, verdict, end]\n" +
		"    - webhook: {url: " + refused.URL + "/refused/secret}\n      on: [end]\n  preconditions:"
	r := start(t, w, e, "  preconditions:", notify)
	// Let the start through, then fail everything until the run is over.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.opts.Notifier.(Flusher).Flush(ctx); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	go func() { time.Sleep(1500 * time.Millisecond); failing.Store(false) }()

	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, got := hook.received()
	var events []string
	for _, n := range got {
		events = append(events, n.Event)
	}
	if strings.Join(events, " ") != "start verdict end" {
		t.Errorf("webhook received %v, want start verdict end", events)
	}
	if overlapped.Load() {
		t.Error("the observer was called from two goroutines at once")
	}
	// The refused end is reported once, as a typed event that names no URL.
	if len(notices) != 1 {
		t.Fatalf("notification events %v, want the refused end", notices)
	}
	d, err := DecodeEventData[NotificationData](notices[0].Data)
	if err != nil || d.Event != "end" || d.Target != "notify[1] (webhook)" || d.Error != "HTTP 403" {
		t.Errorf("notification event %q data %+v (%v)", notices[0].Message, d, err)
	}
	if strings.Contains(notices[0].Message, "secret") || strings.Contains(notices[0].Message, refused.URL) {
		t.Errorf("notification event quotes the URL: %q", notices[0].Message)
	}
}

// TestNotifyEngineCloseOnlyFlushesAGivenNotifier: a notifier given in Options may be shared
// (serve gives one to every engine), so Engine.Close waits for it but leaves it open.
func TestNotifyEngineCloseOnlyFlushesAGivenNotifier(t *testing.T) {
	srv := newNotifyServer(t, func(i int, _ http.Header) int { return map[int]int{1: 503}[i] })
	var f notifyFailures
	h := fastNotifier(&f)
	w := newWorld(t)
	e := w.engine(func(o *Options) { o.Notifier = h })
	targets := []experiments.Notify{notifyWebhook(srv.URL)}
	h.Notify(context.Background(), targets, notifyNote("end", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	h.Notify(context.Background(), targets, notifyNote("start", 1))
	if err := closeNotifier(t, h, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, got := srv.received(); len(got) != 2 {
		t.Errorf("delivered %v, want end and start: the engine must not close a notifier it was given", got)
	}
	if list, _ := f.get(); len(list) > 0 {
		t.Errorf("failures: %v", list)
	}
}

// TestNotifyEngineCloseIsBounded: a webhook that never answers holds Close up to its
// context, no longer, and the count comes back.
func TestNotifyEngineCloseIsBounded(t *testing.T) {
	hung := newNotifyServer(t, nil)
	hung.hold = make(chan struct{})
	t.Cleanup(func() { close(hung.hold) })
	w := newWorld(t)
	e := w.engine()
	r := start(t, w, e, "  preconditions:", "  notify:\n    - webhook: {url: "+hung.URL+"}\n  preconditions:")
	_ = r
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := e.Close(ctx)
	var ue *UndeliveredError
	if !errors.As(err, &ue) || ue.Count != 1 {
		t.Errorf("Close = %v, want 1 undelivered", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Close took %s with a 300ms bound", took)
	}
}

// TestNotifyEngineCloseWithoutNotifications is a run without notify targets: nothing to
// wait for.
func TestNotifyEngineCloseWithoutNotifications(t *testing.T) {
	w := newWorld(t)
	e := w.engine()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestNotifyFailuresWaitForTheRunsGoroutine: a failed delivery becomes an event only when
// the run takes it (for save to store it in order), never from the notifier's worker.
func TestNotifyFailuresWaitForTheRunsGoroutine(t *testing.T) {
	refused := newNotifyServer(t, func(int, http.Header) int { return http.StatusBadRequest })
	w := newWorld(t)
	var observed atomic.Int32
	e := w.engine(func(o *Options) {
		o.Observer = ObserverFunc(func(ev Event) {
			if ev.Type == EventNotification {
				observed.Add(1)
			}
		})
	})
	r := start(t, w, e, "  preconditions:", "  notify:\n    - slack: {webhookURL: "+refused.URL+"/T/B/secret}\n  preconditions:")
	dn := e.opts.Notifier.(*defaultNotifier)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dn.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := dn.Stats(); st.Failed != 1 || observed.Load() != 0 {
		t.Fatalf("stats %+v, %d observed: want 1 failure, not yet observed", st, observed.Load())
	}
	evs := r.notificationEvents()
	if len(evs) != 1 || evs[0].Type != EventNotification || evs[0].RunID != r.ID() || !strings.Contains(evs[0].Message, "notify[0] (slack) for \"start\" not delivered: HTTP 400") {
		t.Fatalf("notification events %+v", evs)
	}
	if err := e.Close(ctx); err != nil || observed.Load() != 0 {
		t.Errorf("Close = %v, %d observed: a taken event must not be observed again", err, observed.Load())
	}
}
