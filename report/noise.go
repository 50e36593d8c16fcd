package report

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
)

// NoiseOf turns the engine's noise report of one judged KPI into the report's form.
// history is the number of history intervals there were for the KPI, shown when no model
// was learned; relative says the KPI is judged on a log scale (every ratio KPI, and gauges
// compared as log ratios).
func NoiseOf(n engine.KPINoise, history int, relative bool) *Noise {
	out := &Noise{HistoryIntervals: history, Relative: relative, Fallback: n.Fallback}
	m := n.Model
	if m == nil {
		if out.Fallback == "" {
			out.Fallback = "no noise model was learned"
		}
		return out
	}
	out.HistoryIntervals = m.Intervals
	out.ClusterSD = fptr(math.Sqrt(math.Max(m.ClusterVar, 0)))
	out.LongRunSD = fptr(math.Sqrt(math.Max(m.LongRunVar, 0)))
	out.Correlation = fptr(m.Correlation)
	if m.ClusterVar > 0 {
		out.CorrelatedIntervals = fptr(math.Max(m.LongRunVar/m.ClusterVar, 1))
	}
	out.Dispersion = fptr(m.Dispersion)
	out.Offset = fptr(m.Offset)
	out.OffsetSE = fptr(m.OffsetSE)
	out.OffsetIgnored = m.OffsetIgnored
	if m.Events > 0 {
		out.EventsPerInterval = fptr(m.Events)
	}
	out.HeavyTail = heavyTail(m.TailUp, m.TailDown)
	return out
}

// heavyTail names the sides whose tails were heavier than a Gaussian's.
func heavyTail(up, down float64) string {
	switch {
	case up > 0 && down > 0:
		return "both"
	case up > 0:
		return "upper"
	case down > 0:
		return "lower"
	}
	return ""
}

// tailText says in words what a heavy tail means for the bounds, or "" without one.
func (n *Noise) tailText() string {
	switch n.HeavyTail {
	case "both":
		return "bursts in both directions, heavier-tailed than Gaussian noise, widen both bounds"
	case "upper":
		return "bursts upward on the canary, heavier-tailed than Gaussian noise, widen the lower bound"
	case "lower":
		return "bursts downward on the canary, heavier-tailed than Gaussian noise, widen the upper bound"
	}
	return ""
}

// offsetText is the offset ± its standard error, the offset shown no more precisely than
// its error allows (an offset of 1e-17 is 0).
func (n *Noise) offsetText() string {
	off, se := *n.Offset, *n.OffsetSE
	if se > 0 {
		q := math.Pow(10, math.Floor(math.Log10(se))-2)
		off = math.Round(off/q) * q
	}
	return n.scaleText(off, true) + " ± " + n.scaleText(se, false)
}

// scaleText formats a figure of the model on its scale: a log ratio as a percentage.
func (n *Noise) scaleText(v float64, sign bool) string {
	if v == 0 {
		sign = false
	}
	if n.Relative {
		if sign {
			return signedPct(v)
		}
		return pct(v)
	}
	s := trimFloat(v, 2)
	if sign && v > 0 {
		s = "+" + s
	}
	return s
}

// persistence is how long the cluster-level noise persists, in words ("~4 intervals
// (4m)"), or "" when intervals are independent.
func (n *Noise) persistence(interval time.Duration) string {
	if n.CorrelatedIntervals == nil || *n.CorrelatedIntervals < 1.5 {
		return ""
	}
	k := *n.CorrelatedIntervals
	if n.HistoryIntervals > 0 && k >= float64(n.HistoryIntervals)/2 {
		return "the whole history (it drifts rather than averages out)"
	}
	s := fmt.Sprintf("~%s intervals", countText(k))
	if interval > 0 {
		d := time.Duration(k * float64(interval)).Round(time.Second)
		if k >= 10 {
			d = time.Duration(math.Round(k)) * interval
		}
		s += " (" + experiments.Duration(d).String() + ")"
	}
	return s
}

