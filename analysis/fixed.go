package analysis

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mathext"
	"gonum.org/v1/gonum/stat/distuv"
)

// Alternative names the alternative hypothesis of a fixed-horizon test, so a
// caller that only cares about harm in one direction can ask a one-sided
// question and get the matching p-value.
type Alternative int

const (
	// TwoSided tests x ≠ y; it is the default because reports show both
	// directions.
	TwoSided Alternative = iota
	// Greater tests x > y (x shifted up relative to y).
	Greater
	// Less tests x < y.
	Less
)

// String returns the scipy/R spelling of the alternative, for reports.
func (a Alternative) String() string {
	switch a {
	case Greater:
		return "greater"
	case Less:
		return "less"
	default:
		return "two-sided"
	}
}

// TestResult is the outcome of a fixed-horizon two-sample test. Fields are
// always finite except Statistic, which is ±Inf when one sample is constant
// and the means differ (the evidence is then unbounded, and PValue is 0).
type TestResult struct {
	// Statistic is Welch's t, or the Mann-Whitney U of x.
	Statistic float64
	// PValue is the p-value under Alternative, in [0, 1].
	PValue float64
	// DF is Welch's degrees of freedom (0 for Mann-Whitney).
	DF float64
	// Z is the continuity- and tie-corrected normal deviate of Mann-Whitney
	// (0 for Welch).
	Z float64
	// Alternative is the hypothesis the p-value refers to.
	Alternative Alternative
}

func pickAlt(alt []Alternative) Alternative {
	if len(alt) > 0 {
		return alt[0]
	}
	return TwoSided
}

func checkFinite(name string, v []float64) error {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%s[%d] = %v: %w", name, i, x, ErrNonFinite)
		}
	}
	return nil
}

func checkNotNaN(name string, v []float64) error {
	for i, x := range v {
		if math.IsNaN(x) {
			return fmt.Errorf("%s[%d] is NaN: %w", name, i, ErrNonFinite)
		}
	}
	return nil
}

// meanVar returns the mean and the unbiased (n−1) variance by two passes,
// which is what numpy and R do and keeps the oracle comparison tight.
func meanVar(v []float64) (mean, variance float64) {
	n := float64(len(v))
	var s float64
	for _, x := range v {
		s += x
	}
	mean = s / n
	if len(v) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range v {
		d := x - mean
		ss += d * d
	}
	return mean, ss / (n - 1)
}

// normalSF is the standard normal survival function computed with erfc, so
// that tiny p-values keep their relative accuracy (gonum's Normal.Survival
// uses 1−erf and loses it beyond z≈8).
func normalSF(z float64) float64 {
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// studentTSF is the Student-t survival function with ν degrees of freedom.
func studentTSF(t, nu float64) float64 {
	if math.IsInf(t, 1) {
		return 0
	}
	if math.IsInf(t, -1) {
		return 1
	}
	if math.IsInf(nu, 1) || nu > 1e12 {
		return normalSF(t)
	}
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: nu}.Survival(t)
}

func clamp01(p float64) float64 {
	if math.IsNaN(p) {
		return 1
	}
	return math.Max(0, math.Min(1, p))
}

// WelchTTest compares the means of x and y without assuming equal variances
// (Welch 1947), which is the right default for canary and baseline clusters
// whose noise differs. It needs at least two finite values in each sample.
//
// Where scipy returns NaN (both samples constant), this returns a defined
// result: t = 0 and p = 1 when the means are equal, t = ±Inf and p = 0 (or 1
// for the wrong one-sided alternative) when they differ.
func WelchTTest(x, y []float64, alt ...Alternative) (TestResult, error) {
	a := pickAlt(alt)
	res := TestResult{Alternative: a, PValue: 1}
	if len(x) < 2 || len(y) < 2 {
		return res, fmt.Errorf("welch t-test needs ≥2 values per sample, have %d and %d: %w", len(x), len(y), ErrNotEnoughData)
	}
	if err := checkFinite("x", x); err != nil {
		return res, fmt.Errorf("welch t-test: %w", err)
	}
	if err := checkFinite("y", y); err != nil {
		return res, fmt.Errorf("welch t-test: %w", err)
	}
	// t and ν are scale-free: rescale extreme magnitudes so squares cannot
	// overflow (or underflow) and turn a real difference into ±Inf or 0/0.
	if m := maxAbs(x, y); m > 1e100 || (m > 0 && m < 1e-100) {
		x, y = scaled(x, 1/m), scaled(y, 1/m)
	}
	mx, vx := meanVar(x)
	my, vy := meanVar(y)
	nx, ny := float64(len(x)), float64(len(y))
	sx, sy := vx/nx, vy/ny
	se2 := sx + sy
	diff := mx - my
	if se2 == 0 || math.IsInf(se2, 0) || math.IsNaN(diff) {
		switch {
		case diff == 0 || math.IsNaN(diff):
			res.Statistic = 0
			res.PValue = 1
		default:
			res.Statistic = math.Inf(1)
			if diff < 0 {
				res.Statistic = math.Inf(-1)
			}
			res.PValue = tailP(res.Statistic, a, func(z float64) float64 {
				if z > 0 {
					return 0
				}
				return 1
			})
		}
		return res, nil
	}
	t := diff / math.Sqrt(se2)
	df := se2 * se2 / (sx*sx/(nx-1) + sy*sy/(ny-1))
	res.Statistic, res.DF = t, df
	res.PValue = tailP(t, a, func(z float64) float64 { return studentTSF(z, df) })
	return res, nil
}

