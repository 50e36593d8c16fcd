package engine

import "time"

// Clock is the engine's only source of time, shaped like Tailscale's tstime.Clock, so that
// tests and simulations run on virtual time.
type Clock interface {
	Now() time.Time
	// After waits for d, as time.After does.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// After implements Clock.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
