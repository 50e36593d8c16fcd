package analysis

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// fixed is an IntervalSource with a given interval, so the decision table can
// be written as data.
type fixed Interval

func (f fixed) Interval(alpha float64) Interval {
	iv := Interval(f)
	iv.Alpha = alpha
	return iv
}

func ready(est, lo, hi float64) fixed {
	return fixed{Estimate: est, Lower: lo, Upper: hi, LowerBounded: true, UpperBounded: true, Relative: true, Intervals: 30, Informative: 30, Ready: true, Dispersion: 1, PValue: 1}
}

func TestDecide(t *testing.T) {
	harmful := ready(0.3, 0.15, 0.45)
	fine := ready(0.0, -0.04, 0.04)
	unsure := ready(0.05, -0.02, 0.12)
	empty := fixed{Intervals: 5}
	collecting := fixed{Intervals: 5, Informative: 5, Relative: true}
	breach := fine
	breach.GuardrailBreached, breach.GuardrailStreak, breach.CanaryValue = true, 3, 0.031
	lowered := ready(-0.3, -0.45, -0.15)
	mismatch := &ShareResult{Mismatch: true, Reason: "observed traffic shares [2.0% 98.0%] differ from the configured [5.0% 95.0%]"}
	tests := map[string]struct {
		kpis       []KPI
		step       Step
		want       Action
		wantStatus []Status
		wantReason []string
	}{
		"harm rolls back at once": {
			kpis: []KPI{{Name: "error rate", State: harmful, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: fine, Harm: Increase, Tolerance: 0.05}},
			want: Rollback, wantStatus: []Status{Harm, NonInferior}, wantReason: []string{"Roll back", "error rate is higher", "+30.0%", "+15.0%", "+10.0% tolerance"},
		},
		"guardrail rolls back": {
			kpis: []KPI{{Name: "error rate", State: breach, Harm: Increase, Tolerance: 0.1}},
			want: Rollback, wantStatus: []Status{Harm}, wantReason: []string{"guardrail", "3 consecutive"},
		},
		"decrease is harm for success rate": {
			kpis: []KPI{{Name: "success rate", State: lowered, Harm: Decrease, Tolerance: 0.1}},
			want: Rollback, wantStatus: []Status{Harm}, wantReason: []string{"lower on the canary"},
		},
		"decrease is fine for errors": {
			kpis: []KPI{{Name: "error rate", State: lowered, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true},
			want: Promote, wantStatus: []Status{NonInferior},
		},
		"hold not over": {
			kpis: []KPI{{Name: "error rate", State: unsure, Harm: Increase, Tolerance: 0.1}},
			want: Continue, wantStatus: []Status{Inconclusive}, wantReason: []string{"hold is not over", "error rate is still inconclusive"},
		},
		"advance after hold": {
			kpis: []KPI{{Name: "error rate", State: unsure, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: fine, Harm: Increase, Tolerance: 0.05}},
			step: Step{HoldComplete: true},
			want: Advance, wantStatus: []Status{Inconclusive, NonInferior},
		},
		"promote when all non-inferior": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: fine, Harm: Increase, Tolerance: 0.05}},
			step: Step{HoldComplete: true, Final: true, Share: &ShareResult{Checked: true, Intervals: 12}},
			want: Promote, wantStatus: []Status{NonInferior, NonInferior}, wantReason: []string{"traffic shares match"},
		},
		"unchecked shares block promotion": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true, Share: &ShareResult{Intervals: 6}},
			want: Continue, wantReason: []string{"not yet checked", "6 intervals"},
		},
		"unchecked shares block early promotion": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{MinHoldComplete: true, Final: true, Share: &ShareResult{Intervals: 6}},
			want: Continue,
		},
		"unchecked shares do not block an advance": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Share: &ShareResult{Intervals: 3}},
			want: Advance,
		},
		"unchecked shares at max duration are inconclusive": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true, MaxDurationReached: true, Share: &ShareResult{}},
			want: Rollback, wantReason: []string{"maximum duration", "have not been checked"},
		},
		"final step waits for inconclusive": {
			kpis: []KPI{{Name: "error rate", State: unsure, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true},
			want: Continue, wantReason: []string{"final step", "inconclusive"},
		},
		"max duration acts on inconclusive": {
			kpis: []KPI{{Name: "error rate", State: unsure, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true, MaxDurationReached: true},
			want: Rollback, wantReason: []string{"maximum duration"},
		},
		"max duration with promote policy": {
			kpis: []KPI{{Name: "error rate", State: unsure, Harm: Increase, Tolerance: 0.1}},
			step: Step{MaxDurationReached: true, OnInconclusive: Promote},
			want: Promote,
		},
		"no data never passes": {
			kpis: []KPI{{Name: "error rate", State: empty, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: fine, Harm: Increase, Tolerance: 0.05}},
			step: Step{HoldComplete: true, Final: true},
			want: Continue, wantStatus: []Status{NoData, NonInferior}, wantReason: []string{"error rate has no data"},
		},
		"nil state is no data": {
			kpis: []KPI{{Name: "latency", Harm: Increase}},
			step: Step{HoldComplete: true},
			want: Continue, wantStatus: []Status{NoData},
		},
		"no data at max duration rolls back": {
			kpis: []KPI{{Name: "error rate", State: empty, Harm: Increase, Tolerance: 0.1}},
			step: Step{MaxDurationReached: true},
			want: Rollback, wantReason: []string{"no data"},
		},
		"collecting is inconclusive": {
			kpis: []KPI{{Name: "error rate", State: collecting, Harm: Increase, Tolerance: 0.1}},
			want: Continue, wantStatus: []Status{Inconclusive}, wantReason: []string{"still inconclusive"},
		},
		"share mismatch blocks promotion": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Final: true, Share: mismatch},
			want: Continue, wantReason: []string{"differ from the configured"},
		},
		"share mismatch blocks advance": {
			kpis: []KPI{{Name: "error rate", State: fine, Harm: Increase, Tolerance: 0.1}},
			step: Step{HoldComplete: true, Share: mismatch},
			want: Continue, wantReason: []string{"may be biased"},
		},
		"no KPIs never passes": {
			step: Step{HoldComplete: true, Final: true},
			want: Continue,
		},
		"NaN tolerance is zero": {
			kpis: []KPI{{Name: "error rate", State: ready(0.05, 0.01, 0.09), Harm: Increase, Tolerance: math.NaN()}},
			want: Rollback,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.kpis, tc.step)
			if d.Action != tc.want {
				t.Fatalf("action %s, want %s (%s)", d.Action, tc.want, d.Reason)
			}
			for i, s := range tc.wantStatus {
				if d.KPIs[i].Status != s {
					t.Fatalf("KPI %d status %s, want %s (%s)", i, d.KPIs[i].Status, s, d.KPIs[i].Reason)
				}
			}
			for _, frag := range tc.wantReason {
				if !strings.Contains(d.Reason, frag) {
					t.Fatalf("reason %q lacks %q", d.Reason, frag)
				}
			}
			if d.Reason == "" || strings.Contains(d.Reason, "NaN") {
				t.Fatalf("bad reason %q", d.Reason)
			}
			if len(tc.kpis) > 0 && math.Abs(d.AlphaPerKPI-0.05/float64(len(tc.kpis))) > 1e-15 {
				t.Fatalf("alpha per KPI %v", d.AlphaPerKPI)
			}
			if _, err := json.Marshal(d); err != nil {
				t.Fatalf("decision does not marshal: %v", err)
			}
		})
	}
}

// TestDecideWithLiveSequences wires real sequences through Decide: a canary
// with doubled errors is rolled back, an identical one advances.
func TestDecideWithLiveSequences(t *testing.T) {
	for _, tc := range []struct {
		name string
		phi  float64
		want Action
	}{{"doubled errors", 2, Rollback}, {"identical", 1, Advance}} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRatioSequence(RatioOptions{})
			g := NewGaugeSequence(GaugeOptions{})
			for i := range 60 {
				// deterministic Poisson-like counts: mean ± alternating noise
				noise := float64(i%5) - 2
				r.Add(20*tc.phi+noise, 2000, 180-noise, 18000)
				g.Add(100+noise, 100-noise/2)
			}
			d := Decide([]KPI{{Name: "error rate", State: r, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: g, Harm: Increase, Tolerance: 0.05}}, Step{HoldComplete: true})
			if d.Action != tc.want {
				t.Fatalf("action %s, want %s: %s", d.Action, tc.want, d.Reason)
			}
		})
	}
}
