package analysis

import (
	"math"
	"math/rand/v2"
	"testing"
)

// BenchmarkGaugeAddInterval is one interval of a gauge KPI: Add, then the confidence
// sequence the decision reads.
func BenchmarkGaugeAddInterval(b *testing.B) {
	g := NewGaugeSequence(GaugeOptions{PlannedIntervals: 150})
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		g.Add(100*math.Exp(0.03*rng.NormFloat64()), 100)
		_ = g.Interval(0.0167)
	}
}

// BenchmarkShareCheck is one interval of the traffic-share check over three clusters.
func BenchmarkShareCheck(b *testing.B) {
	s := NewShareCheck(1000)
	counts, weights := []float64{600, 5700, 5700}, []float64{0.05, 0.475, 0.475}
	for b.Loop() {
		_ = s.Add(counts, weights)
		_ = s.Result(0.05)
	}
}

// BenchmarkDecide is the engine's per-tick decision over three KPIs (error rate, slow
// share, mean latency) after 100 intervals, with the share check.
func BenchmarkDecide(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	errs, slow := NewRatioSequence(RatioOptions{}), NewRatioSequence(RatioOptions{})
	lat := NewGaugeSequence(GaugeOptions{PlannedIntervals: 150})
	feedRatio(errs, rng, 100, 0.2, 1, 0.01, 12000)
	feedRatio(slow, rng, 100, 0.2, 1, 0.01, 12000)
	for range 100 {
		lat.Add(100*math.Exp(0.03*rng.NormFloat64()), 100)
	}
	kpis := []KPI{{Name: "errors", State: errs, Tolerance: 0.1}, {Name: "slow", State: slow, Tolerance: 0.05}, {Name: "mean", State: lat, Tolerance: 0.05}}
	share := ShareResult{}
	for b.Loop() {
		_ = Decide(kpis, Step{Alpha: 0.05, Share: &share})
	}
}

// BenchmarkClassifyKayenta50 is one Kayenta classification of a 50-interval window.
func BenchmarkClassifyKayenta50(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	x, y := make([]float64, 50), make([]float64, 50)
	for i := range x {
		x[i], y[i] = 100*math.Exp(0.1*rng.NormFloat64()), 105*math.Exp(0.1*rng.NormFloat64())
	}
	for b.Loop() {
		_ = ClassifyKayenta(x, y, ClassifierOptions{Direction: Increase})
	}
}

// BenchmarkWelchTTest1e3 is Welch's test on two samples of 1,000.
func BenchmarkWelchTTest1e3(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	x, y := make([]float64, 1000), make([]float64, 1000)
	for i := range x {
		x[i], y[i] = rng.NormFloat64(), rng.NormFloat64()+0.1
	}
	for b.Loop() {
		if _, err := WelchTTest(x, y); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRateRatioTest is the exact conditional test on a run's worth of counts.
func BenchmarkRateRatioTest(b *testing.B) {
	for b.Loop() {
		if _, err := RateRatioTest(3600, 360000, 14000, 1440000, 1, 0.95); err != nil {
			b.Fatal(err)
		}
	}
}
