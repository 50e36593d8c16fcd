package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// eventListener is what *store.Postgres offers to hear other replicas' events at once.
type eventListener interface {
	ListenEvents(ctx context.Context, ready chan<- struct{}, fn func(seq int64)) error
}

var _ eventListener = (*store.Postgres)(nil)

// relay publishes on this replica's event stream the events of the runs other replicas
// drive, read from the shared store, so that the dashboard and the SSE clients of every
// replica see every run. It reads the store every EventPoll; on PostgreSQL, the store's
// NOTIFY wakes it as soon as another replica commits events. Events of the runs this
// replica drives come from its own engines and are not relayed twice. Decisions are
// not events in the store: another replica's decisions show in the API (read from the
// store), not on this replica's stream.
func (s *Server) relay(ctx context.Context) {
	st := s.opts.Store
	var last int64
	if evs, err := st.Events(ctx, "", 0); err == nil && len(evs) > 0 {
		last = evs[len(evs)-1].Seq
	}
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	if pg, ok := st.(eventListener); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			listenLog := newFailureLog(s.opts.Logger, slog.LevelWarn, "listening for events of other replicas failed; polling meanwhile")
			for ctx.Err() == nil {
				ready, attempt := make(chan struct{}), make(chan struct{})
				go func() {
					select {
					case <-ready:
						listenLog.ok()
					case <-attempt:
					}
				}()
				err := pg.ListenEvents(ctx, ready, func(int64) {
					select {
					case wake <- struct{}{}:
					default:
					}
				})
				close(attempt)
				if err != nil && ctx.Err() == nil {
					listenLog.fail(err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(s.opts.EventPoll):
				}
			}
		}()
	}
	t := time.NewTicker(s.opts.EventPoll)
	defer t.Stop()
	readLog := newFailureLog(s.opts.Logger, slog.LevelWarn, "read events of other replicas")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		evs, err := st.Events(ctx, "", last)
		if err != nil {
			if ctx.Err() == nil {
				readLog.fail(err)
			}
			continue
		}
		readLog.ok()
		for _, ev := range evs {
			last = max(last, ev.Seq)
			if _, mine := s.sup.get(ev.RunID); mine {
				continue
			}
			s.broker.publish(Message{Type: ev.Type, RunID: ev.RunID, At: ev.At, Message: ev.Message, Data: ev.Data})
		}
	}
}
