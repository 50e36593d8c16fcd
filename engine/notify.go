package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// Notification is one message about a run, sent to the experiment's notify targets.
type Notification struct {
	Experiment string    `json:"experiment"`
	RunID      string    `json:"run"`
	Event      string    `json:"event"` // start, step, verdict, end
	Text       string    `json:"text"`
	At         time.Time `json:"at"`
	State      string    `json:"state"`
	Step       int       `json:"step"`
	Verdict    string    `json:"verdict,omitempty"`
	Weights    any       `json:"weights,omitempty"`
	Values     any       `json:"values,omitempty"`
}

// Final reports whether n tells how a run ended ("verdict" or "end"): the notifications a
// full queue keeps longest and a drain on exit waits for.
func (n Notification) Final() bool { return n.Event == "verdict" || n.Event == "end" }

// Notifier delivers notifications. Implementations must not block the engine for long:
// a notification that cannot be delivered never holds an experiment up.
type Notifier interface {
	Notify(ctx context.Context, targets []experiments.Notify, n Notification)
}

// Flusher is a Notifier that delivers in the background and can be waited for:
// Flush returns once what was queued before the call is delivered or given up, or ctx ends.
type Flusher interface {
	Flush(ctx context.Context) error
}

var (
	_ Notifier = (*HTTPNotifier)(nil)
	_ Flusher  = (*HTTPNotifier)(nil)
)

// Errors reported through HTTPNotifier.Failed for notifications never attempted to the end.
var (
	// ErrNotificationDropped: the queue was full and the notification made room for a newer
	// or a final one.
	ErrNotificationDropped = errors.New("notification dropped: the queue is full")
	// ErrNotifierClosed: the notifier was closed before the notification could be delivered.
	ErrNotifierClosed = errors.New("notifier closed before delivery")
)

// HTTPNotifier posts to Slack incoming webhooks and generic JSON webhooks. Notify only
// queues: one worker per target delivers that target's notifications in order, retrying
// network errors, 5xx and 429 with exponential backoff and jitter (a Retry-After is
// honoured up to MaxRetryAfter). The queue is bounded; when it is full the oldest
// notification that is not Final is dropped, so Notify never blocks. Close drains it.
//
// The zero value is ready to use; the fields must not change after the first Notify.
type HTTPNotifier struct {
	Client *http.Client
	// Failed, when set, is told about every notification that was not delivered: given up
	// after its attempts, refused with a 4xx, dropped from a full queue, or abandoned at
	// Close. It is never given the URL, which is a secret, and err's text never holds it.
	// It is called from the notifier's workers and from Notify, and must not block.
	Failed func(n Notification, target string, err error)

	// QueueSize bounds the notifications waiting across all targets; default 256.
	QueueSize int
	// Attempts is how many times one notification is tried; default 5.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next one up to
	// MaxBackoff; defaults 1s and 30s. Each wait is jittered between half and all of it.
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter bounds how long a Retry-After header is honoured; default 30s.
	MaxRetryAfter time.Duration
	// Timeout bounds each attempt; default 10s.
	Timeout time.Duration

	q notifyQueue
}

func (h *HTTPNotifier) queueSize() int         { return defaultIfZero(h.QueueSize, 256) }
func (h *HTTPNotifier) attempts() int          { return defaultIfZero(h.Attempts, 5) }
func (h *HTTPNotifier) backoff() time.Duration { return defaultIfZero(h.Backoff, time.Second) }
func (h *HTTPNotifier) maxBackoff() time.Duration {
	return defaultIfZero(h.MaxBackoff, 30*time.Second)
}
func (h *HTTPNotifier) maxRetryAfter() time.Duration {
	return defaultIfZero(h.MaxRetryAfter, 30*time.Second)
}
func (h *HTTPNotifier) timeout() time.Duration { return defaultIfZero(h.Timeout, 10*time.Second) }

