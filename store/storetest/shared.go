package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// Clock is a virtual clock for leases: tests advance it instead of sleeping.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time; pass it as store.Options.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// RunShared runs the tests of replicas sharing one store: pool races across connections,
// event feeds that never skip, and leases with fencing. open returns n handles on one new,
// empty store, opened as n replicas would open it (separate connection pools), with o; each
// handle must implement store.Leaser.
func RunShared(t *testing.T, open func(t *testing.T, n int, o store.Options) []store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)
	newRun := func(id, pool string) *store.Run {
		return &store.Run{ID: id, Experiment: "exp-" + id, Pool: pool, State: store.StatePending,
			Spec: json.RawMessage(`{"name":"x"}`), Original: store.Weights{"a": 0.5, "b": 0.5}, CreatedAt: t0}
	}
	const ttl = 30 * time.Second
	// setup opens two replicas a and b on a virtual clock with run r1 created.
	setup := func(t *testing.T) (a, b store.Store, la, lb store.Leaser, clock *Clock) {
		clock = NewClock(t0)
		ss := open(t, 2, store.Options{Clock: clock.Now})
		a, b = ss[0], ss[1]
		var ok bool
		if la, ok = a.(store.Leaser); !ok {
			t.Fatalf("%T does not implement store.Leaser", a)
		}
		lb = b.(store.Leaser)
		if err := a.CreateRun(ctx, newRun("r1", "p")); err != nil {
			t.Fatal(err)
		}
		return a, b, la, lb, clock
	}

	t.Run("creators on several replicas race for one pool", func(t *testing.T) {
		raceCreate(t, open(t, 3, store.Options{}), newRun)
	})

	t.Run("an events reader following Seq never skips one", func(t *testing.T) {
		ss := open(t, 2, store.Options{})
		const writers, saves = 4, 25
		for i := range writers {
			if err := ss[0].CreateRun(ctx, newRun(fmt.Sprintf("r%d", i), fmt.Sprintf("p%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := ss[i%len(ss)]
				r, err := s.Run(ctx, fmt.Sprintf("r%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				for j := range saves {
					r.Step = j
					if err := s.SaveRun(ctx, r, store.Event{Type: "tick", Message: "a"}, store.Event{Type: "tick", Message: "b"}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		go func() { wg.Wait(); close(done) }()
		var seen []int64
		var last int64
		for {
			finished := false
			select {
			case <-done:
				finished = true
			default:
			}
			evs, err := ss[1].Events(ctx, "", last)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				seen = append(seen, e.Seq)
				last = e.Seq
			}
			if finished && len(evs) == 0 {
				break
			}
		}
		all, err := ss[0].Events(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != writers*saves*2 || len(seen) != len(all) {
			t.Fatalf("the follower saw %d events of %d stored (want %d)", len(seen), len(all), writers*saves*2)
		}
		for i := range all {
			if all[i].Seq != seen[i] {
				t.Fatalf("event %d: follower saw seq %d, store has %d", i, seen[i], all[i].Seq)
			}
		}
	})

	t.Run("lease: one owner at a time", func(t *testing.T) {
		_, _, la, lb, _ := setup(t)
		l, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if l.Token < 1 || l.Owner != "a" || l.RunID != "r1" || !l.Expires.Equal(t0.Add(ttl)) || l.TTL != ttl {
			t.Errorf("lease %+v", l)
		}
		_, err = lb.Acquire(ctx, "r1", "b", ttl)
		var held *store.LeaseHeldError
		if !errors.As(err, &held) || held.Owner != "a" || held.Token != l.Token || !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("second owner: %v", err)
		}
		ls, err := lb.Leases(ctx)
		if err != nil || len(ls) != 1 || ls[0].Owner != "a" || ls[0].Token != l.Token || ls[0].TTL != ttl {
			t.Errorf("leases %+v %v", ls, err)
		}
		if _, err := la.Acquire(ctx, "nope", "a", ttl); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("lease on an unknown run: %v", err)
		}
		if _, err := la.Acquire(ctx, "r1", "a", 0); err == nil {
			t.Error("a zero TTL was accepted")
		}
	})

	t.Run("lease: owners racing on several replicas, one wins", func(t *testing.T) {
		clock := NewClock(t0)
		ss := open(t, 3, store.Options{Clock: clock.Now})
		if err := ss[0].CreateRun(ctx, newRun("r1", "p")); err != nil {
			t.Fatal(err)
		}
		const n = 9
		var mu sync.Mutex
		var won []store.Lease
		var lost []*store.LeaseHeldError
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := ss[i%len(ss)].(store.Leaser).Acquire(ctx, "r1", fmt.Sprintf("o%d", i), ttl)
				mu.Lock()
				defer mu.Unlock()
				var held *store.LeaseHeldError
				switch {
				case err == nil:
					won = append(won, l)
				case errors.As(err, &held):
					lost = append(lost, held)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 || len(lost) != n-1 {
			t.Fatalf("%d owners won, %d were refused; want 1 and %d", len(won), len(lost), n-1)
		}
		for _, h := range lost {
			if h.Owner != won[0].Owner || h.Token != won[0].Token {
				t.Errorf("refusal names %s/%d, winner is %s/%d", h.Owner, h.Token, won[0].Owner, won[0].Token)
			}
		}
	})

	t.Run("lease: takeover after expiry fences the old owner", func(t *testing.T) {
		a, b, la, lb, clock := setup(t)
		old, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := a.Run(ctx, "r1")
		r.Fence, r.Step = old.Token, 1
		if err := a.SaveRun(ctx, r, store.Event{Type: "tick", Message: "by a"}); err != nil {
			t.Fatalf("fenced save by the holder: %v", err)
		}
		if err := a.AddDecision(ctx, &store.Decision{RunID: "r1", At: t0, Action: "continue", Reason: "by a", Fence: old.Token}); err != nil {
			t.Fatalf("fenced decision by the holder: %v", err)
		}

		clock.Advance(ttl + time.Second)
		nl, err := lb.Acquire(ctx, "r1", "b", ttl)
		if err != nil {
			t.Fatalf("takeover after the TTL: %v", err)
		}
		if nl.Token <= old.Token {
			t.Fatalf("takeover token %d is not above %d", nl.Token, old.Token)
		}

		before := r.Version
		r.Step = 2
		err = a.SaveRun(ctx, r, store.Event{Type: "lost", Message: "must not be stored"})
		var lostErr *store.LeaseLostError
		if !errors.Is(err, store.ErrLeaseLost) || !errors.As(err, &lostErr) || lostErr.Holder != "b" || lostErr.HolderToken != nl.Token {
			t.Fatalf("stale save: %v", err)
		}
		if r.Version != before {
			t.Errorf("a refused save changed the caller's version %d -> %d", before, r.Version)
		}
		if err := a.AddDecision(ctx, &store.Decision{RunID: "r1", At: t0, Action: "rollback", Reason: "stale", Fence: old.Token}); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("stale decision: %v", err)
		}
		if _, err := la.Renew(ctx, old); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("renewing a lost lease: %v", err)
		}
		if err := la.Release(ctx, old); err != nil {
			t.Fatalf("releasing a lost lease: %v", err)
		}
		got, _ := b.Run(ctx, "r1")
		if got.Step != 1 || got.Version != before {
			t.Errorf("stored run after refused writes: step %d version %d", got.Step, got.Version)
		}
		for _, e := range mustEvents(t, b) {
			if e.Type == "lost" {
				t.Error("an event of a refused save was stored")
			}
		}
		if ds, _ := b.Decisions(ctx, "r1"); len(ds) != 1 || ds[0].Reason != "by a" {
			t.Errorf("decisions %+v", ds)
		}
		if ls, _ := lb.Leases(ctx); len(ls) != 1 || ls[0].Owner != "b" {
			t.Errorf("a stale release disturbed the new holder: %+v", ls)
		}
		got.Fence, got.Step = nl.Token, 3
		if err := b.SaveRun(ctx, got); err != nil {
			t.Fatalf("fenced save by the new holder: %v", err)
		}
		// Unfenced writes are not checked, as for a single process.
		got.Fence = 0
		if err := a.SaveRun(ctx, got); err != nil {
			t.Fatalf("unfenced save: %v", err)
		}
	})

	t.Run("lease: renewal keeps it; expiry alone stops writes", func(t *testing.T) {
		a, _, la, lb, clock := setup(t)
		l, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(ttl * 2 / 3)
		if l, err = la.Renew(ctx, l); err != nil {
			t.Fatal(err)
		}
		if !l.Expires.Equal(t0.Add(ttl*2/3 + ttl)) {
			t.Errorf("renewed until %s", l.Expires)
		}
		clock.Advance(ttl * 2 / 3) // past the first expiry, within the renewed one
		if _, err := lb.Acquire(ctx, "r1", "b", ttl); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("a renewed lease was taken: %v", err)
		}
		r, _ := a.Run(ctx, "r1")
		r.Fence = l.Token
		if err := a.SaveRun(ctx, r); err != nil {
			t.Fatalf("fenced save within the renewed lease: %v", err)
		}

		clock.Advance(ttl) // expired, nobody took it
		err = a.SaveRun(ctx, r)
		var lost *store.LeaseLostError
		if !errors.As(err, &lost) || !lost.Expired || lost.Holder != "" {
			t.Fatalf("save on an expired lease: %v", err)
		}
		if _, err := la.Renew(ctx, l); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("renewing an expired lease: %v", err)
		}
		again, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil || again.Token <= l.Token {
			t.Fatalf("re-acquire: %+v %v", again, err)
		}
		if err := a.SaveRun(ctx, r); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("the old token still writes: %v", err)
		}
		r.Fence = again.Token
		if err := a.SaveRun(ctx, r); err != nil {
			t.Fatalf("the new token: %v", err)
		}
	})

	t.Run("lease: the same owner acquiring again fences its earlier self", func(t *testing.T) {
		a, _, la, _, _ := setup(t)
		first, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		second, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil || second.Token <= first.Token {
			t.Fatalf("second acquisition: %+v %v", second, err)
		}
		if err := a.AddDecision(ctx, &store.Decision{RunID: "r1", At: t0, Action: "hold", Reason: "x", Fence: first.Token}); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("the earlier incarnation still writes: %v", err)
		}
	})

	t.Run("lease: release frees the run at once", func(t *testing.T) {
		_, b, la, lb, _ := setup(t)
		l, err := la.Acquire(ctx, "r1", "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Release(ctx, l); err != nil {
			t.Fatal(err)
		}
		if ls, _ := lb.Leases(ctx); len(ls) != 0 {
			t.Errorf("released lease still listed: %+v", ls)
		}
		nl, err := lb.Acquire(ctx, "r1", "b", ttl)
		if err != nil || nl.Token <= l.Token {
			t.Fatalf("acquire after release: %+v %v", nl, err)
		}
		r, _ := b.Run(ctx, "r1")
		r.Fence = l.Token
		if err := b.SaveRun(ctx, r); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("a released token still writes: %v", err)
		}
	})

	t.Run("lease: a fence on a run never leased is refused", func(t *testing.T) {
		a, _, _, _, _ := setup(t)
		r, _ := a.Run(ctx, "r1")
		r.Fence = 1
		if err := a.SaveRun(ctx, r); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("save: %v", err)
		}
		if err := a.AddDecision(ctx, &store.Decision{RunID: "r1", At: t0, Action: "hold", Reason: "x", Fence: 1}); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("decision: %v", err)
		}
	})
}

