package report

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MarkdownOptions say where the Markdown report's charts go. Markdown cannot hold SVG
// inline on most hosts (GitHub strips it), so charts are files next to the report; without
// ChartDir they are left out and the per-step tables carry the same story.
type MarkdownOptions struct {
	// ChartDir receives one SVG file per chart; empty means no chart files.
	ChartDir string
	// ChartPrefix starts each chart's file name (default "chart"); links are relative to
	// the report, so keep ChartDir the report's own directory or adjust LinkDir.
	ChartPrefix string
	// LinkDir is prepended to chart links (default: none, charts beside the report).
	LinkDir string
}

// WriteMarkdown renders the report as Markdown.
func WriteMarkdown(w io.Writer, r *Report, o MarkdownOptions) error {
	bw := bufio.NewWriter(w)
	m := &mdWriter{w: bw, r: r, o: o}
	if o.ChartPrefix == "" {
		m.o.ChartPrefix = "chart"
	}
	m.write()
	if m.err != nil {
		return m.err
	}
	return bw.Flush()
}

type mdWriter struct {
	w   *bufio.Writer
	r   *Report
	o   MarkdownOptions
	err error
}

func (m *mdWriter) p(format string, a ...any) {
	fmt.Fprintf(m.w, format, a...)
	m.w.WriteByte('\n')
}

func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// chart writes an SVG file and returns its Markdown image, or "" without ChartDir.
func (m *mdWriter) chart(name string, c chart) string {
	if m.o.ChartDir == "" || m.err != nil {
		return ""
	}
	file := m.o.ChartPrefix + "-" + name + ".svg"
	if err := os.WriteFile(filepath.Join(m.o.ChartDir, file), []byte(c.render()+"\n"), 0o644); err != nil {
		m.err = fmt.Errorf("write chart %s: %w", file, err)
		return ""
	}
	link := file
	if m.o.LinkDir != "" {
		link = m.o.LinkDir + "/" + file
	}
	return fmt.Sprintf("![%s](%s)", c.title, link)
}

