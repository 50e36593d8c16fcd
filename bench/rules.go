package bench

import (
	"math"
	"strings"

	"github.com/verdict-dev/verdict/analysis"
)

// The rules judged on identical data, in the order results show them.
const (
	RuleVerdict = "verdict"
	RuleOracle  = "oracle-sprt"
	RuleKayenta = "kayenta"
	RuleFlagger = "flagger"
	RuleNaive   = "naive-peeking"
	// RuleOracleMargin is an extra: the SPRT that knows the true effect and tests what
	// Verdict tests — harm beyond the KPI's tolerance — so its ratio to Verdict isolates the
	// price of not knowing the effect and the noise from the price of the tolerance.
	RuleOracleMargin = "oracle-sprt-margin"
)

// Rules lists the rule names in display order.
var Rules = []string{RuleVerdict, RuleOracle, RuleKayenta, RuleFlagger, RuleNaive, RuleOracleMargin}

// RuleDescriptions say how each rule is configured, for results.md.
var RuleDescriptions = map[string]string{
	RuleVerdict:      "analysis.Decide every interval on the engine's sequences: error rate (ratio, tolerance 10%), latency slow share > 250 ms (ratio, 5%) and mean (gauge, 5%, planned 150 intervals), min 10 intervals, α = 0.05 split over the 3, share check k = 1000; advance at each hold's end",
	RuleOracle:       "Wald SPRT of 'no effect' against the true effect on the affected KPI only, with the true likelihood (conditional binomial for counts, Gaussian with the generator's variance for log mean latency), reject at LR ≥ 1/α; in A/A and improvement runs it tests errors ×1.5 and latency ×1.10 at α/2 each",
	RuleKayenta:      "ClassifyKayenta (Mann-Whitney, tolerance 0.25, confidence 0.98, direction Increase) on each step's 50 per-interval values of error rate, mean and p99 latency, canary vs pooled baselines, at the step's end; score < 75 rolls back, ≥ 95 advances",
	RuleFlagger:      "each interval: canary error rate ≤ 2% (twice the normal 1%) and p99 ≤ 400 ms (≈1.5× normal); rollback after 5 failed checks (cumulative, as Flagger counts); no data is a failed check",
	RuleOracleMargin: "as oracle-sprt, but testing the KPI's tolerance (errors ×1.10, latency and slow share ×1.05) against the true effect: the best sequential test of the hypothesis Verdict tests; it cannot detect effects at or inside the tolerance",
	RuleNaive:        "from interval 10, every interval: one-sided exact rate-ratio tests on cumulative errors and slow requests and a t-test on per-interval log mean ratios, each at α/3; rollback at the first p < α/3 (share: exact binomial test per weight segment at α)",
}

// Outcome is what one rule did in one run. Intervals are 1-based; 0 means never.
type Outcome struct {
	// RollbackAt is the interval of the rollback.
	RollbackAt int
	// FlagAt is the interval the traffic-share mismatch was first flagged.
	FlagAt int
	// Promoted is true when the rule promoted the canary at the end.
	Promoted bool
	// Open names, for Verdict, the KPIs that were not yet non-inferior when the run
	// ended without a verdict (what blocked promotion), joined by commas.
	Open string
}

const (
	alpha       = 0.05
	minInterval = 10
	// Flagger-style thresholds and failed-check limit.
	flaggerMaxErrorRate = 0.02
	flaggerMaxP99       = 0.400
	flaggerThreshold    = 5
	// Kayenta score thresholds.
	kayentaPass     = 95.0
	kayentaMarginal = 75.0
)

const nRules = 6

// judge runs every rule over one run's intervals.
func (w World) judge(sc Scenario, ivs []Interval) [nRules]Outcome {
	return [nRules]Outcome{
		w.verdict(sc, ivs),
		w.oracle(sc, ivs, false),
		w.kayenta(sc, ivs),
		w.flagger(sc, ivs),
		w.naive(sc, ivs),
		w.oracle(sc, ivs, true),
	}
}

