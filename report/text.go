package report

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Wording shared by the Markdown and HTML views, so both say the same thing.

// headline is the verdict in capitals as people say it ("ROLLED BACK").
func headline(r *Report) string {
	return strings.ToUpper(strings.ReplaceAll(r.Verdict, "_", " "))
}

// verdictClass picks the colour of the verdict banner.
func verdictClass(r *Report) string {
	switch r.Verdict {
	case "promoted", "non-inferior":
		return "good"
	case "rolled_back", "harm", "failed", "check_failed", "aborted":
		return "bad"
	}
	return "neutral"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func fmtClock(t time.Time) string { return t.UTC().Format("15:04:05") }

func fmtDuration(sec float64) string {
	if sec <= 0 {
		return "—"
	}
	return (time.Duration(sec * float64(time.Second))).Round(time.Second).String()
}

func variantText(v map[string]string) string {
	if len(v) == 0 {
		return "—"
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+v[k])
	}
	return strings.Join(parts, ", ")
}

// effectText is the final confidence sequence in words.
func effectText(k *KPI) string {
	if k.Status == StatusNotJudged {
		return "not judged"
	}
	e := k.Effect
	if e.Estimate == nil {
		return "no estimate"
	}
	f := func(v *float64, unbounded string) string {
		if v == nil {
			return unbounded
		}
		if e.Relative {
			return signedPct(*v)
		}
		return trimFloat(*v, 3)
	}
	s := fmt.Sprintf("%s (%s … %s)", f(e.Estimate, "?"), f(e.CILow, "−∞"), f(e.CIHigh, "+∞"))
	return s
}

// effectSentence explains the effect for a reader who was not there.
func effectSentence(k *KPI) string {
	e := k.Effect
	if k.Status == StatusNotJudged || e.Estimate == nil {
		return ""
	}
	s := fmt.Sprintf("Effect on the canary: %s, anytime-valid bounds at %s per side over %d intervals", effectText(k), pct(e.Alpha), e.Intervals)
	if e.PreAdjusted {
		s += ", measured from the canary's offset before the variant"
	}
	if e.Dispersion > 1.5 {
		s += fmt.Sprintf("; the counts were %.1f× noisier than Poisson, which widens the bounds", e.Dispersion)
	}
	tol := signedPct(k.Tolerance)
	if k.Harm == "decrease" {
		tol = signedPct(-k.Tolerance)
	}
	return s + fmt.Sprintf(". Tolerance %s (harm is an %s).", tol, k.Harm)
}

func numText(v *float64, f func(float64) string) string {
	if v == nil {
		return "—"
	}
	return f(*v)
}

func pText(p float64) string {
	switch {
	case p < 1e-4:
		return "<0.0001"
	default:
		return fmt.Sprintf("%.4f", p)
	}
}

func statText(t Test) string {
	if t.Statistic == nil {
		if t.Error != "" {
			return "—"
		}
		return "∞"
	}
	s := trimFloat(*t.Statistic, 4)
	if t.DF != nil {
		s += fmt.Sprintf(" (df %.1f)", *t.DF)
	}
	return s
}

func testEstimate(k *KPI, t Test) string {
	if t.Error != "" {
		return t.Error
	}
	if t.Estimate == nil {
		return "—"
	}
	f := valueFormatter(k.Measure, k.Type)
	if t.Method == MethodBinomialRate {
		f = func(v float64) string { return "×" + trimFloat(v, 4) }
	}
	s := f(*t.Estimate)
	if t.Method == MethodMannWhitney || t.Method == MethodWelch {
		s = signed(*t.Estimate, f)
	}
	if t.CILow != nil || t.CIHigh != nil {
		s += fmt.Sprintf(" [%s, %s]", numText(t.CILow, f), numText(t.CIHigh, f))
	}
	return s
}

func signed(v float64, f func(float64) string) string {
	if v > 0 {
		return "+" + f(v)
	}
	return f(v)
}

func methodName(m string) string {
	switch m {
	case MethodWelch:
		return "Welch t"
	case MethodMannWhitney:
		return "Mann-Whitney U (Hodges–Lehmann shift)"
	case MethodBinomialRate:
		return "Exact binomial rate test (rate ratio)"
	}
	return m
}

// stepRow is one step's mean per cluster for the tables that stand in for charts.
type stepRow struct {
	label  string
	canary *float64
	base   map[string]*float64
	n      int
}

