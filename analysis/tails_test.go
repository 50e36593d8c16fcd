package analysis

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// burstNoise is a cluster-minute comparison with rare multi-minute bursts: a burst starts
// in 1% of minutes, lasts a geometric number of minutes (mean 3) and lifts the canary's
// log rate by log 3, over white noise of sd 0.05. It is the bench's burst world seen from
// the canary's side alone.
type burstNoise struct {
	in bool
}

func (b *burstNoise) next(r *rand.Rand) float64 {
	if b.in {
		b.in = r.Float64() >= 1.0/3
	} else {
		b.in = r.Float64() < 0.01
	}
	x := 0.05 * r.NormFloat64()
	if b.in {
		x += math.Log(3)
	}
	return x
}

// TestLongRunTails checks that the tail measure sees bursts on the side they are on and
// finds next to nothing in Gaussian noise of the same long-run variance, however
// correlated.
func TestLongRunTails(t *testing.T) {
	const hist, reps = 1440, 100
	r := rand.New(rand.NewPCG(3, 3))
	var bu, bd, gu, gd []float64
	for range reps {
		x := make([]float64, hist)
		var b burstNoise
		for i := range x {
			x[i] = b.next(r)
		}
		_, lr, _, _ := longRun(x, make([]float64, hist), ones(hist))
		up, down := longRunTails(x)
		bu, bd = append(bu, up), append(bd, down)
		// an AR(1) of φ 0.7 with the same long-run variance
		const phi = 0.7
		sd := math.Sqrt(lr * (1 - phi) / (1 + phi))
		a := sd * r.NormFloat64()
		for i := range x {
			a = phi*a + sd*math.Sqrt(1-phi*phi)*r.NormFloat64()
			x[i] = a
		}
		up, down = longRunTails(x)
		gu, gd = append(gu, up), append(gd, down)
	}
	q := func(v []float64, p float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[int(p*float64(len(v)))]
	}
	med := func(v []float64) float64 { return q(v, 0.5) }
	if med(bu) < 10*q(gu, 0.9) || med(bu) < 10*q(gd, 0.9) {
		t.Errorf("bursts' upper tail %.4f (median), not clearly above a Gaussian's %.4f/%.4f (90th percentiles)", med(bu), q(gu, 0.9), q(gd, 0.9))
	}
	if med(bd) > 0.2*med(bu) {
		t.Errorf("bursts on the canary's side gave a lower tail of %.4f against an upper tail of %.4f", med(bd), med(bu))
	}
	t.Logf("median tails: bursts up %.4f down %.4f; Gaussian AR(1), 90th percentiles: up %.4f down %.4f", med(bu), med(bd), q(gu, 0.9), q(gd, 0.9))
}

func ones(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 1
	}
	return v
}

// TestJumpTermCoverage runs a gauge whose canary sits exactly at the tolerance through
// burst noise learned from a day of history, and counts runs in which the lower bound ever
// rises above the truth within two hours of checks every interval. Without the Bernstein
// term one early burst is enough, far more often than α; with it the rate is within α.
func TestJumpTermCoverage(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation")
	}
	const hist, live, reps, alpha, effect = 1440, 120, 1500, 0.05 / 3, 0.1
	r := rand.New(rand.NewPCG(11, 5))
	var with, without int
	for range reps {
		var b burstNoise
		obs := make([]GaugeObservation, hist)
		for i := range obs {
			obs[i] = GaugeObservation{Canary: b.next(r), SamplingVar: 0.0025}
		}
		m := LearnGaugeNoise(obs, Difference)
		plain := m
		plain.TailUp, plain.TailDown = 0, 0
		gw := NewGaugeSequence(GaugeOptions{Scale: Difference, Noise: &m, PlannedIntervals: live})
		gp := NewGaugeSequence(GaugeOptions{Scale: Difference, Noise: &plain, PlannedIntervals: live})
		var hitW, hitP bool
		for range live {
			d := effect + b.next(r)
			gw.AddSampled(d, 0, 0.0025)
			gp.AddSampled(d, 0, 0.0025)
			hitW = hitW || gw.Interval(alpha).Lower > effect
			hitP = hitP || gp.Interval(alpha).Lower > effect
		}
		if hitW {
			with++
		}
		if hitP {
			without++
		}
	}
	lo, hi := wilson(with, reps)
	t.Logf("lower bound above the truth: %d/%d runs with the jump term (95%% CI %.2f–%.2f%%), %d/%d without; α = %.2f%%",
		with, reps, 100*lo, 100*hi, without, reps, 100*alpha)
	if float64(with)/reps > alpha {
		t.Errorf("with the jump term the bound excluded the truth in %d/%d runs, above α = %.3f", with, reps, alpha)
	}
	if float64(without)/reps <= alpha {
		t.Errorf("without the jump term only %d/%d runs: the test no longer shows what the term is for", without, reps)
	}
}

