package analysis

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mathext"
)

// RateRatioResult is the exact conditional test of two event rates (R's
// poisson.test with two samples): canary events c of exposure Tc against
// baseline events b of exposure Tb, conditioned on c+b.
type RateRatioResult struct {
	// RateRatio is (c/Tc)/(b/Tb); 0 when c = 0, and the upper interval end
	// stays finite only when b > 0 (otherwise it is +Inf, shown as "unbounded").
	RateRatio float64
	// Lower and Upper bound the rate ratio (Clopper–Pearson, inverted).
	Lower float64
	// Upper is the upper end of the interval; +Inf when b = 0.
	Upper float64
	// PValue tests RateRatio = Ratio0 under Alternative.
	PValue float64
	// Ratio0 is the null rate ratio.
	Ratio0 float64
	// ConfLevel is the interval's confidence level.
	ConfLevel float64
	// Alternative is the hypothesis the p-value refers to.
	Alternative Alternative
}

// RateRatioTest is the exact conditional binomial test for two Poisson rates:
// given e = c + b events, c ~ Binomial(e, p) with p = r0·Tc/(r0·Tc + Tb). It
// tests counts as counts, which a t-test on per-interval rates does not, and
// it is the fixed-horizon companion of the live conditional-binomial
// e-process. Exposures are request counts (or durations); counts may be up to
// about 10⁹·10³ before float rounding matters.
//
// The two-sided p-value sums the probabilities of outcomes no more likely than
// the one observed (relative tolerance 1e-7), as R and scipy do. The interval is
// the Clopper–Pearson interval of p mapped to the rate-ratio scale.
func RateRatioTest(c, tc, b, tb, ratio0, confLevel float64, alt ...Alternative) (RateRatioResult, error) {
	a := pickAlt(alt)
	res := RateRatioResult{Ratio0: ratio0, ConfLevel: confLevel, Alternative: a, PValue: 1, Upper: math.Inf(1)}
	for _, v := range []struct {
		name string
		x    float64
	}{{"canary events", c}, {"canary exposure", tc}, {"baseline events", b}, {"baseline exposure", tb}, {"null ratio", ratio0}} {
		if math.IsNaN(v.x) || math.IsInf(v.x, 0) {
			return res, fmt.Errorf("rate ratio test: %s = %v: %w", v.name, v.x, ErrNonFinite)
		}
		if v.x < 0 {
			return res, fmt.Errorf("rate ratio test: %s = %v is negative: %w", v.name, v.x, ErrInvalidArgument)
		}
	}
	if c != math.Floor(c) || b != math.Floor(b) {
		return res, fmt.Errorf("rate ratio test: event counts %v and %v must be whole: %w", c, b, ErrInvalidArgument)
	}
	if tc == 0 || tb == 0 || ratio0 == 0 {
		return res, fmt.Errorf("rate ratio test: exposures %v, %v and null ratio %v must be positive: %w", tc, tb, ratio0, ErrInvalidArgument)
	}
	if !(confLevel > 0 && confLevel < 1) {
		return res, fmt.Errorf("rate ratio test: confidence level %v not in (0,1): %w", confLevel, ErrInvalidArgument)
	}
	n := c + b
	if n == 0 {
		res.RateRatio, res.Lower = 0, 0
		return res, fmt.Errorf("rate ratio test: no events: %w", ErrNotEnoughData)
	}
	p0 := ratio0 * tc / (ratio0*tc + tb)
	res.PValue = BinomialTest(c, n, p0, a)
	res.RateRatio = (c / tc) / (b / tb)
	if b == 0 {
		res.RateRatio = math.Inf(1)
	}
	alpha := 1 - confLevel
	var pl, pu float64
	switch a {
	case Greater:
		pl, pu = clopperPearsonLower(c, n, alpha), 1
	case Less:
		pl, pu = 0, clopperPearsonUpper(c, n, alpha)
	default:
		pl, pu = clopperPearsonLower(c, n, alpha/2), clopperPearsonUpper(c, n, alpha/2)
	}
	toRatio := func(p float64) float64 {
		if p >= 1 {
			return math.Inf(1)
		}
		return p / (1 - p) * tb / tc
	}
	res.Lower, res.Upper = toRatio(pl), toRatio(pu)
	return res, nil
}

func clopperPearsonLower(x, n, alpha float64) float64 {
	if x == 0 {
		return 0
	}
	return mathext.InvRegIncBeta(x, n-x+1, alpha)
}

