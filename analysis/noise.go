package analysis

import (
	"fmt"
	"math"
	"slices"
)

// MinHistoryIntervals is the least history a NoiseModel must be learned from before live
// sequences trust it. Fewer intervals leave the cluster-level variance too uncertain, and
// the sequences fall back to estimating the noise from the run itself.
const MinHistoryIntervals = 30

// NoiseModel is one KPI's noise as learned from history: the same code on canary and
// baseline clusters, before the variant. Real noise lives at the level of the cluster and
// the interval (a bad node, a noisy neighbour, a crash-looping pod lift one cluster's rate
// for minutes), not the request, so a per-interval comparison d_k = θ + offset + η_k + ε_k
// has two parts: sampling noise ε_k, known from the counts at the current traffic share,
// and cluster-level noise η_k, which does not shrink with traffic and persists for
// minutes. The model measures η's variance, its serial correlation and the long-run
// variance the two imply, and the pre-existing canary/baseline offset with an interval
// that accounts for that correlation.
//
// All variances are on the comparison's scale: log rate ratio for ratio KPIs, log ratio
// (or difference) of interval values for gauges.
type NoiseModel struct {
	// Kind is "ratio" or "gauge".
	Kind string
	// Intervals is the number of history intervals that carried information.
	Intervals int
	// Offset is the canary's pre-existing effect against the baselines (log scale for
	// ratios and log-ratio gauges) and OffsetSE its standard error, correlation included.
	Offset   float64
	OffsetSE float64
	// ClusterVar is the per-interval variance of the comparison beyond sampling noise
	// (τ²); LongRunVar is the variance per interval of long sums of it (τ² times the
	// integrated autocorrelation), the figure live sequences use. LongRunVar ≥ ClusterVar.
	ClusterVar float64
	LongRunVar float64
	// Correlation is the lag-1 autocorrelation of the cluster-level noise.
	Correlation float64
	// TailUp and TailDown are how much heavier than a Gaussian's the comparison's upper
	// and lower tails are over the long run: the excess one-sided third moments per
	// interval of sums of consecutive intervals (longRunTails). Bursts that lift the
	// canary's rate for minutes make TailUp positive, bursts on a baseline TailDown. Live
	// sequences widen the bound on each side by a Bernstein term (jumpScale); 0 for
	// Gaussian noise, however correlated.
	TailUp, TailDown float64
	// SamplingVar is the mean per-interval sampling variance in the history.
	SamplingVar float64
	// Dispersion is (sampling + long-run cluster variance) / sampling at the history's
	// traffic: 1 means Poisson-like counts; 5 means intervals five times noisier than
	// their counts explain, and a verdict that much slower at that traffic.
	Dispersion float64
	// BatchSize is the batch length (in intervals) whose batch means gave the largest
	// long-run variance; 1 means no serial correlation was seen.
	BatchSize int
	// Events is the mean number of events per interval in the history, canary and
	// baselines together (ratio KPIs), and CanaryShare the canary's mean share of the
	// requests then: ProofTime scales the sampling noise from them to each step's share.
	Events      float64
	CanaryShare float64
	// OffsetIgnored keeps the offset for display but makes sequences compare against no
	// offset: when the history may already contain the variant (its arrival was not
	// declared), subtracting the offset would subtract the variant's own effect.
	OffsetIgnored bool
}

// offset is the offset sequences subtract, and its standard error.
func (m *NoiseModel) offset() (float64, float64) {
	if m.OffsetIgnored {
		return 0, 0
	}
	return m.Offset, m.OffsetSE
}

// Usable reports whether the model was learned from enough history to be trusted.
func (m *NoiseModel) Usable() bool { return m != nil && m.Intervals >= MinHistoryIntervals }

// String summarises the model for people.
func (m *NoiseModel) String() string {
	if m == nil {
		return "no history"
	}
	if !m.Usable() {
		return fmt.Sprintf("%d history intervals (fewer than %d: noise estimated from the run)", m.Intervals, MinHistoryIntervals)
	}
	return fmt.Sprintf("cluster sd %.3g/interval (long-run %.3g), lag-1 correlation %.2f, %.1f× sampling noise, offset %+.3g ± %.2g from %d intervals",
		math.Sqrt(m.ClusterVar), math.Sqrt(m.LongRunVar), m.Correlation, m.Dispersion, m.Offset, m.OffsetSE, m.Intervals)
}

