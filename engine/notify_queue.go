package engine

import (
	"context"
	"fmt"
	"sync"
)

// delivery is one notification for one target.
type delivery struct {
	seq     uint64
	n       Notification
	name    string // what Failed is told: "notify[0] (slack)"
	url     string // secret
	headers map[string]string
	body    []byte
	err     error // from encoding body
}

// targetQueue holds one target's deliveries, delivered in order by at most one worker.
type targetQueue struct {
	items    []*delivery
	inflight *delivery
	running  bool
}

// notifyQueue is HTTPNotifier's state: a queue per target, bounded in total.
type notifyQueue struct {
	mu      sync.Mutex
	started bool
	ctx     context.Context // cancelled when Close gives up
	cancel  context.CancelFunc
	targets map[string]*targetQueue // by URL
	queued  int                     // waiting, not in flight
	workers int
	seq     uint64
	closed  bool
	changed chan struct{} // closed and replaced whenever a delivery finishes or is dropped
	stats   NotifierStats
}

// NotifierStats counts what a notifier did with the notifications it was given, one per
// target.
type NotifierStats struct {
	Queued    int `json:"queued"`    // accepted into the queue
	Delivered int `json:"delivered"` // acknowledged with a 2xx
	Failed    int `json:"failed"`    // given up after retries, refused, or abandoned at Close
	Dropped   int `json:"dropped"`   // dropped from a full queue, or sent after Close
	Retries   int `json:"retries"`   // attempts after the first
}

// UndeliveredError is returned by Flush and Close when ctx ended first.
type UndeliveredError struct {
	Count int   // notifications still queued or in flight
	Err   error // ctx's error
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("%d notification(s) not delivered: %v", e.Count, e.Err)
}

func (e *UndeliveredError) Unwrap() error { return e.Err }

// Stats returns the notifier's counters so far.
func (h *HTTPNotifier) Stats() NotifierStats {
	q := &h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}

// init must be called with q.mu held.
func (q *notifyQueue) init() {
	if q.started {
		return
	}
	q.started = true
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.targets = map[string]*targetQueue{}
	q.changed = make(chan struct{})
}

// signal wakes Flush; q.mu must be held.
func (q *notifyQueue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *notifyQueue) retried() {
	q.mu.Lock()
	q.stats.Retries++
	q.mu.Unlock()
}

type failure struct {
	d   *delivery
	err error
}

func (h *HTTPNotifier) report(fs []failure) {
	if h.Failed == nil {
		return
	}
	for _, f := range fs {
		h.Failed(f.d.n, f.d.name, f.err)
	}
}

// enqueue queues ds, making room by dropping when the queue is full; it never blocks.
func (h *HTTPNotifier) enqueue(ds []*delivery) {
	q := &h.q
	var failed []failure
	q.mu.Lock()
	q.init()
	for _, d := range ds {
		if q.closed {
			q.stats.Dropped++
			failed = append(failed, failure{d, ErrNotifierClosed})
			continue
		}
		q.seq++
		d.seq = q.seq
		if q.queued >= h.queueSize() {
			victim := q.victim(d)
			q.stats.Dropped++
			failed = append(failed, failure{victim, ErrNotificationDropped})
			if victim == d {
				continue
			}
			q.remove(victim)
		}
		t := q.targets[d.url]
		if t == nil {
			t = &targetQueue{}
			q.targets[d.url] = t
		}
		t.items = append(t.items, d)
		q.queued++
		q.stats.Queued++
		if !t.running {
			t.running = true
			q.workers++
			go h.work(d.url, t)
		}
	}
	if len(failed) > 0 {
		q.signal()
	}
	q.mu.Unlock()
	h.report(failed)
}

// victim picks what a full queue drops to take d: the oldest waiting notification that is
// not final; else d itself unless it is final; else the oldest waiting final one.
func (q *notifyQueue) victim(d *delivery) *delivery {
	var oldest, oldestFinal *delivery
	for _, t := range q.targets {
		for _, x := range t.items {
			if x.n.Final() {
				if oldestFinal == nil || x.seq < oldestFinal.seq {
					oldestFinal = x
				}
			} else if oldest == nil || x.seq < oldest.seq {
				oldest = x
			}
		}
	}
	switch {
	case oldest != nil:
		return oldest
	case !d.n.Final() || oldestFinal == nil:
		return d
	}
	return oldestFinal
}

