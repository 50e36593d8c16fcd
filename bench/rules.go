package bench

import (
	"fmt"
	"math"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
)

// The rules judged on the same latent worlds, in the order results show them.
const (
	RuleVerdict     = "verdict"
	RuleOracle      = "oracle"
	RuleKayenta     = "kayenta"
	RuleKayentaEach = "kayenta-each"
	RuleNaive       = "naive-peeking"
)

// flaggerThresholds are the Flagger rows: the canary's error rate must stay at or below
// T × the clusters' normal rate and its mean latency at or below 1 + (T−1)/5 × normal.
var flaggerThresholds = []float64{1.5, 2, 3, 5}

func flaggerRule(t float64) string { return fmt.Sprintf("flagger-x%g", t) }

// Rules lists the rule names in display order.
func Rules() []string {
	out := []string{RuleVerdict, RuleOracle, RuleKayenta, RuleKayentaEach}
	for _, t := range flaggerThresholds {
		out = append(out, flaggerRule(t))
	}
	return append(out, RuleNaive)
}

// RuleDescriptions say how each rule is configured, for results.md.
func RuleDescriptions() map[string]string {
	d := map[string]string{
		RuleVerdict:     "the engine's own decision: engine.NewEvidence on the experiment loaded from YAML (defaults: history a day, α 5% over K = 3 judged KPIs, tolerances error rate 10%, latency mean 5%, slow share 20%, share tolerance 5%), the history window fed with AddHistory, then AddInterval and Decide every complete interval; Advance moves to the next step's weights (the interval in which weights change is skipped, as the engine skips it), Rollback and Promote end the run",
		RuleOracle:      "a valid sequential test that knows what Verdict must learn: each KPI's true canary/baseline offset, the clusters' true rates and the true long-run variance of the cluster-level noise at the current share (computed from the generator), so it needs no history and spends nothing on the offset; per KPI a one-sided normal-mixture test (precisions 1, 10, 100, 1000) of harm beyond the tolerance and of non-inferiority, at α/3 each, on the score weighted by the inverse of its true variance at the expected counts; same plan, holds, minimum holds and maxDuration as Verdict",
		RuleKayenta:     "ClassifyKayenta (Mann-Whitney, tolerance 0.25, confidence 0.98, direction Increase) on each step's per-interval error rate, mean latency and slow share, canary against the pooled baselines, at the step's end; score < 75 rolls back, ≥ 95 at the final step promotes; full holds",
		RuleKayentaEach: "as kayenta, and in between at every interval from the step's fifth on the step's window so far (at most its last 60 intervals, Kayenta's lookback): peeking at Kayenta",
		RuleNaive:       "every interval from the tenth: one-sided exact rate-ratio tests on the cumulative errors and slow requests and a Welch t-test on per-interval log mean-latency ratios, each at α/3 against no difference; rollback at the first p < α/3; promote at the end otherwise; full holds",
	}
	for _, t := range flaggerThresholds {
		d[flaggerRule(t)] = fmt.Sprintf("each interval the canary's own error rate ≤ %g× the normal rate and mean latency ≤ %.2f× normal (thresholds set by someone who knows the fleet's normal values); rollback after 5 failed checks (cumulative, as Flagger counts), promote after the full holds", t, 1+(t-1)/5)
	}
	return d
}

// Judged KPI indices (the order of engine.Evidence.Judged for the bench experiment).
const (
	kpiErrors = iota
	kpiSlow
	kpiMean
	nKPIs
)

// kpiNames are the judged KPIs' names as the engine reports them.
var kpiNames = [nKPIs]string{"error-rate", "latency (slower than 250ms)", "latency (mean)"}

// Outcome is what one rule did in one run. Times are minutes from the ramp's start; 0
// means never.
type Outcome struct {
	// RollbackAt is when the rule rolled back; Harm says which KPIs it found harmful then
	// (a bitmask over kpiErrors, kpiSlow, kpiMean: 0 with RollbackAt > 0 is a rollback at
	// maxDuration with KPIs still inconclusive).
	RollbackAt int
	Harm       uint8
	// PromoteAt is when it promoted.
	PromoteAt int
	// FlagAt is when it first flagged a traffic-share mismatch.
	FlagAt int
}