func mustEvents(t *testing.T, s store.Store) []store.Event {
	t.Helper()
	ev, err := s.Events(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// raceCreate has eight goroutines, spread over the handles, create runs on one pool at once:
// exactly one wins and every other gets *PoolBusyError naming it.
func raceCreate(t *testing.T, ss []store.Store, newRun func(id, pool string) *store.Run) {
	ctx := context.Background()
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ss[i%len(ss)].CreateRun(ctx, newRun(fmt.Sprintf("r%d", i), "shared-pool"))
		}()
	}
	wg.Wait()
	winner := ""
	for i, err := range errs {
		if err == nil {
			if winner != "" {
				t.Fatalf("both %s and r%d own the pool", winner, i)
			}
			winner = fmt.Sprintf("r%d", i)
		}
	}
	if winner == "" {
		t.Fatalf("nobody got the pool: %v", errs)
	}
	for i, err := range errs {
		var busy *store.PoolBusyError
		if err != nil && (!errors.As(err, &busy) || busy.RunID != winner) {
			t.Errorf("r%d: want *PoolBusyError naming %s, got %v", i, winner, err)
		}
	}
	un, err := ss[0].ListRuns(ctx, store.ListOptions{Unfinished: true})
	if err != nil || len(un) != 1 || un[0].ID != winner {
		t.Errorf("unfinished runs after the race: %v %v", un, err)
	}
}