// remove takes a waiting delivery out of its queue; q.mu must be held.
func (q *notifyQueue) remove(d *delivery) {
	t := q.targets[d.url]
	for i, x := range t.items {
		if x == d {
			t.items = append(t.items[:i], t.items[i+1:]...)
			q.queued--
			return
		}
	}
}

// work delivers a target's queue in order and exits once it is empty, so an idle notifier
// holds no goroutine.
func (h *HTTPNotifier) work(key string, t *targetQueue) {
	q := &h.q
	for {
		q.mu.Lock()
		if len(t.items) == 0 {
			t.running = false
			delete(q.targets, key)
			q.workers--
			q.signal()
			q.mu.Unlock()
			return
		}
		d := t.items[0]
		t.items[0] = nil
		t.items = t.items[1:]
		t.inflight = d
		q.queued--
		ctx := q.ctx
		q.mu.Unlock()

		err := h.deliver(ctx, d)
		// Reported while d still counts as in flight, so a Flush or Close that returns has
		// seen Failed told: the engine turns failures into events right after a flush.
		if err != nil {
			h.report([]failure{{d, err}})
		}

		q.mu.Lock()
		t.inflight = nil
		if err == nil {
			q.stats.Delivered++
		} else {
			q.stats.Failed++
		}
		q.signal()
		q.mu.Unlock()
	}
}

// outstanding counts the deliveries up to seq still waiting or in flight; q.mu must be held.
func (q *notifyQueue) outstanding(seq uint64) int {
	n := 0
	for _, t := range q.targets {
		if t.inflight != nil && t.inflight.seq <= seq {
			n++
		}
		for _, x := range t.items {
			if x.seq <= seq {
				n++
			}
		}
	}
	return n
}

// Flush waits until every notification queued before the call is delivered or given up
// (and Failed told), or ctx ends; then it returns an *UndeliveredError. Delivery goes on
// either way.
func (h *HTTPNotifier) Flush(ctx context.Context) error {
	q := &h.q
	q.mu.Lock()
	q.init()
	mark := q.seq
	q.mu.Unlock()
	return h.wait(ctx, func() int { return q.outstanding(mark) })
}

// wait returns once left() (called with q.mu held) is 0, or with an *UndeliveredError
// when ctx ends first.
func (h *HTTPNotifier) wait(ctx context.Context, left func() int) error {
	q := &h.q
	for {
		q.mu.Lock()
		n := left()
		ch := q.changed
		q.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			q.mu.Lock()
			n = left()
			q.mu.Unlock()
			if n == 0 {
				return nil
			}
			return &UndeliveredError{Count: n, Err: ctx.Err()}
		}
	}
}

// Close stops accepting notifications (later ones are reported to Failed as
// ErrNotifierClosed) and waits until the queue is empty or ctx ends. Then what is left is
// abandoned, reported to Failed, and counted in the *UndeliveredError returned.
func (h *HTTPNotifier) Close(ctx context.Context) error {
	q := &h.q
	q.mu.Lock()
	q.init()
	q.closed = true
	q.mu.Unlock()
	err := h.wait(ctx, func() int { return q.outstanding(q.seq) })
	if err == nil {
		return nil
	}
	// Give up: drop what waits, cancel what is in flight, and let the workers report it.
	var failed []failure
	q.mu.Lock()
	for _, t := range q.targets {
		for _, d := range t.items {
			failed = append(failed, failure{d, ErrNotifierClosed})
		}
		q.queued -= len(t.items)
		q.stats.Failed += len(t.items)
		t.items = nil
	}
	q.cancel()
	q.signal()
	q.mu.Unlock()
	h.report(failed)
	// The workers return promptly now: their requests and waits see the cancelled context.
	h.wait(context.Background(), func() int { return q.workers })
	return err
}