func maxAbs(x, y []float64) float64 {
	m := 0.0
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	for _, v := range y {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

func scaled(v []float64, f float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * f
	}
	return out
}

// tailP turns a statistic into a p-value for the alternative given a survival
// function of the null distribution (symmetric about 0).
func tailP(stat float64, a Alternative, sf func(float64) float64) float64 {
	switch a {
	case Greater:
		return clamp01(sf(stat))
	case Less:
		return clamp01(sf(-stat))
	default:
		return clamp01(2 * sf(math.Abs(stat)))
	}
}

// rankSumX returns the sum of the mid-ranks of x in the pooled sample and the
// tie term Σ(t³−t). Both inputs must be sorted ascending; ranking is by exact
// float equality, as R, scipy and Apache Commons Math do.
func rankSumX(xs, ys []float64, shift float64) (rx, ties float64) {
	i, j := 0, 0
	pos := 0.0 // elements already ranked
	nx, ny := len(xs), len(ys)
	for i < nx || j < ny {
		var v float64
		switch {
		case i == nx:
			v = ys[j]
		case j == ny:
			v = xs[i] - shift
		default:
			v = math.Min(xs[i]-shift, ys[j])
		}
		cx, cy := 0, 0
		for i < nx && xs[i]-shift == v {
			i++
			cx++
		}
		for j < ny && ys[j] == v {
			j++
			cy++
		}
		t := float64(cx + cy)
		avg := pos + (t+1)/2
		rx += float64(cx) * avg
		if t > 1 {
			ties += t*t*t - t
		}
		pos += t
	}
	return rx, ties
}

// MannWhitneyUTest is the Mann-Whitney U (Wilcoxon rank-sum) test with
// mid-ranks, the tie-corrected normal approximation and a continuity
// correction — scipy's mannwhitneyu(method="asymptotic") and R's
// wilcox.test(exact=FALSE). Statistic is U of x; it suits skewed latency
// samples where a t-test's normality assumption fails. ±Inf values are ranked
// like any other value; NaN is an error.
//
// When every value is tied the variance is 0 and scipy returns NaN; this
// returns p = 1 (no evidence of a shift).
func MannWhitneyUTest(x, y []float64, alt ...Alternative) (TestResult, error) {
	a := pickAlt(alt)
	res := TestResult{Alternative: a, PValue: 1}
	if len(x) == 0 || len(y) == 0 {
		return res, fmt.Errorf("mann-whitney needs ≥1 value per sample, have %d and %d: %w", len(x), len(y), ErrNotEnoughData)
	}
	if err := checkNotNaN("x", x); err != nil {
		return res, fmt.Errorf("mann-whitney: %w", err)
	}
	if err := checkNotNaN("y", y); err != nil {
		return res, fmt.Errorf("mann-whitney: %w", err)
	}
	xs, ys := slices.Clone(x), slices.Clone(y)
	slices.Sort(xs)
	slices.Sort(ys)
	return mannWhitneySorted(xs, ys, a), nil
}

func mannWhitneySorted(xs, ys []float64, a Alternative) TestResult {
	res := TestResult{Alternative: a, PValue: 1}
	n1, n2 := float64(len(xs)), float64(len(ys))
	n := n1 + n2
	r1, ties := rankSumX(xs, ys, 0)
	u1 := r1 - n1*(n1+1)/2
	u2 := n1*n2 - u1
	res.Statistic = u1
	mu := n1 * n2 / 2
	s := math.Sqrt(n1 * n2 / 12 * ((n + 1) - ties/(n*(n-1))))
	if !(s > 0) || math.IsNaN(s) {
		return res
	}
	var u float64
	switch a {
	case Greater:
		u = u1
	case Less:
		u = u2
	default:
		u = math.Max(u1, u2)
	}
	z := (u - mu - 0.5) / s
	res.Z = z
	p := normalSF(z)
	if a == TwoSided {
		p *= 2
	}
	res.PValue = clamp01(p)
	return res
}

// ShiftEstimate is a Hodges–Lehmann location shift of x relative to y with its
// confidence interval, in the units of the data.
type ShiftEstimate struct {
	// Estimate is the Hodges–Lehmann shift x − y.
	Estimate float64
	// Lower and Upper bound the shift at ConfLevel.
	Lower float64
	// Upper is the upper end of the interval.
	Upper float64
	// ConfLevel is the interval's confidence level.
	ConfLevel float64
}

// HodgesLehmann estimates the location shift of x (experiment) relative to y
// (control) and its confidence interval the way Kayenta does, so migrating
// teams get Kayenta's numbers: R's wilcox.test(x, y, conf.int=TRUE,
// correct=TRUE, exact=FALSE) inverted by root-finding on the continuity-
// corrected, tie-corrected rank statistic with R's zeroin (Brent) at tolerance
// 1e-4. Interval ends clamp to [min(x)−max(y), max(x)−min(y)] when the
// statistic does not change sign there.
//
// Samples are sorted once and each evaluation of the rank statistic is a
// linear merge, so 10⁵×10⁵ values take tens of milliseconds. All-tied inputs
// (every pooled value equal) return ErrNotEnoughData, as Kayenta throws.
func HodgesLehmann(x, y []float64, confLevel float64) (ShiftEstimate, error) {
	res := ShiftEstimate{ConfLevel: confLevel}
	if !(confLevel > 0 && confLevel < 1) {
		return res, fmt.Errorf("hodges-lehmann confidence level %v not in (0,1): %w", confLevel, ErrInvalidArgument)
	}
	if len(x) == 0 || len(y) == 0 {
		return res, fmt.Errorf("hodges-lehmann needs ≥1 value per sample, have %d and %d: %w", len(x), len(y), ErrNotEnoughData)
	}
	if err := checkFinite("x", x); err != nil {
		return res, fmt.Errorf("hodges-lehmann: %w", err)
	}
	if err := checkFinite("y", y); err != nil {
		return res, fmt.Errorf("hodges-lehmann: %w", err)
	}
	xs, ys := slices.Clone(x), slices.Clone(y)
	slices.Sort(xs)
	slices.Sort(ys)
	return hodgesLehmannSorted(xs, ys, confLevel)
}

func hodgesLehmannSorted(xs, ys []float64, confLevel float64) (ShiftEstimate, error) {
	res := ShiftEstimate{ConfLevel: confLevel}
	nx, ny := float64(len(xs)), float64(len(ys))
	muMin := xs[0] - ys[len(ys)-1]
	muMax := xs[len(xs)-1] - ys[0]
	if xs[0] == xs[len(xs)-1] && ys[0] == ys[len(ys)-1] && xs[0] == ys[0] {
		return res, fmt.Errorf("hodges-lehmann: all observations tied: %w", ErrNotEnoughData)
	}
	wdiff := func(mu, zq float64) float64 {
		rx, ties := rankSumX(xs, ys, mu)
		dz := rx - nx*(nx+1)/2 - nx*ny/2
		corr := 0.0
		if dz > 0 {
			corr = 0.5
		} else if dz < 0 {
			corr = -0.5
		}
		sigma := math.Sqrt((nx * ny / 12) * ((nx + ny + 1) - ties/((nx+ny)*(nx+ny-1))))
		if sigma == 0 {
			// every value tied at this shift (an interval end of two
			// one-point samples): the statistic is 0, not undefined
			return -zq
		}
		return (dz-corr)/sigma - zq
	}
	findRoot := func(zq float64) float64 {
		fLo := wdiff(muMin, zq)
		fHi := wdiff(muMax, zq)
		if fLo <= 0 {
			return muMin
		}
		if fHi >= 0 {
			return muMax
		}
		return zeroin(muMin, muMax, fLo, fHi, func(m float64) float64 { return wdiff(m, zq) }, 1e-4, 1000)
	}
	alpha := 1 - confLevel
	zq := mathext.NormalQuantile(alpha / 2)
	res.Lower = findRoot(-zq)
	res.Upper = findRoot(zq)
	fLo := wdiff(muMin, 0)
	fHi := wdiff(muMax, 0)
	res.Estimate = zeroin(muMin, muMax, fLo, fHi, func(m float64) float64 { return wdiff(m, 0) }, 1e-4, 1000)
	return res, nil
}

// zeroin is R's zeroin (Brent 1973) as ported in Kayenta's
// KayentaBrentSolver.brentDirect: it returns a root of f in [ax, bx] given
// f(ax) = fa and f(bx) = fb, to within 4·eps·|x| + tol/2. It is kept
// step-for-step identical to Kayenta's port (including the stop test on
// "f(b) within one ulp of 0") because the interval ends, not just the root, are
// what decide Kayenta's classification.
func zeroin(ax, bx, fa, fb float64, f func(float64) float64, tol float64, maxit int) float64 {
	const eps = 2.220446049250313e-16
	a, b := ax, bx
	c, fc := a, fa
	if fa == 0 {
		return a
	}
	if fb == 0 {
		return b
	}
	for it := maxit + 1; it > 0; it-- {
		prevStep := b - a
		if math.Abs(fc) < math.Abs(fb) {
			a, b, c = b, c, b
			fa, fb, fc = fb, fc, fb
		}
		tolAct := 2*eps*math.Abs(b) + tol/2
		newStep := (c - b) / 2
		if math.Abs(newStep) <= tolAct || withinOneULPOfZero(fb) {
			return b
		}
		if math.Abs(prevStep) >= tolAct && math.Abs(fa) > math.Abs(fb) {
			var p, q float64
			cb := c - b
			if a == c {
				t1 := fb / fa
				p = cb * t1
				q = 1.0 - t1
			} else {
				q = fa / fc
				t1 := fb / fc
				t2 := fb / fa
				p = t2 * (cb*q*(q-t1) - (b-a)*(t1-1.0))
				q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
			}
			if p > 0 {
				q = -q
			} else {
				p = -p
			}
			if p < (0.75*cb*q-math.Abs(tolAct*q)/2) && p < math.Abs(prevStep*q/2) {
				newStep = p / q
			}
		}
		if math.Abs(newStep) < tolAct {
			if newStep > 0 {
				newStep = tolAct
			} else {
				newStep = -tolAct
			}
		}
		a, fa = b, fb
		b += newStep
		fb = f(b)
		if (fb > 0 && fc > 0) || (fb < 0 && fc < 0) {
			c, fc = a, fa
		}
	}
	return b
}

// withinOneULPOfZero mirrors Apache Commons Math Precision.equals(x, 0), which
// Kayenta's solver uses as its "exact root" test.
func withinOneULPOfZero(x float64) bool {
	return x == 0 || math.Abs(x) <= math.SmallestNonzeroFloat64
}

// RankComparison is the Mann-Whitney test together with the Hodges–Lehmann
// shift and its interval: what a report shows for a latency or gauge KPI.
type RankComparison struct {
	// Test is the two-sided Mann-Whitney U test of x against y.
	Test TestResult
	// Shift is the Hodges–Lehmann shift x − y with its interval; zero when
	// every value is tied (ShiftOK false).
	Shift ShiftEstimate
	// ShiftOK is false when the shift could not be estimated (all tied).
	ShiftOK bool
}

// CompareRanks runs MannWhitneyUTest and HodgesLehmann on one sort of each
// sample, which is what makes 10⁵×10⁵ values fit in well under 100 ms.
func CompareRanks(x, y []float64, confLevel float64) (RankComparison, error) {
	var res RankComparison
	if !(confLevel > 0 && confLevel < 1) {
		return res, fmt.Errorf("compare ranks: confidence level %v not in (0,1): %w", confLevel, ErrInvalidArgument)
	}
	if len(x) == 0 || len(y) == 0 {
		return res, fmt.Errorf("compare ranks: need ≥1 value per sample, have %d and %d: %w", len(x), len(y), ErrNotEnoughData)
	}
	if err := checkFinite("x", x); err != nil {
		return res, fmt.Errorf("compare ranks: %w", err)
	}
	if err := checkFinite("y", y); err != nil {
		return res, fmt.Errorf("compare ranks: %w", err)
	}
	xs, ys := slices.Clone(x), slices.Clone(y)
	slices.Sort(xs)
	slices.Sort(ys)
	res.Test = mannWhitneySorted(xs, ys, TwoSided)
	hl, err := hodgesLehmannSorted(xs, ys, confLevel)
	res.Shift, res.ShiftOK = hl, err == nil
	return res, nil
}

// jsonNumber encodes a float for JSON, which has no NaN or infinities:
// non-finite values become null.
func jsonNumber(x float64) any {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}

// MarshalJSON encodes the result with a non-finite Statistic (a constant
// sample) as null and statistic_sign carrying its sign, so results can always
// be stored.
func (r TestResult) MarshalJSON() ([]byte, error) {
	m := map[string]any{"statistic": jsonNumber(r.Statistic), "p_value": r.PValue, "alternative": r.Alternative.String()}
	if math.IsInf(r.Statistic, 0) {
		m["statistic_sign"] = math.Copysign(1, r.Statistic)
	}
	if r.DF != 0 {
		m["df"] = jsonNumber(r.DF)
	}
	if r.Z != 0 {
		m["z"] = jsonNumber(r.Z)
	}
	return json.Marshal(m)
}
