package report

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// evidence is what build needs, whichever the source: the experiment and its
// observations, history and live, as a run stores them. build replays them through
// engine.Evidence, the engine's own evidence model, so a report judges exactly what the
// engine judged (or, for an analysis, what it would have judged).
type evidence struct {
	exp *experiments.Experiment
	// planned is where the gauge sequences' boundary is tightest, as the engine sets it.
	planned int
	obs     []store.Observation
	// decisions are the engine's recorded decisions (run reports): the replay is checked
	// against them.
	decisions []store.Decision
	// weighted is true when the observations carry the clusters' weights (runs).
	weighted bool
}

// decoded is a stored observation with its values decoded.
type decoded struct {
	store.Observation
	o engine.Observation
}

// sortObservations orders observations as the store returns them, by end time then KPI
// name, so that each interval's observations are together when replayed.
func sortObservations(obs []store.Observation) []store.Observation {
	out := slices.Clone(obs)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].End.Equal(out[j].End) {
			return out[i].End.Before(out[j].End)
		}
		return out[i].KPI < out[j].KPI
	})
	return out
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
	return out, nil
}

func guardrailOf(g *experiments.Guardrail) *Guardrail {
	switch {
	case g == nil:
		return nil
	case g.Max != nil:
		return &Guardrail{Limit: g.Max.Float(), For: max(g.For, 1)}
	case g.Min != nil:
		return &Guardrail{Limit: g.Min.Float(), Below: true, For: max(g.For, 1)}
	}
	return nil
}

// entry is one KPI section of the report: a judged KPI of engine.Evidence, or a
// throughput KPI shown for context.
type entry struct {
	name    string
	spec    experiments.KPI
	measure string
	judged  int // index in Evidence.Judged, or −1
}

// entries pairs every judged KPI of the evidence (in its order, the experiment's) with the
// experiment KPI it comes from; throughput KPIs, which only feed the share check, are
// listed where the experiment lists them. A judged KPI's measure follows its sequence: a
// ratio sequence judges counts (rate), a gauge sequence a latency KPI's mean or a gauge's
// value.
func entries(exp *experiments.Experiment, judged []analysis.KPI) ([]entry, error) {
	var out []entry
	j := 0
	for _, k := range exp.Spec.KPIs {
		if k.Type == experiments.KPIThroughput {
			out = append(out, entry{name: k.Name, spec: k, measure: measureValue, judged: -1})
			continue
		}
		for ; j < len(judged) && (judged[j].Name == k.Name || strings.HasPrefix(judged[j].Name, k.Name+" (")); j++ {
			e := entry{name: judged[j].Name, spec: k, judged: j}
			switch judged[j].State.(type) {
			case *analysis.RatioSequence:
				e.measure = measureRate
			case *analysis.GaugeSequence:
				e.measure = measureValue
				if k.Type == experiments.KPILatency {
					e.measure = measureMean
				}
			default:
				return nil, fmt.Errorf("judged KPI %s: unknown sequence %T", judged[j].Name, judged[j].State)
			}
			out = append(out, e)
		}
	}
	if j != len(judged) {
		return nil, fmt.Errorf("judged KPI %s matches no KPI of the experiment", judged[j].Name)
	}
	return out, nil
}