// maxCorrelation caps the lag-1 correlation used for the AR(1) long-run variance: beyond
// it the implied variance is dominated by estimation error.
const maxCorrelation = 0.98

// longRun estimates the cluster-level variance of a sequence of residuals x_k whose
// variance is a_k + h_k²·τ² (a_k known sampling variance, h_k the sensitivity of x_k to
// the cluster-level effect), in time order. It returns τ² (marginal), the long-run τ²
// (the larger of the batch-means estimate over batch lengths 1, 2, 4, … with at least ten
// batches, and the AR(1)-implied value τ²(1+ρ)/(1−ρ)), the lag-1 correlation ρ of the
// cluster part, and the batch length that gave the largest batch-means estimate.
func longRun(x, a, h []float64) (marg, lr, rho float64, batch int) {
	n := len(x)
	if n < 2 {
		return 0, 0, 0, 1
	}
	// batchEst is the batch-means estimate at batch length b and its standard error.
	batchEst := func(b int) (est, se float64, ok bool) {
		m := n / b
		if m < 2 || (m < 10 && b > 1) {
			return 0, 0, false
		}
		off := n - m*b // drop the oldest remainder
		var sz, szz, sden float64
		for j := range m {
			var bx, ba, bh float64
			for k := off + j*b; k < off+(j+1)*b; k++ {
				bx += x[k]
				ba += a[k]
				bh += h[k]
			}
			hh := bh * bh / float64(b)
			sz += bx*bx - ba
			sden += hh
			if hh > 0 {
				z := (bx*bx - ba) / hh
				szz += z * z
			}
		}
		if !(sden > 0) {
			return 0, 0, false
		}
		// the residuals are centred on an estimate from the same data
		est = sz / sden * float64(m) / float64(m-1)
		mean := sz / sden
		se = math.Sqrt(math.Max(0, szz/float64(m)-mean*mean) / float64(m))
		return est, se, true
	}
	marg, margSE, _ := batchEst(1)
	marg = math.Max(0, marg)
	lr, batch = marg, 1
	lrSE := margSE
	// Longer batches see correlation but, being few, are noisy: taking the largest
	// estimate outright would find "correlation" in white noise. A batch length counts
	// when its estimate is two standard errors above the best so far.
	for b := 2; ; b *= 2 {
		v, se, ok := batchEst(b)
		if !ok {
			break
		}
		if v-2*se > lr {
			lr, lrSE, batch = v, se, b
		}
	}
	// Correlation longer than the batches see (a rate drifting over twenty minutes in six
	// hours of history) is extrapolated with an AR(1): where the lag-1 covariance, which
	// sampling noise does not touch, is clearly positive (2.5 standard errors). A looser
	// gate (one standard error) caught more slow wanders under white noise but also found
	// one in about 10% of white-noise histories, and cost healthy canaries their promotion.
	var num, den, num2 float64
	for k := 1; k < n; k++ {
		p := x[k] * x[k-1]
		num += p
		num2 += p * p
		den += h[k] * h[k-1]
	}
	cov, covSE := 0.0, 0.0
	if den > 0 && n > 2 {
		cov = num / den
		mp := num / float64(n-1)
		covSE = math.Sqrt(math.Max(0, num2/float64(n-1)-mp*mp)/float64(n-1)) * float64(n-1) / den
	}
	if marg > 0 {
		rho = math.Max(-1, math.Min(1, cov/marg))
	}
	// Cluster noise is often white noise plus a slow wander (Gamma noise per minute on a
	// drifting rate): then the lag-1 correlation of the whole is small though the wander's
	// own is near 1, and marg·(1+ρ)/(1−ρ) misses most of the long-run variance (measured:
	// 0.22 against 0.66 for Gaussian white noise of Gamma(k=20)'s variance plus an AR(1) of
	// φ 0.95 and variance 0.015, median of 6-hour histories). The wander's φ is the
	// ratio of the lag-2 to the lag-1 covariance, and the long-run variance is
	// marg + 2·cov₁/(1−φ), which for a pure AR(1) (φ = ρ) is the usual value.
	var lag2, den2 float64
	for k := 2; k < n; k++ {
		lag2 += x[k] * x[k-2]
		den2 += h[k] * h[k-2]
	}
	phi := rho
	if den2 > 0 && cov > 0 {
		phi = math.Max(phi, math.Min(lag2/den2/cov, maxCorrelation))
	}
	if marg > 0 && cov > 2.5*covSE {
		if r := math.Min(phi, maxCorrelation); r > 0 {
			if v := marg + 2*cov/(1-r); v > lr {
				// as uncertain as the marginal estimate from n(1−ρ)/(1+ρ) effective intervals
				lr, lrSE = v, v*margSE/marg*math.Sqrt((1+r)/(1-r))
			}
		}
	}
	return marg, varianceUCB(math.Max(lr, marg), lrSE), rho, batch
}