// TestProofTimeHeavyTail: a forecast proves non-inferiority with the upper bound, so a
// heavy lower tail (bursts on the baselines) lengthens it, by the sequence's own term,
// and a heavy upper tail does not.
func TestProofTimeHeavyTail(t *testing.T) {
	base := NoiseModel{Kind: "ratio", Intervals: 1440, ClusterVar: 0.03, LongRunVar: 0.08, OffsetSE: 0.008, Dispersion: 2, BatchSize: 4,
		Events: 7000, CanaryShare: 1.0 / 3}
	steps := []ProofStep{{Share: 0.05, Intervals: 10}, {Share: 0.2, Intervals: 30}, {Share: 1.0 / 3, Intervals: 600}}
	proof := func(m NoiseModel) Proof {
		return ProofTime(m, math.Log1p(0.10), 0.05/3, false, 0, steps, 2000, RatioOptions{}, 0)
	}
	p0 := proof(base)
	up := base
	up.TailUp = 0.5
	down := base
	down.TailDown = 0.5
	pu, pd := proof(up), proof(down)
	if !p0.Reached || pu != p0 {
		t.Errorf("an upper tail changed the forecast: %+v, without %+v", pu, p0)
	}
	if !(pd.Median > p0.Median) {
		t.Errorf("a heavy lower tail did not lengthen the forecast: median %d, without %d", pd.Median, p0.Median)
	}
	// Where a decrease is the harm, the lower bound proves: the upper tail lengthens it.
	if got := proof(up.ForHarm(Decrease)); got != pd {
		t.Errorf("decrease harm, heavy upper tail: %+v, want %+v (the lower tail's for an increase)", got, pd)
	}
	if got := proof(down.ForHarm(Decrease)); got != p0 {
		t.Errorf("decrease harm, heavy lower tail: %+v, want %+v (no tail)", got, p0)
	}
	if got := proof(down.ForHarm(Increase)); got != pd {
		t.Errorf("increase harm: ForHarm changed the model: %+v, want %+v", got, pd)
	}
	t.Logf("median/p90 intervals: Gaussian %d/%d, heavy lower tail %d/%d", p0.Median, p0.P90, pd.Median, pd.P90)
}

// TestJumpLogEvidence: without a Bernstein term the p-value's log-evidence is the Gaussian
// one; with it, it is the root of e(|t| − c·L) = L, smaller the heavier the tail.
func TestJumpLogEvidence(t *testing.T) {
	e := func(x float64) float64 { return x*x/2 - 1 }
	if got := jumpLogEvidence(-4, 0, 0, e); got != 7 {
		t.Errorf("c = 0: %v, want e(4) = 7", got)
	}
	if got := jumpLogEvidence(1, 0.5, 0, e); got != 0 {
		t.Errorf("no evidence at all: %v, want 0", got)
	}
	for _, shift := range []float64{0, math.Ln2} {
		prev := math.Inf(1)
		for _, c := range []float64{0.1, 0.3, 1} {
			for _, x := range []float64{4, -4} {
				l := jumpLogEvidence(x, c, shift, e)
				if math.Abs(e(4-c*(l+shift))-l) > 1e-8 || !(l < prev) || !(l > 0) {
					t.Errorf("t = %v, c = %v, shift %v: L = %v, e(|t| − c·(L+shift)) = %v; previous L %v", x, c, shift, l, e(4-c*(l+shift)), prev)
				}
			}
			prev = jumpLogEvidence(4, c, shift, e)
		}
	}
	if got := jumpLogEvidence(math.Inf(-1), 0.3, 0, e); !math.IsInf(got, 1) {
		t.Errorf("infinite statistic: %v, want +Inf (p = 0)", got)
	}
	if got := jumpLogEvidence(math.NaN(), 0.3, 0, e); got != 0 {
		t.Errorf("NaN statistic: %v, want 0 (p = 1)", got)
	}
}