func defaultIfZero[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Notify implements Notifier: it queues n for each of targets that wants n.Event and
// returns at once. ctx is not used for delivery: a notification outlives the step that
// sent it (the final ones especially); Close bounds how long they may take.
func (h *HTTPNotifier) Notify(_ context.Context, targets []experiments.Notify, n Notification) {
	var ds []*delivery
	for i, t := range targets {
		if len(t.On) > 0 && !slices.Contains(t.On, n.Event) {
			continue
		}
		d := &delivery{n: n}
		kind := "webhook"
		// Encoded now, in the caller's goroutine: n may share maps with the run.
		switch {
		case t.Slack != nil:
			kind, d.url = "slack", t.Slack.WebhookURL
			d.body, d.err = json.Marshal(map[string]string{"text": n.Text})
		case t.Webhook != nil:
			d.url, d.headers = t.Webhook.URL, t.Webhook.Headers
			d.body, d.err = json.Marshal(n)
		default:
			continue
		}
		d.name = fmt.Sprintf("notify[%d] (%s)", i, kind)
		ds = append(ds, d)
	}
	if len(ds) > 0 {
		h.enqueue(ds)
	}
}

// deliver tries d until it is delivered, refused for good, out of attempts or ctx ends.
func (h *HTTPNotifier) deliver(ctx context.Context, d *delivery) error {
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	if d.err != nil {
		return fmt.Errorf("encode notification: %v", d.err)
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, h.timeout())
		err := post(actx, client, d.url, d.headers, d.body)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%d attempt(s), last: %v)", ErrNotifierClosed, attempt, err)
		}
		wait, retry := h.retryWait(attempt, err)
		if !retry {
			return err
		}
		if attempt >= h.attempts() {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		h.q.retried()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%d attempt(s), last: %v)", ErrNotifierClosed, attempt, err)
		case <-t.C:
		}
	}
}

// postError is a failed attempt, its text free of the target's URL.
type postError struct {
	status     int           // 0 for a network error
	retryAfter time.Duration // from a Retry-After header, when there was one
	msg        string
}

func (e *postError) Error() string { return e.msg }

// retryWait classifies a failed attempt, the one place that decides what is retried:
// network errors and timeouts, 429 and 5xx are; other statuses are not. It returns how
// long to wait before the next attempt.
func (h *HTTPNotifier) retryWait(attempt int, err error) (time.Duration, bool) {
	var pe *postError
	if !errors.As(err, &pe) {
		return 0, false
	}
	if pe.status != 0 && pe.status != http.StatusTooManyRequests && pe.status < 500 {
		return 0, false
	}
	if pe.retryAfter > 0 {
		return min(pe.retryAfter, h.maxRetryAfter()), true
	}
	wait := h.backoff()
	for i := 1; i < attempt && wait < h.maxBackoff(); i++ {
		wait *= 2
	}
	wait = min(wait, h.maxBackoff())
	return wait/2 + rand.N(wait/2+1), true
}

func post(ctx context.Context, c *http.Client, target string, headers map[string]string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return &postError{msg: "build request: invalid URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "verdict")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		// Errors from net/http quote the URL; the URL is a secret.
		return &postError{msg: "post failed: " + redactedCause(err, target)}
	}
	// Read a little of the body so the connection can be reused; never report it (a
	// webhook may echo the request, secrets included).
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return &postError{status: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
			msg: fmt.Sprintf("HTTP %d", resp.StatusCode)}
	}
	return nil
}

// parseRetryAfter reads a Retry-After header, in seconds or as an HTTP date; 0 when absent
// or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redactedCause is err's text without target: a *url.Error's own text is dropped, and
// whatever the cause still quotes of the URL (its path, query or password, where webhook
// secrets live) is replaced, like Alertmanager's RedactURL.
func redactedCause(err error, target string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return scrubURL(err.Error(), target)
}

// scrubURL replaces in s every part of target that may be secret.
func scrubURL(s, target string) string {
	const mark = "[redacted]"
	secrets := []string{target}
	if u, err := url.Parse(target); err == nil {
		secrets = append(secrets, u.String(), strings.TrimPrefix(u.String(), u.Scheme+"://"), u.RequestURI())
		if u.Path != "" && u.Path != "/" {
			secrets = append(secrets, u.Path, u.EscapedPath())
		}
		if u.RawQuery != "" {
			secrets = append(secrets, u.RawQuery)
		}
		if p, ok := u.User.Password(); ok && p != "" {
			secrets = append(secrets, p)
		}
		if u.User != nil {
			secrets = append(secrets, u.User.String())
		}
	}
	// Longest first, so a part never leaves the rest of a longer match behind.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, x := range secrets {
		if x != "" && x != "/" {
			s = strings.ReplaceAll(s, x, mark)
		}
	}
	return s
}

// ---- the engine's notifications ---------------------------------------------------------