// tailEvents is the expected number of events on each side of a history interval below
// which it does not count toward the tails: the log of a Poisson count of 20 has a
// skewness of about −0.2, a count of 4 of −0.8, and what is measured should be the
// clusters' tails, not the counts'.
const tailEvents = 20

// tailWindow is the length, in intervals, of the sums whose tails are measured: long
// enough to hold a burst of a few minutes whole (a ×3 burst lasting four minutes is one
// jump of the sum, not four small ones), short enough that a day's history has 90
// disjoint windows.
const tailWindow = 16

// longRunTails estimates how much heavier than a Gaussian's the two tails of residuals x
// (in time order) are over the long run: the one-sided third moments E[(Y−Ȳ)⁺³] and
// E[(Y−Ȳ)⁻³] of the sums Y of every window of tailWindow consecutive intervals (fewer
// where the history is short), less what a Gaussian of the windows' robust spread
// (1.4826 × their median absolute deviation) gives, per interval. A burst spanning
// intervals is one jump inside a window's sum; the robust spread keeps the rare jumps
// themselves from passing as Gaussian spread. An excess counts only when it is a standard
// error (of as many disjoint windows as fit) above zero: measured on a day of AR(1)
// Gaussian noise, both tails are then 0 in nine histories out of ten, while 3-minute ×3
// bursts in 1% of minutes give a median upper tail of 0.6 (TestLongRunTails).
func longRunTails(x []float64) (up, down float64) {
	n := len(x)
	b := tailWindow
	for b > 1 && n/b < 30 {
		b /= 2
	}
	m := n / b // disjoint windows: the sample size the standard error is taken at
	if m < 3 {
		return 0, 0
	}
	y := make([]float64, 0, n-b+1)
	var run float64
	for k := range x {
		run += x[k]
		if k >= b {
			run -= x[k-b]
		}
		if k >= b-1 {
			y = append(y, run)
		}
	}
	med := medianInPlace(slices.Clone(y))
	dev := make([]float64, len(y))
	for j, v := range y {
		dev[j] = math.Abs(v - med)
	}
	sd := 1.4826 * medianInPlace(dev)
	var mean float64
	for _, v := range y {
		mean += v
	}
	mean /= float64(len(y))
	var su, sdn, su2, sdn2 float64
	for _, v := range y {
		d := v - mean
		if d3 := d * d * d; d > 0 {
			su += d3
			su2 += d3 * d3
		} else {
			sdn -= d3
			sdn2 += d3 * d3
		}
	}
	const gauss = 0.7978845608028654 // E[(Z⁺)³] = 2/√(2π)
	ref := gauss * sd * sd * sd
	fy := float64(len(y))
	excess := func(s, s2 float64) float64 {
		mu := s / fy
		se := math.Sqrt(math.Max(0, s2/fy-mu*mu) / float64(m))
		if mu-ref <= se {
			return 0
		}
		return (mu - ref) / float64(b)
	}
	return excess(su, su2), excess(sdn, sdn2)
}

// medianInPlace is the median of v, which it sorts.
func medianInPlace(v []float64) float64 {
	slices.Sort(v)
	return QuantileType7(v, 0.5)
}

