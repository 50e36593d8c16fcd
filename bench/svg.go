package bench

import (
	"fmt"
	"html"
	"strings"
)

var ruleColors = map[string]string{
	RuleVerdict:      "#1f77b4",
	RuleOracle:       "#2ca02c",
	RuleKayenta:      "#ff7f0e",
	RuleFlagger:      "#d62728",
	RuleNaive:        "#9467bd",
	RuleOracleMargin: "#17becf",
}

type svg struct{ strings.Builder }

func (s *svg) text(x, y float64, anchor, size, body string) {
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%s">%s</text>`+"\n", x, y, anchor, size, html.EscapeString(body))
}

func (s *svg) line(x1, y1, x2, y2 float64, style string) {
	fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" %s/>`+"\n", x1, y1, x2, y2, style)
}

func (s *svg) legend(x, y float64) {
	for i, rule := range Rules {
		yy := y + float64(i)*16
		s.line(x, yy-4, x+18, yy-4, fmt.Sprintf(`stroke="%s" stroke-width="3"`, ruleColors[rule]))
		s.text(x+24, yy, "start", "11", rule)
	}
}

// DetectionChart plots each rule's median intervals to detect against the effect size,
// errors and latency side by side; a regression not detected by half the runs sits on
// the "not detected" line at the top.
func DetectionChart(rows []DecisionResult) string {
	const W, H, top, bottom, left = 860.0, 420.0, 70.0, 360.0, 60.0
	panelW := 280.0
	panels := []struct {
		title     string
		scenarios []string
		labels    []string
	}{
		{"error rate regression", []string{"errors-x1.2", "errors-x1.5", "errors-x2"}, []string{"×1.2", "×1.5", "×2"}},
		{"latency regression", []string{"latency+5%", "latency+10%", "latency+20%"}, []string{"+5%", "+10%", "+20%"}},
	}
	const ymax = 150.0
	y := func(v float64) float64 { return bottom - (bottom-top-20)*v/ymax }
	var s svg
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif">`+"\n", W, H)
	s.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	s.text(W/2, 22, "middle", "15", "Median one-minute intervals to detect a regression (lower is better)")
	for pi, p := range panels {
		x0 := left + float64(pi)*(panelW+60)
		s.text(x0+panelW/2, top-10, "middle", "12", p.title)
		s.line(x0, top, x0, bottom, `stroke="#333"`)
		s.line(x0, bottom, x0+panelW, bottom, `stroke="#333"`)
		for _, v := range []float64{0, 25, 50, 75, 100, 125, 150} {
			s.line(x0-4, y(v), x0+panelW, y(v), `stroke="#ddd"`)
			s.text(x0-8, y(v)+4, "end", "10", fmt.Sprint(v))
		}
		xs := func(i int) float64 { return x0 + 30 + float64(i)*(panelW-60)/float64(len(p.scenarios)-1) }
		for i, l := range p.labels {
			s.text(xs(i), bottom+16, "middle", "11", l)
		}
		for _, rule := range Rules {
			var pts []string
			for i, sc := range p.scenarios {
				v := ymax + 12
				for _, r := range rows {
					if r.Scenario == sc && r.Rule == rule && r.MedianIntervalsToDetect != nil {
						v = *r.MedianIntervalsToDetect
					}
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(i), y(v)))
				fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", xs(i), y(v), ruleColors[rule])
			}
			dash := ""
			if rule == RuleOracleMargin {
				dash = ` stroke-dasharray="5,3"`
			}
			fmt.Fprintf(&s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), ruleColors[rule], dash)
		}
	}
	s.text(left+panelW/2, H-20, "middle", "11", "effect on the canary")
	s.text(W/2, 38, "middle", "11", "points above 150: not detected by half of the runs within the 150-interval horizon")
	s.legend(W-150, top+10)
	s.WriteString("</svg>\n")
	return s.String()
}

// FalseRollbackChart shows each rule's false-rollback rate with its 95% interval in
// every scenario without a harmful change, against α = 5%.
func FalseRollbackChart(rows []DecisionResult) string {
	var scenarios []string
	for _, r := range rows {
		if r.Kind != KindRegression && r.Rule == RuleVerdict {
			scenarios = append(scenarios, r.Scenario)
		}
	}
	const H, top, bottom, left = 420.0, 50.0, 340.0, 60.0
	groupW := 130.0
	W := left + groupW*float64(len(scenarios)) + 170
	y := func(v float64) float64 { return bottom - (bottom-top)*v }
	var s svg
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif">`+"\n", W, H)
	s.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	s.text(W/2, 22, "middle", "15", "False-rollback rate when nothing got worse (bars: rate; whiskers: 95% CI)")
	for _, v := range []float64{0, 0.2, 0.4, 0.6, 0.8, 1} {
		s.line(left-4, y(v), left+groupW*float64(len(scenarios)), y(v), `stroke="#ddd"`)
		s.text(left-8, y(v)+4, "end", "10", fmt.Sprintf("%.0f%%", 100*v))
	}
	s.line(left, y(alpha), left+groupW*float64(len(scenarios)), y(alpha), `stroke="#000" stroke-dasharray="4,3"`)
	s.text(left+groupW*float64(len(scenarios))+4, y(alpha)+4, "start", "10", "α = 5%")
	barW := (groupW - 20) / float64(len(Rules))
	for gi, sc := range scenarios {
		gx := left + float64(gi)*groupW + 10
		s.text(gx+(groupW-20)/2, bottom+16, "middle", "10", sc)
		for ri, rule := range Rules {
			for _, r := range rows {
				if r.Scenario != sc || r.Rule != rule || r.FalseRollbackRate == nil {
					continue
				}
				x := gx + float64(ri)*barW
				v := *r.FalseRollbackRate
				fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y(v), barW-2, bottom-y(v), ruleColors[rule])
				cx := x + (barW-2)/2
				s.line(cx, y(r.FalseRollbackCI[0]), cx, y(r.FalseRollbackCI[1]), `stroke="#000"`)
				ty := y(r.FalseRollbackCI[1]) - 4
				fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" font-size="8" text-anchor="start" transform="rotate(-90 %.1f %.1f)">%.1f%%</text>`+"\n", cx+3, ty, cx+3, ty, 100*v)
			}
		}
	}
	s.line(left, top, left, bottom, `stroke="#333"`)
	s.line(left, bottom, left+groupW*float64(len(scenarios)), bottom, `stroke="#333"`)
	s.legend(W-150, top+10)
	s.WriteString("</svg>\n")
	return s.String()
}
