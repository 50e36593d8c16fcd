// Package randx draws the Gamma and Poisson variates the simulators need and math/rand
// lacks: the demo fleet (sim), the benchmark's worlds (bench) and the analysis package's
// simulation tests draw through the same code, so their noise is the same noise.
package randx

import "math"

// Source is what the draws read: *rand.Rand of math/rand and of math/rand/v2 are both one.
type Source interface {
	Float64() float64
	NormFloat64() float64
}

// Gamma draws from Gamma(k, 1) by Marsaglia and Tsang's method (k < 1 by boosting).
func Gamma(r Source, k float64) float64 {
	if k < 1 {
		return Gamma(r, k+1) * math.Pow(r.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// Poisson is an exact Poisson draw, as numpy makes it: multiplication below λ = 10,
// Hörmann's PTRS (1993) above. Exact matters: approximate counts would make A/A worlds
// that are not A/A. λ ≤ 0 (or NaN) gives 0.
func Poisson(r Source, lam float64) float64 {
	if !(lam > 0) {
		return 0
	}
	if lam < 10 {
		l := math.Exp(-lam)
		k, p := 0.0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	slam := math.Sqrt(lam)
	loglam := math.Log(lam)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lam + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lam+k*loglam-lg {
			return k
		}
	}
}
