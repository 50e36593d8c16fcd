package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// Classification is a Kayenta metric label. Verdict keeps Kayenta's labels so
// a team migrating from Kayenta reads the same words on the same data.
type Classification string

const (
	// Pass means no significant, large-enough difference.
	Pass Classification = "Pass"
	// High means the canary is significantly higher than the baseline.
	High Classification = "High"
	// Low means the canary is significantly lower than the baseline.
	Low Classification = "Low"
	// Nodata means one side had no values; it is never a pass.
	Nodata Classification = "Nodata"
)

// Direction says which change of a metric Kayenta treats as a failure.
type Direction string

const (
	// Either flags both High and Low.
	Either Direction = "Either"
	// Increase flags only High.
	Increase Direction = "Increase"
	// Decrease flags only Low.
	Decrease Direction = "Decrease"
)

// NaNStrategy says what Kayenta does with NaN values before classifying.
type NaNStrategy string

const (
	// RemoveNaN drops NaN values (Kayenta's default); an emptied sample is
	// Nodata.
	RemoveNaN NaNStrategy = "Remove"
	// ReplaceNaN replaces NaN values with 0, and an empty sample then passes,
	// as Kayenta does.
	ReplaceNaN NaNStrategy = "Replace"
)

// EffectMeasure names the effect size a Kayenta classifier gates on.
type EffectMeasure string

const (
	// MeanRatio is mean(canary)/mean(baseline), NaN when either mean is 0.
	MeanRatio EffectMeasure = "meanRatio"
	// CLES is the common-language effect size P(canary > baseline), ties
	// counting one half.
	CLES EffectMeasure = "cles"
)

// ClassifierOptions are the parameters of Kayenta's Mann-Whitney classifier.
// Zero fields take Kayenta's production defaults (tolerance 0.25, confidence
// 0.98, thresholds 1.0 — or 0.5 for CLES — meaning "no effect-size gate").
type ClassifierOptions struct {
	// Tolerance is the fraction of |Hodges–Lehmann estimate| the interval must
	// clear.
	Tolerance float64
	// ConfLevel is the Mann-Whitney interval's confidence level.
	ConfLevel float64
	// AllowedDecrease and AllowedIncrease are the effect-size thresholds
	// (Kayenta's effectSizeThresholds); nil takes the default.
	AllowedDecrease *float64
	// AllowedIncrease is the upper effect-size threshold.
	AllowedIncrease *float64
	// CriticalDecrease and CriticalIncrease are the critical thresholds;
	// nil means 1.0.
	CriticalDecrease *float64
	// CriticalIncrease is the upper critical threshold.
	CriticalIncrease *float64
	// Effect selects meanRatio (default) or cles.
	Effect EffectMeasure
	// Direction selects which changes fail (default Either).
	Direction Direction
	// NaN selects how NaN values are handled (default Remove).
	NaN NaNStrategy
	// Critical marks a metric whose failure fails the whole canary.
	Critical bool
	// NoiseSeed seeds the Gaussian jitter Kayenta adds when both samples are
	// constant; fixed by default so classification is reproducible.
	NoiseSeed uint64
}

// MetricResult is a Kayenta-compatible classification of one metric.
type MetricResult struct {
	// Classification is Pass, High, Low or Nodata.
	Classification Classification
	// Critical is true when a critical metric failed (or had no data).
	Critical bool
	// Deviation is the effect size (meanRatio or CLES); NaN when undefined
	// (a zero mean), encoded as null in JSON by DeviationOK.
	Deviation float64
	// DeviationOK is false when Deviation is undefined.
	DeviationOK bool
	// Reason says why, for a person.
	Reason string
	// Interval is the Mann-Whitney interval and Hodges–Lehmann estimate of
	// canary − baseline, when computed.
	Interval *ShiftEstimate
}

func orDefault(p *float64, d float64) float64 {
	if p == nil {
		return d
	}
	return *p
}