// value is one cluster's per-interval value of the entry's measure (for display).
func (u *entry) value(cv engine.ClusterValues) (float64, bool) {
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

// pooled sums the baselines for display: counts summed, values averaged (what the
// engine compares the canary with).
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

// baselineValue is the pooled baselines' value of the entry's measure.
func (u *entry) baselineValue(p pooled) (float64, bool) {
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

// replayed is the evidence after every live interval, as engine.Evidence gave it.
type replayed struct {
	ends []time.Time
	// ivs[i][j] is judged KPI j's interval after live interval ends[i].
	ivs [][]analysis.Interval
}

// at returns the judged KPIs' intervals after the last live interval ending at or
// before t.
func (p *replayed) at(t time.Time) ([]analysis.Interval, bool) {
	i := sort.Search(len(p.ends), func(i int) bool { return p.ends[i].After(t) }) - 1
	if i < 0 {
		return nil, false
	}
	return p.ivs[i], true
}

// since is the number of live intervals after which judged KPI j had status st and kept
// it to the end (0 if it never had it at the end).
func (p *replayed) since(j int, k analysis.KPI, st analysis.Status) int {
	n := 0
	for i := len(p.ivs) - 1; i >= 0; i-- {
		if analysis.Judge(k.Name, p.ivs[i][j], k.Harm, k.Tolerance).Status != st {
			break
		}
		n = i + 1
	}
	return n
}

// build replays the evidence through engine.Evidence and fills every KPI section, the
// share check and the pre-period. The judged names, tolerances, sequences, statuses and the
// share check are the engine's; the series, summaries and fixed-horizon tests are for
// display.
func build(src evidence, r *Report) error {
	exp := src.exp
	canary, baselines := exp.Spec.Canary.Cluster, exp.Spec.Baselines
	obs := sortObservations(src.obs)
	dec, err := decodeObservations(obs)
	if err != nil {
		return err
	}
	ev, err := engine.NewEvidence(exp, src.planned)
	if err != nil {
		return err
	}
	es, err := entries(exp, ev.Judged())
	if err != nil {
		return err
	}
	// The decision's own error split: α over the judged KPIs (Bonferroni).
	final := ev.Decide(engine.Position{})
	alpha := exp.Spec.Analysis.Alpha
	if !(alpha > 0 && alpha < 1) {
		alpha = experiments.DefaultAlpha
	}
	r.Alpha = alpha
	alphaK := final.AlphaPerKPI

	// Which KPI had data at which live interval, and each interval's observations for the
	// share table.
	has := map[string]map[time.Time]bool{}
	live := map[time.Time]map[string]engine.Observation{}
	for _, d := range dec {
		if d.Phase != engine.PhaseRun {
			continue
		}
		if has[d.KPI] == nil {
			has[d.KPI] = map[time.Time]bool{}
		}
		has[d.KPI][d.End] = true
		if live[d.End] == nil {
			live[d.End] = map[string]engine.Observation{}
		}
		live[d.End][d.KPI] = d.o
	}
	r.KPIs = make([]KPI, len(es))
	var path replayed
	shares := newShareTable(exp.Spec.Clusters())
	if _, err := ev.ReplayEach(obs, func(end time.Time, step int) {
		judged := ev.Judged()
		ivs := make([]analysis.Interval, len(judged))
		for i, j := range judged {
			ivs[i] = j.State.Interval(alphaK)
		}
		path.ends, path.ivs = append(path.ends, end), append(path.ivs, ivs)
		for i, e := range es {
			if e.judged < 0 || !has[e.spec.Name][end] {
				continue
			}
			iv := ivs[e.judged]
			r.KPIs[i].Sequence = append(r.KPIs[i].Sequence, SeqPoint{End: end, Estimate: round(iv.Estimate, 0),
				Lower: boundPtr(iv.Lower, iv.LowerBounded), Upper: boundPtr(iv.Upper, iv.UpperBounded), Ready: iv.Ready})
		}
		shares.add(ev, live[end], step)
	}); err != nil {
		return err
	}
	final = ev.Decide(engine.Position{})
	judged := ev.Judged()
	noise := map[string]engine.KPINoise{}
	for _, n := range ev.Noise() {
		noise[n.KPI] = n
	}

	type side struct{ c, b []float64 }
	for i, u := range es {
		k := &r.KPIs[i]
		k.Name, k.Source, k.Type, k.Measure = u.name, u.spec.Name, u.spec.Type, u.measure
		k.Harm = u.spec.Harm
		if k.Harm == "" {
			k.Harm = experiments.HarmIncrease
		}
		if u.judged >= 0 {
			k.Tolerance = judged[u.judged].Tolerance
		} else if u.spec.Tolerance != nil {
			k.Tolerance = float64(*u.spec.Tolerance)
		}
		// The engine holds a latency KPI's guardrail on its mean only.
		if u.measure != measureRate || u.spec.Type == experiments.KPIRatio {
			k.Guardrail = guardrailOf(u.spec.Guardrail)
		}
		if k.Sequence == nil {
			k.Sequence = []SeqPoint{}
		}
		k.Series, k.Tests = []Point{}, []Test{}
		k.Baselines = map[string]Summary{}

		var run side
		per := map[string][]float64{}
		var cE, cT, bE, bT float64
		perCounts := map[string][2]float64{}
		var preC, preB []float64
		var preCE, preCT, preBE, preBT float64
		preN := 0
		for _, d := range dec {
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
			pre := d.Phase != engine.PhaseRun
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

		// Fixed-horizon tests on the run phase, for reference.
		if counts {
			k.Tests = append(k.Tests, rateTest(cE, cT, bE, bT))
		}
		if u.judged < 0 {
			k.Status = StatusNotJudged
			k.StatusReason = u.name + " is a throughput KPI: it feeds the traffic-share check and is not judged on its own"
			k.Effect = Effect{Relative: true}
			continue
		}
		k.Tests = append(k.Tests, welch(run.c, run.b), mannWhitney(run.c, run.b))
		dir := analysis.Increase
		if k.Harm == experiments.HarmDecrease {
			dir = analysis.Decrease
		}
		km := analysis.ClassifyKayenta(run.b, run.c, analysis.ClassifierOptions{Direction: dir})
		kk := &Kayenta{Classification: string(km.Classification), Reason: km.Reason}
		if km.DeviationOK {
			kk.Deviation = fptr(km.Deviation)
		}
		k.Kayenta = kk

		// Status and effect: the engine's judgement of the evidence.
		v := final.KPIs[u.judged]
		k.Status, k.StatusReason = string(v.Status), v.Reason
		fi := v.Interval
		k.Effect = Effect{Estimate: fptr(fi.Estimate), CILow: boundPtr(fi.Lower, fi.LowerBounded), CIHigh: boundPtr(fi.Upper, fi.UpperBounded),
			Relative: fi.Relative, Alpha: fi.Alpha, PreAdjusted: fi.PreAdjusted, Dispersion: round(fi.Dispersion, 1e-9), Intervals: fi.Intervals}
		if n, ok := noise[u.name]; ok {
			k.Noise = NoiseOf(n, preN, fi.Relative)
		}
		k.LiveIntervals = len(path.ends)
		if v.Status == analysis.Harm || v.Status == analysis.NonInferior {
			k.StatusAfter = path.since(u.judged, judged[u.judged], v.Status)
		}
	}
	holm(r.KPIs)
	r.Traffic = shares.result(ev.Share(alpha), src.weighted)
	r.PrePeriod = prePeriod(dec)
	r.Notes = append(r.Notes, crossCheck(src.decisions, &path, judged)...)
	return nil
}

// crossCheck compares the replayed evidence with every decision the engine recorded, at
// the last interval each had seen: they differ only when the run was recorded by an
// engine that judged differently (another version), which a reader must know.
func crossCheck(decs []store.Decision, path *replayed, judged []analysis.KPI) []string {
	idx := map[string]int{}
	for i, j := range judged {
		idx[j.Name] = i
	}
	var differ []string
	first := time.Time{}
	for _, d := range decs {
		var det struct {
			Decision engine.Decision `json:"decision"`
			Through  time.Time       `json:"decidedThrough"`
		}
		if json.Unmarshal(d.Details, &det) != nil || det.Through.IsZero() {
			continue
		}
		ivs, ok := path.at(det.Through)
		if !ok {
			continue
		}
		for _, kv := range det.Decision.KPIs {
			i, ok := idx[kv.Name]
			if !ok {
				if !slices.Contains(differ, kv.Name) {
					differ = append(differ, kv.Name)
				}
				continue
			}
			if !sameInterval(ivs[i], kv.Interval.Analysis()) && !slices.Contains(differ, kv.Name) {
				differ = append(differ, kv.Name)
				if first.IsZero() {
					first = d.At
				}
			}
		}
	}
	if len(differ) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("The evidence replayed from the stored observations differs from what the engine decided on for %s (first at %s): the run was probably recorded by another version of Verdict; statuses here are today's judgement.",
		strings.Join(differ, ", "), fmtTime(first))}
}

// sameInterval compares an interval with its JSON round trip (the decisions' form).
func sameInterval(a, b analysis.Interval) bool {
	eq := func(x, y float64) bool { return x == y || math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y)) }
	return eq(a.Estimate, b.Estimate) && eq(a.Lower, b.Lower) && eq(a.Upper, b.Upper) && a.Ready == b.Ready && a.Intervals == b.Intervals
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

// shareTable sums each step's requests per cluster from what the engine's share check
// read (engine.Evidence.ShareInput), for the per-step table.
type shareTable struct {
	clusters []string
	checked  bool
	byStep   map[int]*ShareStep
	steps    []int
}

func newShareTable(clusters []string) *shareTable {
	return &shareTable{clusters: clusters, byStep: map[int]*ShareStep{}}
}

func (t *shareTable) add(ev *engine.Evidence, obs map[string]engine.Observation, step int) {
	_, counts, weights, ok := ev.ShareInput(obs)
	if !ok {
		return
	}
	wsum := 0.0
	for _, w := range weights {
		wsum += w
	}
	if !(wsum > 0) {
		return // no configured weights: the check skips the interval
	}
	t.checked = true
	s := t.byStep[step]
	if s == nil {
		s = &ShareStep{Step: step, Expected: map[string]float64{}, Observed: map[string]float64{}}
		t.byStep[step] = s
		t.steps = append(t.steps, step)
	}
	for i, c := range t.clusters {
		s.Expected[c] = round(weights[i]/wsum, 1e-9)
		s.Observed[c] += counts[i]
		s.Requests += counts[i]
	}
}

// result is the Traffic section: the engine's share check at α and the per-step table.
func (t *shareTable) result(res analysis.ShareResult, weighted bool) Traffic {
	out := Traffic{Steps: []ShareStep{}, Checked: t.checked}
	if !t.checked {
		out.Reason = "no interval had request counts for every cluster with their weights, so shares were not checked"
		if !weighted {
			out.Reason = "no configured weights are known for this window, so shares were not checked"
		}
		return out
	}
	for _, st := range t.steps {
		s := t.byStep[st]
		for c, n := range s.Observed {
			if s.Requests > 0 {
				s.Observed[c] = round(n/s.Requests, 1e-9)
			}
		}
		s.Requests = math.Round(s.Requests)
		out.Steps = append(out.Steps, *s)
	}
	out.Mismatch, out.LogBayesFactor, out.Reason, out.Tolerance = res.Mismatch, round(res.LogBayesFactor, 1e-9), res.Reason, round(res.Tolerance, 1e-9)
	if !out.Mismatch && out.Reason == "" {
		out.Reason = "the observed request shares match the configured weights"
		if res.Tolerance > 0 {
			out.Reason += fmt.Sprintf(" (within %s)", pct(res.Tolerance))
		}
	}
	return out
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
