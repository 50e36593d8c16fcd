package report

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// Per-interval measures of a judged KPI.
const (
	measureRate  = "rate"
	measureMean  = "mean"
	measureValue = "value"
)

// unit is one judged quantity with its live-analysis replay, built exactly as the engine
// builds its kpiState so that the report shows the numbers the engine acted on.
type unit struct {
	name    string
	spec    experiments.KPI
	measure string
	ratio   *analysis.RatioSequence
	gauge   *analysis.GaugeSequence
	judged  bool
}

// evidence is what the common builder needs, whichever the source.
type evidence struct {
	exp *experiments.Experiment
	// planned is where the gauge sequence's boundary is tightest, as the engine sets it.
	planned int
	obs     []decoded
	// verdicts are the engine's last judgement of each KPI by name (run reports only).
	verdicts map[string]analysis.KPIVerdict
	// weighted is true when the observations carry the clusters' weights (runs).
	weighted bool
}

// decoded is a stored observation with its values decoded.
type decoded struct {
	store.Observation
	o engine.Observation
}

func decodeObservations(obs []store.Observation) ([]decoded, error) {
	out := make([]decoded, 0, len(obs))
	for _, so := range obs {
		d := decoded{Observation: so}
		if err := json.Unmarshal(so.Values, &d.o); err != nil {
			return nil, fmt.Errorf("observation of %s at %s: %w", so.KPI, so.End.Format(time.RFC3339), err)
		}
		out = append(out, d)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].End.Before(out[j].End) })
	return out, nil
}

func harmOf(k experiments.KPI) analysis.Direction {
	if k.Harm == experiments.HarmDecrease {
		return analysis.Decrease
	}
	return analysis.Increase
}

func tolOf(k experiments.KPI) float64 {
	if k.Tolerance == nil {
		return 0
	}
	return float64(*k.Tolerance)
}

func guardrailOf(g *experiments.Guardrail) *analysis.Guardrail {
	if g == nil {
		return nil
	}
	if g.Max != nil {
		return &analysis.Guardrail{Limit: g.Max.Float(), Consecutive: g.For}
	}
	if g.Min != nil {
		return &analysis.Guardrail{Limit: g.Min.Float(), Below: true, Consecutive: g.For}
	}
	return nil
}

// units mirrors engine.newKPIStates and kpiState.judged.
func units(exp *experiments.Experiment, planned int) []*unit {
	minIv := exp.Spec.Analysis.MinIntervals
	var out []*unit
	for _, k := range exp.Spec.KPIs {
		switch k.Type {
		case experiments.KPIRatio:
			out = append(out, &unit{name: k.Name, spec: k, measure: measureRate, judged: true,
				ratio: analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv, Guardrail: guardrailOf(k.Guardrail)})})
		case experiments.KPILatency:
			if k.SlowerThan != nil {
				out = append(out, &unit{name: k.Name + " (slower than " + k.SlowerThan.String() + ")", spec: k, measure: measureRate, judged: true,
					ratio: analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv})})
			}
			if k.Sum != "" && k.Count != "" {
				out = append(out, &unit{name: k.Name + " (mean)", spec: k, measure: measureMean, judged: true,
					gauge: analysis.NewGaugeSequence(analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: planned, Guardrail: guardrailOf(k.Guardrail)})})
			}
		case experiments.KPIGauge:
			out = append(out, &unit{name: k.Name, spec: k, measure: measureValue, judged: true,
				gauge: analysis.NewGaugeSequence(analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: planned, Guardrail: guardrailOf(k.Guardrail)})})
		case experiments.KPIThroughput:
			out = append(out, &unit{name: k.Name, spec: k, measure: measureValue})
		}
	}
	return out
}

// value is one cluster's per-interval value of the unit's measure.
func (u *unit) value(cv engine.ClusterValues) (float64, bool) {
	switch u.measure {
	case measureRate:
		if cv.Total > 0 {
			return cv.Events / cv.Total, true
		}
	case measureMean:
		if cv.Sum != nil && cv.Total > 0 {
			return *cv.Sum / cv.Total, true
		}
	default:
		if cv.Value != nil && finite(*cv.Value) {
			return *cv.Value, true
		}
	}
	return 0, false
}

