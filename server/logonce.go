package server

import (
	"log/slog"
	"sync"
	"time"
)

// failureLog logs a failure that repeats on every poll (the store down, say) once when it
// starts, then at most once per quiet period with the number of failures since, and once
// more when the operation succeeds again: an outage of minutes is a handful of lines, not
// one per 100 ms poll.
type failureLog struct {
	log   *slog.Logger
	level slog.Level
	msg   string
	quiet time.Duration

	mu      sync.Mutex
	since   time.Time // first failure of the current streak; zero when healthy
	last    time.Time // last line written
	skipped int
}

func newFailureLog(log *slog.Logger, level slog.Level, msg string) *failureLog {
	return &failureLog{log: log, level: level, msg: msg, quiet: 30 * time.Second}
}

// fail records one failure.
func (f *failureLog) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.since.IsZero() {
		f.since, f.last, f.skipped = now, now, 0
		f.log.Log(nil, f.level, f.msg, "err", err)
		return
	}
	if now.Sub(f.last) < f.quiet {
		f.skipped++
		return
	}
	f.log.Log(nil, f.level, f.msg, "err", err, "failing_for", now.Sub(f.since).Round(time.Second).String(), "repeats", f.skipped+1)
	f.last, f.skipped = now, 0
}

// ok records a success, logging the recovery after a streak of failures.
func (f *failureLog) ok() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() {
		return
	}
	f.log.Info(f.msg+": working again", "failed_for", time.Since(f.since).Round(time.Millisecond).String())
	f.since = time.Time{}
}

// report records the outcome of one attempt.
func (f *failureLog) report(err error) {
	if err != nil {
		f.fail(err)
	} else {
		f.ok()
	}
}