// harmRollback reports a rollback for harm (not for time running out).
func (o Outcome) harmRollback() bool { return o.RollbackAt > 0 && o.Harm != 0 }

// judgeRun runs every rule on one latent world.
func judgeRun(c *cell, l *latent) []Outcome {
	out := make([]Outcome, len(c.rules))
	out[0] = c.verdict(l)
	out[1] = c.oracle(l)
	fixed := c.fixedSchedule(l)
	out[2] = kayenta(fixed, false)
	out[3] = kayenta(fixed, true)
	for i, t := range flaggerThresholds {
		out[4+i] = flagger(fixed, t, c.scale.ErrorRate)
	}
	out[4+len(flaggerThresholds)] = naive(fixed)
	return out
}

// schedIv is one complete interval of a schedule, with where the plan was.
type schedIv struct {
	Interval
	step, stepElapsed, elapsed int
	stepEnd, final             bool
}

// weightsAt are the configured weights at a step (1-based), after a rebalance or not.
func (w *World) weightsAt(step int, share float64, rebalanced bool) [nClusters]float64 {
	split := 0.5
	if rebalanced {
		split = 0.8
		if step == 2 {
			share = w.RebalanceShare
		}
	}
	return [nClusters]float64{share, (1 - share) * split, (1 - share) * (1 - split)}
}

// action is a rule's decision after an interval.
type action int

const (
	actContinue action = iota
	actAdvance
	actPromote
	actRollback
)

// drive walks a plan as the engine does: the ramp starts at minute l.start, the interval
// in which weights change is skipped (it saw both), every complete interval is fed to
// decide, Advance moves to the next step. An operator's rebalance (World.Rebalance)
// happens halfway through step 2. It returns when decide ends the run or after limit
// minutes.
func drive(l *latent, plan Plan, limit int, decide func(s *schedIv) action) {
	w := l.w
	d := newDrawer(l)
	step, stepElapsed, elapsed := 1, 0, 0
	skip, rebalanced := true, false
	for t := l.start; t < l.start+limit; t++ {
		elapsed++
		if skip {
			skip = false
			continue
		}
		st := plan.Steps[step-1]
		s := schedIv{Interval: d.draw(t, w.weightsAt(step, st.Share, rebalanced)), step: step, elapsed: elapsed}
		stepElapsed++
		s.stepElapsed = stepElapsed
		s.stepEnd = stepElapsed >= st.Hold
		s.final = step == len(plan.Steps)
		switch decide(&s) {
		case actRollback, actPromote:
			return
		case actAdvance:
			if step < len(plan.Steps) {
				step, stepElapsed, skip = step+1, 0, true
			}
		}
		if w.Rebalance && !rebalanced && step == 2 && stepElapsed == plan.Steps[1].Hold/2 {
			rebalanced, skip = true, true
		}
	}
}

func minutes(n int) time.Duration { return time.Duration(n) * time.Minute }

// verdict is the engine's live decision: the history window through AddHistory, then
// every complete interval through AddInterval and Decide.
func (c *cell) verdict(l *latent) Outcome {
	ev, err := engine.NewEvidence(c.exp, plannedIntervals(c.exp))
	if err != nil {
		panic(err) // the experiment loaded and validated: cannot happen
	}
	d := newDrawer(l)
	orig := originalWeights()
	for t := l.histEnd - c.history; t < l.histEnd; t++ {
		iv := d.draw(t, orig)
		ev.AddHistory(observations(&iv))
	}
	ev.Fit()
	var o Outcome
	drive(l, c.plan, c.plan.MaxDuration+len(c.plan.Steps)+1, func(s *schedIv) action {
		ev.AddInterval(observations(&s.Interval), rampStart.Add(minutes(s.elapsed)))
		dec := ev.Decide(engine.Position{Step: s.step, StepElapsed: minutes(s.stepElapsed), Elapsed: minutes(s.elapsed)})
		if dec.ShareMismatch && o.FlagAt == 0 {
			o.FlagAt = s.elapsed
		}
		return o.follow(dec, s.elapsed)
	})
	return o
}

