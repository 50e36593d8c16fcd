package engine

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// failingStore stops accepting writes once armed, as a full or read-only disk would.
type failingStore struct {
	store.Store
	mu    sync.Mutex
	armed bool
}

var errDiskFull = errors.New("disk I/O error: database or disk is full")

func (f *failingStore) SaveRun(ctx context.Context, r *store.Run, ev ...store.Event) error {
	f.mu.Lock()
	armed := f.armed
	f.mu.Unlock()
	if armed {
		return errDiskFull
	}
	return f.Store.SaveRun(ctx, r, ev...)
}

// countingSteerer counts writes.
type countingSteerer struct {
	traffic.Steerer
	mu     sync.Mutex
	writes int
}

func (c *countingSteerer) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Steerer.SetWeights(ctx, ref, want, expect)
}

// TestStateNotWritableMeansNoWeightChange: the intent must be durable before any weight
// moves, so when the store refuses writes the engine stops with an error and the pool
// keeps its weights.
func TestStateNotWritableMeansNoWeightChange(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	fs := &failingStore{Store: w.St}
	cs := &countingSteerer{Steerer: w.Steer}
	r := start(t, w, w.engine(func(o *Options) { o.Store = fs; o.Steerer = cs }))
	var stepErr error
	for i := 0; i < 200 && stepErr == nil && !r.Done(); i++ {
		w.Advance(w.Now().Add(30 * time.Second))
		if r.Record().Step == 1 && r.Record().StepElapsed >= 10*time.Minute-time.Minute {
			fs.mu.Lock()
			fs.armed = true
			fs.mu.Unlock()
		}
		stepErr = r.Step(context.Background(), w.Now())
	}
	if !errors.Is(stepErr, errDiskFull) {
		t.Fatalf("want the store's error to stop the run, got %v", stepErr)
	}
	if cs.writes != 1 {
		t.Errorf("weights written %d times; only step 1 (before the disk filled) may be", cs.writes)
	}
	// The pool is still at step 1, which the store knows: a restart resumes from there.
	rec, err := w.St.Run(context.Background(), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	for o, wt := range rec.Current {
		if !traffic.SameWeight(w.PoolWeights()[o], wt) {
			t.Errorf("pool and store disagree on %s: %v vs %v", o, w.PoolWeights()[o], wt)
		}
	}
}

func TestNotificationsCarryNumbersAndNeverBlock(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	var slack []string
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/slack") {
			var m map[string]string
			json.Unmarshal(b, &m)
			slack = append(slack, m["text"])
			return
		}
		if r.Header.Get("X-Team") != "platform" {
			rw.WriteHeader(http.StatusForbidden)
			return
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		got = append(got, m)
	}))
	defer hook.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { time.Sleep(3 * time.Second) }))
	defer slow.Close()

	w := newWorld(t)
	w.Rate = 1000
	notify := "  notify:\n    - slack: {webhookURL: " + hook.URL + "/slack/T0/B0/secret}\n    - webhook: {url: " + hook.URL + "/hook, headers: {X-Team: platform}}\n      on: [start, verdict, end]\n    - webhook: {url: " + slow.URL + "}\n  preconditions:"
	r := start(t, w, w.engine(), "  preconditions:", notify)
	began := time.Now()
	w.Drive(r, 3*time.Hour, nil)
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("run took %s: a slow webhook must not hold it up", took)
	}
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n, s := len(got), len(slack)
		mu.Unlock()
		if (n >= 3 && s >= 6) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	events := map[string]bool{}
	for _, m := range got {
		events[m["event"].(string)] = true
		if m["experiment"] != "world-test" || m["run"] == "" {
			t.Errorf("webhook payload lacks identity: %v", m)
		}
	}
	if !events["start"] || !events["verdict"] || !events["end"] || events["step"] {
		t.Errorf("webhook events %v, want start, verdict, end and no step (filtered)", events)
	}
	if len(slack) < 6 { // start, 3 steps, verdict, end
		t.Errorf("slack got %d messages: %v", len(slack), slack)
	}
	for _, m := range got {
		if m["event"] == "verdict" && (m["weights"] == nil || m["values"] == nil) {
			t.Errorf("verdict notification without numbers: %v", m)
		}
	}
}

// decisionDroppingStore loses the next decision once armed: the process died after the
// interval's observations were stored and before its decision was.
type decisionDroppingStore struct {
	store.Store
	mu    sync.Mutex
	armed bool
}

var errDied = errors.New("process died (test)")

func (d *decisionDroppingStore) AddDecision(ctx context.Context, dec *store.Decision) error {
	d.mu.Lock()
	armed := d.armed
	d.armed = false
	d.mu.Unlock()
	if armed {
		return errDied
	}
	return d.Store.AddDecision(ctx, dec)
}

// TestResumeDecidesTheIntervalACrashLeftUndecided: a "continue" decision is recorded only
// for fresh data, so a process that died between storing an interval and deciding it would
// leave that interval without a decision; the resumed run records it, once.
func TestResumeDecidesTheIntervalACrashLeftUndecided(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	ds := &decisionDroppingStore{Store: w.St}
	r := start(t, w, w.engine(func(o *Options) { o.Store = ds }))
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		w.Advance(w.Now().Add(30 * time.Second))
		if r.Record().Step == 1 && r.Record().StepElapsed >= 3*time.Minute {
			ds.mu.Lock()
			ds.armed = true
			ds.mu.Unlock()
		}
		err = r.Step(context.Background(), w.Now())
	}
	if !errors.Is(err, errDied) {
		t.Fatalf("test setup: want the lost decision to stop the run, got %v", err)
	}
	ctx := context.Background()
	decided := func() map[string]int {
		t.Helper()
		out := map[string]int{}
		got, err := w.St.Decisions(ctx, r.ID())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range got {
			var det struct {
				Through time.Time `json:"decidedThrough"`
			}
			if err := json.Unmarshal(d.Details, &det); err != nil || det.Through.IsZero() {
				t.Fatalf("decision without decidedThrough: %s", d.Details)
			}
			out[det.Through.Format(time.RFC3339)]++
		}
		return out
	}
	before := decided()
	rec, err := w.St.Run(ctx, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	lost := rec.StepElapsed
	// A new process resumes the run and steps it once, before any new interval is complete.
	r2, err := w.engine().Resume(ctx, r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	if !r2.undecided {
		t.Fatal("the resumed run does not know its last interval is undecided")
	}
	if err := r2.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	after := decided()
	if len(after) != len(before)+1 {
		t.Fatalf("%d decisions before the resume, %d after one tick without fresh data; want one more (the lost one)", len(before), len(after))
	}
	got, _ := w.St.Decisions(ctx, r.ID())
	var det struct {
		StepElapsed string `json:"stepElapsed"`
	}
	json.Unmarshal(got[len(got)-1].Details, &det)
	if det.StepElapsed != lost.String() {
		t.Errorf("recovered decision at %s of the step, the lost one was at %s", det.StepElapsed, lost)
	}
	// A second resume finds it decided, and further ticks decide each interval once.
	r3, err := w.engine().Resume(ctx, r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	if r3.undecided {
		t.Error("a decided interval is taken as undecided")
	}
	w.Drive(r3, 3*time.Hour, nil)
	assertEnded(t, r3, store.StatePromoted, VerdictPromoted)
	for through, n := range decided() {
		if n > 1 {
			t.Errorf("the interval ending %s was decided %d times", through, n)
		}
	}
}
