package bench

import (
	"math"
	"math/rand/v2"
	"sort"
)

// truth is what the oracle knows about a world and nobody else does: the long-run
// variance of each KPI's cluster-level noise, on the scale of the score it tests, as a
// function of the canary's request share r and the baselines' split (0.5 or 0.8).
//
// For a ratio KPI with events c (canary) and b (baselines), e = c + b and
// π = rφ/(rφ + 1 − r), the score c − e·π has variance v + v²·τ², v = e·π(1−π): τ² is
// the long-run variance of the canary's share of the expected events, relative to
// π(1−π), computed here from a long simulation of the clusters' multipliers (batch means
// of 500 minutes, far beyond the drift's and the bursts' correlation times). For the
// mean latency it is the variance of log(canary multiplier) − log(pooled baselines').
type truth struct {
	shares    []float64
	err, slow [2][]float64 // [split 0.5, 0.8][share]
	// errK3 and slowK3 are the long-run third cumulants per minute of the same scores,
	// relative to (π(1−π))³: what makes bursts heavier-tailed than a Gaussian of their
	// variance, and what the oracle's Bernstein term needs.
	errK3, slowK3 [2][]float64
	lat           [2]float64
	// errMean and slowMean are a baseline cluster's mean error-rate and slow-share
	// multipliers: with the requests, the expected events the oracle weights by.
	errMean, slowMean float64
	errLR, errMarg    float64 // per-cluster long-run and marginal variance of the log error multiplier, for people
}

// truthMinutes and truthBatch size the simulation.
const (
	truthMinutes = 200_000
	truthBatch   = 500
	// truthK3Batch is shorter: bursts last minutes, and a third moment needs many batches
	// (4,000 here) to be estimated to a few percent.
	truthK3Batch = 50
)

// newTruth simulates the world's clusters for truthMinutes and tabulates τ².
func newTruth(w *World, seed uint64) *truth {
	r := rand.New(rand.NewPCG(seed, 7))
	var em, sm, lm [nClusters][]float64
	slow1 := latSurv(slowerThan, 1)
	for j := range nClusters {
		p := newProcess(w.Noise, r)
		em[j] = make([]float64, truthMinutes)
		sm[j] = make([]float64, truthMinutes)
		lm[j] = make([]float64, truthMinutes)
		for t := range truthMinutes {
			e, l := p.next(r)
			if j == 0 {
				e *= w.Offset
				l *= w.Offset
			}
			em[j][t], lm[j][t] = e, l
			sm[j][t] = slowShareAt(l) / slow1
		}
	}
	mean := func(x []float64) float64 {
		var s float64
		for _, v := range x {
			s += v
		}
		return s / float64(len(x))
	}
	tr := &truth{}
	tr.errMean = (mean(em[1]) + mean(em[2])) / 2
	tr.slowMean = (mean(sm[1]) + mean(sm[2])) / 2
	for r := 0.01; r <= 0.8; r *= 1.15 {
		tr.shares = append(tr.shares, r)
	}
	x := make([]float64, truthMinutes)
	for si, split := range []float64{0.5, 0.8} {
		for _, kpi := range []struct {
			m      *[nClusters][]float64
			out, k *[]float64
		}{{&em, &tr.err[si], &tr.errK3[si]}, {&sm, &tr.slow[si], &tr.slowK3[si]}} {
			m := kpi.m
			mc := mean(m[0])
			mb := split*mean(m[1]) + (1-split)*mean(m[2])
			phi := mc / mb
			for _, r := range tr.shares {
				pi := r * phi / (r*phi + 1 - r)
				for t := range truthMinutes {
					b := split*m[1][t] + (1-split)*m[2][t]
					x[t] = r*m[0][t]*(1-pi) - (1-r)*b*pi
				}
				vbar := pi * (1 - pi) * (r*mc + (1-r)*mb)
				*kpi.out = append(*kpi.out, longRunVar(x, truthBatch)/(vbar*vbar))
				*kpi.k = append(*kpi.k, longRunK3(x, truthK3Batch)/(vbar*vbar*vbar))
			}
		}
		for t := range truthMinutes {
			x[t] = math.Log(lm[0][t]) - math.Log(split*lm[1][t]+(1-split)*lm[2][t])
		}
		tr.lat[si] = longRunVar(x, truthBatch)
	}
	for t := range truthMinutes {
		x[t] = math.Log(em[1][t])
	}
	tr.errLR, tr.errMarg = longRunVar(x, truthBatch), longRunVar(x, 1)
	return tr
}