// verdict is Verdict's live decision, built as the engine builds it (engine/kpis.go):
// one RatioSequence for the error rate, one RatioSequence (slow share) and one
// GaugeSequence (mean) for the latency KPI, the share check over the three clusters,
// analysis.Decide every interval.
func (w World) verdict(sc Scenario, ivs []Interval) Outcome {
	minIv, planned := w.MinIntervals, w.PlannedIntervals
	if minIv <= 0 {
		minIv = minInterval
	}
	if planned <= 0 {
		planned = len(ivs)
	}
	errs := analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv})
	slow := analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv})
	lat := analysis.NewGaugeSequence(analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: planned})
	share := analysis.NewShareCheck(1000)
	kpis := []analysis.KPI{
		{Name: "error-rate", State: errs, Harm: analysis.Increase, Tolerance: 0.10},
		{Name: "latency (slower than 250ms)", State: slow, Harm: analysis.Increase, Tolerance: 0.05},
		{Name: "latency (mean)", State: lat, Harm: analysis.Increase, Tolerance: 0.05},
	}
	var o Outcome
	elapsed, step := 0, 0
	for k := range ivs {
		iv := &ivs[k]
		if iv.Step != step { // the world moved on to the next step's weights
			step, elapsed = iv.Step, 0
		}
		bReq, bErr, bSlow, bMean, _ := iv.baseline()
		errs.Add(iv.Errors[0], iv.Requests[0], bErr, bReq)
		slow.Add(iv.Slow[0], iv.Requests[0], bSlow, bReq)
		if iv.Requests[0] > 0 && bReq > 0 {
			lat.Add(iv.Mean[0], bMean)
		}
		_ = share.Add(iv.Requests[:], iv.Weights[:])
		elapsed++
		res := share.Result(alpha)
		d := analysis.Decide(kpis, analysis.Step{Alpha: alpha, HoldComplete: elapsed >= w.StepIntervals, Final: step == len(sc.Shares)-1, Share: &res})
		if d.ShareMismatch && o.FlagAt == 0 {
			o.FlagAt = k + 1
		}
		switch d.Action {
		case analysis.Rollback:
			o.RollbackAt = k + 1
			return o
		case analysis.Promote:
			o.Promoted = true
			return o
		}
		if k == len(ivs)-1 {
			var open []string
			for _, v := range d.KPIs {
				if v.Status != analysis.NonInferior {
					open = append(open, v.Name)
				}
			}
			if d.ShareMismatch {
				open = append(open, "traffic share")
			}
			o.Open = strings.Join(open, ", ")
		}
	}
	return o
}

// sprt is one one-sided sequential probability ratio test.
type sprt struct {
	llr, bound float64
}

func (s *sprt) crossed() bool { return s.llr >= s.bound }

// binomLLR is the conditional-binomial log likelihood ratio of rate ratio phi against
// phi0 for c canary events of e = c + b, with the canary's request share r.
func binomLLR(c, b, r, phi, phi0 float64) float64 {
	if c+b == 0 || !(r > 0 && r < 1) {
		return 0
	}
	p0 := r * phi0 / (r*phi0 + 1 - r)
	p1 := r * phi / (r*phi + 1 - r)
	return c*math.Log(p1/p0) + b*math.Log((1-p1)/(1-p0))
}

// oracle is the SPRT that knows the true effect: the fastest any sequential test of the
// same error level can be on average (Wald–Wolfowitz), a lower bound for detection.
//
// With margin it tests the tolerance (H0: ratio = 1 + tolerance) instead of "no
// effect", and never detects an effect at or inside the tolerance.
func (w World) oracle(sc Scenario, ivs []Interval, margin bool) Outcome {
	var o Outcome
	type test struct {
		kpi       string
		ratio, r0 float64
		s         sprt
	}
	null := func(kpi string) float64 {
		if !margin {
			return 1
		}
		switch kpi {
		case "errors":
			return 1.10
		case "latency", "slow":
			return 1.05
		}
		return 1
	}
	var tests []*test
	if sc.Effect.KPI == "" {
		tests = []*test{{kpi: "errors", ratio: 1.5, r0: null("errors"), s: sprt{bound: math.Log(2 / alpha)}}, {kpi: "latency", ratio: 1.10, r0: null("latency"), s: sprt{bound: math.Log(2 / alpha)}}}
	} else {
		tests = []*test{{kpi: sc.Effect.KPI, ratio: sc.Effect.Ratio, r0: null(sc.Effect.KPI), s: sprt{bound: math.Log(1 / alpha)}}}
	}
	if tests[0].kpi != "share" && tests[0].ratio <= tests[0].r0 {
		return o // nothing beyond the margin to detect
	}
	for k := range ivs {
		iv := &ivs[k]
		bReq, bErr, bSlow, bMean, _ := iv.baseline()
		r := iv.Requests[0] / (iv.Requests[0] + bReq)
		for _, t := range tests {
			switch t.kpi {
			case "errors":
				t.s.llr += binomLLR(iv.Errors[0], bErr, r, t.ratio, t.r0)
			case "slow":
				t.s.llr += binomLLR(iv.Slow[0], bSlow, r, t.ratio, t.r0)
			case "latency":
				if iv.Mean[0] > 0 && bMean > 0 {
					d := math.Log(iv.Mean[0] / bMean)
					d1, d0 := math.Log(t.ratio), math.Log(t.r0)
					t.s.llr += ((d1-d0)*d - (d1*d1-d0*d0)/2) / iv.LatVar
				}
			case "share":
				n := iv.Requests[0] + bReq
				s0 := iv.Weights[0]
				s1 := s0 * t.ratio
				t.s.llr += iv.Requests[0]*math.Log(s1/s0) + (n-iv.Requests[0])*math.Log((1-s1)/(1-s0))
			}
			if t.s.crossed() {
				if t.kpi == "share" {
					o.FlagAt = k + 1
				} else {
					o.RollbackAt = k + 1
				}
				return o
			}
		}
	}
	return o
}