// ClassifyKayenta reproduces Kayenta's MannWhitneyClassifier (commit a69573be)
// on one metric's baseline and canary values: NaN strategy, identical-data and
// single-value shortcuts, Gaussian jitter for two constant samples, the
// Mann-Whitney interval against ±tolerance·|HL estimate|, the effect-size gate
// and critical thresholds. An undefined effect size (zero mean) does not block
// a High/Low label, which is what Kayenta's own tests expect.
func ClassifyKayenta(baseline, canary []float64, o ClassifierOptions) MetricResult {
	if o.Tolerance == 0 {
		o.Tolerance = 0.25
	}
	if o.ConfLevel == 0 {
		o.ConfLevel = 0.98
	}
	if o.Effect == "" {
		o.Effect = MeanRatio
	}
	if o.Direction == "" {
		o.Direction = Either
	}
	if o.NaN == "" {
		o.NaN = RemoveNaN
	}
	defEffect := 1.0
	if o.Effect == CLES {
		defEffect = 0.5
	}
	allowedDec, allowedInc := orDefault(o.AllowedDecrease, defEffect), orDefault(o.AllowedIncrease, defEffect)
	critDec, critInc := orDefault(o.CriticalDecrease, 1), orDefault(o.CriticalIncrease, 1)

	control := handleNaN(baseline, o.NaN)
	experiment := handleNaN(canary, o.NaN)
	one := MetricResult{Deviation: 1, DeviationOK: true}
	if len(control) == 0 || len(experiment) == 0 {
		if o.NaN == ReplaceNaN {
			one.Classification = Pass
			one.Reason = "missing data replaced: nothing to compare"
			return one
		}
		one.Classification = Nodata
		one.Critical = o.Critical
		one.Reason = fmt.Sprintf("missing data (baseline %d values, canary %d values)", len(control), len(experiment))
		return one
	}
	sc, se := slices.Clone(control), slices.Clone(experiment)
	slices.Sort(sc)
	slices.Sort(se)
	if slices.Equal(sc, se) {
		one.Classification = Pass
		one.Reason = "the canary and baseline data are identical"
		return one
	}
	if sc[0] == sc[len(sc)-1] && se[0] == se[len(se)-1] && sc[0] == se[0] {
		one.Classification = Pass
		one.Reason = "all values are equal"
		return one
	}
	for _, v := range append(sc, se...) {
		if math.IsInf(v, 0) {
			return MetricResult{Classification: Nodata, Critical: o.Critical, Reason: "infinite values cannot be classified"}
		}
	}
	// Both samples constant but different: Kayenta jitters them with
	// Gaussian noise of sd 1e-5 × value so the rank statistic has a variance.
	if sc[0] == sc[len(sc)-1] && se[0] == se[len(se)-1] {
		rng := rand.New(rand.NewPCG(o.NoiseSeed, 0x6b6179656e7461))
		jitter := func(v []float64) []float64 {
			sd := v[0] * 1e-5
			out := make([]float64, len(v))
			for i, x := range v {
				out[i] = x + rng.NormFloat64()*sd
			}
			slices.Sort(out)
			return out
		}
		se = jitter(se)
		sc = jitter(sc)
	}
	hl, err := hodgesLehmannSorted(se, sc, o.ConfLevel)
	if err != nil {
		return MetricResult{Classification: Pass, Deviation: 1, DeviationOK: true, Reason: "all values tied: no detectable difference"}
	}
	var dev float64
	if o.Effect == CLES {
		dev = clesSorted(sc, se)
	} else {
		dev = meanRatio(sc, se)
	}
	devOK := !math.IsNaN(dev)
	bound := o.Tolerance * math.Abs(hl.Estimate)
	isHigh := (o.Direction == Increase || o.Direction == Either) && hl.Lower > bound && (!devOK || dev >= allowedInc)
	isLow := (o.Direction == Decrease || o.Direction == Either) && hl.Upper < -bound && (!devOK || dev <= allowedDec)
	res := MetricResult{Classification: Pass, Deviation: dev, DeviationOK: devOK, Interval: &hl}
	switch {
	case isHigh:
		res.Classification = High
		res.Reason = fmt.Sprintf("canary higher: interval [%.4g, %.4g] above %.4g", hl.Lower, hl.Upper, bound)
		res.Critical = o.Critical && (!devOK || dev >= critInc)
	case isLow:
		res.Classification = Low
		res.Reason = fmt.Sprintf("canary lower: interval [%.4g, %.4g] below %.4g", hl.Lower, hl.Upper, -bound)
		res.Critical = o.Critical && (!devOK || dev <= critDec)
	}
	if res.Critical {
		res.Reason += " (critical)"
	}
	return res
}

