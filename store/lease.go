package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Leaser gives each unfinished run one owner at a time among replicas sharing a store.
//
// A lease lasts TTL from its last acquisition or renewal, measured on the store's clock (the
// database's, for PostgreSQL, so replicas with skewed clocks still agree). Every acquisition
// gets a token greater than any the run had before; the holder passes it as Run.Fence and
// Decision.Fence, and the store refuses the write once another replica has taken the lease or
// the lease has expired. The holder must renew well within the TTL and stop acting (no pool
// writes) when a renewal fails or when its own clock says the TTL since the last successful
// renewal started has run out, whichever comes first.
type Leaser interface {
	// Acquire takes the run's lease for owner. It succeeds when the lease is free, expired or
	// already owner's, each time with a new, higher token (so an earlier incarnation of the
	// same owner is fenced off too). It fails with *LeaseHeldError while another owner holds
	// an unexpired lease, and with ErrNotFound for an unknown run.
	Acquire(ctx context.Context, runID, owner string, ttl time.Duration) (Lease, error)
	// Renew extends a lease by its TTL from now, keeping its token. It fails with
	// ErrLeaseLost when the lease expired or was taken over: the caller must stop acting
	// and may try Acquire again (and then reconcile, as after a restart).
	Renew(ctx context.Context, l Lease) (Lease, error)
	// Release gives the lease up at once so another replica can take it without waiting for
	// the TTL. Releasing a lease that is no longer held is not an error and changes nothing.
	Release(ctx context.Context, l Lease) error
	// Leases returns the leases currently held (unexpired), by run ID, for status pages.
	Leases(ctx context.Context) ([]Lease, error)
}

// Lease is one replica's ownership of one run.
type Lease struct {
	RunID string `json:"runID"`
	Owner string `json:"owner"`
	// Token increases with every acquisition of the run's lease; pass it as a fence.
	Token int64 `json:"token"`
	// Expires is when the lease lapses unless renewed, on the store's clock.
	Expires time.Time     `json:"expires"`
	TTL     time.Duration `json:"ttl"`
}

// Lease sentinels callers branch on.
var (
	// ErrLeaseHeld means another owner holds an unexpired lease on the run.
	ErrLeaseHeld = errors.New("run is leased by another owner")
	// ErrLeaseLost means the caller's lease expired or was taken over: its fenced write was
	// refused and it must stop acting on the run.
	ErrLeaseLost = errors.New("lease lost")
)

// LeaseHeldError names the owner holding a run's lease.
type LeaseHeldError struct {
	RunID   string
	Owner   string
	Token   int64
	Expires time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("run %s is leased by %s until %s (token %d)", e.RunID, e.Owner, e.Expires.UTC().Format(time.RFC3339Nano), e.Token)
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// LeaseLostError says why a fenced write, a renewal or a release found the caller's lease
// no longer current: Holder and HolderToken are who has it now ("" and the last token when
// nobody does).
type LeaseLostError struct {
	RunID       string
	Token       int64
	Holder      string
	HolderToken int64
	Expired     bool
}

func (e *LeaseLostError) Error() string {
	switch {
	case e.HolderToken != e.Token && e.Holder != "":
		return fmt.Sprintf("lease lost: run %s was taken over by %s (token %d > %d)", e.RunID, e.Holder, e.HolderToken, e.Token)
	case e.HolderToken != e.Token:
		return fmt.Sprintf("lease lost: run %s token %d is stale (now %d)", e.RunID, e.Token, e.HolderToken)
	case e.Expired:
		return fmt.Sprintf("lease lost: the lease on run %s (token %d) expired", e.RunID, e.Token)
	default:
		return fmt.Sprintf("lease lost: the lease on run %s (token %d) was released", e.RunID, e.Token)
	}
}

// Is makes errors.Is(err, ErrLeaseLost) true.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// leaseRow is a run's lease as stored: Owner "" once released; the token survives release
// and expiry so the next acquisition continues from it.
type leaseRow struct {
	owner   string
	token   int64
	expires time.Time
}

func (l leaseRow) held(now time.Time) bool { return l.owner != "" && now.Before(l.expires) }

// fenceErr checks a fenced write against the stored lease (found false when the run never
// had one) at now; nil means the write may go ahead.
func fenceErr(runID string, fence int64, l leaseRow, found bool, now time.Time) error {
	if found && l.token == fence && l.held(now) {
		return nil
	}
	e := &LeaseLostError{RunID: runID, Token: fence, HolderToken: l.token, Expired: found && l.owner != "" && !now.Before(l.expires)}
	if l.held(now) {
		e.Holder = l.owner
	}
	return e
}

func checkAcquire(runID, owner string, ttl time.Duration) error {
	if runID == "" || owner == "" {
		return errors.New("acquire lease: run ID and owner are required")
	}
	if ttl <= 0 {
		return fmt.Errorf("acquire lease on run %s: TTL must be positive, got %s", runID, ttl)
	}
	return nil
}
