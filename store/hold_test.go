package store_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// unreachable is the real store with renewals failing as if the database were cut off.
type unreachable struct {
	store.Leaser
	down atomic.Bool
}

func (u *unreachable) Renew(ctx context.Context, l store.Lease) (store.Lease, error) {
	if u.down.Load() {
		return store.Lease{}, errors.New("dial tcp 10.0.0.5:5432: connect: connection refused")
	}
	return u.Leaser.Renew(ctx, l)
}

// holdWorld opens a SQLite store inside the synctest bubble, so its lease clock is the
// bubble's virtual time, with run r1.
func holdWorld(t *testing.T) *store.SQLite {
	s, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateRun(context.Background(), &store.Run{ID: "r1", Experiment: "e", Pool: "p", State: store.StateRamping}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHoldRenewsUntilReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := holdWorld(t)
		h, err := store.AcquireHold(ctx, s, "r1", "a", store.HoldOptions{TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute) // twenty TTLs
		synctest.Wait()
		if !h.Valid() || h.Context().Err() != nil {
			t.Fatalf("the hold lapsed: %v", context.Cause(h.Context()))
		}
		if _, err := s.Acquire(ctx, "r1", "b", time.Minute); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("another owner: %v", err)
		}
		r, _ := s.Run(ctx, "r1")
		r.Fence = h.Token()
		if err := s.SaveRun(ctx, r); err != nil {
			t.Fatalf("fenced save: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(context.Cause(h.Context()), store.ErrHoldReleased) || h.Valid() {
			t.Errorf("after release: %v", context.Cause(h.Context()))
		}
		if _, err := s.Acquire(ctx, "r1", "b", time.Minute); err != nil {
			t.Fatalf("acquire after release: %v", err)
		}
	})
}

func TestHoldStopsWhenItCannotRenew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := holdWorld(t)
		u := &unreachable{Leaser: s}
		start := time.Now()
		h, err := store.AcquireHold(ctx, u, "r1", "a", store.HoldOptions{TTL: 30 * time.Second, Every: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Second) // renewed at 10s and 20s
		u.down.Store(true)
		<-h.Context().Done()
		// The last renewal was sent at 20s: the holder stops at 50s, never later.
		if got := time.Since(start); got != 50*time.Second {
			t.Errorf("stopped after %s, want 50s", got)
		}
		if h.Valid() || !errors.Is(context.Cause(h.Context()), store.ErrLeaseLost) {
			t.Errorf("after the deadline: valid %v, cause %v", h.Valid(), context.Cause(h.Context()))
		}
		// The store agrees: the lease is free for another replica.
		if _, err := s.Acquire(ctx, "r1", "b", time.Minute); err != nil {
			t.Fatalf("takeover: %v", err)
		}
	})
}

func TestHoldStopsWhenTakenOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := holdWorld(t)
		h, err := store.AcquireHold(ctx, s, "r1", "a", store.HoldOptions{TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// The same owner name acquiring again (a restarted replica) takes the lease away.
		if _, err := s.Acquire(ctx, "r1", "a", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		<-h.Context().Done()
		if got := time.Since(start); got > 10*time.Second {
			t.Errorf("noticed after %s, want within one renewal (10s)", got)
		}
		var lost *store.LeaseLostError
		if !errors.As(context.Cause(h.Context()), &lost) || lost.Expired {
			t.Errorf("cause %v", context.Cause(h.Context()))
		}
		if err := h.Release(ctx); err != nil {
			t.Errorf("releasing a lost hold: %v", err)
		}
		if ls, _ := s.Leases(ctx); len(ls) != 1 {
			t.Errorf("releasing a lost hold freed the new holder's lease: %+v", ls)
		}
	})
}