// pooled sums the baselines the way engine.kpiState.add does.
type pooled struct {
	events, total, sum, val float64
	nVal                    int
	hasSum, any             bool
}

func pool(o engine.Observation, baselines []string) pooled {
	p := pooled{hasSum: true}
	for _, b := range baselines {
		v, ok := o.Clusters[b]
		if !ok {
			continue
		}
		p.any = true
		p.events += v.Events
		p.total += v.Total
		if v.Sum != nil {
			p.sum += *v.Sum
		} else {
			p.hasSum = false
		}
		if v.Value != nil {
			p.val += *v.Value
			p.nVal++
		}
	}
	return p
}

// baselineValue is the pooled baselines' value of the unit's measure.
func (u *unit) baselineValue(p pooled) (float64, bool) {
	switch u.measure {
	case measureRate:
		if p.total > 0 {
			return p.events / p.total, true
		}
	case measureMean:
		if p.hasSum && p.total > 0 {
			return p.sum / p.total, true
		}
	default:
		if p.nVal > 0 {
			return p.val / float64(p.nVal), true
		}
	}
	return 0, false
}

// feed adds one observation to the unit's sequence, as engine.kpiState.add does.
func (u *unit) feed(c engine.ClusterValues, p pooled, pre bool) {
	switch {
	case u.ratio != nil:
		if pre {
			u.ratio.AddPre(c.Events, c.Total, p.events, p.total)
		} else {
			u.ratio.Add(c.Events, c.Total, p.events, p.total)
		}
	case u.gauge != nil && u.measure == measureMean:
		if c.Sum != nil && p.hasSum && c.Total > 0 && p.total > 0 {
			u.addGauge(*c.Sum/c.Total, p.sum/p.total, pre)
		}
	case u.gauge != nil:
		if c.Value != nil && p.nVal > 0 {
			u.addGauge(*c.Value, p.val/float64(p.nVal), pre)
		}
	}
}

func (u *unit) addGauge(c, b float64, pre bool) {
	if pre {
		u.gauge.AddPre(c, b)
	} else {
		u.gauge.Add(c, b)
	}
}

func (u *unit) interval(alpha float64) (analysis.Interval, bool) {
	switch {
	case u.ratio != nil:
		return u.ratio.Interval(alpha), true
	case u.gauge != nil:
		return u.gauge.Interval(alpha), true
	}
	return analysis.Interval{}, false
}