// jumpScale is the Bernstein scale c of a sum of variance v whose tail on one side has
// an excess third moment k3: k3/(3v). A sum with sub-gamma tails of scale c crosses
// √(2v·log(1/α)) + c·log(1/α) with probability at most α; matching c to the third
// moment is the second-order term of that bound (the cumulant generating function
// λ²v/(2(1 − cλ)) = λ²v/2 + λ³κ₃/6 + …).
func jumpScale(k3, v float64) float64 {
	if !(v > 0) || !(k3 > 0) {
		return 0
	}
	return k3 / (3 * v)
}

// varianceUCB is a 90% upper confidence bound of a variance estimate with standard error
// se: the larger of the chi-square bound at the degrees of freedom the standard error
// implies (2·(est/se)², which heavy tails make few) and est + 1.28·se (for estimates near
// zero). A variance learned from a few hours of correlated or bursty history is uncertain,
// and an underestimate is what would make live verdicts invalid.
func varianceUCB(est, se float64) float64 {
	if !(est > 0) || !(se > 0) {
		return math.Max(0, est)
	}
	const z = -1.2815515655446004 // Φ⁻¹(0.1)
	add := est - z*se
	df := 2 * (est / se) * (est / se)
	c := 1 - 2/(9*df) + z*math.Sqrt(2/(9*df))
	mult := add
	if q := df * c * c * c; q > 0 {
		mult = est * math.Min(df/q, 10)
	} else {
		mult = 10 * est
	}
	return math.Max(add, mult)
}

// logFormEvents is the expected number of events on each side above which a ratio
// interval is compared on the log scale rather than by its binomial score. A ×3 burst on
// the canary moves the score four times as far as a ×3 burst on a baseline, so bounds on
// the score's scale under-cover the harm side when noise comes in bursts (measured: 2.7%
// false harm at α/K = 1.7% with 3-minute bursts at a 5% share of 12k requests a minute;
// 0.25% on the log scale). Down to a couple of expected events, log(x + ½) with its exact
// Poisson mean and variance is the better statistic; below, the score.
const logFormEvents = 2

// logForm is an interval's log rate ratio statistic: the sampling variance of
// log(c+½) − log(b+½) and the bias to subtract from it, at expected counts e·π and
// e·(1−π) for logit x (share logit plus offset), and whether the interval has the events
// for it. Expected, not observed, counts decide, so the choice does not depend on the
// interval's own noise.
func logForm(e, x float64) (variance, bias float64, ok bool) {
	pi := 1 / (1 + math.Exp(-x))
	ec, eb := e*pi, e*(1-pi)
	if ec < logFormEvents || eb < logFormEvents {
		return 0, 0, false
	}
	bc, vc := poissonLogMoments(ec)
	bb, vb := poissonLogMoments(eb)
	return vc + vb, bc - bb, true
}

// poissonLogMoments are E[log(X+½)] − log λ and Var(log(X+½)) for X ~ Poisson(λ): exact
// sums for small λ, the expansions (−1/(24λ²), 1/λ + 1/(2λ²)) for large.
func poissonLogMoments(lam float64) (bias, variance float64) {
	if lam >= 50 {
		return -1 / (24 * lam * lam), 1/lam + 1/(2*lam*lam)
	}
	kmax := int(lam + 12*math.Sqrt(lam) + 12)
	p := math.Exp(-lam)
	var m1, m2 float64
	for k := 0; k <= kmax; k++ {
		if k > 0 {
			p *= lam / float64(k)
		}
		l := math.Log(float64(k) + 0.5)
		m1 += p * l
		m2 += p * l * l
	}
	return m1 - math.Log(lam), math.Max(m2-m1*m1, 1e-12)
}

// binomTerms are ψ = c − e·π and v = e·π(1−π) of one ratio interval at log rate ratio θ.
func binomTerms(c, e, lr, theta float64) (psi, v float64) {
	pi := 1 / (1 + math.Exp(-(theta + lr)))
	return c - e*pi, e * pi * (1 - pi)
}

