package engine

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
)

// ClusterValues are one cluster's numbers for one KPI and one interval, reduced to what
// the analysis needs. They are what the store keeps (as store.Observation.Values), so
// replaying them rebuilds the exact analysis state after a restart, and reports read them.
type ClusterValues struct {
	Events float64  `json:"events,omitempty"` // ratio events; latency: requests slower than slowerThan
	Total  float64  `json:"total,omitempty"`  // ratio total; latency: request count
	Sum    *float64 `json:"sum,omitempty"`    // latency sum of durations, when queried
	Value  *float64 `json:"value,omitempty"`  // gauge, throughput
	// CV2 is a latency KPI's per-request squared coefficient of variation, estimated from
	// its histogram buckets: the sampling variance of the interval's log mean is CV2/Total.
	CV2 *float64 `json:"cv2,omitempty"`
}

// Observation is the stored form of one KPI's interval: the JSON in
// store.Observation.Values.
type Observation struct {
	// Version is ObservationVersion when written; 0 for version 1.
	Version  int                      `json:"v,omitempty"`
	Clusters map[string]ClusterValues `json:"clusters"`
	// Weights are the clusters' origin weights during the interval, for the share check.
	Weights map[string]float64 `json:"weights,omitempty"`
}

// kpiState is one experiment KPI with its live analysis. A latency KPI judges up to two
// things (the slow share and the mean), so it owns up to two sequences.
type kpiState struct {
	spec  experiments.KPI
	query metrics.KPI
	ratio *analysis.RatioSequence // ratio, or latency slow share
	gauge *analysis.GaugeSequence // gauge, or latency mean
	// latest canary and baselines values, for live views; for latency, the slow shares too
	lastCanary, lastBaseline float64
	lastSlowC, lastSlowB     float64
	lastEnd                  time.Time
	// history before the variant, until fit learns the noise models from it
	ratioPre []analysis.RatioObservation
	gaugePre []analysis.GaugeObservation
	ratioOpt analysis.RatioOptions
	gaugeOpt analysis.GaugeOptions
	fitted   bool
	// arrivalDeclared: spec.canary.apply says when the variant arrives, so the history
	// ends before it and its offset may be subtracted.
	arrivalDeclared bool
}

// slowName is the judged name of a latency KPI's slow share.
func (k *kpiState) slowName() string {
	return k.spec.Name + " (slower than " + k.spec.SlowerThan.String() + ")"
}

func (k *kpiState) judged() []analysis.KPI {
	harm := analysis.Increase
	if k.spec.Harm == experiments.HarmDecrease {
		harm = analysis.Decrease
	}
	tol := float64(*k.spec.Tolerance)
	var out []analysis.KPI
	if k.ratio != nil {
		name, rtol := k.spec.Name, tol
		if k.spec.Type == experiments.KPILatency {
			name = k.slowName()
			if k.spec.SlowTolerance != nil {
				rtol = float64(*k.spec.SlowTolerance)
			}
		}
		out = append(out, analysis.KPI{Name: name, State: k.ratio, Harm: harm, Tolerance: rtol})
	}
	if k.gauge != nil {
		name := k.spec.Name
		if k.spec.Type == experiments.KPILatency {
			name += " (mean)"
		}
		out = append(out, analysis.KPI{Name: name, State: k.gauge, Harm: harm, Tolerance: tol})
	}
	return out
}

func guardrail(g *experiments.Guardrail, scale float64) *analysis.Guardrail {
	if g == nil {
		return nil
	}
	if g.Max != nil {
		return &analysis.Guardrail{Limit: g.Max.Float() * scale, Consecutive: g.For}
	}
	return &analysis.Guardrail{Limit: g.Min.Float() * scale, Below: true, Consecutive: g.For}
}