func stepRows(r *Report, k *KPI) []stepRow {
	type acc struct {
		sum map[string]float64
		n   map[string]int
		cnt int
	}
	order := []int{}
	accs := map[int]*acc{}
	keyOf := func(p Point) int {
		if p.Phase == "pre" {
			return -1
		}
		return p.Step
	}
	for _, p := range k.Series {
		key := keyOf(p)
		a := accs[key]
		if a == nil {
			a = &acc{sum: map[string]float64{}, n: map[string]int{}}
			accs[key] = a
			order = append(order, key)
		}
		a.cnt++
		if p.Canary != nil {
			a.sum[""] += *p.Canary
			a.n[""]++
		}
		for b, v := range p.Baselines {
			if v != nil {
				a.sum[b] += *v
				a.n[b]++
			}
		}
	}
	var rows []stepRow
	for _, key := range order {
		a := accs[key]
		row := stepRow{base: map[string]*float64{}, n: a.cnt}
		switch {
		case key < 0:
			row.label = "history"
		case r.Kind == KindAnalysis:
			row.label = "window"
		default:
			row.label = fmt.Sprintf("step %d", key)
			for _, s := range r.Steps {
				if s.Step == key {
					row.label += " (" + pct(s.Weight) + ")"
				}
			}
		}
		if a.n[""] > 0 {
			row.canary = fptr(a.sum[""] / float64(a.n[""]))
		}
		for _, b := range r.Clusters.Baselines {
			if a.n[b] > 0 {
				row.base[b] = fptr(a.sum[b] / float64(a.n[b]))
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// shownDecisions keeps the decisions a reader needs: every one that changed something,
// and the last. The JSON report has them all.
func shownDecisions(r *Report) []Decision {
	var out []Decision
	for i, d := range r.Decisions {
		if d.Action != "continue" || i == len(r.Decisions)-1 {
			out = append(out, d)
		}
	}
	return out
}

// shownEvents drops the write-ahead intents (each is followed by its confirmation or a
// fault) to keep the timeline readable.
func shownEvents(r *Report) []Entry {
	var out []Entry
	for _, e := range r.Timeline {
		if e.Type == "weights_intent" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// eventLabel is the timeline's word for an event type.
func eventLabel(t string) string {
	switch t {
	case "run_started":
		return "start"
	case "state_changed":
		return "state"
	case "weights_confirmed":
		return "weights"
	case "no_data":
		return "data"
	case "pre_period":
		return "history"
	case "run_ended":
		return "end"
	}
	return t
}

func statusIcon(s string) string {
	switch s {
	case "harm":
		return "✗"
	case "non-inferior":
		return "✓"
	case "inconclusive":
		return "?"
	}
	return "·"
}

func alphaText(r *Report) string {
	judged := 0
	for _, k := range r.KPIs {
		if k.Status != StatusNotJudged {
			judged++
		}
	}
	return fmt.Sprintf("α = %s family-wise, %s per KPI (%d judged)", trimFloat(r.Alpha, 3), trimFloat(r.Alpha/math.Max(float64(judged), 1), 3), judged)
}

func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// story is the run in three sentences, for someone who was not there.
func story(r *Report) string {
	var b strings.Builder
	variant := ""
	if len(r.Experiment.Variant) > 0 {
		variant = " (" + variantText(r.Experiment.Variant) + ")"
	}
	if r.Kind == KindAnalysis {
		fmt.Fprintf(&b, "%s%s was compared with %s over %s → %s, without moving traffic. ", r.Clusters.Canary, variant, strings.Join(r.Clusters.Baselines, " and "),
			fmtTime(r.Window.From), fmtTime(r.Window.To))
	} else {
		fmt.Fprintf(&b, "Canary %s%s was compared live with %s.", r.Clusters.Canary, variant, strings.Join(r.Clusters.Baselines, " and "))
		if n := len(r.Steps); n > 0 {
			last := r.Steps[n-1]
			fmt.Fprintf(&b, " It took %s of the traffic at %s and reached step %d (%s) at %s.", pct(r.Steps[0].Weight), fmtClock(r.Steps[0].Start), last.Step, pct(last.Weight), fmtClock(last.Start))
		} else {
			b.WriteString(" No traffic was moved.")
		}
		if !r.Experiment.Ended.IsZero() {
			fmt.Fprintf(&b, " The run ended at %s, %s after it started: %s", fmtClock(r.Experiment.Ended), fmtDuration(r.Experiment.Duration), strings.ReplaceAll(r.Verdict, "_", " "))
			if r.Experiment.EndedBy != "" {
				b.WriteString(" by " + r.Experiment.EndedBy)
			}
			b.WriteString(". ")
		} else {
			b.WriteString(" The run has not ended. ")
		}
	}
	counts := map[string][]string{}
	for _, k := range r.KPIs {
		counts[k.Status] = append(counts[k.Status], k.Name)
	}
	var parts []string
	for _, s := range []string{"harm", "inconclusive", "no data", "non-inferior"} {
		if ks := counts[s]; len(ks) > 0 {
			word := map[string]string{"harm": "harmful", "inconclusive": "inconclusive", "no data": "without data", "non-inferior": "within tolerance"}[s]
			parts = append(parts, fmt.Sprintf("%s %s", strings.Join(ks, ", "), word))
		}
	}
	if len(parts) > 0 {
		b.WriteString("KPIs: " + strings.Join(parts, "; ") + ".")
	}
	manual, faults := 0, 0
	for _, e := range r.Timeline {
		switch e.Type {
		case "action":
			manual++
		case "fault", "drift", "no_data":
			if !strings.HasPrefix(e.Message, "pre-period:") {
				faults++
			}
		}
	}
	if manual > 0 {
		fmt.Fprintf(&b, " %d manual action(s).", manual)
	}
	if faults > 0 {
		fmt.Fprintf(&b, " %d fault or data-gap event(s) survived.", faults)
	}
	if r.Traffic.Checked && r.Traffic.Mismatch {
		b.WriteString(" The traffic shares did not match the weights.")
	}
	return strings.TrimSpace(b.String())
}