// build computes every KPI section, the share check and the pre-period from the evidence.
func build(ev evidence, r *Report) {
	exp := ev.exp
	canary, baselines := exp.Spec.Canary.Cluster, exp.Spec.Baselines
	us := units(exp, ev.planned)
	judged := 0
	for _, u := range us {
		if u.judged {
			judged++
		}
	}
	alpha := exp.Spec.Analysis.Alpha
	if !(alpha > 0 && alpha < 1) {
		alpha = experiments.DefaultAlpha
	}
	r.Alpha = alpha
	alphaK := alpha / float64(max(judged, 1))

	type side struct{ c, b []float64 }
	r.KPIs = make([]KPI, len(us))
	for i, u := range us {
		k := &r.KPIs[i]
		k.Name, k.Source, k.Type, k.Measure = u.name, u.spec.Name, u.spec.Type, u.measure
		if u.spec.Harm == "" {
			k.Harm = experiments.HarmIncrease
		} else {
			k.Harm = u.spec.Harm
		}
		k.Tolerance = tolOf(u.spec)
		if g := guardrailOf(u.spec.Guardrail); g != nil && (u.measure != measureRate || u.spec.Type == experiments.KPIRatio) {
			k.Guardrail = &Guardrail{Limit: g.Limit, Below: g.Below, For: max(g.Consecutive, 1)}
		}
		k.Series, k.Sequence, k.Tests = []Point{}, []SeqPoint{}, []Test{}
		k.Baselines = map[string]Summary{}

		var run side
		per := map[string][]float64{}
		var cE, cT, bE, bT float64
		perCounts := map[string][2]float64{}
		var preC, preB []float64
		var preCE, preCT, preBE, preBT float64
		preN := 0
		for _, d := range ev.obs {
			if d.KPI != u.spec.Name {
				continue
			}
			c, ok := d.o.Clusters[canary]
			if !ok {
				continue
			}
			p := pool(d.o, baselines)
			if !p.any {
				continue
			}
			pre := d.Phase == "pre"
			u.feed(c, p, pre)
			pt := Point{End: d.End, Step: d.Step, Phase: d.Phase, Baselines: map[string]*float64{}}
			cv, cok := u.value(c)
			bv, bok := u.baselineValue(p)
			if cok {
				pt.Canary = fptr(cv)
			}
			if bok {
				pt.Baseline = fptr(bv)
			}
			for _, b := range baselines {
				if v, ok := d.o.Clusters[b]; ok {
					if x, ok := u.value(v); ok {
						pt.Baselines[b] = fptr(x)
						if !pre {
							per[b] = append(per[b], x)
						}
					}
					if !pre {
						pc := perCounts[b]
						perCounts[b] = [2]float64{pc[0] + v.Events, pc[1] + v.Total}
					}
				}
			}
			k.Series = append(k.Series, pt)
			if pre {
				preN++
				if cok {
					preC = append(preC, cv)
				}
				if bok {
					preB = append(preB, bv)
				}
				preCE, preCT, preBE, preBT = preCE+c.Events, preCT+c.Total, preBE+p.events, preBT+p.total
				continue
			}
			if cok {
				run.c = append(run.c, cv)
			}
			if bok {
				run.b = append(run.b, bv)
			}
			cE, cT, bE, bT = cE+c.Events, cT+c.Total, bE+p.events, bT+p.total
			if iv, ok := u.interval(alphaK); ok {
				k.Sequence = append(k.Sequence, SeqPoint{End: d.End, Estimate: round(iv.Estimate, 0), Lower: boundPtr(iv.Lower, iv.LowerBounded), Upper: boundPtr(iv.Upper, iv.UpperBounded), Ready: iv.Ready})
			}
		}
		counts := u.measure == measureRate
		k.Canary = summarize(run.c, counts, cE, cT)
		k.Baseline = summarize(run.b, counts, bE, bT)
		for _, b := range baselines {
			pc := perCounts[b]
			k.Baselines[b] = summarize(per[b], counts, pc[0], pc[1])
		}
		if preN > 0 {
			pk := &PreKPI{Intervals: preN}
			if counts {
				if preCT > 0 {
					pk.Canary = fptr(preCE / preCT)
				}
				if preBT > 0 {
					pk.Baseline = fptr(preBE / preBT)
				}
			} else {
				if len(preC) > 0 {
					pk.Canary = fptr(mean(preC))
				}
				if len(preB) > 0 {
					pk.Baseline = fptr(mean(preB))
				}
			}
			if pk.Canary != nil && pk.Baseline != nil && *pk.Baseline != 0 {
				pk.Ratio = fptr(*pk.Canary / *pk.Baseline)
			}
			k.Pre = pk
		}

		// Fixed-horizon tests on the run phase.
		if u.measure == measureRate {
			k.Tests = append(k.Tests, rateTest(cE, cT, bE, bT))
		}
		if u.judged {
			k.Tests = append(k.Tests, welch(run.c, run.b), mannWhitney(run.c, run.b))
			dir := analysis.Increase
			if harmOf(u.spec) == analysis.Decrease {
				dir = analysis.Decrease
			}
			km := analysis.ClassifyKayenta(run.b, run.c, analysis.ClassifierOptions{Direction: dir})
			kk := &Kayenta{Classification: string(km.Classification), Reason: km.Reason}
			if km.DeviationOK {
				kk.Deviation = fptr(km.Deviation)
			}
			k.Kayenta = kk
		}

		// Status and effect: the engine's own last judgement when there is one.
		if !u.judged {
			k.Status = StatusNotJudged
			k.StatusReason = u.name + " is a throughput KPI: it feeds the traffic-share check and is not judged on its own"
			k.Effect = Effect{Relative: true}
			continue
		}
		iv, _ := u.interval(alphaK)
		v, ok := ev.verdicts[u.name]
		if !ok {
			v = analysis.Judge(u.name, iv, harmOf(u.spec), k.Tolerance)
		}
		k.Status, k.StatusReason = string(v.Status), v.Reason
		fi := v.Interval
		k.Effect = Effect{Estimate: fptr(fi.Estimate), CILow: boundPtr(fi.Lower, fi.LowerBounded), CIHigh: boundPtr(fi.Upper, fi.UpperBounded),
			Relative: fi.Relative, Alpha: fi.Alpha, PreAdjusted: fi.PreAdjusted, Dispersion: round(fi.Dispersion, 1e-9), Intervals: fi.Intervals}
	}
	holm(r.KPIs)
	r.Traffic = shareCheck(ev, alpha)
	r.PrePeriod = prePeriod(ev.obs)
}

