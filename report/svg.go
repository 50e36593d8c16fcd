package report

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
	"time"
)

// Charts are hand-written SVG rather than gonum/plot: the output is small, byte-for-byte
// deterministic (golden files, reproducible reports), needs no embedded fonts, scales with
// the page through its viewBox and prints cleanly.

type xy struct {
	t  time.Time
	v  float64
	ok bool
}

type line struct {
	name  string
	color string
	dash  string
	width float64
	pts   []xy
	step  bool // draw as a step function (weights)
}

type band struct {
	name   string
	color  string
	lo, hi []xy
}

type vmark struct {
	t     time.Time
	label string
}

type hmark struct {
	v     float64
	label string
	color string
}

type span struct {
	from, to time.Time
	label    string
}

type chart struct {
	title  string
	class  string
	kpi    string
	w, h   int
	x0, x1 time.Time
	lines  []line
	bands  []band
	vmarks []vmark
	hmarks []hmark
	spans  []span
	yfmt   func(float64) string
	forceY []float64 // values the y axis must include (0, the tolerance)
	// tickAt are values that must carry a labelled tick (zero, the tolerance): a reference
	// line between two labels makes the reader guess its value.
	tickAt  []float64
	offNote string
}

// Colours: the canary stands out in a colour of its own (red is kept for harm: the
// tolerance and guardrail lines); baselines are calm and told apart by dash as well as hue,
// so a black-and-white print still separates them.
var (
	colCanary    = "#e36414"
	colBaselines = []string{"#00798c", "#6a4c93", "#edae49", "#30638e", "#66a182"}
	dashes       = []string{"", "6 3", "2 3", "8 3 2 3", "1 2"}
)

const (
	padL, padR, padT, padB = 64.0, 16.0, 34.0, 40.0
)

