package report

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// A drill's run (experiments.KindDrill) stores no per-interval observations: the engine
// judges each survivor's hold against its own window before the drain and records that
// evidence as its decisions' details (engine.DrillEvaluation). drillKPIs turns the latest
// of them into the report's KPIs, one per survivor and judged quantity, in place of the
// canary/baseline comparison an experiment's report shows, which for a drained canary would
// only say it had no data.

// isDrill reports whether the stored experiment is a drill's.
func isDrill(exp *experiments.Experiment) bool { return exp.Kind == experiments.KindDrill }

// drillKPIs replaces r's KPIs and canary notes with the drill's last evaluation.
func drillKPIs(r *Report, exp *experiments.Experiment, decs []store.Decision) {
	var last *engine.DrillEvaluation
	for _, d := range decs {
		var ev engine.DrillEvaluation
		if json.Unmarshal(d.Details, &ev) == nil && ev.Kind == engine.DrillKind {
			last = &ev
		}
	}
	drain := exp.Spec.Canary.Cluster
	notes := []string{fmt.Sprintf("A drill: %s was drained and %s compared with their own %s before the drain.",
		drain, strings.Join(exp.Spec.Baselines, ", "), exp.Spec.Traffic.Steps[0].Hold)}
	for _, n := range r.Notes {
		if !strings.HasSuffix(n, "has no canary data in the run.") {
			notes = append(notes, n)
		}
	}
	r.Notes = notes
	r.KPIs = []KPI{}
	if last == nil {
		r.Notes = append(r.Notes, "No interval of the hold was judged.")
		return
	}
	if len(last.NoData) > 0 {
		r.Notes = append(r.Notes, "No data during the hold for "+strings.Join(last.NoData, ", ")+".")
	}
	src := map[string]experiments.KPI{}
	for _, k := range exp.Spec.KPIs {
		src[k.Name] = k
	}
	for _, k := range last.KPIs {
		base := k.Name
		if i := strings.Index(base, " ("); i > 0 {
			base = base[:i] // "latency (mean)" comes from KPI "latency"
		}
		spec := src[base]
		iv := k.Interval
		kpi := KPI{Name: k.Name + " on " + k.Cluster, Source: base, Type: spec.Type, Harm: string(k.Harm), Tolerance: k.Tolerance,
			Guardrail: guardrailOf(spec.Guardrail), Status: string(k.Status), StatusReason: k.Reason,
			Baselines: map[string]Summary{}, Tests: []Test{},
			Effect: Effect{Estimate: fptr(iv.Estimate), CILow: boundPtr(iv.Lower, iv.LowerBounded), CIHigh: boundPtr(iv.Upper, iv.UpperBounded),
				Relative: iv.Relative, Alpha: iv.Alpha, Dispersion: iv.Dispersion, Intervals: iv.Intervals}}
		if k.GuardrailOnly {
			kpi.Tolerance = 0
		}
		r.KPIs = append(r.KPIs, kpi)
	}
	r.Notes = append(r.Notes, fmt.Sprintf("%d of the hold's %d intervals judged.", last.Intervals, last.Planned))
}
