package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SQLite leases matter when several processes on one machine share a state directory; every
// write transaction takes the database's write lock first (_txlock=immediate), so reading
// and then updating a lease row cannot interleave with another writer.

func (s *SQLite) lease(ctx context.Context, tx *sql.Tx, runID string) (leaseRow, bool, error) {
	var l leaseRow
	var exp int64
	err := tx.QueryRowContext(ctx, `SELECT owner, token, expires_at FROM leases WHERE run_id = ?`, runID).Scan(&l.owner, &l.token, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return leaseRow{}, false, nil
	}
	if err != nil {
		return leaseRow{}, false, fmt.Errorf("read lease: %w", err)
	}
	l.expires = time.UnixMilli(exp).UTC()
	return l, true, nil
}

func (s *SQLite) checkFence(ctx context.Context, tx *sql.Tx, runID string, fence int64) error {
	l, found, err := s.lease(ctx, tx, runID)
	if err != nil {
		return err
	}
	return fenceErr(runID, fence, l, found, s.clock())
}

// Acquire implements Leaser.
func (s *SQLite) Acquire(ctx context.Context, runID, owner string, ttl time.Duration) (Lease, error) {
	if err := checkAcquire(runID, owner, ttl); err != nil {
		return Lease{}, err
	}
	var out Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE id = ?`, runID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		now := s.clock()
		l, _, err := s.lease(ctx, tx, runID)
		if err != nil {
			return err
		}
		if l.held(now) && l.owner != owner {
			return &LeaseHeldError{RunID: runID, Owner: l.owner, Token: l.token, Expires: l.expires}
		}
		out = Lease{RunID: runID, Owner: owner, Token: l.token + 1, Expires: now.Add(ttl).UTC().Truncate(time.Millisecond), TTL: ttl}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (run_id, owner, token, expires_at, ttl_ms) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, token = excluded.token, expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms`,
			runID, owner, out.Token, out.Expires.UnixMilli(), ttl.Milliseconds())
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease on run %s for %s: %w", runID, owner, err)
	}
	return out, nil
}

// Renew implements Leaser.
func (s *SQLite) Renew(ctx context.Context, l Lease) (Lease, error) {
	out := l
	err := s.tx(ctx, func(tx *sql.Tx) error {
		now := s.clock()
		cur, found, err := s.lease(ctx, tx, l.RunID)
		if err != nil {
			return err
		}
		if err := fenceErr(l.RunID, l.Token, cur, found, now); err != nil {
			return err
		}
		if cur.owner != l.Owner {
			return &LeaseLostError{RunID: l.RunID, Token: l.Token, Holder: cur.owner, HolderToken: cur.token}
		}
		if l.TTL <= 0 {
			return fmt.Errorf("TTL must be positive, got %s", l.TTL)
		}
		out.Expires = now.Add(l.TTL).UTC().Truncate(time.Millisecond)
		_, err = tx.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE run_id = ? AND token = ?`, out.Expires.UnixMilli(), l.RunID, l.Token)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease on run %s for %s: %w", l.RunID, l.Owner, err)
	}
	return out, nil
}

// Release implements Leaser.
func (s *SQLite) Release(ctx context.Context, l Lease) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE leases SET owner = '', expires_at = ? WHERE run_id = ? AND token = ? AND owner = ?`,
			s.clock().UnixMilli(), l.RunID, l.Token, l.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease on run %s for %s: %w", l.RunID, l.Owner, err)
	}
	return nil
}

// Leases implements Leaser.
func (s *SQLite) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT run_id, owner, token, expires_at, ttl_ms FROM leases WHERE owner != '' AND expires_at > ? ORDER BY run_id`, s.clock().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var exp, ttl int64
		if err := rows.Scan(&l.RunID, &l.Owner, &l.Token, &exp, &ttl); err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		l.Expires, l.TTL = time.UnixMilli(exp).UTC(), time.Duration(ttl)*time.Millisecond
		out = append(out, l)
	}
	return out, rows.Err()
}
