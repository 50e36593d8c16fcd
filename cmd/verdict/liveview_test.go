package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/internal/testworld"
)

// TestLiveViewNoise renders the live view of a run on the virtual-time fleet: the latest
// interval's values and the cumulative effect are labelled as such, and every judged KPI has
// a noise line learned from the history.
func TestLiveViewNoise(t *testing.T) {
	w := testworld.New(t)
	w.Rate = 1000
	e, err := engine.New(engine.Options{Store: w.St, Steerer: w.Steer, Metrics: w.Src, Settle: 5 * time.Second, Who: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Start(context.Background(), w.Experiment(), "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 6*time.Minute, nil)
	var b bytes.Buffer
	renderRun(&b, "", r, nil, w.Now())
	out := b.String()
	for _, want := range []string{"LAST 1m CANARY", "LAST 1m BASELINE", "EFFECT (cumulative, ", "Noise (learned from the history before the variant)"} {
		if !strings.Contains(out, want) {
			t.Errorf("live view lacks %q:\n%s", want, out)
		}
	}
	_, noise, _ := strings.Cut(out, "Noise (learned")
	for _, kpi := range []string{"error-rate", "latency (slower than 500ms)", "latency (mean)"} {
		if !strings.Contains(noise, "  "+kpi+"  ") || !strings.Contains(noise, "from 60 history intervals") {
			t.Errorf("no noise line for %s:\n%s", kpi, out)
		}
	}
}
