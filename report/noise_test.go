package report

import (
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
)

// TestNoiseHeavyTail: a model whose history had bursts says on which side, in the JSON
// and in the sentences people read; Gaussian-like noise says nothing of tails.
func TestNoiseHeavyTail(t *testing.T) {
	for _, c := range []struct {
		up, down float64
		side     string
		words    string
	}{
		{0.6, 0, "upper", "widen the lower bound"},
		{0, 0.2, "lower", "widen the upper bound"},
		{0.6, 0.2, "both", "widen both bounds"},
		{0, 0, "", ""},
	} {
		m := analysis.NoiseModel{Kind: "ratio", Intervals: 1440, ClusterVar: 0.03, LongRunVar: 0.15, Dispersion: 3, OffsetSE: 0.01,
			Events: 7000, TailUp: c.up, TailDown: c.down}
		n := NoiseOf(engine.KPINoise{KPI: "error-rate", Model: engine.NoiseModelOf(&m)}, 1440, true)
		if n.HeavyTail != c.side {
			t.Errorf("tails %v/%v: heavyTail %q, want %q", c.up, c.down, n.HeavyTail, c.side)
		}
		s, line := n.Sentence(time.Minute), n.Compact(time.Minute)
		if c.side == "" {
			if strings.Contains(s, "burst") || strings.Contains(line, "tail") {
				t.Errorf("Gaussian-like noise mentions tails: %q / %q", s, line)
			}
			continue
		}
		if !strings.Contains(s, c.words) || !strings.Contains(line, "heavy "+c.side+" tail") {
			t.Errorf("tails %v/%v: %q / %q", c.up, c.down, s, line)
		}
	}
}
