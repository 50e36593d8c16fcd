package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/verdict-dev/verdict/internal/randx"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
)

// MicroResult is one micro-benchmark: the analysis functions the engine calls every
// tick, the fixed-horizon tests reports call, and the weight planner.
type MicroResult struct {
	Name        string  `json:"name"`
	What        string  `json:"what"`
	NsPerOp     float64 `json:"nsPerOp"`
	AllocsPerOp int64   `json:"allocsPerOp"`
	BytesPerOp  int64   `json:"bytesPerOp"`
}

type micro struct {
	name, what string
	fn         func(b *testing.B)
}

func micros() ([]micro, error) {
	exps, err := experiments.Load("micro.yaml", fmt.Appendf(nil, scaleExperiment, 0, "acc", "pool", "http://127.0.0.1:9090"), experiments.LoadOptions{})
	if err != nil {
		return nil, err
	}
	exp := exps[0]
	pool := []experiments.PoolOrigin{{Name: "o1", Weight: 0.33, Enabled: true}, {Name: "o2", Weight: 0.33, Enabled: true}, {Name: "o3", Weight: 0.34, Enabled: true}, {Name: "other", Weight: 0.5, Enabled: true}}
	rng := rand.New(rand.NewPCG(1, 2))
	feed := func(r *analysis.RatioSequence, n int) {
		for range n {
			r.Add(randx.Poisson(rng, 24), 2400, randx.Poisson(rng, 96), 9600)
		}
	}
	lognormal := func(n int, m float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = m * math.Exp(0.5*rng.NormFloat64())
		}
		return v
	}
	x5, y5 := lognormal(1e5, 105), lognormal(1e5, 100)
	x50, y50 := lognormal(50, 105), lognormal(50, 100)
	x3, y3 := lognormal(1000, 105), lognormal(1000, 100)
	return []micro{
		{"RatioSequence.Add", "one interval of a ratio KPI (201-point grid, 4 mixing precisions)", func(b *testing.B) {
			r := analysis.NewRatioSequence(analysis.RatioOptions{})
			for b.Loop() {
				r.Add(24, 2400, 96, 9600)
			}
		}},
		{"RatioSequence.Interval", "the robust confidence sequence after 100 intervals", func(b *testing.B) {
			r := analysis.NewRatioSequence(analysis.RatioOptions{})
			feed(r, 100)
			for b.Loop() {
				_ = r.Interval(0.0167)
			}
		}},
		{"GaugeSequence.Add+Interval", "one interval of a gauge KPI and its confidence sequence", func(b *testing.B) {
			g := analysis.NewGaugeSequence(analysis.GaugeOptions{PlannedIntervals: 150})
			for b.Loop() {
				g.Add(100*math.Exp(0.03*rng.NormFloat64()), 100)
				_ = g.Interval(0.0167)
			}
		}},
		{"ShareCheck.Add+Result", "one interval of the traffic-share check, three clusters", func(b *testing.B) {
			s := analysis.NewShareCheck(1000)
			counts, weights := []float64{600, 5700, 5700}, []float64{0.05, 0.475, 0.475}
			for b.Loop() {
				_ = s.Add(counts, weights)
				_ = s.Result(0.05)
			}
		}},
		{"Decide", "the per-tick decision over 3 KPIs after 100 intervals", func(b *testing.B) {
			e, s := analysis.NewRatioSequence(analysis.RatioOptions{}), analysis.NewRatioSequence(analysis.RatioOptions{})
			feed(e, 100)
			feed(s, 100)
			g := analysis.NewGaugeSequence(analysis.GaugeOptions{PlannedIntervals: 150})
			for range 100 {
				g.Add(100*math.Exp(0.03*rng.NormFloat64()), 100)
			}
			kpis := []analysis.KPI{{Name: "errors", State: e, Tolerance: 0.1}, {Name: "slow", State: s, Tolerance: 0.05}, {Name: "mean", State: g, Tolerance: 0.05}}
			for b.Loop() {
				_ = analysis.Decide(kpis, analysis.Step{Alpha: 0.05})
			}
		}},
		{"ClassifyKayenta", "Kayenta's Mann-Whitney classifier on a 50-interval window", func(b *testing.B) {
			for b.Loop() {
				_ = analysis.ClassifyKayenta(y50, x50, analysis.ClassifierOptions{})
			}
		}},
		{"CompareRanks 1e5×1e5", "Mann-Whitney U and Hodges–Lehmann interval on 100,000 values each", func(b *testing.B) {
			for b.Loop() {
				if _, err := analysis.CompareRanks(x5, y5, 0.95); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"WelchTTest 1e3", "Welch's t on 1,000 values each", func(b *testing.B) {
			for b.Loop() {
				_, _ = analysis.WelchTTest(x3, y3)
			}
		}},
		{"RateRatioTest", "exact conditional test of two rates, 3,600 vs 14,000 events", func(b *testing.B) {
			for b.Loop() {
				_, _ = analysis.RateRatioTest(3600, 360000, 14000, 1440000, 1, 0.95)
			}
		}},
		{"WeightPlan", "every step's pool weights, rollback and promotion, 4 origins", func(b *testing.B) {
			for b.Loop() {
				if _, err := experiments.WeightPlan(exp, pool); err != nil {
					b.Fatal(err)
				}
			}
		}},
	}, nil
}

// RunMicro runs the micro-benchmarks with testing.Benchmark (about a second each).
func RunMicro() ([]MicroResult, error) {
	ms, err := micros()
	if err != nil {
		return nil, err
	}
	var out []MicroResult
	for _, m := range ms {
		r := testing.Benchmark(m.fn)
		if r.N == 0 {
			return out, fmt.Errorf("micro-benchmark %s failed", m.name)
		}
		out = append(out, MicroResult{Name: m.name, What: m.what, NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N), AllocsPerOp: r.AllocsPerOp(), BytesPerOp: r.AllocedBytesPerOp()})
	}
	return out, nil
}
