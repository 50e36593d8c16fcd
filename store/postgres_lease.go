package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease operations lock the run's lease row (FOR UPDATE) for the length of a short
// transaction, so two replicas acquiring at once are ordered: the second sees the first's
// lease and gets *LeaseHeldError. "Now" is read inside the transaction, from the database
// unless Options.Clock is set.

// lockLease returns the run's lease row, locked, creating an empty one (no owner, token 0)
// the first time; ErrNotFound when the run does not exist.
func (p *Postgres) lockLease(ctx context.Context, tx pgx.Tx, runID string) (leaseRow, time.Time, error) {
	var l leaseRow
	var now time.Time
	err := tx.QueryRow(ctx, `SELECT owner, token, expires_at, COALESCE($2::timestamptz, clock_timestamp()) FROM leases WHERE run_id = $1 FOR UPDATE`, runID, p.now()).
		Scan(&l.owner, &l.token, &l.expires, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM runs WHERE id = $1`, runID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
			return l, now, ErrNotFound
		} else if err != nil {
			return l, now, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO leases (run_id, owner, token, expires_at, ttl_ms) VALUES ($1, '', 0, 'epoch', 0) ON CONFLICT DO NOTHING`, runID); err != nil {
			return l, now, err
		}
		return p.lockLease(ctx, tx, runID)
	}
	if err != nil {
		return l, now, fmt.Errorf("read lease: %w", err)
	}
	return l, now, nil
}

// Acquire implements Leaser.
func (p *Postgres) Acquire(ctx context.Context, runID, owner string, ttl time.Duration) (Lease, error) {
	if err := checkAcquire(runID, owner, ttl); err != nil {
		return Lease{}, err
	}
	var out Lease
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		l, now, err := p.lockLease(ctx, tx, runID)
		if err != nil {
			return err
		}
		if l.held(now) && l.owner != owner {
			return &LeaseHeldError{RunID: runID, Owner: l.owner, Token: l.token, Expires: l.expires.UTC()}
		}
		out = Lease{RunID: runID, Owner: owner, Token: l.token + 1, Expires: now.Add(ttl).UTC(), TTL: ttl}
		_, err = tx.Exec(ctx, `UPDATE leases SET owner = $2, token = $3, expires_at = $4, ttl_ms = $5 WHERE run_id = $1`,
			runID, owner, out.Token, out.Expires, ttl.Milliseconds())
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease on run %s for %s: %w", runID, owner, err)
	}
	return out, nil
}

// Renew implements Leaser.
func (p *Postgres) Renew(ctx context.Context, l Lease) (Lease, error) {
	out := l
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if l.TTL <= 0 {
			return fmt.Errorf("TTL must be positive, got %s", l.TTL)
		}
		cur, now, err := p.lockLease(ctx, tx, l.RunID)
		if err != nil {
			return err
		}
		if err := fenceErr(l.RunID, l.Token, cur, true, now); err != nil {
			return err
		}
		if cur.owner != l.Owner {
			return &LeaseLostError{RunID: l.RunID, Token: l.Token, Holder: cur.owner, HolderToken: cur.token}
		}
		out.Expires = now.Add(l.TTL).UTC()
		_, err = tx.Exec(ctx, `UPDATE leases SET expires_at = $2 WHERE run_id = $1`, l.RunID, out.Expires)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease on run %s for %s: %w", l.RunID, l.Owner, err)
	}
	return out, nil
}

// Release implements Leaser.
func (p *Postgres) Release(ctx context.Context, l Lease) error {
	_, err := p.pool.Exec(ctx, `UPDATE leases SET owner = '', expires_at = COALESCE($4::timestamptz, clock_timestamp()) WHERE run_id = $1 AND token = $2 AND owner = $3`,
		l.RunID, l.Token, l.Owner, p.now())
	if err != nil {
		return fmt.Errorf("release lease on run %s for %s: %w", l.RunID, l.Owner, err)
	}
	return nil
}

// Leases implements Leaser.
func (p *Postgres) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := p.pool.Query(ctx, `SELECT run_id, owner, token, expires_at, ttl_ms FROM leases WHERE owner <> '' AND expires_at > COALESCE($1::timestamptz, clock_timestamp()) ORDER BY run_id`, p.now())
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var ttl int64
		if err := rows.Scan(&l.RunID, &l.Owner, &l.Token, &l.Expires, &ttl); err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		l.Expires, l.TTL = l.Expires.UTC(), time.Duration(ttl)*time.Millisecond
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out, nil
}
