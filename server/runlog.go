package server

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// runHandler adds the run's ID to every record once it is known: a run's steerer and
// Prometheus client are built before the engine names the run, yet every line about an
// experiment must carry its run ID.
type runHandler struct {
	h  slog.Handler
	id *atomic.Pointer[string]
}

func newRunLogger(base *slog.Logger) (*slog.Logger, func(id string)) {
	id := new(atomic.Pointer[string])
	return slog.New(runHandler{h: base.Handler(), id: id}), func(s string) { id.Store(&s) }
}

// Enabled implements slog.Handler.
func (r runHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

// Handle implements slog.Handler, adding the run ID once it is known.
func (r runHandler) Handle(ctx context.Context, rec slog.Record) error {
	if p := r.id.Load(); p != nil {
		rec = rec.Clone()
		rec.AddAttrs(slog.String("run", *p))
	}
	return r.h.Handle(ctx, rec)
}

// WithAttrs implements slog.Handler.
func (r runHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return runHandler{h: r.h.WithAttrs(as), id: r.id}
}

// WithGroup implements slog.Handler.
func (r runHandler) WithGroup(name string) slog.Handler {
	return runHandler{h: r.h.WithGroup(name), id: r.id}
}
