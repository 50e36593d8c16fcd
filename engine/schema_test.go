package engine

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/analysis"
)

// TestDecisionSchema: decisions are stored and streamed in camelCase, round-trip, and the
// snake_case records written before the schema moved to the engine still decode whole.
func TestDecisionSchema(t *testing.T) {
	m := &analysis.NoiseModel{Kind: "ratio", Intervals: 360, Offset: 0.1, OffsetSE: 0.02, LongRunVar: 0.08, TailUp: 0.4, Events: 7000, OffsetIgnored: true}
	d := analysis.Decision{Action: analysis.Continue, Reason: "not yet", AlphaPerKPI: 0.0125, ShareMismatch: true, KPIs: []analysis.KPIVerdict{{
		Name: "error-rate", Status: analysis.Inconclusive, Tolerance: 0.1, Harm: analysis.Increase, Reason: "r",
		Interval: analysis.Interval{Estimate: 0.05, Lower: -0.02, Upper: 0.12, LowerBounded: true, UpperBounded: true, Relative: true, Alpha: 0.0125,
			Intervals: 12, Informative: 11, Ready: true, Dispersion: 1.5, PValue: 0.3, PreAdjusted: true, Noise: m, GuardrailStreak: 2, CanaryValue: 0.011}}}}
	b, err := json.Marshal(DecisionOf(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"alphaPerKPI":0.0125`, `"shareMismatch":true`, `"lowerBounded":true`, `"pValue":0.3`, `"guardrailStreak":2`, `"offsetSE":0.02`, `"eventsPerInterval":7000`, `"offsetIgnored":true`, `"tailUp":0.4`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s missing from %s", want, b)
		}
	}
	if strings.Contains(string(b), "_") {
		t.Errorf("snake_case name in %s", b)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if iv := back.KPIs[0].Interval; iv.Analysis().Noise == nil || iv.Analysis().Noise.OffsetSE != 0.02 || iv.Analysis().Noise.TailUp != 0.4 || iv.Upper != 0.12 || !iv.UpperBounded || back.AlphaPerKPI != 0.0125 {
		t.Errorf("round trip lost fields: %+v", back)
	}

	// A decision as runs stored it when analysis named the fields.
	old := `{"action":"continue","reason":"not yet","kpis":[{"name":"error-rate","status":"inconclusive","interval":{"estimate":0.05,"lower":-0.02,"upper":0.12,
		"lower_bounded":true,"upper_bounded":true,"relative":true,"alpha":0.0125,"intervals":12,"informative":11,"ready":true,"dispersion":1.5,"p_value":0.3,
		"pre_adjusted":true,"noise":{"kind":"ratio","intervals":360,"offset":0.1,"offset_se":0.02,"long_run_var":0.08,"tail_up":0.4,"events_per_interval":7000,"offset_ignored":true},
		"guardrail_streak":2,"guardrail_breached":false,"canary_value":0.011},"tolerance":0.1,"harm":"Increase","reason":"r"}],"alpha_per_kpi":0.0125,"share_mismatch":true}`
	var fromOld Decision
	if err := json.Unmarshal([]byte(old), &fromOld); err != nil {
		t.Fatal(err)
	}
	if got, want := mustJSON(fromOld), mustJSON(back); string(got) != string(want) {
		t.Errorf("old record decoded as\n%s\nwant\n%s", got, want)
	}
}