func (c chart) render() string {
	if c.w == 0 {
		c.w, c.h = 760, 260
	}
	W, H := float64(c.w), float64(c.h)
	pw, ph := W-padL-padR, H-padT-padB
	if !c.x1.After(c.x0) {
		c.x1 = c.x0.Add(time.Minute)
	}
	// y range over everything drawn
	lo, hi := math.Inf(1), math.Inf(-1)
	see := func(v float64) {
		if finite(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	for _, l := range c.lines {
		for _, p := range l.pts {
			if p.ok {
				see(p.v)
			}
		}
	}
	for _, b := range c.bands {
		for i := range b.lo {
			if b.lo[i].ok {
				see(b.lo[i].v)
			}
			if b.hi[i].ok {
				see(b.hi[i].v)
			}
		}
	}
	for _, v := range c.forceY {
		see(v)
	}
	var hm []hmark
	var off []string
	for _, m := range c.hmarks {
		span := hi - lo
		if !finite(span) || span == 0 {
			span = math.Abs(hi) + 1
		}
		if finite(m.v) && m.v <= hi+span && m.v >= lo-span {
			see(m.v)
			hm = append(hm, m)
		} else if finite(m.v) {
			off = append(off, m.label+" (off the chart)")
		}
	}
	if !finite(lo) {
		lo, hi = 0, 1
	}
	if hi == lo {
		d := math.Max(math.Abs(hi)*0.1, 1e-9)
		lo, hi = lo-d, hi+d
	}
	ticks, tlo, thi := niceTicks(lo, hi, 5)
	lo, hi = tlo, thi
	ticks = withTicks(ticks, c.tickAt, lo, hi, ph)
	X := func(t time.Time) float64 {
		return padL + pw*float64(t.Sub(c.x0))/float64(c.x1.Sub(c.x0))
	}
	Y := func(v float64) float64 { return padT + ph*(1-(v-lo)/(hi-lo)) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="%s" data-kpi="%s" viewBox="0 0 %d %d" width="%d" height="%d" role="img" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="11">`,
		c.class, html.EscapeString(c.kpi), c.w, c.h, c.w, c.h)
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(c.title))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#fff"/>`, c.w, c.h)
	fmt.Fprintf(&b, `<text x="%.1f" y="14" font-size="13" font-weight="600" fill="#222">%s</text>`, padL, html.EscapeString(c.title))
	// spans (pre-period)
	for _, s := range c.spans {
		x0, x1 := math.Max(X(s.from), padL), math.Min(X(s.to), padL+pw)
		if x1 <= x0 {
			continue
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f1f1f1"/>`, x0, padT, x1-x0, ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#777" font-size="10">%s</text>`, x0+3, padT+11, html.EscapeString(s.label))
	}
	// grid and y labels
	for _, t := range ticks {
		y := Y(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e3e3e3"/>`, padL, y, padL+pw, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`, padL-6, y+3.5, html.EscapeString(c.yfmt(t)))
	}
	// x ticks
	for _, t := range timeTicks(c.x0, c.x1) {
		x := X(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`, x, padT+ph, x, padT+ph+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`, x, padT+ph+16, t.UTC().Format("15:04"))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#777" font-size="10">UTC</text>`, padL+pw, padT+ph+30)
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#bbb"/>`, padL, padT, pw, ph)
	// bands
	for _, bd := range c.bands {
		for _, seg := range bandSegments(bd) {
			var pts []string
			for _, p := range seg[0] {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(p.t), Y(p.v)))
			}
			for i := len(seg[1]) - 1; i >= 0; i-- {
				p := seg[1][i]
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(p.t), Y(p.v)))
			}
			fmt.Fprintf(&b, `<polygon points="%s" fill="%s" fill-opacity="0.22" stroke="none"/>`, strings.Join(pts, " "), bd.color)
		}
	}
	// horizontal marks
	for _, m := range hm {
		y := Y(m.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="5 4" stroke-width="1.3"/>`, padL, y, padL+pw, y, m.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="%s" font-size="10">%s</text>`, padL+pw-4, y-4, m.color, html.EscapeString(m.label))
	}
	// step boundaries
	for _, v := range c.vmarks {
		x := X(v.t)
		if x < padL-0.1 || x > padL+pw+0.1 {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444" stroke-dasharray="3 3"/>`, x, padT, x, padT+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333" font-size="10">%s</text>`, x+3, padT+ph-5, html.EscapeString(v.label))
	}
	// lines
	for _, l := range c.lines {
		var d strings.Builder
		pen := false
		for _, p := range l.pts {
			if !p.ok {
				pen = false
				continue
			}
			switch {
			case !pen:
				fmt.Fprintf(&d, "M%.1f %.1f", X(p.t), Y(p.v))
			case l.step:
				fmt.Fprintf(&d, "H%.1fV%.1f", X(p.t), Y(p.v))
			default:
				fmt.Fprintf(&d, "L%.1f %.1f", X(p.t), Y(p.v))
			}
			pen = true
		}
		if l.step && pen {
			fmt.Fprintf(&d, "H%.1f", X(c.x1))
		}
		if d.Len() == 0 {
			continue
		}
		dash := ""
		if l.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, l.dash)
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="%.1f"%s stroke-linejoin="round"/>`, d.String(), l.color, l.width, dash)
	}
	// legend
	x := padL + 4
	y := 28.0
	legend := func(color, dash, name string, area bool) {
		if area {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="18" height="8" fill="%s" fill-opacity="0.3"/>`, x, y-7, color)
		} else {
			d := ""
			if dash != "" {
				d = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.2"%s/>`, x, y-3, x+18, y-3, color, d)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%s</text>`, x+22, y, html.EscapeString(name))
		x += 22 + 6.2*float64(len([]rune(name))) + 14
	}
	for _, l := range c.lines {
		if l.name != "" {
			legend(l.color, l.dash, l.name, false)
		}
	}
	for _, bd := range c.bands {
		if bd.name != "" {
			legend(bd.color, "", bd.name, true)
		}
	}
	if note := strings.Join(append(off, c.offNote), " "); strings.TrimSpace(note) != "" {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#777" font-size="10">%s</text>`, padL, padT+ph+30, html.EscapeString(strings.TrimSpace(note)))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// bandSegments splits a band where either end is missing.
func bandSegments(bd band) [][2][]xy {
	var out [][2][]xy
	var lo, hi []xy
	for i := range bd.lo {
		if i < len(bd.hi) && bd.lo[i].ok && bd.hi[i].ok {
			lo, hi = append(lo, bd.lo[i]), append(hi, bd.hi[i])
			continue
		}
		if len(lo) > 0 {
			out = append(out, [2][]xy{lo, hi})
		}
		lo, hi = nil, nil
	}
	if len(lo) > 0 {
		out = append(out, [2][]xy{lo, hi})
	}
	return out
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) ([]float64, float64, float64) {
	span := hi - lo
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	start := math.Floor(lo/step) * step
	end := math.Ceil(hi/step) * step
	var ticks []float64
	for v := start; v <= end+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	return ticks, start, end
}

// withTicks adds the values in must to ticks, dropping any nice tick so close to one of
// them (within 14 px on an axis ph px tall spanning lo..hi) that their labels would collide.
func withTicks(ticks, must []float64, lo, hi, ph float64) []float64 {
	if len(must) == 0 || hi <= lo {
		return ticks
	}
	minGap := 14 * (hi - lo) / ph
	var out []float64
	for _, t := range ticks {
		clash := false
		for _, m := range must {
			if math.Abs(t-m) < minGap && math.Abs(t-m) > 1e-12 {
				clash = true
			}
		}
		if !clash {
			out = append(out, t)
		}
	}
	for _, m := range must {
		if m < lo || m > hi || !finite(m) {
			continue
		}
		dup := false
		for _, t := range out {
			if math.Abs(t-m) <= 1e-12 {
				dup = true
			}
		}
		if !dup {
			out = append(out, m)
		}
	}
	sort.Float64s(out)
	return out
}

