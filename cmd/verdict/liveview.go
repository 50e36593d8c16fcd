package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/traffic"
)

// renderRun draws the live view of a run: where it is, the weights, every KPI's evidence,
// the latest decision and recent events. Only the goroutine stepping r may call it (the live
// view renders published snapshots with renderSnapshot).
func renderRun(w io.Writer, banner string, r *engine.Run, recent []engine.Event, now time.Time) {
	renderSnapshot(w, banner, r.Experiment(), r.Snapshot(), recent, now)
}

// renderSnapshot draws the live view of a run from a snapshot of it. Text that comes from
// the experiment or from people (names, reasons, event messages) goes through safeText.
func renderSnapshot(w io.Writer, banner string, exp *experiments.Experiment, s engine.Snapshot, recent []engine.Event, now time.Time) {
	rec := s.Run
	if banner != "" {
		fmt.Fprintf(w, "%s\n\n", banner)
	}
	fmt.Fprintf(w, "Experiment %s   run %s\n", safeText(exp.Metadata.Name), safeText(rec.ID))
	fmt.Fprintf(w, "Canary %s (%s) vs %s\n\n", safeText(exp.Spec.Canary.Cluster), safeText(variantText(exp.Spec.Canary.Variant)), safeText(strings.Join(exp.Spec.Baselines, ", ")))

	state := string(rec.State)
	if rec.Step > 0 && !rec.State.Terminal() {
		st := exp.Spec.Traffic.Steps[rec.Step-1]
		state += fmt.Sprintf(" — step %d/%d at %s", rec.Step, s.Steps, st.Weight)
	}
	fmt.Fprintf(w, "State   %s\n", state)
	if len(s.Phases) > 1 && !rec.State.Terminal() {
		var ps []string
		for _, p := range s.Phases {
			if strings.HasPrefix(p, s.Phase) {
				p = "[" + p + "]"
			}
			ps = append(ps, p)
		}
		fmt.Fprintf(w, "Phases  %s\n", strings.Join(ps, " → "))
	}
	if rec.State == "Ramping" && s.Hold > 0 {
		frac := math.Min(1, float64(rec.StepElapsed)/float64(s.Hold))
		left := max(s.Hold-rec.StepElapsed, 0)
		fmt.Fprintf(w, "Hold    %s %3.0f%%  %s analysed of %s, %s left (the clock stops without data)\n", bar(frac, 30), frac*100, rec.StepElapsed.Truncate(time.Second), s.Hold, left.Truncate(time.Second))
	}
	if !s.RampStart.IsZero() && !rec.State.Terminal() {
		fmt.Fprintf(w, "Elapsed %s of at most %s\n", now.Sub(s.RampStart).Truncate(time.Second), s.MaxDuration)
	}
	if s.PauseNote != "" {
		fmt.Fprintf(w, "Paused  %s\n", safeText(s.PauseNote))
	}

	fmt.Fprintln(w, "\nWeights")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range exp.Spec.Clusters() {
		o := exp.Spec.Traffic.Origins()[c]
		cur, orig := rec.Current[o], rec.Original[o]
		role := "baseline"
		if c == exp.Spec.Canary.Cluster {
			role = "canary"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t(was %s)\n", safeText(c), role, traffic.FormatWeight(cur), traffic.FormatWeight(orig))
	}
	tw.Flush()
	if rec.Intent != nil {
		fmt.Fprintf(w, "  writing %s …\n", safeText(rec.Intent.Purpose))
	}

	iv := exp.Spec.Analysis.Interval
	fmt.Fprintln(w, "\nKPIs")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The values are the latest interval's; the effect and its sequence cover the whole run.
	fmt.Fprintf(tw, "  KPI\tSTATUS\tCANARY (LAST %s)\tBASELINE (LAST %s)\tEFFECT (CUMULATIVE)\tCONFIDENCE SEQUENCE\tTOLERANCE\n", iv, iv)
	vals := map[string]engine.KPIValue{}
	for _, v := range s.Values {
		vals[v.KPI] = v
	}
	if s.Decision != nil {
		for _, k := range s.Decision.KPIs {
			v, ok := vals[k.Name]
			if !ok {
				v = vals[strings.SplitN(k.Name, " (", 2)[0]]
			}
			iv := k.Interval
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeText(k.Name), statusText(k.Status), num(v.Canary), num(v.Baseline), signedPct(iv.Estimate), csText(iv), "+"+pctText(k.Tolerance))
		}
	} else {
		fmt.Fprintln(tw, "  (waiting for the first complete interval)")
	}
	tw.Flush()
	if s.Share.Mismatch {
		fmt.Fprintf(w, "  traffic share MISMATCH: %s\n", safeText(s.Share.Reason))
	}
	renderNoise(w, s, iv.Std())
	if s.Decision != nil {
		fmt.Fprintf(w, "\nDecision  %s — %s\n", s.Decision.Action, safeText(s.Decision.Reason))
	}
	if rec.State.Terminal() {
		fmt.Fprintf(w, "\nVerdict   %s — %s\n", strings.ToUpper(strings.ReplaceAll(safeText(rec.Verdict), "_", " ")), safeText(rec.Reason))
	}

	fmt.Fprintln(w, "\nRecent events")
	shown := 0
	for i := len(recent) - 1; i >= 0 && shown < 8; i-- {
		e := recent[i]
		if e.Type == engine.EventDecision {
			continue
		}
		fmt.Fprintf(w, "  %s  %-18s %s\n", e.At.Local().Format("15:04:05"), safeText(e.Type), safeText(e.Message))
		shown++
	}
}

// renderNoise shows each KPI's noise model, once the history has been read: what sets how
// fast its confidence sequence narrows.
func renderNoise(w io.Writer, s engine.Snapshot, iv time.Duration) {
	learned := s.Run.Step > 0
	for _, n := range s.Noise {
		learned = learned || n.Model != nil
	}
	if !learned || len(s.Noise) == 0 {
		return
	}
	fmt.Fprintln(w, "\nNoise (learned from the history before the variant)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range s.Noise {
		// The engine judges ratio KPIs and gauges (latency means included) as log ratios.
		fmt.Fprintf(tw, "  %s\t%s\n", safeText(n.KPI), report.NoiseOf(n, 0, true).Compact(iv))
	}
	tw.Flush()
}

func variantText(v map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(v) {
		parts = append(parts, k+"="+v[k])
	}
	if len(parts) == 0 {
		return "no variant recorded"
	}
	return strings.Join(parts, ", ")
}

func bar(frac float64, width int) string {
	n := int(math.Round(frac * float64(width)))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func statusText(s analysis.Status) string {
	switch s {
	case analysis.Harm:
		return "HARM"
	case analysis.NonInferior:
		return "ok"
	}
	return string(s)
}

func num(x float64) string {
	switch {
	case x == 0:
		return "0"
	case math.Abs(x) < 0.01:
		return fmt.Sprintf("%.3g", x)
	case math.Abs(x) < 10:
		return fmt.Sprintf("%.4f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

func pctText(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }

func signedPct(f float64) string { return fmt.Sprintf("%+.1f%%", f*100) }

func csText(iv analysis.Interval) string {
	if !iv.Ready {
		return fmt.Sprintf("warming up (%d intervals)", iv.Informative)
	}
	lo, hi := signedPct(iv.Lower), signedPct(iv.Upper)
	if !iv.LowerBounded {
		lo = "-∞"
	}
	if !iv.UpperBounded {
		hi = "+∞"
	}
	return "[" + lo + ", " + hi + "]"
}