// fixedSchedule is the plan walked with full holds and no early decision: what the
// comparators that hold every step judge.
func (c *cell) fixedSchedule(l *latent) []schedIv {
	var out []schedIv
	drive(l, c.plan, c.plan.Holds()+len(c.plan.Steps)+1, func(s *schedIv) action {
		out = append(out, *s)
		if s.stepEnd {
			if s.final {
				return actPromote
			}
			return actAdvance
		}
		return actContinue
	})
	return out
}

// ---- the oracle ---------------------------------------------------------------------

// oracleState is one KPI's oracle statistic: the inverse-variance-weighted score at the
// tolerance, S = Σ w·(observation − expected at the tolerance), and its information V.
type oracleState struct {
	s, v float64
	n    int
	tol  float64 // log scale
	// k3 is the score's third cumulant, Σ (w·v)³·κ₃ with κ₃ the noise's true long-run
	// third cumulant: a Bernstein term on the side the noise is skewed to, as Verdict's
	// sequences have, so that the oracle stays valid when bursts make sums skewed.
	k3 float64
}

// logMixPlus is log of the equal-weight mixture over precisions of one-sided
// normal-mixture martingales 2·sqrt(ρ/(V+ρ))·exp(S²/(2(V+ρ)))·Φ(S/sqrt(V+ρ)) (Howard et
// al. 2021), for S ≥ 0 (0 below).
func logMixPlus(s, v float64) float64 {
	if !(s > 0) || !(v > 0) {
		return math.Inf(-1)
	}
	precisions := [...]float64{1, 10, 100, 1000}
	var terms [len(precisions)]float64
	mx := math.Inf(-1)
	for i, rho := range precisions {
		w := v + rho
		terms[i] = math.Ln2 + 0.5*math.Log(rho/w) + s*s/(2*w) + math.Log(0.5*math.Erfc(-s/math.Sqrt(2*w)))
		mx = math.Max(mx, terms[i])
	}
	var acc float64
	for _, t := range terms {
		acc += math.Exp(t - mx)
	}
	return mx + math.Log(acc/float64(len(precisions)))
}

// Interval makes the oracle an analysis.IntervalSource, so that analysis.Decide applies
// the same holds, steps and maxDuration rules to it as to Verdict: the bounds are only
// placed on the right side of the tolerance when its tests reject.
func (o *oracleState) Interval(alpha float64) analysis.Interval {
	tol := math.Expm1(o.tol)
	iv := analysis.Interval{Relative: true, Alpha: alpha, Intervals: o.n, Informative: o.n, Ready: o.n > 0, Dispersion: 1, PValue: 1,
		Estimate: 0, Lower: -1, Upper: math.Exp(700) - 1}
	thr := math.Log(1 / alpha)
	// c·log(1/α) off the statistic on the side its noise is skewed to (c = κ₃/(3V))
	up, down := o.s, -o.s
	if o.v > 0 {
		if c := o.k3 / (3 * o.v); c > 0 {
			up -= c * thr
		} else {
			down += c * thr
		}
	}
	if logMixPlus(up, o.v) >= thr {
		iv.Lower = tol + 1e-9 // harm
		iv.Upper = iv.Lower + 1
	}
	if logMixPlus(down, o.v) >= thr {
		iv.Upper = tol - 1e-9 // non-inferior
		iv.Lower = -1
	}
	return iv
}