// batchSums are the sums of consecutive batches of b values of x, each less b times the
// mean of x: what the long-run moments below are taken from.
func batchSums(x []float64, b int) []float64 {
	m := len(x) / b
	var mu float64
	for _, v := range x[:m*b] {
		mu += v
	}
	mu /= float64(m * b)
	out := make([]float64, m)
	for j := range out {
		for _, v := range x[j*b : (j+1)*b] {
			out[j] += v - mu
		}
	}
	return out
}

// longRunVar is the batch-means estimate of the long-run variance of x.
func longRunVar(x []float64, b int) float64 {
	var ss float64
	sums := batchSums(x, b)
	for _, s := range sums {
		ss += s * s
	}
	return ss / float64(len(sums)-1) / float64(b)
}

// longRunK3 is the batch estimate of the long-run third cumulant of x: the third central
// moment of sums of b consecutive values, per value.
func longRunK3(x []float64, b int) float64 {
	var s3 float64
	sums := batchSums(x, b)
	for _, s := range sums {
		s3 += s * s * s
	}
	return s3 / float64(len(sums)) / float64(b)
}

func (tr *truth) splitIdx(split float64) int {
	if split > 0.65 {
		return 1
	}
	return 0
}

// interp is table at share r, linear in log r.
func (tr *truth) interp(table []float64, r float64) float64 {
	i := sort.SearchFloat64s(tr.shares, r)
	switch {
	case i <= 0:
		return table[0]
	case i >= len(tr.shares):
		return table[len(table)-1]
	}
	f := (math.Log(r) - math.Log(tr.shares[i-1])) / (math.Log(tr.shares[i]) - math.Log(tr.shares[i-1]))
	return table[i-1] + f*(table[i]-table[i-1])
}

func (tr *truth) errTau2(r, split float64) float64 {
	return tr.interp(tr.err[tr.splitIdx(split)], r)
}

func (tr *truth) slowTau2(r, split float64) float64 {
	return tr.interp(tr.slow[tr.splitIdx(split)], r)
}

func (tr *truth) errK3At(r, split float64) float64 {
	return tr.interp(tr.errK3[tr.splitIdx(split)], r)
}

func (tr *truth) slowK3At(r, split float64) float64 {
	return tr.interp(tr.slowK3[tr.splitIdx(split)], r)
}

func (tr *truth) latVar(split float64) float64 { return tr.lat[tr.splitIdx(split)] }

// fixedSample is the physical limit: the intervals a fixed-sample non-inferiority test at
// α/K with 90% power needs at the final share for a healthy canary, per judged KPI,
// n = (z_{α/K} + z_{0.10})²·σ²/tol², σ² the true per-interval variance (sampling at the
// mean load plus the long-run cluster noise) of the KPI's log-ratio estimate. learned is
// the same limit for a rule that must learn the canary/baseline offset from hist
// intervals of history at the pool's original weights, as Verdict does:
// σ²/n + σ_h²/hist ≤ tol²/z², σ_h² the history's per-interval variance; +Inf where no
// amount of live traffic makes up for the history's uncertainty.
func (tr *truth) fixedSample(w *World, sc Scale, share float64, tol [nKPIs]float64, alphaK float64, hist int) (limit, learned [nKPIs]float64) {
	z := -normalQuantile(alphaK) + 1.2815515655446004
	// perInterval is each KPI's per-interval variance with the canary at share r
	perInterval := func(r float64) [nKPIs]float64 {
		nc, nb := sc.RequestsPerMinute*r, sc.RequestsPerMinute*(1-r)
		var out [nKPIs]float64
		for i, p := range []float64{sc.ErrorRate * w.Offset, latSurv(slowerThan, w.Offset)} {
			pb := sc.ErrorRate
			tau2 := tr.errTau2(r, 0.5)
			if i == kpiSlow {
				pb, tau2 = latSurv(slowerThan, 1), tr.slowTau2(r, 0.5)
			}
			ec, eb := nc*p, nb*pb
			e := ec + eb
			pi := ec / e
			v := e * pi * (1 - pi)
			out[i] = 1/v + tau2
		}
		cv2 := latSD1 * latSD1 / (latMean1 * latMean1)
		out[kpiMean] = cv2/nc + cv2/nb + tr.latVar(0.5)
		return out
	}
	live, past := perInterval(share*w.Honour), perInterval(1.0/3)
	for i := range limit {
		t2 := math.Log1p(tol[i]) * math.Log1p(tol[i]) / (z * z)
		limit[i] = live[i] / t2
		learned[i] = math.Inf(1)
		if hist > 0 {
			if d := t2 - past[i]/float64(hist); d > 0 {
				learned[i] = live[i] / d
			}
		}
	}
	return limit, learned
}

func normalQuantile(p float64) float64 { return -math.Sqrt2 * math.Erfcinv(2*p) }