func (m *mdWriter) write() {
	r := m.r
	title := "Verdict report"
	if r.Kind == KindAnalysis {
		title = "Verdict analysis"
	}
	m.p("# %s: %s — %s\n", title, r.Experiment.Name, headline(r))
	m.p("> **%s.** %s\n", headline(r), cell(r.Reason))
	m.p("%s\n", story(r))
	m.p("| | |\n|---|---|")
	if r.Experiment.RunID != "" {
		m.p("| Run | `%s` (%s) |", r.Experiment.RunID, r.Experiment.State)
	}
	if r.Experiment.Description != "" {
		m.p("| What | %s |", cell(r.Experiment.Description))
	}
	m.p("| Variant | %s |", cell(variantText(r.Experiment.Variant)))
	m.p("| Canary | %s |", r.Clusters.Canary)
	m.p("| Baselines | %s |", strings.Join(r.Clusters.Baselines, ", "))
	if r.Kind == KindRun {
		m.p("| Started | %s |", fmtTime(r.Experiment.Started))
		m.p("| Ended | %s (after %s) |", fmtTime(r.Experiment.Ended), fmtDuration(r.Experiment.Duration))
		if r.Experiment.EndedBy != "" {
			m.p("| Ended by | %s |", cell(r.Experiment.EndedBy))
		}
	}
	if r.Experiment.Prometheus != "" {
		m.p("| Prometheus | %s |", r.Experiment.Prometheus)
	}
	m.p("| Window analysed | %s → %s, %s intervals |", fmtTime(r.Window.From), fmtTime(r.Window.To), r.Window.Step)
	m.p("| Error level | %s |", alphaText(r))
	m.p("")

	m.p("## KPIs at a glance\n")
	m.p("| KPI | status | effect on canary (anytime-valid bounds) | canary | baselines | smallest Holm-adjusted p | Kayenta |")
	m.p("|---|---|---|---|---|---|---|")
	for i := range r.KPIs {
		k := &r.KPIs[i]
		f := valueFormatter(k.Measure, k.Type)
		cv, bv := k.Canary.Mean, k.Baseline.Mean
		if k.Canary.Rate != nil {
			cv, bv = k.Canary.Rate, k.Baseline.Rate
		}
		minP, best := "—", 2.0
		for _, t := range k.Tests {
			if t.Error == "" && t.PAdjusted < best {
				minP, best = pText(t.PAdjusted), t.PAdjusted
			}
		}
		kay := "—"
		if k.Kayenta != nil {
			kay = k.Kayenta.Classification
		}
		m.p("| %s | %s %s | %s | %s | %s | %s | %s |", cell(k.Name), statusIcon(k.Status), k.Status, effectText(k), numText(cv, f), numText(bv, f), minP, kay)
	}
	m.p("")

	if r.Kind == KindRun {
		m.timeline()
	}
	for i := range r.KPIs {
		m.kpi(&r.KPIs[i])
	}
	m.traffic()
	if len(r.Preconditions) > 0 {
		m.p("## Preconditions\n")
		m.p("| precondition | expect | checks | failed | last value |\n|---|---|---|---|---|")
		for _, p := range r.Preconditions {
			m.p("| %s | `%s` | %d | %d | %s |", cell(p.Name), p.Expect, p.Checks, p.Failures, numText(p.Last, func(v float64) string { return trimFloat(v, 6) }))
		}
		m.p("")
	}
	if r.PrePeriod != nil || hasNoise(r) {
		m.p("## History before the variant\n")
		if t := historyText(r); t != "" {
			m.p("%s\n", cell(t))
		}
		m.p("| KPI | canary | baselines | canary ÷ baselines | noise model |\n|---|---|---|---|---|")
		for i := range r.KPIs {
			k := &r.KPIs[i]
			if k.Pre == nil && k.Noise == nil {
				continue
			}
			f := valueFormatter(k.Measure, k.Type)
			var c, b, ratio *float64
			if k.Pre != nil {
				c, b, ratio = k.Pre.Canary, k.Pre.Baseline, k.Pre.Ratio
			}
			m.p("| %s | %s | %s | %s | %s |", cell(k.Name), numText(c, f), numText(b, f), numText(ratio, func(v float64) string { return "×" + trimFloat(v, 4) }), cell(noiseCell(r, k)))
		}
		m.p("")
	}
	if s := r.SourceOfTruth; s != nil {
		m.p("## Source of truth\n")
		m.p("%s\n", cell(sourceSyncText(r.Experiment.RunID, s)))
	}
	if len(r.Notes) > 0 {
		m.p("## Notes\n")
		for _, n := range r.Notes {
			m.p("- %s", n)
		}
		m.p("")
	}
	m.p("---\nGenerated by Verdict (report schema %d). Fixed-horizon p-values are for reference: the run was judged live on anytime-valid confidence sequences, which stay valid although the run stopped when the data said so.", r.SchemaVersion)
}

func (m *mdWriter) timeline() {
	r := m.r
	m.p("## Timeline\n")
	if img := m.chart("weights", weightsChart(r)); img != "" {
		m.p("%s\n", img)
	}
	if len(r.Steps) > 0 {
		m.p("| step | canary share | hold | started | ended | intervals analysed |\n|---|---|---|---|---|---|")
		for _, s := range r.Steps {
			end := "—"
			if !s.End.IsZero() {
				end = fmtClock(s.End)
			}
			m.p("| %d | %s | %s | %s | %s | %d |", s.Step, pct(s.Weight), s.Hold, fmtClock(s.Start), end, s.Intervals)
		}
		m.p("")
	}
	m.p("| time (UTC) | what | |\n|---|---|---|")
	for _, e := range shownEvents(r) {
		m.p("| %s | %s | %s |", fmtClock(e.At), eventLabel(e.Type), cell(e.Message))
	}
	m.p("")
	ds := shownDecisions(r)
	m.p("**Decisions.** %d recorded, one per analysed interval; shown: those that changed something, and the last.\n", len(r.Decisions))
	if len(ds) > 0 {
		m.p("| time (UTC) | step | action | reason |\n|---|---|---|---|")
		for _, d := range ds {
			m.p("| %s | %d | %s | %s |", fmtClock(d.At), d.Step, d.Action, cell(d.Reason))
		}
		m.p("")
	}
}