// oracle is the valid oracle: the truth of the noise, none of the effect.
func (c *cell) oracle(l *latent) Outcome {
	tn := c.truth
	w := l.w
	st := [nKPIs]*oracleState{}
	kpis := make([]analysis.KPI, nKPIs)
	for i := range st {
		st[i] = &oracleState{tol: math.Log1p(c.tolerance[i])}
		kpis[i] = analysis.KPI{Name: kpiNames[i], State: st[i], Harm: analysis.Increase, Tolerance: c.tolerance[i]}
	}
	logOff := math.Log(w.Offset)
	cv2 := latSD1 * latSD1 / (latMean1 * latMean1)
	slow1 := latSurv(slowerThan, 1)
	a := c.exp.Spec.Analysis
	var o Outcome
	drive(l, c.plan, c.plan.MaxDuration+len(c.plan.Steps)+1, func(s *schedIv) action {
		iv := &s.Interval
		bReq, bErr, bSlow, bMean := iv.baseline()
		split := iv.Requests[1] / math.Max(bReq, 1)
		if iv.Requests[0] > 0 && bReq > 0 {
			r := iv.Requests[0] / (iv.Requests[0] + bReq)
			// The weights use the expected events (from the requests and the true rates),
			// not the observed ones: weights that move with the events bias the score.
			pErr, pSlow := c.scale.ErrorRate*tn.errMean, slow1*tn.slowMean
			for _, k := range []struct {
				i        int
				c, b     float64
				p        float64
				tau2, k3 float64
			}{{kpiErrors, iv.Errors[0], bErr, pErr, tn.errTau2(r, split), tn.errK3At(r, split)},
				{kpiSlow, iv.Slow[0], bSlow, pSlow, tn.slowTau2(r, split), tn.slowK3At(r, split)}} {
				e := k.c + k.b
				phi := math.Exp(logOff + st[k.i].tol)
				pi := r * phi / (r*phi + 1 - r)
				ebar := k.p * (iv.Requests[0]*phi + bReq)
				v := ebar * pi * (1 - pi)
				if !(v > 0) {
					continue
				}
				wt := 1 / (1 + v*k.tau2)
				st[k.i].s += wt * (k.c - e*pi)
				st[k.i].v += wt * v
				st[k.i].k3 += wt * v * wt * v * wt * v * k.k3
				st[k.i].n++
			}
			if cm := iv.Mean(0); cm > 0 && bMean > 0 {
				va := cv2/iv.Requests[0] + cv2/bReq + tn.latVar(split)
				g := st[kpiMean]
				g.s += (math.Log(cm/bMean) - logOff - g.tol) / va
				g.v += 1 / va
				g.n++
			}
		}
		plan := c.plan.Steps[s.step-1]
		dec := analysis.Decide(kpis, analysis.Step{Alpha: a.Alpha, HoldComplete: s.stepElapsed >= plan.Hold, MinHoldComplete: s.stepElapsed >= plan.MinHold,
			Final: s.final, MaxDurationReached: s.elapsed >= c.plan.MaxDuration, OnInconclusive: analysis.Rollback})
		return o.follow(dec, s.elapsed)
	})
	return o
}

// follow records a decision's ending in the outcome (the harmful KPIs of a rollback, as
// bits in judged order) and says what the schedule does next.
func (o *Outcome) follow(dec analysis.Decision, at int) action {
	switch dec.Action {
	case analysis.Rollback:
		o.RollbackAt = at
		for i, k := range dec.KPIs {
			if k.Status == analysis.Harm && i < nKPIs {
				o.Harm |= 1 << i
			}
		}
		return actRollback
	case analysis.Promote:
		o.PromoteAt = at
		return actPromote
	case analysis.Advance:
		return actAdvance
	}
	return actContinue
}

// ---- comparators on the fixed schedule ----------------------------------------------------

func rate(e, n float64) float64 {
	if n <= 0 {
		return math.NaN()
	}
	return e / n
}

