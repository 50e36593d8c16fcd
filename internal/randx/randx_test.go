package randx

import (
	"math"
	mrand "math/rand"
	"math/rand/v2"
	"testing"
)

// TestMoments: the draws have their distributions' mean and variance, on both branches of
// each method (Poisson below and above λ = 10, Gamma below and above k = 1), from both
// math/rand generators.
func TestMoments(t *testing.T) {
	const n = 200000
	check := func(name string, draw func() float64, mean, variance float64) {
		t.Helper()
		var s, ss float64
		for range n {
			x := draw()
			s += x
			ss += x * x
		}
		m := s / n
		v := ss/n - m*m
		// five standard errors of the mean; the variance within 3% (these distributions
		// have light enough tails for that at n = 200000)
		if math.Abs(m-mean) > 5*math.Sqrt(variance/n) || math.Abs(v-variance) > 0.03*variance {
			t.Errorf("%s: mean %.4f variance %.4f, want %.4f and %.4f", name, m, v, mean, variance)
		}
	}
	r2 := rand.New(rand.NewPCG(1, 2))
	r1 := mrand.New(mrand.NewSource(3))
	for _, lam := range []float64{0.3, 4, 10, 250, 70000} {
		check("Poisson v2", func() float64 { return Poisson(r2, lam) }, lam, lam)
		check("Poisson v1", func() float64 { return Poisson(r1, lam) }, lam, lam)
	}
	for _, k := range []float64{0.5, 1, 20, 100} {
		check("Gamma", func() float64 { return Gamma(r2, k) }, k, k)
	}
	if Poisson(r2, 0) != 0 || Poisson(r2, -1) != 0 || Poisson(r2, math.NaN()) != 0 {
		t.Error("Poisson of λ ≤ 0 or NaN is not 0")
	}
}