// LearnRatioNoise learns a ratio KPI's noise from history intervals in time order
// (canary events and requests against the baselines' summed counts). Under the model the
// canary's events given the interval's events are binomial around a rate ratio that
// wobbles from interval to interval: Var(c − e·π) = v + v²·τ² with v = e·π(1−π), so
// intervals with few events are judged by their counts and intervals with many by the
// cluster-level noise, which is what limits evidence at high traffic.
func LearnRatioNoise(obs []RatioObservation) NoiseModel {
	type iv struct{ c, e, lr float64 }
	var ivs []iv
	informative := 0
	for _, o := range obs {
		if !ratioInputsOK(o.CanaryEvents, o.CanaryTotal, o.BaselineEvents, o.BaselineTotal) {
			continue
		}
		e := o.CanaryEvents + o.BaselineEvents
		if e == 0 || o.CanaryTotal == 0 || o.BaselineTotal == 0 {
			// keeps its place in time: batches are consecutive intervals
			ivs = append(ivs, iv{})
			continue
		}
		ivs = append(ivs, iv{o.CanaryEvents, e, math.Log(o.CanaryTotal) - math.Log(o.BaselineTotal)})
		informative++
	}
	m := NoiseModel{Kind: "ratio", Intervals: informative, Dispersion: 1, BatchSize: 1}
	if informative == 0 {
		return m
	}
	// score of the offset with cluster-level weights, as the live sequence builds it
	// (log form where an interval has the events for it); decreasing in θ. logAt is the
	// offset that decides the form, fixed while solving.
	// each interval's log form at logAt, computed once per round, not per bisection step
	type form struct {
		v0, bias float64
		ok       bool
	}
	forms := make([]form, len(ivs))
	setLogAt := func(at float64) {
		for i, x := range ivs {
			if x.e > 0 {
				v0, bias, ok := logForm(x.e, x.lr+at)
				forms[i] = form{v0, bias, ok}
			}
		}
	}
	setLogAt(0)
	score := func(theta, tau2 float64) (u, info float64) {
		for i, x := range ivs {
			if x.e == 0 {
				continue
			}
			if f := forms[i]; f.ok {
				v0, bias := f.v0, f.bias
				w := 1 / (v0 + tau2)
				u += w * (math.Log(x.c+0.5) - math.Log(x.e-x.c+0.5) - bias - x.lr - theta)
				info += w
				continue
			}
			psi, v := binomTerms(x.c, x.e, x.lr, theta)
			w := 1 / (1 + v*tau2)
			u += w * psi
			info += w * v
		}
		return u, info
	}
	solve := func(tau2 float64) float64 {
		lo, hi := -12.0, 12.0
		for range 100 {
			mid := (lo + hi) / 2
			if u, _ := score(mid, tau2); u > 0 {
				lo = mid
			} else {
				hi = mid
			}
		}
		return (lo + hi) / 2
	}
	var tau2 float64
	x, a, h := make([]float64, len(ivs)), make([]float64, len(ivs)), make([]float64, len(ivs))
	for range 3 { // offset and variance depend on each other; three rounds settle both
		m.Offset = solve(tau2)
		setLogAt(m.Offset)
		var sv float64
		for i, it := range ivs {
			x[i], a[i], h[i] = 0, 0, 0
			if it.e == 0 {
				continue
			}
			// every interval as a log-scale residual with its sampling variance
			if v0, bias, ok := logForm(it.e, it.lr+m.Offset); ok {
				x[i], a[i], h[i] = math.Log(it.c+0.5)-math.Log(it.e-it.c+0.5)-bias-it.lr-m.Offset, v0, 1
				sv += v0
				continue
			}
			psi, v := binomTerms(it.c, it.e, it.lr, m.Offset)
			if v > 0 {
				x[i], a[i], h[i] = psi/v, 1/v, 1
				sv += 1 / v
			}
		}
		m.SamplingVar = sv / float64(informative)
		m.ClusterVar, m.LongRunVar, m.Correlation, m.BatchSize = longRun(x, a, h)
		tau2 = m.LongRunVar
	}
	// Tails are measured where sampling noise is close to Gaussian, so that what is found is
	// the clusters': a handful of events makes the log ratio skewed by itself.
	xt := make([]float64, len(x))
	for i, it := range ivs {
		pi := 1 / (1 + math.Exp(-(it.lr + m.Offset)))
		if it.e*pi >= tailEvents && it.e*(1-pi) >= tailEvents {
			xt[i] = x[i]
		}
	}
	m.TailUp, m.TailDown = longRunTails(xt)
	_, info := score(m.Offset, tau2)
	if info > 0 {
		m.OffsetSE = 1 / math.Sqrt(info)
	}
	var ev, sh float64
	for _, o := range obs {
		if ratioInputsOK(o.CanaryEvents, o.CanaryTotal, o.BaselineEvents, o.BaselineTotal) && o.CanaryTotal+o.BaselineTotal > 0 {
			ev += o.CanaryEvents + o.BaselineEvents
			sh += o.CanaryTotal / (o.CanaryTotal + o.BaselineTotal)
		}
	}
	m.Events, m.CanaryShare = ev/float64(informative), sh/float64(informative)
	if m.SamplingVar > 0 {
		m.Dispersion = 1 + m.LongRunVar/m.SamplingVar
	}
	return m
}

