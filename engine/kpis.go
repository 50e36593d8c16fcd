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
}

// Observation is the stored form of one KPI's interval: the JSON in
// store.Observation.Values.
type Observation struct {
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
		st := &kpiState{spec: k, query: queries[i]}
		switch k.Type {
		case experiments.KPIRatio:
			st.ratio = analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv, Guardrail: guardrail(k.Guardrail, 1)})
		case experiments.KPILatency:
			if k.SlowerThan != nil {
				st.ratio = analysis.NewRatioSequence(analysis.RatioOptions{MinIntervals: minIv})
			}
			if k.Sum != "" && k.Count != "" {
				st.gauge = analysis.NewGaugeSequence(analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: plannedIntervals, Guardrail: guardrail(k.Guardrail, 1)})
			}
		case experiments.KPIGauge:
			st.gauge = analysis.NewGaugeSequence(analysis.GaugeOptions{MinIntervals: minIv, PlannedIntervals: plannedIntervals, Guardrail: guardrail(k.Guardrail, 1)})
		case experiments.KPIThroughput:
			// Throughput feeds the traffic-share check only.
		}
		out = append(out, st)
	}
	return out, nil
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
	var bSum, bVal float64
	nVal, hasSum := 0, true
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
			k.addGauge(cm, bm, pre)
			k.lastCanary, k.lastBaseline = cm, bm
		} else if k.ratio != nil && c.Total > 0 && b.Total > 0 {
			k.lastCanary, k.lastBaseline = c.Events/c.Total, b.Events/b.Total
		}
	case experiments.KPIGauge:
		if c.Value != nil && nVal > 0 {
			k.addGauge(*c.Value, bVal/float64(nVal), pre)
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
		k.ratio.AddPre(c, nc, b, nb)
	} else {
		k.ratio.Add(c, nc, b, nb)
	}
}

func (k *kpiState) addGauge(c, b float64, pre bool) {
	if pre {
		k.gauge.AddPre(c, b)
	} else {
		k.gauge.Add(c, b)
	}
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
