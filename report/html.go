package report

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"strings"
)

// WriteHTML renders the report as one self-contained HTML page: inline CSS and SVG charts,
// no script, no external asset, so it can be mailed, archived or opened offline, and it
// prints on A4/Letter with every chart kept whole.
func WriteHTML(w io.Writer, r *Report) error {
	bw := bufio.NewWriter(w)
	h := &htmlWriter{w: bw, r: r}
	h.write()
	return bw.Flush()
}

type htmlWriter struct {
	w *bufio.Writer
	r *Report
}

func esc(s string) string { return html.EscapeString(s) }

func (h *htmlWriter) p(format string, a ...any) { fmt.Fprintf(h.w, format, a...) }

const css = `
:root{--good:#1b7f3b;--bad:#b00020;--neutral:#8a6d00;--ink:#1d1d1f;--muted:#5f6368;--line:#e2e2e2}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);background:#fafafa}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}
.banner{border-radius:8px;padding:14px 18px;margin:12px 0 16px;color:#fff}
.banner.good{background:var(--good)}.banner.bad{background:var(--bad)}.banner.neutral{background:var(--neutral)}
.banner .verdict{font-size:22px;font-weight:700;letter-spacing:.03em}.banner .why{font-size:16px;margin-top:4px}
dl.facts{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:4px 16px;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:13.5px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f4f4f5;font-weight:600}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.pill{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12.5px;font-weight:600;color:#fff;white-space:nowrap}
.pill.harm{background:var(--bad)}.pill.non-inferior{background:var(--good)}.pill.inconclusive{background:var(--neutral)}
.pill.no-data,.pill.not-judged{background:#777}
svg.chart{width:100%;height:auto;display:block;margin:6px 0;border:1px solid var(--line);border-radius:4px}
.charts{display:grid;grid-template-columns:1fr;gap:6px}
.story{font-size:16px;margin:0 0 14px}.muted{color:var(--muted)}.small{font-size:13px}
section.kpi{margin-top:8px}
details summary{cursor:pointer;color:var(--muted)}
tr.act-rollback td,tr.type-fault td,tr.type-drift td{color:var(--bad)}tr.act-promote td{color:var(--good)}
footer{margin-top:32px;color:var(--muted);font-size:12.5px}
@media (min-width:1500px){main{max-width:1400px}.charts{grid-template-columns:1fr 1fr}}
@media print{
 body{background:#fff;font-size:11pt}main{max-width:none;padding:0}
 .banner,.pill,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 section.kpi,svg.chart,table,.banner{break-inside:avoid}
 h2{break-after:avoid}
 details{display:block}details>*{display:block}
 @page{margin:14mm}
}
`