// LearnGaugeNoise learns a gauge KPI's noise from history intervals in time order. Each
// observation's SamplingVar, when known (a latency mean's per-request variance over its
// request count), is the part of the interval's variance that shrinks with traffic; the
// rest is cluster-level.
func LearnGaugeNoise(obs []GaugeObservation, scale GaugeScale) NoiseModel {
	g := GaugeSequence{opt: GaugeOptions{Scale: scale}}
	var d, s []float64
	for _, o := range obs {
		v, ok := g.diff(o.Canary, o.Baseline)
		if !ok {
			continue
		}
		d = append(d, v)
		s = append(s, math.Max(0, finite(o.SamplingVar)))
	}
	m := NoiseModel{Kind: "gauge", Intervals: len(d), Dispersion: 1, BatchSize: 1}
	if len(d) == 0 {
		return m
	}
	x, h := make([]float64, len(d)), make([]float64, len(d))
	var tau2 float64
	for range 3 {
		var sw, swd, ss float64
		for i := range d {
			w := 1 / math.Max(s[i]+tau2, 1e-12)
			sw += w
			swd += w * d[i]
			ss += s[i]
		}
		m.Offset = swd / sw
		m.SamplingVar = ss / float64(len(d))
		for i := range d {
			x[i], h[i] = d[i]-m.Offset, 1
		}
		m.ClusterVar, m.LongRunVar, m.Correlation, m.BatchSize = longRun(x, s, h)
		tau2 = m.LongRunVar
	}
	m.TailUp, m.TailDown = longRunTails(x)
	var info float64
	for i := range d {
		info += 1 / math.Max(s[i]+tau2, 1e-12)
	}
	m.OffsetSE = 1 / math.Sqrt(info)
	if m.SamplingVar > 0 {
		m.Dispersion = 1 + m.LongRunVar/m.SamplingVar
	}
	return m
}

