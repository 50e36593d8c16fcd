package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Clock is the time a Hold renews by; engine.Clock satisfies it, so simulations on virtual
// time can hold leases too. Nil means the wall clock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// HoldOptions tunes a Hold.
type HoldOptions struct {
	// TTL of the lease; default 30s.
	TTL time.Duration
	// Every is how often the lease is renewed; default TTL/3, so two renewals can fail
	// before the lease runs out.
	Every  time.Duration
	Clock  Clock
	Logger *slog.Logger
}

// ErrHoldReleased is the cause of a Hold's context once Release was called.
var ErrHoldReleased = errors.New("lease released")

// Hold keeps one run's lease renewed in the background, and says when its holder must stop
// acting: its Context is cancelled as soon as the lease is lost (taken over, or refused on
// renewal) or when the local deadline passes without a successful renewal, whichever comes
// first. The local deadline is TTL after the last successful renewal was sent, so it is
// never later than the store's own expiry, whatever the clocks say.
//
// The holder passes Token() as Run.Fence and Decision.Fence, and checks Valid() right before
// any pool write.
type Hold struct {
	leaser Leaser
	clock  Clock
	log    *slog.Logger
	every  time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu       sync.Mutex
	lease    Lease
	deadline time.Time
}

// AcquireHold acquires the run's lease for owner and starts renewing it. It fails as
// Leaser.Acquire does (*LeaseHeldError while another replica holds it). The Hold lives until
// Release, the loss of the lease, or ctx's end.
func AcquireHold(ctx context.Context, l Leaser, runID, owner string, o HoldOptions) (*Hold, error) {
	if o.TTL <= 0 {
		o.TTL = 30 * time.Second
	}
	if o.Every <= 0 || o.Every >= o.TTL {
		o.Every = o.TTL / 3
	}
	if o.Clock == nil {
		o.Clock = wallClock{}
	}
	if o.Logger == nil {
		o.Logger = Options{}.logger()
	}
	sent := o.Clock.Now()
	lease, err := l.Acquire(ctx, runID, owner, o.TTL)
	if err != nil {
		return nil, err
	}
	h := &Hold{leaser: l, clock: o.Clock, log: o.Logger, every: o.Every, done: make(chan struct{}), lease: lease, deadline: sent.Add(o.TTL)}
	h.ctx, h.cancel = context.WithCancelCause(ctx)
	go h.loop()
	return h, nil
}

// Context is cancelled when the holder must stop acting on the run; context.Cause says why
// (an error matching ErrLeaseLost, or ErrHoldReleased).
func (h *Hold) Context() context.Context { return h.ctx }

// Lease is the lease as last renewed.
func (h *Hold) Lease() Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease
}

// Token is the fencing token to pass as Run.Fence and Decision.Fence.
func (h *Hold) Token() int64 { return h.Lease().Token }

// Valid reports whether the holder may still act: the Hold is live and its local deadline
// has not passed. Check it right before a write to the pool, after the fenced save of the
// intent.
func (h *Hold) Valid() bool {
	if h.ctx.Err() != nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clock.Now().Before(h.deadline)
}

// Release stops renewing and gives the lease up, so another replica can take the run over
// at once; after it the Context is cancelled with ErrHoldReleased.
func (h *Hold) Release(ctx context.Context) error {
	h.cancel(ErrHoldReleased)
	<-h.done
	return h.leaser.Release(ctx, h.Lease())
}

func (h *Hold) loop() {
	defer close(h.done)
	for {
		h.mu.Lock()
		wait := h.every
		if left := h.deadline.Sub(h.clock.Now()); left < wait {
			wait = left
		}
		lease := h.lease
		h.mu.Unlock()
		if wait <= 0 {
			h.stop(&LeaseLostError{RunID: lease.RunID, Token: lease.Token, HolderToken: lease.Token, Expired: true})
			return
		}
		select {
		case <-h.ctx.Done():
			return
		case <-h.clock.After(wait):
		}
		h.mu.Lock()
		expired := !h.clock.Now().Before(h.deadline)
		h.mu.Unlock()
		if expired {
			h.stop(&LeaseLostError{RunID: lease.RunID, Token: lease.Token, HolderToken: lease.Token, Expired: true})
			return
		}
		sent := h.clock.Now()
		h.mu.Lock()
		left := h.deadline.Sub(sent)
		h.mu.Unlock()
		// A renewal that hangs (a black-holed connection) must not outlive the lease.
		rctx, cancel := context.WithTimeout(h.ctx, left)
		next, err := h.leaser.Renew(rctx, lease)
		cancel()
		switch {
		case err == nil:
			h.mu.Lock()
			h.lease, h.deadline = next, sent.Add(lease.TTL)
			h.mu.Unlock()
		case errors.Is(err, ErrLeaseLost):
			h.stop(err)
			return
		case h.ctx.Err() != nil:
			return
		default:
			// The store is unreachable or slow: keep trying until the local deadline.
			h.log.Warn("could not renew lease; retrying until it runs out", "run", lease.RunID, "err", err)
		}
	}
}

func (h *Hold) stop(cause error) {
	h.log.Warn("lost lease: stopping", "run", h.Lease().RunID, "err", cause)
	h.cancel(fmt.Errorf("stop acting on run %s: %w", h.Lease().RunID, cause))
}