// MetricsKPIs renders the experiment's KPI templates into the queries the metrics layer runs.
func MetricsKPIs(exp *experiments.Experiment) ([]metrics.KPI, error) {
	vars := exp.Vars(exp.Spec.Canary.Cluster)
	var out []metrics.KPI
	for _, k := range exp.Spec.KPIs {
		q := metrics.KPI{Name: k.Name, Kind: metrics.Kind(k.Type)}
		for _, p := range []struct {
			dst *string
			src string
		}{{&q.Events, k.Events}, {&q.Total, k.Total}, {&q.Buckets, k.Buckets}, {&q.Sum, k.Sum}, {&q.Count, k.Count}, {&q.Query, k.Query}} {
			if p.src == "" {
				continue
			}
			s, err := experiments.RenderQuery(p.src, vars)
			if err != nil {
				return nil, fmt.Errorf("kpi %s: %w", k.Name, err)
			}
			*p.dst = s
		}
		out = append(out, q)
	}
	return out, nil
}

// newKPIStates builds the analysis state of every KPI of the experiment.
func newKPIStates(exp *experiments.Experiment, plannedIntervals int) ([]*kpiState, error) {
	queries, err := MetricsKPIs(exp)
	if err != nil {
		return nil, err
	}
	var out []*kpiState
	minIv := exp.Spec.Analysis.MinIntervals
	for i, k := range exp.Spec.KPIs {
		st := &kpiState{spec: k, query: queries[i], arrivalDeclared: exp.Spec.Canary.Apply.Declared()}
		switch k.Type {
		case experiments.KPIRatio:
			st.ratioOpt = analysis.RatioOptions{MinIntervals: minIv, Guardrail: guardrail(k.Guardrail, 1)}
		case experiments.KPILatency:
			if k.SlowerThan != nil {
				st.ratioOpt = analysis.RatioOptions{MinIntervals: minIv}
			}
			if k.Sum != "" && k.Count != "" {
				st.gaugeOpt = analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: plannedIntervals, Guardrail: guardrail(k.Guardrail, 1)}
			}
		case experiments.KPIGauge:
			st.gaugeOpt = analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: plannedIntervals, Guardrail: guardrail(k.Guardrail, 1)}
		case experiments.KPIThroughput:
			// Throughput feeds the traffic-share check only.
		}
		st.build()
		out = append(out, st)
	}
	return out, nil
}

func (k *kpiState) hasRatio() bool {
	return k.spec.Type == experiments.KPIRatio || (k.spec.Type == experiments.KPILatency && k.spec.SlowerThan != nil)
}

func (k *kpiState) hasGauge() bool {
	return k.spec.Type == experiments.KPIGauge || (k.spec.Type == experiments.KPILatency && k.spec.Sum != "" && k.spec.Count != "")
}

// build (re)creates the sequences from the options in force.
func (k *kpiState) build() {
	k.ratio, k.gauge = nil, nil
	if k.hasRatio() {
		k.ratio = analysis.NewRatioSequence(k.ratioOpt)
	}
	if k.hasGauge() {
		k.gauge = analysis.NewGaugeSequence(k.gaugeOpt)
	}
}

// fit learns the noise models from the history and starts the live sequences from them;
// a KPI whose history is too short falls back to the history as a pre-period and to noise
// estimated from the run.
func (k *kpiState) fit() {
	if k.fitted {
		return
	}
	k.fitted = true
	// Without a declared arrival the history may hold the variant: its offset is shown,
	// never subtracted.
	ignore := !k.arrivalDeclared
	if k.ratio != nil {
		if m := analysis.LearnRatioNoise(k.ratioPre); m.Usable() {
			m.OffsetIgnored = ignore
			k.ratioOpt.Noise = &m
		}
	}
	if k.gauge != nil {
		if m := analysis.LearnGaugeNoise(k.gaugePre, k.gaugeOpt.Scale); m.Usable() {
			m.OffsetIgnored = ignore
			k.gaugeOpt.Noise = &m
		}
	}
	k.build()
	for _, o := range k.ratioPre {
		k.ratio.AddPre(o.CanaryEvents, o.CanaryTotal, o.BaselineEvents, o.BaselineTotal)
	}
	for _, o := range k.gaugePre {
		k.gauge.AddPre(o.Canary, o.Baseline)
	}
}