func (h *htmlWriter) write() {
	r := h.r
	title := "Verdict report"
	if r.Kind == KindAnalysis {
		title = "Verdict analysis"
	}
	h.p("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
	h.p("<title>%s: %s — %s</title><style>%s</style></head><body><main>\n", title, esc(r.Experiment.Name), esc(headline(r)), css)
	h.p("<h1>%s: %s</h1>\n", title, esc(r.Experiment.Name))
	if r.Experiment.Description != "" {
		h.p("<div class=\"muted\">%s</div>\n", esc(r.Experiment.Description))
	}
	h.p("<div class=\"banner %s\" id=\"verdict\"><div class=\"verdict\">%s</div><div class=\"why\">%s</div></div>\n", verdictClass(r), esc(headline(r)), esc(r.Reason))
	h.p("<p class=\"story\">%s</p>\n", esc(story(r)))
	h.p("<dl class=\"facts\">")
	fact := func(k, v string) { h.p("<dt>%s</dt><dd>%s</dd>", esc(k), v) }
	fact("Canary", "<b>"+esc(r.Clusters.Canary)+"</b>")
	fact("Variant", esc(variantText(r.Experiment.Variant)))
	fact("Baselines", esc(strings.Join(r.Clusters.Baselines, ", ")))
	if r.Kind == KindRun {
		fact("Run", "<code>"+esc(r.Experiment.RunID)+"</code>")
		fact("Started", esc(fmtTime(r.Experiment.Started)))
		fact("Ended", esc(fmtTime(r.Experiment.Ended)))
		fact("Duration", esc(fmtDuration(r.Experiment.Duration)))
		fact("Ended by", esc(dashIfEmpty(r.Experiment.EndedBy)))
	} else {
		fact("Prometheus", esc(dashIfEmpty(r.Experiment.Prometheus)))
	}
	fact("Window", esc(fmtTime(r.Window.From)+" → "+fmtTime(r.Window.To)+", "+r.Window.Step+" intervals"))
	fact("Error level", esc(alphaText(r)))
	h.p("</dl>\n")

	h.p("<h2>KPIs at a glance</h2>\n<table><thead><tr><th>KPI</th><th>status</th><th>effect on canary (anytime-valid bounds)</th><th>canary</th><th>baselines</th><th>Kayenta</th></tr></thead><tbody>\n")
	for i := range r.KPIs {
		k := &r.KPIs[i]
		f := valueFormatter(k.Measure, k.Type)
		cv, bv := k.Canary.Mean, k.Baseline.Mean
		if k.Canary.Rate != nil {
			cv, bv = k.Canary.Rate, k.Baseline.Rate
		}
		kay := "—"
		if k.Kayenta != nil {
			kay = k.Kayenta.Classification
		}
		h.p("<tr><td><a href=\"#kpi-%s\">%s</a></td><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td>%s</td></tr>\n",
			slug(k.Name), esc(k.Name), pill(k.Status), esc(effectText(k)), esc(numText(cv, f)), esc(numText(bv, f)), esc(kay))
	}
	h.p("</tbody></table>\n")

	if r.Kind == KindRun {
		h.timeline()
	}
	for i := range r.KPIs {
		h.kpi(&r.KPIs[i])
	}
	h.traffic()
	if len(r.Preconditions) > 0 {
		h.p("<h2>Preconditions</h2>\n<table><thead><tr><th>precondition</th><th>expect</th><th>checks</th><th>failed</th><th>last value</th></tr></thead><tbody>\n")
		for _, p := range r.Preconditions {
			h.p("<tr><td>%s</td><td><code>%s</code></td><td class=\"num\">%d</td><td class=\"num\">%d</td><td class=\"num\">%s</td></tr>\n", esc(p.Name), esc(p.Expect), p.Checks, p.Failures,
				esc(numText(p.Last, func(v float64) string { return trimFloat(v, 6) })))
		}
		h.p("</tbody></table>\n")
	}
	if r.PrePeriod != nil || hasNoise(r) {
		h.p("<h2>History before the variant</h2>\n")
		if t := historyText(r); t != "" {
			h.p("<p>%s</p>\n", esc(t))
		}
		h.p("<table><thead><tr><th>KPI</th><th>canary</th><th>baselines</th><th>canary ÷ baselines</th><th>noise model</th></tr></thead><tbody>\n")
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
			h.p("<tr><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"small\">%s</td></tr>\n", esc(k.Name), esc(numText(c, f)), esc(numText(b, f)),
				esc(numText(ratio, func(v float64) string { return "×" + trimFloat(v, 4) })), esc(noiseCell(r, k)))
		}
		h.p("</tbody></table>\n")
	}
	if s := r.SourceOfTruth; s != nil {
		h.p("<h2>Source of truth</h2>\n")
		if s.PullRequest != "" && strings.HasPrefix(s.PullRequest, "https://") {
			h.p("<p>%s <a href=\"%s\">%s</a></p>\n", esc(sourceSyncText(r.Experiment.RunID, s)), esc(s.PullRequest), esc(s.PullRequest))
		} else {
			h.p("<p>%s</p>\n", esc(sourceSyncText(r.Experiment.RunID, s)))
		}
	}
	if len(r.Notes) > 0 {
		h.p("<h2>Notes</h2><ul>")
		for _, n := range r.Notes {
			h.p("<li>%s</li>", esc(n))
		}
		h.p("</ul>\n")
	}
	h.p("<footer>Generated by Verdict (report schema %d). The run was judged live on anytime-valid confidence sequences, which stay valid although the run stopped when the data said so; the fixed-horizon p-values are shown for reference and for teams used to Kayenta.</footer>\n", r.SchemaVersion)
	h.p("</main></body></html>\n")
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func pill(status string) string {
	return fmt.Sprintf("<span class=\"pill %s\">%s %s</span>", slug(status), statusIcon(status), esc(status))
}

func (h *htmlWriter) timeline() {
	r := h.r
	h.p("<h2>Timeline</h2>\n")
	if len(r.Weights) > 0 {
		h.p("%s\n", weightsChart(r).render())
	}
	if len(r.Steps) > 0 {
		h.p("<table><thead><tr><th>step</th><th>canary share</th><th>hold</th><th>started</th><th>ended</th><th>intervals analysed</th></tr></thead><tbody>\n")
		for _, s := range r.Steps {
			end := "—"
			if !s.End.IsZero() {
				end = fmtClock(s.End)
			}
			h.p("<tr><td>%d</td><td class=\"num\">%s</td><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%d</td></tr>\n", s.Step, pct(s.Weight), esc(s.Hold), fmtClock(s.Start), end, s.Intervals)
		}
		h.p("</tbody></table>\n")
	}
	ds := shownDecisions(r)
	h.p("<h3>Decisions</h3><p class=\"small muted\">%d recorded, one per analysed interval; shown: those that changed something, and the last. The JSON report lists them all.</p>\n", len(r.Decisions))
	if len(ds) > 0 {
		h.p("<table><thead><tr><th>time (UTC)</th><th>step</th><th>action</th><th>reason</th></tr></thead><tbody>\n")
		for _, d := range ds {
			h.p("<tr class=\"act-%s\"><td class=\"num\">%s</td><td>%d</td><td>%s</td><td>%s</td></tr>\n", slug(d.Action), fmtClock(d.At), d.Step, esc(d.Action), esc(d.Reason))
		}
		h.p("</tbody></table>\n")
	}
	h.p("<h3>Events</h3>\n<table><thead><tr><th>time (UTC)</th><th>what</th><th></th></tr></thead><tbody>\n")
	for _, e := range shownEvents(r) {
		h.p("<tr class=\"type-%s\"><td class=\"num\">%s</td><td>%s</td><td>%s</td></tr>\n", slug(e.Type), fmtClock(e.At), esc(eventLabel(e.Type)), esc(e.Message))
	}
	h.p("</tbody></table>\n")
}

func (h *htmlWriter) kpi(k *KPI) {
	r := h.r
	h.p("<section class=\"kpi\" id=\"kpi-%s\" data-kpi=\"%s\">\n<h2>%s %s</h2>\n", slug(k.Name), esc(k.Name), esc(k.Name), pill(k.Status))
	h.p("<p>%s</p>\n", esc(k.StatusReason))
	if s := effectSentence(k); s != "" {
		h.p("<p>%s</p>\n", esc(s))
	}
	if s := whySentence(r, k); s != "" {
		h.p("<p class=\"noise\">%s</p>\n", esc(s))
	}
	h.p("<div class=\"charts\">%s\n", valueChart(r, k).render())
	if k.Status != StatusNotJudged {
		h.p("%s\n", effectChart(r, k).render())
	}
	h.p("</div>\n")
	f := valueFormatter(k.Measure, k.Type)
	h.p("<table><thead><tr><th>%s per interval (mean)</th><th>canary %s</th>", esc(k.Measure), esc(r.Clusters.Canary))
	for _, b := range r.Clusters.Baselines {
		h.p("<th>%s</th>", esc(b))
	}
	h.p("<th>intervals</th></tr></thead><tbody>\n")
	for _, row := range stepRows(r, k) {
		h.p("<tr><td>%s</td><td class=\"num\">%s</td>", esc(row.label), esc(numText(row.canary, f)))
		for _, b := range r.Clusters.Baselines {
			h.p("<td class=\"num\">%s</td>", esc(numText(row.base[b], f)))
		}
		h.p("<td class=\"num\">%d</td></tr>\n", row.n)
	}
	h.p("</tbody></table>\n")
	h.p("<details><summary>Distribution of the per-interval values</summary><table><thead><tr><th>side</th><th>n</th><th>mean</th><th>sd</th><th>p50</th><th>p95</th><th>p99</th><th>events / total</th></tr></thead><tbody>\n")
	row := func(name string, s Summary) {
		counts := "—"
		if s.Events != nil && s.Total != nil {
			counts = fmt.Sprintf("%.0f / %.0f = %s", *s.Events, *s.Total, numText(s.Rate, pct))
		}
		h.p("<tr><td>%s</td><td class=\"num\">%d</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td></tr>\n",
			esc(name), s.N, esc(numText(s.Mean, f)), esc(numText(s.SD, f)), esc(numText(s.P50, f)), esc(numText(s.P95, f)), esc(numText(s.P99, f)), esc(counts))
	}
	row("canary "+r.Clusters.Canary, k.Canary)
	row("baselines pooled", k.Baseline)
	for _, b := range r.Clusters.Baselines {
		row(b, k.Baselines[b])
	}
	h.p("</tbody></table></details>\n")
	if len(k.Tests) > 0 {
		h.p("<h3>Fixed-horizon tests</h3><table><thead><tr><th>test</th><th>statistic</th><th>p</th><th>p (Holm across KPIs)</th><th>estimate [95%% CI]</th></tr></thead><tbody>\n")
		for _, t := range k.Tests {
			h.p("<tr><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td></tr>\n", esc(methodName(t.Method)), esc(statText(t)), pText(t.PValue), pText(t.PAdjusted), esc(testEstimate(k, t)))
		}
		h.p("</tbody></table>\n")
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
		h.p("<p class=\"small\">Kayenta's Mann-Whitney classifier on the same intervals: <b>%s</b>%s%s.</p>\n", esc(k.Kayenta.Classification), esc(dev), esc(why))
	}
	h.p("</section>\n")
}

func (h *htmlWriter) traffic() {
	r := h.r
	t := r.Traffic
	h.p("<h2>Traffic-share check</h2>\n")
	switch {
	case !t.Checked:
		h.p("<p>Not checked: %s.</p>\n", esc(t.Reason))
		return
	case t.Mismatch:
		h.p("<p><span class=\"pill harm\">mismatch</span> %s (log Bayes factor %.2f).</p>\n", esc(t.Reason), t.LogBayesFactor)
	default:
		h.p("<p><span class=\"pill non-inferior\">passed</span> %s (log Bayes factor %.2f).</p>\n", esc(t.Reason), t.LogBayesFactor)
	}
	clusters := append([]string{r.Clusters.Canary}, r.Clusters.Baselines...)
	h.p("<table><thead><tr><th>step</th><th>cluster</th><th>configured share</th><th>observed share of requests</th></tr></thead><tbody>\n")
	for _, s := range t.Steps {
		for _, c := range clusters {
			h.p("<tr><td>%d</td><td>%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td></tr>\n", s.Step, esc(c), pct(s.Expected[c]), pct(s.Observed[c]))
		}
	}
	h.p("</tbody></table>\n")
}
