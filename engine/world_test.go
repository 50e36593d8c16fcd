package engine

import (
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/internal/testworld"
)

// world is the shared virtual-time fleet (internal/testworld) plus the events the engine
// emitted, for assertions.
type world struct {
	*testworld.World
	t      *testing.T
	mu     sync.Mutex // notifications may report from their own goroutines
	events []Event
}

var t0 = testworld.T0

func newWorld(t *testing.T) *world { return &world{World: testworld.New(t), t: t} }

func (w *world) engine(opts ...func(*Options)) *Engine {
	w.t.Helper()
	o := Options{Store: w.St, Steerer: w.Steer, Metrics: w.Src, Settle: 5 * time.Second, Who: "test",
		Observer: ObserverFunc(func(e Event) { w.mu.Lock(); w.events = append(w.events, e); w.mu.Unlock() })}
	for _, f := range opts {
		f(&o)
	}
	e, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

func (w *world) eventTypes() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := map[string]int{}
	for _, e := range w.events {
		m[e.Type]++
	}
	return m
}