// noise reports the judged KPIs' noise models, in judged order.
func (k *kpiState) noise() []KPINoise {
	var out []KPINoise
	one := func(name string, m *analysis.NoiseModel, have, minIv int) {
		n := KPINoise{KPI: name, Model: NoiseModelOf(m), HistoryIntervals: have}
		if m == nil {
			n.Fallback = fmt.Sprintf("%d history intervals, fewer than the %d a noise model needs: noise is estimated from the run, after %d intervals",
				have, analysis.MinHistoryIntervals, max(minIv, 1))
		}
		out = append(out, n)
	}
	names := k.judged()
	i := 0
	if k.ratio != nil {
		one(names[i].Name, k.ratioOpt.Noise, len(k.ratioPre), k.ratioOpt.MinIntervals)
		i++
	}
	if k.gauge != nil {
		one(names[i].Name, k.gaugeOpt.Noise, len(k.gaugePre), k.gaugeOpt.MinIntervals)
	}
	return out
}

func (k *kpiState) reduce(iv metrics.Interval) (ClusterValues, bool) { return Reduce(k.spec, iv) }

// Reduce turns one cluster's interval from the metrics layer into the values the engine
// stores and judges (for latency: the count of requests slower than slowerThan). Reports
// and verdict analyze use it so a past window is read exactly as a live run reads it.
func Reduce(spec experiments.KPI, iv metrics.Interval) (ClusterValues, bool) {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch spec.Type {
	case experiments.KPIRatio:
		return ClusterValues{Events: iv.Events, Total: iv.Total}, finite(iv.Events) && finite(iv.Total)
	case experiments.KPILatency:
		cv := ClusterValues{Total: iv.Count}
		if !finite(iv.Count) {
			return cv, false
		}
		if spec.SlowerThan != nil {
			limit := spec.SlowerThan.Std().Seconds()
			fast, found := 0.0, false
			bs := append([]metrics.Bucket(nil), iv.Buckets...)
			sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
			// The largest bucket boundary at or below the limit: requests above it count as
			// slow, which errs towards calling requests slow when the limit is not a boundary.
			for _, b := range bs {
				if b.UpperBound <= limit*(1+1e-9) {
					fast, found = b.Count, true
				}
			}
			if !found {
				fast = 0
			}
			cv.Events = math.Max(0, iv.Count-fast)
		}
		if finite(iv.Sum) {
			s := iv.Sum
			cv.Sum = &s
			if v, ok := bucketCV2(iv.Buckets, iv.Count, iv.Sum); ok {
				cv.CV2 = &v
			}
		}
		return cv, true
	default:
		v := iv.Value
		return ClusterValues{Value: &v}, finite(v)
	}
}

// observe converts one interval of fetched data to an Observation; ok is false when the
// canary or every baseline has no data for it.
func (k *kpiState) observe(d *metrics.Data, end time.Time, canary string, baselines []string) (Observation, bool) {
	o := Observation{Clusters: map[string]ClusterValues{}}
	for c, cd := range d.Clusters {
		if cd == nil {
			continue
		}
		for _, iv := range cd.Intervals {
			if iv.End.Equal(end) {
				if cv, ok := k.reduce(iv); ok {
					o.Clusters[c] = cv
				}
			}
		}
	}
	if _, ok := o.Clusters[canary]; !ok {
		return o, false
	}
	for _, b := range baselines {
		if _, ok := o.Clusters[b]; ok {
			return o, true
		}
	}
	return o, false
}