// Sentence says what the noise model means for how fast a verdict can come: how noisy
// each interval is beyond its counts, how long that noise persists, and what an interval
// is therefore worth. interval is the analysis interval.
func (n *Noise) Sentence(interval time.Duration) string {
	if n == nil {
		return ""
	}
	if n.ClusterSD == nil {
		return "No noise model: " + strings.TrimSuffix(n.Fallback, ".") + "."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Noise learned from %d history intervals before the variant: ", n.HistoryIntervals)
	if *n.ClusterSD == 0 {
		b.WriteString("no cluster-level noise beyond sampling, so each interval counted with all its ")
		if n.EventsPerInterval != nil {
			fmt.Fprintf(&b, "events (%s per interval)", countText(*n.EventsPerInterval))
		} else {
			b.WriteString("requests")
		}
	} else {
		fmt.Fprintf(&b, "cluster-level noise %s per interval beyond sampling", n.scaleText(*n.ClusterSD, false))
		if p := n.persistence(interval); p != "" {
			fmt.Fprintf(&b, ", correlated over %s", p)
		}
		d := 1.0
		if n.Dispersion != nil {
			d = *n.Dispersion
		}
		switch {
		case n.EventsPerInterval != nil && d >= 1.05:
			e := *n.EventsPerInterval
			fmt.Fprintf(&b, ": each interval counted like %s of its %s events (%s× noisier than its counts)", countText(e/d), countText(e), trimFloat(d, 2))
		case n.EventsPerInterval != nil:
			fmt.Fprintf(&b, ", small beside the sampling noise of its %s events per interval", countText(*n.EventsPerInterval))
		case d >= 1.05:
			fmt.Fprintf(&b, ": each interval counted like 1/%s of its requests", trimFloat(d, 2))
		default:
			b.WriteString(": this noise, not the traffic, sets how fast the bounds narrow")
		}
		if t := n.tailText(); t != "" {
			b.WriteString("; " + t)
		}
	}
	if n.Offset != nil && n.OffsetSE != nil {
		fmt.Fprintf(&b, ". Before the variant the canary stood at %s against its baselines", n.offsetText())
		if n.OffsetIgnored {
			b.WriteString(", not subtracted: the variant's arrival is not declared (spec.canary.apply), so the history may already hold it")
		} else {
			b.WriteString("; the effect is measured from there")
		}
	}
	b.WriteString(".")
	return b.String()
}

// Compact is the model on one line, for live views and check output.
func (n *Noise) Compact(interval time.Duration) string {
	if n == nil {
		return ""
	}
	if n.ClusterSD == nil {
		return "no model: " + n.Fallback
	}
	parts := []string{"no cluster-level noise beyond sampling"}
	if *n.ClusterSD > 0 {
		parts[0] = fmt.Sprintf("cluster sd %s/interval", n.scaleText(*n.ClusterSD, false))
	}
	if p := n.persistence(interval); p != "" {
		parts = append(parts, "correlated over "+p)
	}
	if n.Dispersion != nil && *n.Dispersion >= 1.05 {
		s := trimFloat(*n.Dispersion, 2) + "× sampling noise"
		if n.EventsPerInterval != nil {
			s += fmt.Sprintf(" (an interval counts like %s of its %s events)", countText(*n.EventsPerInterval / *n.Dispersion), countText(*n.EventsPerInterval))
		}
		parts = append(parts, s)
	}
	if n.HeavyTail != "" {
		parts = append(parts, "heavy "+n.HeavyTail+" tail (bursts)")
	}
	if n.Offset != nil && n.OffsetSE != nil {
		o := "offset " + n.offsetText()
		if n.OffsetIgnored {
			o += " (not subtracted)"
		}
		parts = append(parts, o)
	}
	parts = append(parts, fmt.Sprintf("from %d history intervals", n.HistoryIntervals))
	return strings.Join(parts, ", ")
}

// whySentence is the per-KPI sentence of the Markdown and HTML views: how long the verdict
// took, and the noise that made it take that long.
func whySentence(r *Report, k *KPI) string {
	if k.Noise == nil || k.Status == StatusNotJudged {
		return ""
	}
	var iv time.Duration
	if d, err := model.ParseDuration(r.Window.Step); err == nil {
		iv = time.Duration(d)
	}
	lead := ""
	switch {
	case k.StatusAfter > 0:
		lead = fmt.Sprintf("%s after %d of %d live intervals. ", capitalize(k.Status), k.StatusAfter, k.LiveIntervals)
	case k.Status == "inconclusive":
		lead = fmt.Sprintf("Still inconclusive after %d live intervals. ", k.LiveIntervals)
	}
	return lead + k.Noise.Sentence(iv)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// hasNoise reports whether any KPI carries a noise model or its fallback.
func hasNoise(r *Report) bool {
	for _, k := range r.KPIs {
		if k.Noise != nil {
			return true
		}
	}
	return false
}

// noiseCell is a KPI's noise model in the history table ("—" for KPIs not judged).
func noiseCell(r *Report, k *KPI) string {
	if k.Noise == nil {
		return "—"
	}
	var iv time.Duration
	if d, err := model.ParseDuration(r.Window.Step); err == nil {
		iv = time.Duration(d)
	}
	return k.Noise.Compact(iv)
}

// countText writes a count as people read counts: whole from 10 on.
func countText(x float64) string {
	if math.Abs(x) >= 10 {
		return fmt.Sprintf("%.0f", x)
	}
	return trimFloat(x, 2)
}

// historyText is the sentence that opens the history section of the Markdown and HTML
// views.
func historyText(r *Report) string {
	s := ""
	if p := r.PrePeriod; p != nil {
		s = fmt.Sprintf("%s → %s, %d intervals of the same code on every cluster, read before any change as a run reads them: each KPI learned its noise model and the canary's offset against its baselines from them. ",
			fmtTime(p.From), fmtTime(p.To), p.Intervals)
	}
	subtracted, ignored := false, false
	for _, k := range r.KPIs {
		if k.Noise != nil && k.Noise.Offset != nil {
			subtracted = subtracted || !k.Noise.OffsetIgnored
			ignored = ignored || k.Noise.OffsetIgnored
		}
	}
	switch {
	case ignored && !subtracted:
		s += "The offsets are shown, not subtracted: the experiment does not declare when the variant arrived (spec.canary.apply), so the history may already hold it."
	case subtracted:
		s += "The effects above are measured from the offsets (difference-in-differences)."
	}
	return strings.TrimSpace(s)
}
