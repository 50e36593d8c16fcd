package engine

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/verdict-dev/verdict/analysis"
)

// The types in this file are the analysis package's results as Verdict stores, streams and
// prints them. analysis is statistics only and names nothing in JSON; the engine owns the
// schema, in camelCase like every other Verdict document. Records written before the
// schema moved here used snake_case names (lower_bounded, alpha_per_kpi): each type with
// such names reads them too, so old runs' decisions and reports still decode.

// Interval is analysis.Interval as stored and printed: a KPI's anytime-valid confidence
// sequence at one moment.
type Interval struct {
	Estimate          float64     `json:"estimate"`
	Lower             float64     `json:"lower"`
	Upper             float64     `json:"upper"`
	LowerBounded      bool        `json:"lowerBounded"`
	UpperBounded      bool        `json:"upperBounded"`
	Relative          bool        `json:"relative"`
	Alpha             float64     `json:"alpha"`
	Intervals         int         `json:"intervals"`
	Informative       int         `json:"informative"`
	Ready             bool        `json:"ready"`
	Dispersion        float64     `json:"dispersion"`
	PValue            float64     `json:"pValue"`
	PreAdjusted       bool        `json:"preAdjusted"`
	Noise             *NoiseModel `json:"noise,omitempty"`
	GuardrailStreak   int         `json:"guardrailStreak"`
	GuardrailBreached bool        `json:"guardrailBreached"`
	CanaryValue       float64     `json:"canaryValue"`
}

// IntervalOf is iv in the stored form.
func IntervalOf(iv analysis.Interval) Interval {
	return Interval{Estimate: iv.Estimate, Lower: iv.Lower, Upper: iv.Upper, LowerBounded: iv.LowerBounded, UpperBounded: iv.UpperBounded,
		Relative: iv.Relative, Alpha: iv.Alpha, Intervals: iv.Intervals, Informative: iv.Informative, Ready: iv.Ready, Dispersion: iv.Dispersion,
		PValue: iv.PValue, PreAdjusted: iv.PreAdjusted, Noise: NoiseModelOf(iv.Noise), GuardrailStreak: iv.GuardrailStreak,
		GuardrailBreached: iv.GuardrailBreached, CanaryValue: iv.CanaryValue}
}

// Analysis is the interval back in analysis' form (reports compare stored and replayed ones).
func (iv Interval) Analysis() analysis.Interval {
	out := analysis.Interval{Estimate: iv.Estimate, Lower: iv.Lower, Upper: iv.Upper, LowerBounded: iv.LowerBounded, UpperBounded: iv.UpperBounded,
		Relative: iv.Relative, Alpha: iv.Alpha, Intervals: iv.Intervals, Informative: iv.Informative, Ready: iv.Ready, Dispersion: iv.Dispersion,
		PValue: iv.PValue, PreAdjusted: iv.PreAdjusted, GuardrailStreak: iv.GuardrailStreak,
		GuardrailBreached: iv.GuardrailBreached, CanaryValue: iv.CanaryValue}
	if iv.Noise != nil {
		m := analysis.NoiseModel(*iv.Noise)
		out.Noise = &m
	}
	return out
}

// UnmarshalJSON reads both the camelCase names and the snake_case ones of older records.
func (iv *Interval) UnmarshalJSON(b []byte) error {
	type plain Interval
	return json.Unmarshal(camelKeys(b), (*plain)(iv))
}

// KPIVerdict is analysis.KPIVerdict as stored and printed.
type KPIVerdict struct {
	Name      string             `json:"name"`
	Status    analysis.Status    `json:"status"`
	Interval  Interval           `json:"interval"`
	Tolerance float64            `json:"tolerance"`
	Harm      analysis.Direction `json:"harm"`
	Reason    string             `json:"reason"`
}

// KPIVerdictOf is v in the stored form.
func KPIVerdictOf(v analysis.KPIVerdict) KPIVerdict {
	return KPIVerdict{Name: v.Name, Status: v.Status, Interval: IntervalOf(v.Interval), Tolerance: v.Tolerance, Harm: v.Harm, Reason: v.Reason}
}

// Decision is analysis.Decision as stored and printed: an action, why, and every KPI's
// verdict.
type Decision struct {
	Action        analysis.Action `json:"action"`
	Reason        string          `json:"reason"`
	KPIs          []KPIVerdict    `json:"kpis"`
	AlphaPerKPI   float64         `json:"alphaPerKPI"`
	ShareMismatch bool            `json:"shareMismatch"`
}