func (m *mdWriter) kpi(k *KPI) {
	r := m.r
	m.p("## %s\n", k.Name)
	m.p("%s %s — %s\n", statusIcon(k.Status), k.Status, cell(k.StatusReason))
	if s := effectSentence(k); s != "" {
		m.p("%s\n", s)
	}
	if s := whySentence(r, k); s != "" {
		m.p("%s\n", cell(s))
	}
	if img := m.chart(slug(k.Name)+"-values", valueChart(r, k)); img != "" {
		m.p("%s\n", img)
	}
	if k.Status != StatusNotJudged {
		if img := m.chart(slug(k.Name)+"-effect", effectChart(r, k)); img != "" {
			m.p("%s\n", img)
		}
	}
	f := valueFormatter(k.Measure, k.Type)
	head := "| " + k.Measure + " per interval (mean) | canary " + r.Clusters.Canary
	sep := "|---|---"
	for _, b := range r.Clusters.Baselines {
		head += " | " + b
		sep += "|---"
	}
	m.p("%s | intervals |\n%s|---|", head, sep)
	for _, row := range stepRows(r, k) {
		line := "| " + row.label + " | " + numText(row.canary, f)
		for _, b := range r.Clusters.Baselines {
			line += " | " + numText(row.base[b], f)
		}
		m.p("%s | %d |", line, row.n)
	}
	m.p("")
	m.p("| side | n | mean | sd | p50 | p95 | p99 | events / total |\n|---|---|---|---|---|---|---|---|")
	row := func(name string, s Summary) {
		counts := "—"
		if s.Events != nil && s.Total != nil {
			counts = fmt.Sprintf("%.0f / %.0f = %s", *s.Events, *s.Total, numText(s.Rate, pct))
		}
		m.p("| %s | %d | %s | %s | %s | %s | %s | %s |", name, s.N, numText(s.Mean, f), numText(s.SD, f), numText(s.P50, f), numText(s.P95, f), numText(s.P99, f), counts)
	}
	row("canary "+r.Clusters.Canary, k.Canary)
	row("baselines pooled", k.Baseline)
	for _, b := range r.Clusters.Baselines {
		row(b, k.Baselines[b])
	}
	m.p("")
	if len(k.Tests) > 0 {
		m.p("| fixed-horizon test | statistic | p | p (Holm) | estimate [95%% CI] |\n|---|---|---|---|---|")
		for _, t := range k.Tests {
			m.p("| %s | %s | %s | %s | %s |", methodName(t.Method), statText(t), pText(t.PValue), pText(t.PAdjusted), cell(testEstimate(k, t)))
		}
		m.p("")
	}
	if k.Kayenta != nil {
		dev := ""
		if k.Kayenta.Deviation != nil {
			dev = fmt.Sprintf(", mean ratio %s", trimFloat(*k.Kayenta.Deviation, 4))
		}
		why := ""
		if k.Kayenta.Reason != "" {
			why = ": " + k.Kayenta.Reason
		}
		m.p("Kayenta's Mann-Whitney classifier on the same intervals: **%s**%s%s.\n", k.Kayenta.Classification, dev, cell(why))
	}
}

func (m *mdWriter) traffic() {
	r := m.r
	t := r.Traffic
	m.p("## Traffic-share check\n")
	switch {
	case !t.Checked:
		m.p("Not checked: %s.\n", t.Reason)
		return
	case t.Mismatch:
		m.p("**Mismatch** — %s (log Bayes factor %.2f).\n", cell(t.Reason), t.LogBayesFactor)
	default:
		m.p("Passed — %s (log Bayes factor %.2f).\n", cell(t.Reason), t.LogBayesFactor)
	}
	clusters := append([]string{r.Clusters.Canary}, r.Clusters.Baselines...)
	m.p("| step | cluster | configured share | observed share of requests |\n|---|---|---|---|")
	for _, s := range t.Steps {
		for _, c := range clusters {
			m.p("| %d | %s | %s | %s |", s.Step, c, pct(s.Expected[c]), pct(s.Observed[c]))
		}
	}
	m.p("")
}