// kayenta is a Kayenta canary analysis of each step's window, canary against the pooled
// baselines, at the step's end (each: at every interval from the step's fifth).
func kayenta(ivs []schedIv, each bool) Outcome {
	var o Outcome
	opt := analysis.ClassifierOptions{Direction: analysis.Increase}
	start := 0
	for k := range ivs {
		s := &ivs[k]
		if k > 0 && s.step != ivs[k-1].step {
			start = k
		}
		n := k - start + 1
		if !s.stepEnd && !(each && n >= 5) {
			continue
		}
		from := start
		if each && !s.stepEnd {
			from = max(start, k+1-kayentaLookback)
		}
		win := ivs[from : k+1]
		var cErr, bErrs, cMean, bMeans, cSlow, bSlows []float64
		for i := range win {
			iv := &win[i].Interval
			bReq, bErr, bSlow, bMean := iv.baseline()
			cErr = append(cErr, rate(iv.Errors[0], iv.Requests[0]))
			bErrs = append(bErrs, rate(bErr, bReq))
			cMean = append(cMean, iv.Mean(0))
			bMeans = append(bMeans, bMean)
			cSlow = append(cSlow, rate(iv.Slow[0], iv.Requests[0]))
			bSlows = append(bSlows, rate(bSlow, bReq))
		}
		var metrics []analysis.ScoredMetric
		for _, m := range []struct {
			name string
			b, c []float64
		}{{"error-rate", bErrs, cErr}, {"latency-mean", bMeans, cMean}, {"slow-share", bSlows, cSlow}} {
			res := analysis.ClassifyKayenta(m.b, m.c, opt)
			metrics = append(metrics, analysis.ScoredMetric{Name: m.name, Classification: res.Classification, Groups: []string{"default"}, Critical: res.Critical})
		}
		score := analysis.KayentaScore(metrics, nil)
		switch {
		case score.Summary < kayentaMarginal || score.CriticalFailure || (s.stepEnd && s.final && score.Summary < kayentaPass):
			o.RollbackAt, o.Harm = s.elapsed, 1
			return o
		case s.stepEnd && s.final:
			o.PromoteAt = s.elapsed
		}
	}
	return o
}

// Kayenta score thresholds, and the lookback of kayenta-each's interval judgements.
const (
	kayentaLookback = 60
	kayentaPass     = 95.0
	kayentaMarginal = 75.0
)

// flagger is a Flagger analysis: every interval the canary's own metrics are checked
// against static thresholds, and the canary is rolled back once failed checks reach 5.
func flagger(ivs []schedIv, t, normalRate float64) Outcome {
	var o Outcome
	failed := 0
	maxErr, maxLat := t*normalRate, (1+(t-1)/5)*latMean1
	for k := range ivs {
		iv := &ivs[k].Interval
		ok := iv.Requests[0] > 0 && iv.Errors[0]/iv.Requests[0] <= maxErr && iv.Mean(0) <= maxLat
		if !ok {
			failed++
			if failed >= 5 {
				o.RollbackAt, o.Harm = ivs[k].elapsed, 1
				return o
			}
		}
	}
	if len(ivs) > 0 {
		o.PromoteAt = ivs[len(ivs)-1].elapsed
	}
	return o
}

// naive is what a dashboard with p-values invites: fixed-horizon tests on all the data
// so far, looked at every interval (statistics.md §1.1).
func naive(ivs []schedIv) Outcome {
	var o Outcome
	aK := 0.05 / 3
	var cE, cN, bE, bN, cS, bS float64
	dLat := make([]float64, 0, len(ivs))
	zeros := make([]float64, len(ivs))
	for k := range ivs {
		iv := &ivs[k].Interval
		bReq, bErr, bSlow, bMean := iv.baseline()
		cE, cN, bE, bN = cE+iv.Errors[0], cN+iv.Requests[0], bE+bErr, bN+bReq
		cS, bS = cS+iv.Slow[0], bS+bSlow
		if m := iv.Mean(0); m > 0 && bMean > 0 {
			dLat = append(dLat, math.Log(m/bMean))
		}
		if k+1 < 10 {
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
			o.RollbackAt, o.Harm = ivs[k].elapsed, 1
			return o
		}
	}
	if len(ivs) > 0 {
		o.PromoteAt = ivs[len(ivs)-1].elapsed
	}
	return o
}

// tolerances are the judged KPIs' tolerances as the loaded experiment has them.
func tolerances(exp *experiments.Experiment) [nKPIs]float64 {
	var t [nKPIs]float64
	for _, k := range exp.Spec.KPIs {
		switch k.Type {
		case experiments.KPIRatio:
			t[kpiErrors] = float64(*k.Tolerance)
		case experiments.KPILatency:
			t[kpiMean] = float64(*k.Tolerance)
			t[kpiSlow] = float64(*k.SlowTolerance)
		}
	}
	return t
}