// DecisionOf is d in the stored form.
func DecisionOf(d analysis.Decision) Decision {
	out := Decision{Action: d.Action, Reason: d.Reason, AlphaPerKPI: d.AlphaPerKPI, ShareMismatch: d.ShareMismatch, KPIs: make([]KPIVerdict, 0, len(d.KPIs))}
	for _, k := range d.KPIs {
		out.KPIs = append(out.KPIs, KPIVerdictOf(k))
	}
	return out
}

// UnmarshalJSON reads both the camelCase names and the snake_case ones of older records.
func (d *Decision) UnmarshalJSON(b []byte) error {
	type plain Decision
	return json.Unmarshal(camelKeys(b), (*plain)(d))
}

// ShareResult is analysis.ShareResult as printed: the traffic-share check.
type ShareResult struct {
	LogBayesFactor float64   `json:"logBayesFactor"`
	Mismatch       bool      `json:"mismatch"`
	Expected       []float64 `json:"expected"`
	Observed       []float64 `json:"observed"`
	Reason         string    `json:"reason,omitempty"`
	Tolerance      float64   `json:"tolerance,omitempty"`
	Deviation      []float64 `json:"deviation,omitempty"`
	DeviationLower []float64 `json:"deviationLower,omitempty"`
	DeviationUpper []float64 `json:"deviationUpper,omitempty"`
	Checked        bool      `json:"checked"`
	Intervals      int       `json:"intervals"`
}

// ShareResultOf is s in the printed form.
func ShareResultOf(s analysis.ShareResult) ShareResult { return ShareResult(s) }

// NoiseModel is analysis.NoiseModel as stored and printed: a KPI's noise learned from
// history.
type NoiseModel struct {
	Kind          string  `json:"kind"`
	Intervals     int     `json:"intervals"`
	Offset        float64 `json:"offset"`
	OffsetSE      float64 `json:"offsetSE"`
	ClusterVar    float64 `json:"clusterVar"`
	LongRunVar    float64 `json:"longRunVar"`
	Correlation   float64 `json:"correlation"`
	TailUp        float64 `json:"tailUp,omitempty"`
	TailDown      float64 `json:"tailDown,omitempty"`
	SamplingVar   float64 `json:"samplingVar"`
	Dispersion    float64 `json:"dispersion"`
	BatchSize     int     `json:"batchSize"`
	Events        float64 `json:"eventsPerInterval,omitempty"`
	CanaryShare   float64 `json:"canaryShare,omitempty"`
	OffsetIgnored bool    `json:"offsetIgnored,omitempty"`
}

// NoiseModelOf is m in the stored form (nil for nil).
func NoiseModelOf(m *analysis.NoiseModel) *NoiseModel {
	if m == nil {
		return nil
	}
	out := NoiseModel(*m)
	return &out
}

// Analysis is the model back in analysis' form.
func (m NoiseModel) Analysis() analysis.NoiseModel { return analysis.NoiseModel(m) }

// String summarises the model for people.
func (m *NoiseModel) String() string {
	if m == nil {
		return (*analysis.NoiseModel)(nil).String()
	}
	a := m.Analysis()
	return a.String()
}

// UnmarshalJSON reads both the camelCase names and the snake_case ones of older records.
func (m *NoiseModel) UnmarshalJSON(b []byte) error {
	type plain NoiseModel
	return json.Unmarshal(camelKeys(b), (*plain)(m))
}

// camelKeys rewrites a JSON object's snake_case keys as camelCase (events_per_interval →
// eventsPerInterval; encoding/json then matches alphaPerKpi to alphaPerKPI, as it ignores
// case). Anything else is returned as it is.
func camelKeys(b []byte) []byte {
	if !bytes.Contains(b, []byte("_")) {
		return b
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return b
	}
	changed := false
	for k, v := range m {
		if !strings.Contains(k, "_") {
			continue
		}
		parts := strings.Split(k, "_")
		for i := 1; i < len(parts); i++ {
			if parts[i] != "" {
				parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
			}
		}
		c := strings.Join(parts, "")
		if _, taken := m[c]; !taken {
			m[c] = v
		}
		delete(m, k)
		changed = true
	}
	if !changed {
		return b
	}
	out, err := json.Marshal(m)
	if err != nil {
		return b
	}
	return out
}