func timeTicks(t0, t1 time.Time) []time.Time {
	span := t1.Sub(t0)
	steps := []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour}
	step := steps[len(steps)-1]
	for _, s := range steps {
		if span/s <= 8 {
			step = s
			break
		}
	}
	var out []time.Time
	for t := t0.Truncate(step); !t.After(t1); t = t.Add(step) {
		if !t.Before(t0) {
			out = append(out, t)
		}
	}
	return out
}

// ---- the report's charts ----------------------------------------------------------------

func valueFormatter(measure, typ string) func(float64) string {
	switch {
	case measure == measureRate:
		return pct
	case measure == measureMean || typ == "latency":
		return func(v float64) string { return fmtSeconds(v) }
	default:
		return func(v float64) string { return trimFloat(v, 3) }
	}
}

func pct(v float64) string {
	a := math.Abs(v * 100)
	switch {
	case a == 0:
		return "0%"
	case a < 0.1:
		return trimFloat(v*100, 2) + "%"
	case a < 10:
		return trimFloat(v*100, 2) + "%"
	default:
		return trimFloat(v*100, 3) + "%"
	}
}

func signedPct(v float64) string {
	s := pct(v)
	if v > 0 {
		return "+" + s
	}
	return s
}

func fmtSeconds(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a < 1:
		return trimFloat(v*1000, 3) + " ms"
	default:
		return trimFloat(v, 3) + " s"
	}
}

func trimFloat(v float64, sig int) string {
	if v == 0 {
		return "0"
	}
	if a := math.Abs(v); a >= 1000 && a < 1e12 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.*g", sig, v)
}

// valueChart is a KPI's per-interval values: canary against each baseline, step
// boundaries, the pre-period shaded and the guardrail.
func valueChart(r *Report, k *KPI) chart {
	c := chart{title: k.Name + " — canary against each baseline, per " + r.Window.Step, class: "chart chart-values", kpi: k.Name,
		yfmt: valueFormatter(k.Measure, k.Type)}
	// A long pre-period would squeeze a short run into a sliver: show as many pre-period
	// intervals as the run has (at least 20); the tables keep the whole pre-period.
	series := k.Series
	runN, preN := 0, 0
	for _, p := range series {
		if p.Phase == "pre" {
			preN++
		} else {
			runN++
		}
	}
	if keep := max(runN, 20); preN > keep {
		skip := preN - keep
		trimmed := make([]Point, 0, len(series)-skip)
		for _, p := range series {
			if p.Phase == "pre" && skip > 0 {
				skip--
				continue
			}
			trimmed = append(trimmed, p)
		}
		series = trimmed
	}
	c.x0, c.x1 = r.Window.From, r.Window.To
	if len(series) > 0 {
		c.x0 = series[0].End
		if series[0].Phase == "pre" {
			c.x0 = c.x0.Add(-time.Duration(float64(series[1%len(series)].End.Sub(series[0].End))))
		}
		if e := series[len(series)-1].End; e.After(c.x1) {
			c.x1 = e
		}
	}
	gap := stepDuration(r) * 3 / 2
	pts := func(get func(Point) *float64) []xy {
		var out []xy
		for i, p := range series {
			if i > 0 && gap > 0 && p.End.Sub(series[i-1].End) > gap {
				out = append(out, xy{t: p.End}) // no data in between: break the line
			}
			out = append(out, pv(p.End, get(p)))
		}
		return out
	}
	canary := line{name: "canary " + r.Clusters.Canary, color: colCanary, width: 2.4, pts: pts(func(p Point) *float64 { return p.Canary })}
	for i, b := range r.Clusters.Baselines {
		c.lines = append(c.lines, line{name: b, color: colBaselines[i%len(colBaselines)], dash: dashes[i%len(dashes)], width: 1.5,
			pts: pts(func(p Point) *float64 { return p.Baselines[b] })})
	}
	c.lines = append(c.lines, canary)
	c.vmarks = stepMarks(r)
	if r.PrePeriod != nil && len(series) > 0 && series[0].Phase == "pre" {
		c.spans = append(c.spans, span{from: c.x0, to: r.PrePeriod.To, label: "history (same code, before the variant)"})
	}
	if g := k.Guardrail; g != nil {
		word := "max"
		if g.Below {
			word = "min"
		}
		c.hmarks = append(c.hmarks, hmark{v: g.Limit, label: "guardrail " + word + " " + c.yfmt(g.Limit), color: "#b00020"})
	}
	return c
}