func (r *Run) notify(ctx context.Context, event, text string) {
	notifier := r.e.notifier()
	if dn, ok := notifier.(*defaultNotifier); ok {
		dn.flush(r.rec.ID)
	}
	targets := r.exp.Spec.Notify
	if len(targets) == 0 {
		return
	}
	n := Notification{Experiment: r.exp.Metadata.Name, RunID: r.rec.ID, Event: event, Text: text, At: time.Now().UTC(),
		State: string(r.rec.State), Step: r.rec.Step, Verdict: r.rec.Verdict, Weights: r.rec.Current, Values: r.latestValues()}
	notifier.Notify(ctx, targets, n)
}

// notificationEvents takes the events of this run's failed notifications not yet handed
// to the observer, for save to store and emit with the run's own events, in order.
func (r *Run) notificationEvents() []store.Event {
	notifierMu.Lock()
	dn, _ := r.e.opts.Notifier.(*defaultNotifier)
	notifierMu.Unlock()
	if dn == nil {
		return nil
	}
	var out []store.Event
	for _, ev := range dn.take(r.rec.ID) {
		out = append(out, store.Event{RunID: ev.RunID, At: ev.At, Type: ev.Type, Message: ev.Message, Data: ev.Data})
	}
	return out
}

// notifierMu guards the lazy creation of an engine's default notifier (Options.Notifier
// nil), so runs driven from several goroutines share one queue that Close can drain.
var notifierMu sync.Mutex

func (e *Engine) notifier() Notifier {
	notifierMu.Lock()
	defer notifierMu.Unlock()
	if e.opts.Notifier == nil {
		e.opts.Notifier = newDefaultNotifier(e.opts.Observer, e.opts.Logger)
	}
	return e.opts.Notifier
}

// Close waits, until ctx ends at the latest, for the notifications the engine has queued
// (the final "verdict" and "end" ones of a run that just ended, typically), and reports
// how many were not delivered. The notifier the engine made itself (Options.Notifier nil)
// is closed; one given in Options, which may be shared, is only flushed when it is a
// Flusher, and stays the caller's to close. Runs must not notify after Close.
func (e *Engine) Close(ctx context.Context) error {
	notifierMu.Lock()
	n := e.opts.Notifier
	notifierMu.Unlock()
	switch n := n.(type) {
	case *defaultNotifier:
		err := n.Close(ctx)
		n.flush("")
		return err
	case Flusher:
		return n.Flush(ctx)
	}
	return nil
}

// defaultNotifier is the engine's own HTTPNotifier. A failed delivery is logged at once and
// becomes an EventNotification that the run's observer receives from the run's own
// goroutine (at its next notification, or at Engine.Close), never from a worker, so
// observers see each run's events in order and one at a time.
type defaultNotifier struct {
	*HTTPNotifier
	obs Observer

	mu      sync.Mutex
	pending []Event
}

func newDefaultNotifier(obs Observer, log *slog.Logger) *defaultNotifier {
	dn := &defaultNotifier{obs: obs}
	dn.HTTPNotifier = &HTTPNotifier{Failed: func(n Notification, target string, err error) {
		msg := fmt.Sprintf("%s for %q not delivered: %v", target, n.Event, err)
		if log != nil {
			log.Warn(msg, "run", n.RunID, "type", EventNotification)
		}
		ev := NewEvent(EventNotification, n.RunID, time.Now().UTC(), msg, NotificationData{Event: n.Event, Target: target, Error: err.Error()})
		dn.mu.Lock()
		if len(dn.pending) < maxPendingNotificationEvents {
			dn.pending = append(dn.pending, ev)
		}
		dn.mu.Unlock()
	}}
	return dn
}

// take removes and returns the pending events of run runID, or of every run for "".
func (dn *defaultNotifier) take(runID string) []Event {
	dn.mu.Lock()
	defer dn.mu.Unlock()
	var out []Event
	keep := dn.pending[:0]
	for _, ev := range dn.pending {
		if runID == "" || ev.RunID == runID {
			out = append(out, ev)
		} else {
			keep = append(keep, ev)
		}
	}
	dn.pending = keep
	return out
}

// flush hands the observer the pending events of run runID, or of every run for "".
func (dn *defaultNotifier) flush(runID string) {
	for _, ev := range dn.take(runID) {
		if dn.obs != nil {
			dn.obs.Observe(ev)
		}
	}
}

// maxPendingNotificationEvents bounds the failure events waiting for their run, as the
// queue bounds the notifications (failures are logged at once whatever happens to them).
const maxPendingNotificationEvents = 1024

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