func handleNaN(v []float64, s NaNStrategy) []float64 {
	out := make([]float64, 0, len(v))
	for _, x := range v {
		if math.IsNaN(x) {
			if s == ReplaceNaN {
				out = append(out, 0)
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

func meanRatio(control, experiment []float64) float64 {
	mc, _ := meanVar(control)
	me, _ := meanVar(experiment)
	if mc == 0 || me == 0 {
		return math.NaN()
	}
	return me / mc
}

// clesSorted is P(experiment > control) with ties counting one half, from
// the rank sum as Kayenta computes it.
func clesSorted(control, experiment []float64) float64 {
	m, n := float64(len(experiment)), float64(len(control))
	r1, _ := rankSumX(experiment, control, 0)
	return (2*r1 - m*(m+1)) / (2 * n * m)
}

// QuantileType7 is R's default quantile (type 7, linear interpolation between
// order statistics), which gonum does not provide; Kayenta's outlier fences
// use it. sorted must be ascending and non-empty; p is clamped to [0, 1].
func QuantileType7(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	p = math.Max(0, math.Min(1, p))
	h := float64(n-1) * p
	lo := math.Floor(h)
	i := int(lo)
	if i >= n-1 {
		return sorted[n-1]
	}
	return sorted[i] + (h-lo)*(sorted[i+1]-sorted[i])
}

// IQROutliers marks values outside the Tukey fences Q1 − factor·IQR and
// Q3 + factor·IQR (R type-7 quartiles), as Kayenta's IQR detector does. With
// reduceSensitivity the fences are widened to at least the 1st and 99th
// percentiles, so a tight sample does not lose its ordinary tail. NaN values
// are never outliers (handle them with a NaN strategy first).
func IQROutliers(v []float64, factor float64, reduceSensitivity bool) []bool {
	out := make([]bool, len(v))
	s := make([]float64, 0, len(v))
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return out
	}
	sort.Float64s(s)
	q1, q3 := QuantileType7(s, 0.25), QuantileType7(s, 0.75)
	iqr := q3 - q1
	lo, hi := q1-factor*iqr, q3+factor*iqr
	if reduceSensitivity {
		lo = math.Min(lo, QuantileType7(s, 0.01))
		hi = math.Max(hi, QuantileType7(s, 0.99))
	}
	for i, x := range v {
		out[i] = !math.IsNaN(x) && (x < lo || x > hi)
	}
	return out
}

// RemoveOutliers returns v without the values IQROutliers marks.
func RemoveOutliers(v []float64, factor float64, reduceSensitivity bool) []float64 {
	mark := IQROutliers(v, factor, reduceSensitivity)
	out := make([]float64, 0, len(v))
	for i, x := range v {
		if !mark[i] {
			out = append(out, x)
		}
	}
	return out
}

// ScoredMetric is one classified metric fed to the weighted group score.
type ScoredMetric struct {
	// Name identifies the metric in the score's explanation.
	Name string
	// Classification is the metric's label.
	Classification Classification
	// Groups are the metric's groups (Kayenta uses the first).
	Groups []string
	// Critical is true when the metric's failure is critical.
	Critical bool
}

// Score is Kayenta's weighted-sum canary score.
type Score struct {
	// Summary is the score in [0, 100], rounded to 2 decimals as Kayenta does.
	Summary float64
	// Groups holds each group's score (percentage of its metrics that passed).
	Groups map[string]float64
	// CriticalFailure is true when a critical metric failed or had no data.
	CriticalFailure bool
}

// KayentaScore rolls metric labels up into Kayenta's weighted group score:
// each group scores the percentage of its classified (non-Nodata) metrics that
// passed; groups get their configured weights, the rest share the remainder of
// 100 equally; a group that is all Nodata counts as 100 but half or more Nodata
// metrics overall forces 0; any critical failure forces 0.
func KayentaScore(metrics []ScoredMetric, groupWeights map[string]float64) Score {
	type tally struct{ pass, total, nodata, all int }
	groups := map[string]*tally{}
	var order []string
	nodata, critical := 0, false
	for _, m := range metrics {
		g := ""
		if len(m.Groups) > 0 {
			g = m.Groups[0]
		}
		t, ok := groups[g]
		if !ok {
			t = &tally{}
			groups[g] = t
			order = append(order, g)
		}
		t.all++
		switch m.Classification {
		case Nodata:
			t.nodata++
			nodata++
			if m.Critical {
				critical = true
			}
		case Pass:
			t.pass++
			t.total++
		default:
			t.total++
			if m.Critical {
				critical = true
			}
		}
	}
	res := Score{Groups: map[string]float64{}, CriticalFailure: critical}
	if len(metrics) == 0 {
		return res
	}
	// weights: explicit ones, the remainder of 100 split among the others
	explicit, unweighted := 0.0, 0
	for _, g := range order {
		if w, ok := groupWeights[g]; ok {
			explicit += w
		} else {
			unweighted++
		}
	}
	weight := func(g string) float64 {
		if w, ok := groupWeights[g]; ok {
			return w
		}
		return math.Max(0, 100-explicit) / float64(unweighted)
	}
	total := 0.0
	for _, g := range order {
		t := groups[g]
		score := 0.0
		if t.total > 0 {
			score = 100 * float64(t.pass) / float64(t.total)
		}
		res.Groups[g] = score
		contrib := score
		if t.total == 0 {
			contrib = 100 // an all-Nodata group does not drag the summary down
		}
		total += contrib * weight(g) / 100
	}
	if critical || 2*nodata >= len(metrics) {
		total = 0
	}
	res.Summary = math.Round(total*100) / 100
	return res
}