func clopperPearsonUpper(x, n, alpha float64) float64 {
	if x == n {
		return 1
	}
	return mathext.InvRegIncBeta(x+1, n-x, 1-alpha)
}

// BinomialTest is the exact binomial test of k successes in n trials against
// probability p (R binom.test, scipy binomtest). Invalid inputs give p = 1,
// the answer that never triggers an action.
func BinomialTest(k, n, p float64, alt Alternative) float64 {
	if !(n >= 1) || k < 0 || k > n || !(p >= 0 && p <= 1) || math.IsInf(n, 0) {
		return 1
	}
	switch a := alt; a {
	case Greater:
		return clamp01(binomSF(k-1, n, p))
	case Less:
		return clamp01(binomCDF(k, n, p))
	}
	const relErr = 1 + 1e-7
	d := binomPMF(k, n, p)
	m := n * p
	if k == m {
		return 1
	}
	if k < m {
		// count outcomes above the mode with pmf ≤ d: pmf decreases on [ceil(m), n]
		lo, hi := math.Ceil(m), n
		// smallest i in [lo, n] with pmf(i) ≤ d·relErr
		if binomPMF(hi, n, p) > d*relErr {
			return clamp01(binomCDF(k, n, p))
		}
		for lo < hi {
			mid := math.Floor((lo + hi) / 2)
			if binomPMF(mid, n, p) <= d*relErr {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		y := n - lo + 1
		return clamp01(binomCDF(k, n, p) + binomSF(n-y, n, p))
	}
	// k > m: count outcomes below the mode with pmf ≤ d: pmf increases on [0, floor(m)]
	lo, hi := 0.0, math.Floor(m)
	if binomPMF(0, n, p) > d*relErr {
		return clamp01(binomSF(k-1, n, p))
	}
	// largest i in [0, floor(m)] with pmf(i) ≤ d·relErr
	for lo < hi {
		mid := math.Ceil((lo + hi) / 2)
		if binomPMF(mid, n, p) <= d*relErr {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	y := lo + 1
	return clamp01(binomCDF(y-1, n, p) + binomSF(k-1, n, p))
}

// binomCDF is P(X ≤ k) for X ~ Binomial(n, p).
func binomCDF(k, n, p float64) float64 {
	k = math.Floor(k)
	switch {
	case k < 0:
		return 0
	case k >= n:
		return 1
	case p == 0:
		return 1
	case p == 1:
		return 0
	}
	return mathext.RegIncBeta(n-k, k+1, 1-p)
}

// binomSF is P(X > k).
func binomSF(k, n, p float64) float64 {
	k = math.Floor(k)
	switch {
	case k < 0:
		return 1
	case k >= n:
		return 0
	case p == 0:
		return 0
	case p == 1:
		return 1
	}
	return mathext.RegIncBeta(k+1, n-k, p)
}

// binomPMF is Loader's saddle-point binomial density (R dbinom_raw), accurate
// in relative terms even for n ≈ 10⁹ where lgamma differences lose digits.
func binomPMF(x, n, p float64) float64 {
	q := 1 - p
	if p == 0 {
		if x == 0 {
			return 1
		}
		return 0
	}
	if q == 0 {
		if x == n {
			return 1
		}
		return 0
	}
	if x == 0 {
		if n == 0 {
			return 1
		}
		if p < 0.1 {
			return math.Exp(-bd0(n, n*q) - n*p)
		}
		return math.Exp(n * math.Log(q))
	}
	if x == n {
		if q < 0.1 {
			return math.Exp(-bd0(n, n*p) - n*q)
		}
		return math.Exp(n * math.Log(p))
	}
	if x < 0 || x > n {
		return 0
	}
	lc := stirlerr(n) - stirlerr(x) - stirlerr(n-x) - bd0(x, n*p) - bd0(n-x, n*q)
	lf := math.Log(2*math.Pi) + math.Log(x) + math.Log1p(-x/n)
	return math.Exp(lc - 0.5*lf)
}

// stirlerr is log(n!) − log(√(2π n)(n/e)^n), from R's nmath.
func stirlerr(n float64) float64 {
	const (
		s0 = 1.0 / 12
		s1 = 1.0 / 360
		s2 = 1.0 / 1260
		s3 = 1.0 / 1680
		s4 = 1.0 / 1188
	)
	if n <= 15 {
		nn := n + n
		if nn == math.Floor(nn) && nn <= 30 {
			return sferrHalves[int(nn)]
		}
		lg, _ := math.Lgamma(n + 1)
		return lg - (n+0.5)*math.Log(n) + n - 0.5*math.Log(2*math.Pi)
	}
	nn := n * n
	switch {
	case n > 500:
		return (s0 - s1/nn) / n
	case n > 80:
		return (s0 - (s1-s2/nn)/nn) / n
	case n > 35:
		return (s0 - (s1-(s2-s3/nn)/nn)/nn) / n
	default:
		return (s0 - (s1-(s2-(s3-s4/nn)/nn)/nn)/nn) / n
	}
}

var sferrHalves = [31]float64{
	0.0,
	0.1534264097200273452913848,
	0.0810614667953272582196702,
	0.0548141210519176538961390,
	0.0413406959554092940938221,
	0.03316287351993628748511048,
	0.02767792568499833914878929,
	0.02374616365629749597132920,
	0.02079067210376509311152277,
	0.01848845053267318523077934,
	0.01664469118982119216319487,
	0.01513497322191737887351255,
	0.01387612882307074799874573,
	0.01281046524292022692424986,
	0.01189670994589177009505572,
	0.01110455975820691732662991,
	0.010411265261972096497478567,
	0.009799416126158803298389475,
	0.009255462182712732917728637,
	0.008768700134139385462952823,
	0.008330563433362871256469318,
	0.007934114564314020547248100,
	0.007573675487951840794972024,
	0.007244554301320383179543912,
	0.006942840107209529865664152,
	0.006665247032707682442354394,
	0.006408994188004207068439631,
	0.006171712263039457647532867,
	0.005951370112758847735624416,
	0.005746216513010115682023589,
	0.005554733551962801371038690,
}

// bd0 is x·log(x/np) + np − x computed without cancellation (Loader 2000).
func bd0(x, np float64) float64 {
	if math.Abs(x-np) < 0.1*(x+np) {
		v := (x - np) / (x + np)
		s := (x - np) * v
		if math.Abs(s) < math.SmallestNonzeroFloat64 {
			return s
		}
		ej := 2 * x * v
		v *= v
		for j := 1; j < 1000; j++ {
			ej *= v
			s1 := s + ej/float64(2*j+1)
			if s1 == s {
				return s1
			}
			s = s1
		}
		return s
	}
	return x*math.Log(x/np) + np - x
}

// HolmAdjust returns Holm–Bonferroni adjusted p-values (R p.adjust "holm") in
// the input order: they control the family-wise error rate across KPIs for
// fixed-horizon reports. NaN inputs are treated as 1.
func HolmAdjust(p []float64) []float64 {
	n := len(p)
	out := make([]float64, n)
	idx := sortedIndex(p, false)
	running := 0.0
	for rank, i := range idx {
		v := float64(n-rank) * sanitizeP(p[i])
		running = math.Max(running, v)
		out[i] = math.Min(1, running)
	}
	return out
}

// BenjaminiHochbergAdjust returns Benjamini–Hochberg adjusted p-values (R
// p.adjust "BH") in the input order: they control the false discovery rate when
// many exploratory metrics are shown together. NaN inputs are treated as 1.
func BenjaminiHochbergAdjust(p []float64) []float64 {
	n := len(p)
	out := make([]float64, n)
	idx := sortedIndex(p, true)
	running := 1.0
	for rank, i := range idx {
		k := float64(n - rank)
		v := float64(n) / k * sanitizeP(p[i])
		running = math.Min(running, v)
		out[i] = math.Min(1, running)
	}
	return out
}

func sanitizeP(p float64) float64 {
	if math.IsNaN(p) || p > 1 {
		return 1
	}
	if p < 0 {
		return 0
	}
	return p
}

// sortedIndex returns indices of p sorted ascending (or descending), stable so
// equal p-values keep their input order.
func sortedIndex(p []float64, desc bool) []int {
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		pa, pb := sanitizeP(p[a]), sanitizeP(p[b])
		if desc {
			pa, pb = pb, pa
		}
		switch {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return 0
	})
	return idx
}

// MarshalJSON encodes infinite ratio bounds (no baseline events) as null.
func (r RateRatioResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"rate_ratio": jsonNumber(r.RateRatio), "lower": jsonNumber(r.Lower), "upper": jsonNumber(r.Upper),
		"p_value": r.PValue, "ratio0": r.Ratio0, "conf_level": r.ConfLevel, "alternative": r.Alternative.String(),
	})
}
