package report

import (
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/internal/testworld"
)

// world is the shared virtual-time fleet (internal/testworld), used to record real runs for
// the golden reports.
type world struct {
	*testworld.World
	t *testing.T
}

func newWorld(t *testing.T) *world { return &world{World: testworld.New(t), t: t} }

func (w *world) engine() *engine.Engine {
	w.t.Helper()
	e, err := engine.New(engine.Options{Store: w.St, Steerer: w.Steer, Metrics: w.Src, Settle: 5 * time.Second, Who: "verdict@test"})
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}
