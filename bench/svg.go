package bench

import (
	"fmt"
	"html"
	"strings"
)

// chartRules are the rules the charts draw (one Flagger threshold, to stay readable).
var chartRules = []string{RuleVerdict, RuleOracle, RuleKayenta, RuleKayentaEach, flaggerRule(2), RuleNaive}

var ruleColors = map[string]string{
	RuleVerdict:     "#1f77b4",
	RuleOracle:      "#2ca02c",
	RuleKayenta:     "#ff7f0e",
	RuleKayentaEach: "#bcbd22",
	flaggerRule(2):  "#d62728",
	RuleNaive:       "#9467bd",
}

type svg struct{ strings.Builder }

func (s *svg) text(x, y float64, anchor, size, body string) {
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%s">%s</text>`+"\n", x, y, anchor, size, html.EscapeString(body))
}

func (s *svg) line(x1, y1, x2, y2 float64, style string) {
	fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" %s/>`+"\n", x1, y1, x2, y2, style)
}

func (s *svg) legend(x, y float64) {
	for i, rule := range chartRules {
		yy := y + float64(i)*16
		s.line(x, yy-4, x+18, yy-4, fmt.Sprintf(`stroke="%s" stroke-width="3"`, ruleColors[rule]))
		s.text(x+24, yy, "start", "11", rule)
	}
}

// DetectionChart plots each rule's median minutes to roll back against the scale, for
// the two goal regressions in the Poisson and the fleet worlds; a regression not
// detected by half the runs sits on the "not detected" line at the top.
func DetectionChart(rows []DecisionResult) string {
	const panelW, panelH, left, top, gapX, gapY = 300.0, 190.0, 60.0, 70.0, 70.0, 70.0
	panels := []struct{ world, title string }{
		{"errors-x1.5", "errors ×1.5, Poisson counts"}, {"latency+10%", "latency +10%, Poisson counts"},
		{"errors-x1.5-fleet", "errors ×1.5, fleet (worst world)"}, {"latency+10%-fleet", "latency +10%, fleet (worst world)"},
	}
	scales := Scales()
	const ymax = 120.0
	W, H := left+2*panelW+gapX+190, top+2*panelH+gapY+50
	var s svg
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif">`+"\n", W, H)
	s.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	s.text(W/2, 22, "middle", "15", "Median minutes to roll back a regression (lower is better)")
	s.text(W/2, 40, "middle", "11", "points at the top: not detected by half of the runs within their plan")
	for pi, p := range panels {
		x0 := left + float64(pi%2)*(panelW+gapX)
		y0 := top + float64(pi/2)*(panelH+gapY)
		bottom := y0 + panelH
		y := func(v float64) float64 { return bottom - (panelH-20)*v/ymax }
		s.text(x0+panelW/2, y0-8, "middle", "12", p.title)
		s.line(x0, y0, x0, bottom, `stroke="#333"`)
		s.line(x0, bottom, x0+panelW, bottom, `stroke="#333"`)
		for _, v := range []float64{0, 30, 60, 90, 120} {
			s.line(x0-4, y(v), x0+panelW, y(v), `stroke="#ddd"`)
			s.text(x0-8, y(v)+4, "end", "10", fmt.Sprint(v))
		}
		s.text(x0-8, y(ymax+12)+4, "end", "9", "never")
		xs := func(i int) float64 { return x0 + 20 + float64(i)*(panelW-40)/float64(len(scales)-1) }
		for i, sc := range scales {
			s.text(xs(i), bottom+14, "middle", "9", sc.Name)
		}
		for _, rule := range chartRules {
			var pts []string
			for i, sc := range scales {
				found, v := false, ymax+12
				for _, r := range rows {
					if r.World == p.world && r.Scale == sc.Name && r.Rule == rule {
						found = true
						if r.MedianDetect != nil {
							v = min(*r.MedianDetect, ymax+12)
						}
					}
				}
				if !found {
					continue
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(i), y(v)))
				fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", xs(i), y(v), ruleColors[rule])
			}
			fmt.Fprintf(&s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), ruleColors[rule])
		}
	}
	s.legend(W-170, top+10)
	s.WriteString("</svg>\n")
	return s.String()
}

// FalseRollbackChart shows, per A/A world, each rule's highest false-rollback rate over
// the world's scales, with its 95% interval, against α = 5%.
func FalseRollbackChart(rows []DecisionResult) string {
	var worlds []string
	for _, r := range rows {
		if r.Kind == KindAA && r.Rule == RuleVerdict && (len(worlds) == 0 || worlds[len(worlds)-1] != r.World) {
			worlds = append(worlds, r.World)
		}
	}
	const H, top, bottom, left = 430.0, 60.0, 350.0, 60.0
	groupW := 110.0
	W := left + groupW*float64(len(worlds)) + 170
	y := func(v float64) float64 { return bottom - (bottom-top)*v }
	var s svg
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif">`+"\n", W, H)
	s.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	s.text(W/2, 22, "middle", "15", "Healthy canaries rolled back for harm: each rule's worst scale per world")
	s.text(W/2, 40, "middle", "11", "bars: rate; whiskers: 95% Wilson interval; dashed: α = 5%")
	for _, v := range []float64{0, 0.2, 0.4, 0.6, 0.8, 1} {
		s.line(left-4, y(v), left+groupW*float64(len(worlds)), y(v), `stroke="#ddd"`)
		s.text(left-8, y(v)+4, "end", "10", fmt.Sprintf("%.0f%%", 100*v))
	}
	s.line(left, y(0.05), left+groupW*float64(len(worlds)), y(0.05), `stroke="#000" stroke-dasharray="4,3"`)
	barW := (groupW - 16) / float64(len(chartRules))
	for gi, w := range worlds {
		gx := left + float64(gi)*groupW + 8
		s.text(gx+(groupW-16)/2, bottom+16, "middle", "10", w)
		for ri, rule := range chartRules {
			var worstRow *DecisionResult
			for i := range rows {
				r := &rows[i]
				if r.World == w && r.Rule == rule && r.Kind == KindAA && (worstRow == nil || r.HarmCI[1] > worstRow.HarmCI[1]) {
					worstRow = r
				}
			}
			if worstRow == nil {
				continue
			}
			x := gx + float64(ri)*barW
			v := worstRow.HarmRate
			fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y(v), barW-2, bottom-y(v), ruleColors[rule])
			cx := x + (barW-2)/2
			s.line(cx, y(worstRow.HarmCI[0]), cx, y(worstRow.HarmCI[1]), `stroke="#000"`)
			ty := y(worstRow.HarmCI[1]) - 4
			fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" font-size="8" text-anchor="start" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n", cx+3, ty, cx+3, ty, pct(v))
		}
	}
	s.line(left, top, left, bottom, `stroke="#333"`)
	s.line(left, bottom, left+groupW*float64(len(worlds)), bottom, `stroke="#333"`)
	s.legend(W-150, top+10)
	s.WriteString("</svg>\n")
	return s.String()
}