// holm adjusts each method's p-values across KPIs (statistics.md §6).
func holm(ks []KPI) {
	type ref struct{ k, t int }
	byMethod := map[string][]ref{}
	var methods []string
	for i := range ks {
		for j, t := range ks[i].Tests {
			if _, ok := byMethod[t.Method]; !ok {
				methods = append(methods, t.Method)
			}
			byMethod[t.Method] = append(byMethod[t.Method], ref{i, j})
		}
	}
	for _, m := range methods {
		refs := byMethod[m]
		ps := make([]float64, len(refs))
		for i, r := range refs {
			ps[i] = ks[r.k].Tests[r.t].PValue
		}
		adj := analysis.HolmAdjust(ps)
		for i, r := range refs {
			ks[r.k].Tests[r.t].PAdjusted = round(adj[i], 1e-12)
		}
	}
}

func rateTest(c, nc, b, nb float64) Test {
	t := Test{Method: MethodBinomialRate, PValue: 1}
	// Prometheus's increase() extrapolates to the interval's edges, so summed counts are
	// rarely whole; the exact test needs whole events (exposures may stay fractional).
	c, b = math.Round(c), math.Round(b)
	res, err := analysis.RateRatioTest(c, nc, b, nb, 1, 0.95)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	t.Statistic = fptr(c)
	t.PValue = round(res.PValue, 1e-12)
	t.Estimate = fptr(res.RateRatio)
	t.CILow = fptr(res.Lower)
	t.CIHigh = fptr(res.Upper)
	return t
}

func welch(c, b []float64) Test {
	t := Test{Method: MethodWelch, PValue: 1}
	res, err := analysis.WelchTTest(c, b)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	t.Statistic = fptr(res.Statistic)
	t.PValue = round(res.PValue, 1e-12)
	t.DF = fptr(res.DF)
	t.Estimate = fptr(mean(c) - mean(b))
	return t
}

func mannWhitney(c, b []float64) Test {
	t := Test{Method: MethodMannWhitney, PValue: 1}
	if len(c) == 0 || len(b) == 0 {
		t.Error = "no values on one side"
		return t
	}
	res, err := analysis.CompareRanks(c, b, 0.95)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	t.Statistic = fptr(res.Test.Statistic)
	t.PValue = round(res.Test.PValue, 1e-12)
	if res.ShiftOK {
		t.Estimate, t.CILow, t.CIHigh = fptr(res.Shift.Estimate), fptr(res.Shift.Lower), fptr(res.Shift.Upper)
	}
	return t
}

