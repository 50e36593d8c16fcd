package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// fakeFence is a lease whose validity the test decides, to open the windows a real Hold
// keeps small: a holder that still believes it owns the run, or one that knows it does not.
type fakeFence struct {
	mu    sync.Mutex
	token int64
	valid bool
}

func (f *fakeFence) Token() int64 { return f.token }

func (f *fakeFence) Valid() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.valid
}

// stepUntil steps r every 30 virtual seconds until cond holds or a step fails.
func stepUntil(t *testing.T, w *world, r *Run, cond func() bool) error {
	t.Helper()
	for i := 0; i < 400 && !cond(); i++ {
		w.Advance(w.Now().Add(30 * time.Second))
		if err := r.Step(context.Background(), w.Now()); err != nil {
			return err
		}
	}
	if !cond() {
		t.Fatalf("condition not reached; run is %s at step %d", r.Record().State, r.Record().Step)
	}
	return nil
}

// TestFencedRunStopsWhenItsLeaseIsTaken: a replica whose lease was taken over cannot save,
// record a decision or write weights, even while it still believes it owns the run; one
// whose lease is running out stops right before the pool write, leaving the intent for
// the next owner, which reconciles it and carries on.
func TestFencedRunStopsWhenItsLeaseIsTaken(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.Rate = 1000
	cs := &countingSteerer{Steerer: w.Steer}
	e := w.engine(func(o *Options) { o.Steerer = cs })
	r := start(t, w, e)
	a, err := w.St.Acquire(ctx, r.ID(), "replica-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r.SetFence(&fakeFence{token: a.Token, valid: true})
	if err := stepUntil(t, w, r, func() bool { return r.Record().Step == 1 && r.Record().StepElapsed >= 3*time.Minute }); err != nil {
		t.Fatalf("fenced run with a current lease: %v", err)
	}
	if cs.writes != 1 {
		t.Fatalf("weights written %d times, want 1 (step 1)", cs.writes)
	}
	decisions := func() int {
		ds, err := w.St.Decisions(ctx, r.ID())
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	before := decisions()
	if before == 0 {
		t.Fatal("no decision recorded under a current lease")
	}

	// Replica B takes the run over; A still thinks its lease is fine.
	if err := w.St.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	b, err := w.St.Acquire(ctx, r.ID(), "replica-b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	err = stepUntil(t, w, r, func() bool { return r.Done() || r.Record().Step > 1 })
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("stale replica's step: got %v, want an error matching store.ErrLeaseLost", err)
	}
	if cs.writes != 1 || decisions() != before {
		t.Fatalf("stale replica wrote weights %d times (want 1) and decisions %d → %d", cs.writes, before, decisions())
	}

	// B acts, but its lease runs out just before the advance to step 2 is written.
	fb := &fakeFence{token: b.Token, valid: true}
	rb, err := e.Resume(ctx, r.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rb.SetFence(fb)
	for i := 0; i < 400; i++ {
		rec := rb.Record()
		if rec.Step == 1 && rec.StepElapsed >= 9*time.Minute {
			fb.mu.Lock()
			fb.valid = false
			fb.mu.Unlock()
		}
		w.Advance(w.Now().Add(30 * time.Second))
		if err = rb.Step(ctx, w.Now()); err != nil || rb.Done() {
			break
		}
	}
	if !errors.Is(err, ErrNotOwner) || !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("expiring replica's step: got %v, want ErrNotOwner", err)
	}
	if cs.writes != 1 {
		t.Fatalf("weights written %d times after the fence went invalid, want 1", cs.writes)
	}
	rec, err := w.St.Run(ctx, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Intent == nil || rec.Intent.Purpose != "step:2" {
		t.Fatalf("the intent of the unwritten step should stay for the next owner, got %+v", rec.Intent)
	}

	// C takes over after B's lease and reconciles: the pool still has step 1, so it writes.
	if err := w.St.Release(ctx, b); err != nil {
		t.Fatal(err)
	}
	c, err := w.St.Acquire(ctx, r.ID(), "replica-c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.Resume(ctx, r.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetFence(&fakeFence{token: c.Token, valid: true})
	if err := stepUntil(t, w, rc, func() bool { return rc.Record().Step == 2 }); err != nil {
		t.Fatal(err)
	}
	if cs.writes != 2 {
		t.Fatalf("weights written %d times, want 2", cs.writes)
	}
}