// kayenta is a Kayenta canary analysis at the end of each step on that step's window:
// one value per interval per metric, canary against the pooled baselines.
func (w World) kayenta(sc Scenario, ivs []Interval) Outcome {
	var o Outcome
	opt := analysis.ClassifierOptions{Direction: analysis.Increase}
	start := 0
	for k := range ivs {
		last := k == len(ivs)-1 || ivs[k+1].Step != ivs[k].Step
		if !last {
			continue
		}
		win := ivs[start : k+1]
		start = k + 1
		var cErr, bErrs, cMean, bMeans, cP99, bP99s []float64
		for i := range win {
			iv := &win[i]
			bReq, bErr, _, bMean, bP99 := iv.baseline()
			rate := func(e, n float64) float64 {
				if n <= 0 {
					return math.NaN()
				}
				return e / n
			}
			cErr = append(cErr, rate(iv.Errors[0], iv.Requests[0]))
			bErrs = append(bErrs, rate(bErr, bReq))
			cMean = append(cMean, iv.Mean[0])
			bMeans = append(bMeans, bMean)
			cP99 = append(cP99, iv.P99[0])
			bP99s = append(bP99s, bP99)
		}
		var metrics []analysis.ScoredMetric
		for _, m := range []struct {
			name string
			b, c []float64
		}{{"error-rate", bErrs, cErr}, {"latency-mean", bMeans, cMean}, {"latency-p99", bP99s, cP99}} {
			res := analysis.ClassifyKayenta(m.b, m.c, opt)
			metrics = append(metrics, analysis.ScoredMetric{Name: m.name, Classification: res.Classification, Groups: []string{"default"}, Critical: res.Critical})
		}
		score := analysis.KayentaScore(metrics, nil)
		final := k == len(ivs)-1
		switch {
		case score.Summary < kayentaMarginal || score.CriticalFailure || (final && score.Summary < kayentaPass):
			o.RollbackAt = k + 1
			return o
		case final:
			o.Promoted = true
		}
	}
	return o
}

// flagger is a Flagger analysis: every interval each metric is checked against its
// static threshold, and the canary is rolled back once failed checks reach the limit.
func (w World) flagger(sc Scenario, ivs []Interval) Outcome {
	var o Outcome
	failed := 0
	for k := range ivs {
		iv := &ivs[k]
		ok := iv.Requests[0] > 0 && iv.Errors[0]/iv.Requests[0] <= flaggerMaxErrorRate && iv.P99[0] <= flaggerMaxP99
		if !ok {
			failed++
			if failed >= flaggerThreshold {
				o.RollbackAt = k + 1
				return o
			}
		}
	}
	o.Promoted = true
	return o
}

// naive is what a dashboard with p-values invites: a fixed-horizon test on all the data
// so far, looked at every interval (statistics.md §1.1).
func (w World) naive(sc Scenario, ivs []Interval) Outcome {
	var o Outcome
	aK := alpha / 3
	var cE, cN, bE, bN, cS, bS float64
	dLat := make([]float64, 0, len(ivs))
	zeros := make([]float64, len(ivs))
	var segC, segN, segShare float64
	for k := range ivs {
		iv := &ivs[k]
		bReq, bErr, bSlow, bMean, _ := iv.baseline()
		cE, cN, bE, bN = cE+iv.Errors[0], cN+iv.Requests[0], bE+bErr, bN+bReq
		cS, bS = cS+iv.Slow[0], bS+bSlow
		if iv.Mean[0] > 0 && bMean > 0 {
			dLat = append(dLat, math.Log(iv.Mean[0]/bMean))
		}
		if iv.Weights[0] != segShare {
			segC, segN, segShare = 0, 0, iv.Weights[0]
		}
		segC += iv.Requests[0]
		segN += iv.Requests[0] + bReq
		if o.FlagAt == 0 && analysis.BinomialTest(segC, segN, segShare, analysis.TwoSided) < alpha {
			o.FlagAt = k + 1
		}
		if k+1 < minInterval {
			continue
		}
		rollback := false
		if rr, err := analysis.RateRatioTest(cE, cN, bE, bN, 1, 0.95, analysis.Greater); err == nil && rr.PValue < aK {
			rollback = true
		}
		if rr, err := analysis.RateRatioTest(cS, cN, bS, bN, 1, 0.95, analysis.Greater); err == nil && rr.PValue < aK {
			rollback = true
		}
		if len(dLat) >= 2 {
			if t, err := analysis.WelchTTest(dLat, zeros[:len(dLat)], analysis.Greater); err == nil && t.PValue < aK {
				rollback = true
			}
		}
		if rollback {
			o.RollbackAt = k + 1
			return o
		}
	}
	o.Promoted = true
	return o
}