// mixBoundary is the |S| at which the equal-weight mixture of one-sided normal-mixture
// martingales over rhos reaches 1/α for intrinsic time v.
func mixBoundary(v float64, rhos []float64, alpha float64) float64 {
	thr := math.Log(1 / alpha)
	lo, hi := 0.0, math.Sqrt(v+1)
	for logMixOneSided(hi, v, rhos) < thr && hi < 1e300 {
		hi *= 2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if logMixOneSided(mid, v, rhos) < thr {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo <= 1e-12*hi {
			break
		}
	}
	return hi
}

// ProofStep is one step of a plan as ProofTime sees it: the canary's share of the
// experiment's traffic and the step's hold in intervals.
type ProofStep struct {
	Share     float64
	Intervals int
}

// Proof is how long a healthy canary (no effect) takes to be proven non-inferior under a
// noise model, by the live sequence's own boundary.
type Proof struct {
	// Median and P90 are the intervals from the start of the ramp after which the
	// sequence's upper bound is below the tolerance with probability 50% and 90%; 0 with
	// Reached false when that does not happen within the intervals allowed.
	Median, P90 int
	Reached     bool
	// Limit is the smallest half-width the offset's uncertainty alone allows: at or above
	// the tolerance, no amount of live traffic proves non-inferiority (a longer history
	// or a wider tolerance does).
	Limit float64
}

// ForHarm is m as ProofTime should see it for a KPI whose harm is in direction h.
// ProofTime proves the upper bound, as for a KPI whose increase is the harm, and downward
// bursts widen that bound; where a decrease is the harm the lower bound proves, which
// upward bursts widen, so the tails trade places.
func (m NoiseModel) ForHarm(h Direction) NoiseModel {
	if h == Decrease {
		m.TailUp, m.TailDown = m.TailDown, m.TailUp
	}
	return m
}

// ProofTime forecasts when a healthy canary is proven non-inferior at tolerance tol (on
// the log scale for relative KPIs) and level α, following steps and then the last step's
// share up to maxIntervals. It is the expectation a plan's holds should be sized from: the
// sequence's half-width at the information the plan accrues (sampling noise at each step's
// share plus the model's long-run cluster noise), with the offset's uncertainty folded in
// as the live sequence folds it (offsetShrink).
// gauge selects the gauge boundary; histShare is the canary's share in the history (for a
// gauge's sampling noise; ratio models carry their own). The proof is the upper bound's,
// as for a KPI whose increase is the harm: only m.TailDown widens it. Pass
// m.ForHarm(harm) for any KPI.
func ProofTime(m NoiseModel, tol, alpha float64, gauge bool, histShare float64, steps []ProofStep, maxIntervals int, opt RatioOptions, plannedIntervals int) Proof {
	alpha = validAlpha(alpha)
	opt.defaults()
	_, se := m.offset()
	var rho float64
	if gauge {
		w := float64(max(plannedIntervals, 1)) / math.Max(m.LongRunVar+m.SamplingVar, 1e-12)
		rho = nmRho(w*offsetShrink(w, se), alpha)
	}
	// halfAt is the sequence's half-width at intrinsic time v (offset folded in).
	halfAt := func(v float64) float64 {
		if gauge {
			return nmOneSided(v, rho, alpha) / v
		}
		return mixBoundary(v, opt.Precisions, alpha) / v
	}
	var out Proof
	if se > 0 {
		out.Limit = halfAt(1 / (se * se))
	}
	if !m.Usable() || out.Limit >= tol || len(steps) == 0 {
		return out
	}
	g := func(r float64) float64 { return 1/r + 1/(1-r) }
	info := func(share float64) float64 {
		share = math.Min(math.Max(share, 1e-6), 1-1e-6)
		if gauge {
			s2 := m.SamplingVar
			if histShare > 0 && histShare < 1 {
				s2 *= g(share) / g(histShare)
			}
			return 1 / math.Max(s2+m.LongRunVar, 1e-12)
		}
		phi := math.Exp(m.Offset)
		pi := share * phi / (share*phi + 1 - share)
		// events scale with the share-weighted rates: canary ∝ share·φ, baselines ∝ 1−share
		hs := m.CanaryShare
		if !(hs > 0 && hs < 1) {
			hs = 0.5
		}
		e := m.Events * (share*phi + 1 - share) / (hs*phi + 1 - hs)
		v := e * pi * (1 - pi)
		return v / (1 + v*m.LongRunVar)
	}
	var w, w3 float64
	thr := math.Log(1 / alpha)
	for t := 1; t <= maxIntervals; t++ {
		k, share := t, steps[len(steps)-1].Share
		for _, st := range steps {
			if k <= st.Intervals {
				share = st.Share
				break
			}
			k -= st.Intervals
		}
		i := info(share)
		w += i
		w3 += i * i * i
		if t < modelMinIntervals || !(w > 0) {
			continue
		}
		f := offsetShrink(w, se)
		v := w * f
		// the upper bound proves non-inferiority: skew toward the baselines widens it
		slack := tol - halfAt(v) - jumpScale(f*f*f*m.TailDown*w3, v)*thr/v
		if out.Median == 0 && slack >= 0 {
			out.Median = t
		}
		if slack >= 1.2815515655446004/math.Sqrt(v) {
			out.P90, out.Reached = t, true
			return out
		}
	}
	return out
}