// TestPValueCarriesTheJumpTerm: the running p-value of a sequence whose noise has a heavy
// tail on the canary's side is larger than the same sequence's without it, as its bounds
// are wider, and a heavy tail on the other side changes nothing.
func TestPValueCarriesTheJumpTerm(t *testing.T) {
	base := NoiseModel{Kind: "gauge", Intervals: 1440, LongRunVar: 0.01, SamplingVar: 0.0025, OffsetSE: 0.001, Dispersion: 1, BatchSize: 4}
	up, down := base, base
	up.TailUp, down.TailDown = 0.004, 0.004
	run := func(m NoiseModel) float64 {
		g := NewGaugeSequence(GaugeOptions{Scale: Difference, Noise: &m, PlannedIntervals: 60})
		for range 30 {
			g.AddSampled(0.08, 0, 0.0025)
		}
		return g.Interval(0.05).PValue
	}
	plain, withUp, withDown := run(base), run(up), run(down)
	t.Logf("gauge p-value: %.3g plain, %.3g with the upper tail, %.3g with the lower", plain, withUp, withDown)
	if !(plain < 0.01) || !(withUp > 1.5*plain) || withDown != plain {
		t.Errorf("gauge p-values %v plain, %v with the upper tail, %v with the lower", plain, withUp, withDown)
	}

	rb := NoiseModel{Kind: "ratio", Intervals: 1440, ClusterVar: 0.001, LongRunVar: 0.002, OffsetSE: 0.001, Dispersion: 1, BatchSize: 4, Events: 600, CanaryShare: 1.0 / 3}
	rup, rdown := rb, rb
	rup.TailUp, rdown.TailDown = 0.003, 0.003
	ratio := func(m NoiseModel) float64 {
		s := NewRatioSequence(RatioOptions{Noise: &m})
		for range 30 {
			s.Add(230, 10000, 400, 20000) // the canary's rate 1.15× the baselines'
		}
		return s.Interval(0.05).PValue
	}
	plain, withUp, withDown = ratio(rb), ratio(rup), ratio(rdown)
	t.Logf("ratio p-value: %.3g plain, %.3g with the upper tail, %.3g with the lower", plain, withUp, withDown)
	if !(plain < 0.01) || !(withUp > 1.5*plain) || withDown != plain {
		t.Errorf("ratio p-values %v plain, %v with the upper tail, %v with the lower", plain, withUp, withDown)
	}
}

// TestGaugePValueMatchesItsBounds: with a heavy tail, the smallest effect whose lower
// bound at α = 5% excludes 0 is the smallest whose running p-value is at most 2α (the
// p-value is two-sided, the bound one-sided), up to the boundary's one-sided correction.
func TestGaugePValueMatchesItsBounds(t *testing.T) {
	m := NoiseModel{Kind: "gauge", Intervals: 1440, LongRunVar: 0.01, SamplingVar: 0.0025, OffsetSE: 0.001, Dispersion: 1, BatchSize: 4, TailUp: 0.004}
	const alpha = 0.05
	var byBound, byP float64
	for d := 0.02; d < 0.2 && (byBound == 0 || byP == 0); d += 0.0002 {
		g := NewGaugeSequence(GaugeOptions{Scale: Difference, Noise: &m, PlannedIntervals: 60})
		for range 30 {
			g.AddSampled(d, 0, 0.0025)
		}
		iv := g.Interval(alpha)
		if byBound == 0 && iv.Lower > 0 {
			byBound = d
		}
		if byP == 0 && iv.PValue <= 2*alpha {
			byP = d
		}
	}
	t.Logf("smallest effect excluded by the bound %.4f, by the p-value %.4f", byBound, byP)
	if byBound == 0 || byP == 0 || math.Abs(byP-byBound) > 0.01*byBound {
		t.Errorf("bound excludes 0 from %.4f, p ≤ 2α from %.4f: more than 1%% apart", byBound, byP)
	}
}
