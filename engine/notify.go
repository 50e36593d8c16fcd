package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"time"

	"github.com/verdict-dev/verdict/experiments"
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

// Notifier delivers notifications. Implementations must not block the engine for long:
// a notification that cannot be delivered never holds an experiment up.
type Notifier interface {
	Notify(ctx context.Context, targets []experiments.Notify, n Notification)
}

// HTTPNotifier posts to Slack incoming webhooks and generic JSON webhooks, each delivery in
// its own goroutine with a timeout.
type HTTPNotifier struct {
	Client *http.Client
	// Failed, when set, is told about deliveries that failed (never with the URL, which is a
	// secret).
	Failed func(n Notification, target string, err error)
}

// Notify implements Notifier.
func (h *HTTPNotifier) Notify(ctx context.Context, targets []experiments.Notify, n Notification) {
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	for i, t := range targets {
		if len(t.On) > 0 && !slices.Contains(t.On, n.Event) {
			continue
		}
		var target string
		var body any
		var headers map[string]string
		kind := "webhook"
		switch {
		case t.Slack != nil:
			kind, target = "slack", t.Slack.WebhookURL
			body = map[string]string{"text": n.Text}
		case t.Webhook != nil:
			target, headers = t.Webhook.URL, t.Webhook.Headers
			body = n
		default:
			continue
		}
		name := fmt.Sprintf("notify[%d] (%s)", i, kind)
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			err := post(ctx, client, target, headers, body)
			if err != nil && h.Failed != nil {
				h.Failed(n, name, err)
			}
		}()
	}
}

func post(ctx context.Context, c *http.Client, target string, headers map[string]string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("build request: invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "verdict")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		// Errors from net/http quote the URL; the URL is a secret.
		return fmt.Errorf("post failed: %s", redactedCause(err))
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

func redactedCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func (r *Run) notify(ctx context.Context, event, text string) {
	targets := r.exp.Spec.Notify
	if len(targets) == 0 {
		return
	}
	n := Notification{Experiment: r.exp.Metadata.Name, RunID: r.rec.ID, Event: event, Text: text, At: time.Now().UTC(),
		State: string(r.rec.State), Step: r.rec.Step, Verdict: r.rec.Verdict, Weights: r.rec.Current, Values: r.latestValues()}
	notifier := r.e.opts.Notifier
	if notifier == nil {
		obs := r.e.opts.Observer
		notifier = &HTTPNotifier{Failed: func(n Notification, target string, err error) {
			if obs != nil {
				obs.Observe(Event{Type: EventNotification, RunID: n.RunID, At: time.Now().UTC(), Message: fmt.Sprintf("%s for %q not delivered: %v", target, n.Event, err)})
			}
		}}
	}
	notifier.Notify(ctx, targets, n)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