// add feeds one Observation to the sequences; pre selects the pre-period.
func (k *kpiState) add(o Observation, canary string, baselines []string, pre bool) {
	c, ok := o.Clusters[canary]
	if !ok {
		return
	}
	var b ClusterValues
	var bSum, bVal, bCV2, bCV2w float64
	nVal, hasSum, bCV2n := 0, true, 0
	for _, name := range baselines {
		v, ok := o.Clusters[name]
		if !ok {
			continue
		}
		b.Events += v.Events
		b.Total += v.Total
		if v.Sum != nil {
			bSum += *v.Sum
		} else {
			hasSum = false
		}
		if v.Value != nil {
			bVal += *v.Value
			nVal++
		}
		if v.CV2 != nil && v.Total > 0 {
			// the pooled baselines' CV² weighted by requests (exact for equal means)
			bCV2 += *v.CV2 * v.Total
			bCV2w += v.Total
			bCV2n++
		}
	}
	switch k.spec.Type {
	case experiments.KPIRatio:
		k.addRatio(c.Events, c.Total, b.Events, b.Total, pre)
		if c.Total > 0 {
			k.lastCanary = c.Events / c.Total
		}
		if b.Total > 0 {
			k.lastBaseline = b.Events / b.Total
		}
	case experiments.KPILatency:
		if k.ratio != nil {
			k.addRatio(c.Events, c.Total, b.Events, b.Total, pre)
			if c.Total > 0 && b.Total > 0 {
				k.lastSlowC, k.lastSlowB = c.Events/c.Total, b.Events/b.Total
			}
		}
		if k.gauge != nil && c.Sum != nil && hasSum && c.Total > 0 && b.Total > 0 {
			cm, bm := *c.Sum/c.Total, bSum/b.Total
			sv := 0.0
			if c.CV2 != nil && bCV2n > 0 && bCV2w == b.Total {
				// Var(log mean) ≈ CV²/n on each side
				sv = *c.CV2/c.Total + bCV2/bCV2w/b.Total
			}
			k.addGauge(cm, bm, sv, pre)
			k.lastCanary, k.lastBaseline = cm, bm
		} else if k.ratio != nil && c.Total > 0 && b.Total > 0 {
			k.lastCanary, k.lastBaseline = c.Events/c.Total, b.Events/b.Total
		}
	case experiments.KPIGauge:
		if c.Value != nil && nVal > 0 {
			k.addGauge(*c.Value, bVal/float64(nVal), 0, pre)
			k.lastCanary, k.lastBaseline = *c.Value, bVal/float64(nVal)
		}
	case experiments.KPIThroughput:
		if c.Value != nil && nVal > 0 {
			k.lastCanary, k.lastBaseline = *c.Value, bVal/float64(nVal)
		}
	}
}

func (k *kpiState) addRatio(c, nc, b, nb float64, pre bool) {
	if pre {
		k.ratioPre = append(k.ratioPre, analysis.RatioObservation{CanaryEvents: c, CanaryTotal: nc, BaselineEvents: b, BaselineTotal: nb})
		return
	}
	k.fit()
	k.ratio.Add(c, nc, b, nb)
}

func (k *kpiState) addGauge(c, b, samplingVar float64, pre bool) {
	if pre {
		k.gaugePre = append(k.gaugePre, analysis.GaugeObservation{Canary: c, Baseline: b, SamplingVar: samplingVar})
		return
	}
	k.fit()
	k.gauge.AddSampled(c, b, samplingVar)
}

// requests returns each cluster's request count in the Observation, for the share check.
func (k *kpiState) requests(o Observation, cluster string) (float64, bool) {
	v, ok := o.Clusters[cluster]
	if !ok {
		return 0, false
	}
	switch k.spec.Type {
	case experiments.KPIRatio, experiments.KPILatency:
		return v.Total, true
	case experiments.KPIThroughput:
		if v.Value != nil {
			return *v.Value, true
		}
	}
	return 0, false
}

func encodeObservation(o Observation) json.RawMessage { return mustJSON(o) }

// bucketCV2 estimates the per-request squared coefficient of variation from cumulative
// histogram buckets: each bucket's requests at its midpoint (the first bucket's at half its
// bound, the +Inf bucket's at 1.5× the last finite bound), with the exact mean sum/count.
// Coarse, but it only splits an interval's variance into the part that shrinks with
// traffic and the part that does not.
func bucketCV2(buckets []metrics.Bucket, count, sum float64) (float64, bool) {
	if !(count > 0) || !(sum > 0) || len(buckets) < 2 {
		return 0, false
	}
	bs := append([]metrics.Bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	var m2, prevBound, prevCount float64
	for _, b := range bs {
		n := b.Count - prevCount
		if n < 0 || math.IsNaN(n) {
			return 0, false
		}
		var mid float64
		switch {
		case math.IsInf(b.UpperBound, 1):
			mid = 1.5 * prevBound
		default:
			mid = (prevBound + b.UpperBound) / 2
		}
		m2 += n * mid * mid
		prevBound, prevCount = b.UpperBound, b.Count
		if math.IsInf(b.UpperBound, 1) {
			break
		}
	}
	mean := sum / count
	v := m2/count - mean*mean
	if !(v > 0) || math.IsInf(v, 0) {
		return 0, false
	}
	return v / (mean * mean), true
}