// shareCheck replays the engine's traffic-share check over the run's observations and
// sums each step's requests per cluster.
func shareCheck(ev evidence, alpha float64) Traffic {
	t := Traffic{Steps: []ShareStep{}}
	if !ev.weighted {
		t.Reason = "no configured weights are known for this window, so shares were not checked"
		return t
	}
	clusters := ev.exp.Spec.Clusters()
	kinds := map[string]string{}
	order := map[string]int{}
	for i, k := range ev.exp.Spec.KPIs {
		kinds[k.Name], order[k.Name] = k.Type, i
	}
	sc := analysis.NewShareCheck(1000)
	byStep := map[int]*ShareStep{}
	var steps []int
	// One observation per interval end, chosen as the engine chooses it: a throughput KPI
	// if there is one, else the first KPI in the experiment's order.
	var cur []decoded
	flush := func() {
		if len(cur) == 0 {
			return
		}
		best := cur[0]
		for _, d := range cur[1:] {
			bt, dt := kinds[best.KPI] == experiments.KPIThroughput, kinds[d.KPI] == experiments.KPIThroughput
			if (dt && !bt) || (dt == bt && order[d.KPI] < order[best.KPI]) {
				best = d
			}
		}
		cur = cur[:0]
		var counts, weights []float64
		for _, c := range clusters {
			v, ok := best.o.Clusters[c]
			if !ok {
				return
			}
			n := v.Total
			if kinds[best.KPI] == experiments.KPIThroughput {
				if v.Value == nil {
					return
				}
				n = *v.Value
			}
			counts = append(counts, n)
			weights = append(weights, best.o.Weights[c])
		}
		if sc.Add(counts, weights) != nil {
			return
		}
		t.Checked = true
		s := byStep[best.Step]
		if s == nil {
			s = &ShareStep{Step: best.Step, Expected: map[string]float64{}, Observed: map[string]float64{}}
			byStep[best.Step] = s
			steps = append(steps, best.Step)
		}
		wsum := 0.0
		for _, w := range weights {
			wsum += w
		}
		for i, c := range clusters {
			if wsum > 0 {
				s.Expected[c] = round(weights[i]/wsum, 1e-9)
			}
			s.Observed[c] += counts[i]
			s.Requests += counts[i]
		}
	}
	var end time.Time
	for _, d := range ev.obs {
		if d.Phase != "run" || kinds[d.KPI] == "" {
			continue
		}
		if !d.End.Equal(end) {
			flush()
			end = d.End
		}
		cur = append(cur, d)
	}
	flush()
	for _, st := range steps {
		s := byStep[st]
		for c, n := range s.Observed {
			if s.Requests > 0 {
				s.Observed[c] = round(n/s.Requests, 1e-9)
			}
		}
		s.Requests = math.Round(s.Requests)
		t.Steps = append(t.Steps, *s)
	}
	res := sc.Result(alpha)
	t.Mismatch, t.LogBayesFactor, t.Reason = res.Mismatch, round(res.LogBayesFactor, 1e-9), res.Reason
	if t.Checked && !t.Mismatch && t.Reason == "" {
		t.Reason = "the observed request shares match the configured weights"
	}
	return t
}

func prePeriod(obs []decoded) *PrePeriod {
	var p *PrePeriod
	ends := map[time.Time]bool{}
	for _, d := range obs {
		if d.Phase != "pre" {
			continue
		}
		if p == nil {
			p = &PrePeriod{From: d.Start, To: d.End}
		}
		if d.Start.Before(p.From) {
			p.From = d.Start
		}
		if d.End.After(p.To) {
			p.To = d.End
		}
		ends[d.End] = true
	}
	if p != nil {
		p.Intervals = len(ends)
	}
	return p
}

// ---- numbers ---------------------------------------------------------------------------

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// fptr returns a pointer to x, or nil when x is not finite: JSON has no NaN.
func fptr(x float64) *float64 {
	if !finite(x) {
		return nil
	}
	x = round(x, 1e-12)
	return &x
}

func boundPtr(x float64, bounded bool) *float64 {
	if !bounded {
		return nil
	}
	return fptr(x)
}

// round keeps 12 significant digits so that golden files and reports do not change with
// the last bits of floating-point sums across platforms.
func round(x, _ float64) float64 {
	if !finite(x) || x == 0 {
		return x
	}
	v, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 12, 64), 64)
	if err != nil {
		return x
	}
	return v
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func summarize(v []float64, counts bool, events, total float64) Summary {
	s := Summary{N: len(v)}
	if len(v) > 0 {
		s.Mean = fptr(mean(v))
		sorted := slices.Clone(v)
		sort.Float64s(sorted)
		s.P50 = fptr(analysis.QuantileType7(sorted, 0.50))
		s.P95 = fptr(analysis.QuantileType7(sorted, 0.95))
		s.P99 = fptr(analysis.QuantileType7(sorted, 0.99))
	}
	if len(v) > 1 {
		m, ss := mean(v), 0.0
		for _, x := range v {
			ss += (x - m) * (x - m)
		}
		s.SD = fptr(math.Sqrt(ss / float64(len(v)-1)))
	}
	if counts {
		s.Events, s.Total = fptr(events), fptr(total)
		if total > 0 {
			s.Rate = fptr(events / total)
		}
	}
	return s
}
