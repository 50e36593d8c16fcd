package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// ListenEvents calls fn with the highest Seq of every committed transaction that added
// events, on any replica, until ctx ends or the connection fails (then it returns the
// error; call it again, and read Events from your last Seq to catch up on what passed in
// between). fn runs on ListenEvents' goroutine and must not block for long. ready, if not
// nil, is closed once the LISTEN is in place: events committed after that are all seen.
func (p *Postgres) ListenEvents(ctx context.Context, ready chan<- struct{}, fn func(seq int64)) error {
	pc, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("listen for events: %w", err)
	}
	// The connection is left in LISTEN state: take it out of the pool for good.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{EventsChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen for events: %w", err)
	}
	if ready != nil {
		close(ready)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("listen for events: %w", err)
		}
		if seq, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			fn(seq)
		}
	}
}