func stepDuration(r *Report) time.Duration {
	d, err := time.ParseDuration(r.Window.Step)
	if err != nil {
		return 0
	}
	return d
}

// effectChart is the confidence sequence over time: the band, the estimate, zero and the
// tolerance on the harmful side.
func effectChart(r *Report, k *KPI) chart {
	c := chart{title: k.Name + " — effect on the canary with its anytime-valid band", class: "chart chart-effect", kpi: k.Name, h: 220}
	if k.Effect.Relative {
		c.yfmt = signedPct
	} else {
		c.yfmt = func(v float64) string { return trimFloat(v, 3) }
	}
	c.x0, c.x1 = r.Window.From, r.Window.To
	if len(r.Steps) > 0 && r.Steps[0].Start.Before(c.x0) {
		c.x0 = r.Steps[0].Start
	}
	est := line{name: "estimate", color: "#222", width: 1.8}
	bd := band{name: fmt.Sprintf("confidence sequence (%s each side)", pct(k.Effect.Alpha)), color: "#30638e"}
	gap := stepDuration(r) * 3 / 2
	for i, s := range k.Sequence {
		if i > 0 && gap > 0 && s.End.Sub(k.Sequence[i-1].End) > gap {
			// A pause or an outage: no evidence in between, so no line across it.
			est.pts = append(est.pts, xy{t: s.End})
			bd.lo, bd.hi = append(bd.lo, xy{t: s.End}), append(bd.hi, xy{t: s.End})
		}
		est.pts = append(est.pts, xy{t: s.End, v: s.Estimate, ok: finite(s.Estimate)})
		if !s.Ready {
			// Before the sequence is ready its bounds mean nothing (a single interval's
			// band is pinched to the estimate): draw no band rather than a false certainty.
			bd.lo, bd.hi = append(bd.lo, xy{t: s.End}), append(bd.hi, xy{t: s.End})
			continue
		}
		bd.lo = append(bd.lo, pv(s.End, s.Lower))
		bd.hi = append(bd.hi, pv(s.End, s.Upper))
	}
	c.lines = []line{est}
	c.bands = []band{bd}
	tol := k.Tolerance
	if k.Harm == "decrease" {
		tol = -tol
	}
	c.forceY = []float64{0, tol}
	c.tickAt = []float64{0, tol}
	c.hmarks = []hmark{{v: 0, label: "no change", color: "#777"}, {v: tol, label: "tolerance " + c.yfmt(tol), color: "#b00020"}}
	c.vmarks = stepMarks(r)
	// A band that is unbounded early would flatten the chart; clip it to a readable range.
	clip := math.Max(4*math.Abs(tol), 0.5)
	for _, p := range est.pts {
		if p.ok {
			clip = math.Max(clip, 1.3*math.Abs(p.v))
		}
	}
	for i := range bd.lo {
		if bd.lo[i].ok && bd.lo[i].v < -clip {
			bd.lo[i].v = -clip
		}
		if bd.hi[i].ok && bd.hi[i].v > clip {
			bd.hi[i].v = clip
		}
	}
	return c
}

// weightsChart shows each cluster's share of the experiment's traffic over time.
func weightsChart(r *Report) chart {
	c := chart{title: "Traffic shares of the experiment's clusters", class: "chart chart-weights", h: 200, yfmt: pct}
	c.x0, c.x1 = r.Experiment.Started, r.Experiment.Ended
	if c.x1.IsZero() && len(r.Weights) > 0 {
		c.x1 = r.Weights[len(r.Weights)-1].At.Add(time.Minute)
	}
	if !r.Window.To.IsZero() && r.Window.To.After(c.x1) {
		c.x1 = r.Window.To
	}
	clusters := append([]string{r.Clusters.Canary}, r.Clusters.Baselines...)
	for i, cl := range clusters {
		l := line{name: cl, step: true, width: 1.6}
		if i == 0 {
			l.color, l.width = colCanary, 2.4
		} else {
			l.color, l.dash = colBaselines[(i-1)%len(colBaselines)], dashes[(i-1)%len(dashes)]
		}
		for _, w := range r.Weights {
			v, ok := w.Shares[cl]
			l.pts = append(l.pts, xy{t: w.At, v: v, ok: ok})
		}
		c.lines = append(c.lines, l)
	}
	c.forceY = []float64{0}
	c.tickAt = []float64{0}
	c.vmarks = stepMarks(r)
	return c
}

func stepMarks(r *Report) []vmark {
	var out []vmark
	for _, s := range r.Steps {
		out = append(out, vmark{t: s.Start, label: fmt.Sprintf("step %d · %s", s.Step, pct(s.Weight))})
	}
	return out
}

func pv(t time.Time, v *float64) xy {
	if v == nil {
		return xy{t: t}
	}
	return xy{t: t, v: *v, ok: true}
}
