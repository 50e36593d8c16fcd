package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// liveModel is what one frame of the live view shows, whoever supplies the run: the
// engine driving it in this process (verdict run), the store (verdict watch of a local
// run) or a server (verdict watch --server). One model and one renderer, so that watch
// shows exactly what run shows.
type liveModel struct {
	Banner     string
	Experiment string
	RunID      string
	// Source is where the run is read from when this process does not drive it.
	Source      string
	Canary      string
	Variant     string
	Baselines   []string
	State       store.State
	Step, Steps int
	StepWeight  string
	Phases      []string
	Phase       string
	Hold        time.Duration
	StepElapsed time.Duration
	RampStart   time.Time
	// PausedFor and PausedAt: ramp time spent paused, which maxDuration does not count.
	PausedFor   time.Duration
	PausedAt    time.Time
	MaxDuration time.Duration
	PauseNote   string
	Stalled     string
	Orphan      string
	Weights     []liveWeight
	// Drifted is set while the pool's latest word is a change outside Verdict (seen at
	// DriftAt, when known): Weights then carry the actual weights next to the confirmed.
	Drifted  bool
	DriftAt  time.Time
	Writing  string
	Interval time.Duration
	KPIs     []liveKPI
	Decided  bool
	// ShareMismatch is the reason the observed traffic shares do not match the weights.
	ShareMismatch        string
	Noise                [][2]string
	Action, ActionReason string
	Verdict, Reason      string
	EndedBy              string
	// Events are the run's recent events, oldest first.
	Events []liveEvent
	// Loc is the time zone of the times shown (the local one unless a test sets it).
	Loc *time.Location
}

type liveWeight struct {
	Cluster, Origin, Role string
	Confirmed, Was        float64
	Actual                float64
	HasActual             bool
}

type liveKPI struct {
	Name, Status               string
	Canary, Baseline           float64
	HasValues                  bool
	Estimate, Lower, Upper     float64
	LowerBounded, UpperBounded bool
	Ready                      bool
	Informative                int
	Alpha                      float64
	Tolerance                  float64
	Decrease                   bool
}

type liveEvent struct {
	At            time.Time
	Type, Message string
	Data          json.RawMessage
}

// renderRun draws the live view of a run, unbounded: where it is, the weights, every
// KPI's evidence, the latest decision and recent events. Only the goroutine stepping r may
// call it (the live view renders published snapshots with renderSnapshot).
func renderRun(w io.Writer, banner string, r *engine.Run, recent []engine.Event, now time.Time) {
	renderSnapshot(w, banner, r.Experiment(), r.Snapshot(), recent, now)
}

// renderSnapshot draws the live view of a run from a snapshot of it, unbounded (the final
// view printed into the normal screen when a run ends).
func renderSnapshot(w io.Writer, banner string, exp *experiments.Experiment, s engine.Snapshot, recent []engine.Event, now time.Time) {
	renderSnapshotFit(w, banner, exp, s, recent, now, 0, 0)
}

// renderSnapshotFit draws the live view of a run from a snapshot, fitted to a window of
// width × height cells (0: unbounded).
func renderSnapshotFit(w io.Writer, banner string, exp *experiments.Experiment, s engine.Snapshot, recent []engine.Event, now time.Time, width, height int) {
	m := liveFromSnapshot(banner, exp, s, recent)
	io.WriteString(w, strings.Join(liveLines(m, now, width, height), "\n")+"\n")
}

// liveFromSnapshot is the model of a run this process drives.
func liveFromSnapshot(banner string, exp *experiments.Experiment, s engine.Snapshot, recent []engine.Event) liveModel {
	rec := s.Run
	m := liveModel{Banner: banner, Steps: s.Steps, Hold: s.Hold, Phases: s.Phases, Phase: s.Phase, RampStart: s.RampStart, PausedFor: s.PausedFor, PausedAt: s.PausedAt,
		MaxDuration: s.MaxDuration, PauseNote: s.PauseNote, Decided: s.Decision != nil}
	liveRecord(&m, exp, &rec)
	if s.Share.Mismatch {
		m.ShareMismatch = s.Share.Reason
	}
	if s.Decision != nil {
		m.Action, m.ActionReason = string(s.Decision.Action), s.Decision.Reason
		m.KPIs = liveKPIs(s.Decision.KPIs, s.Values)
	}
	learned := rec.Step > 0
	for _, n := range s.Noise {
		learned = learned || n.Model != nil
	}
	if learned {
		for _, n := range s.Noise {
			// The engine judges ratio KPIs and gauges (latency means included) as log ratios.
			m.Noise = append(m.Noise, [2]string{n.KPI, report.NoiseOf(n, 0, true).Compact(m.Interval)})
		}
	}
	for _, e := range recent {
		m.Events = append(m.Events, liveEvent{At: e.At, Type: e.Type, Message: e.Message, Data: e.Data})
	}
	liveActual(&m, exp)
	return m
}

// liveRecord fills the model from a run's record and its experiment.
func liveRecord(m *liveModel, exp *experiments.Experiment, rec *store.Run) {
	m.Experiment, m.RunID, m.State, m.Step = rec.Experiment, rec.ID, rec.State, rec.Step
	m.StepElapsed, m.Verdict, m.Reason, m.EndedBy = rec.StepElapsed, rec.Verdict, rec.Reason, rec.EndedBy
	if rec.Intent != nil {
		m.Writing = rec.Intent.Purpose
	}
	if exp == nil {
		return
	}
	if m.Experiment == "" {
		m.Experiment = exp.Metadata.Name
	}
	m.Canary, m.Variant, m.Baselines = exp.Spec.Canary.Cluster, variantText(exp.Spec.Canary.Variant), exp.Spec.Baselines
	m.Interval = exp.Spec.Analysis.Interval.Std()
	if m.Steps == 0 {
		m.Steps = len(exp.Spec.Traffic.Steps)
	}
	if rec.Step >= 1 && rec.Step <= len(exp.Spec.Traffic.Steps) {
		st := exp.Spec.Traffic.Steps[rec.Step-1]
		m.StepWeight = st.Weight.String()
		if m.Hold == 0 {
			m.Hold = st.Hold.Std()
		}
	}
	if m.MaxDuration == 0 {
		m.MaxDuration = exp.Spec.Analysis.MaxDuration.Std()
	}
	origins := exp.Spec.Traffic.Origins()
	for _, c := range exp.Spec.Clusters() {
		o := origins[c]
		role := "baseline"
		if c == exp.Spec.Canary.Cluster {
			role = "canary"
		}
		m.Weights = append(m.Weights, liveWeight{Cluster: c, Origin: o, Role: role, Confirmed: rec.Current[o], Was: rec.Original[o]})
	}
}

// liveActual puts the pool's actual weights next to the confirmed ones while the latest
// drift event is the latest word on the pool (no weights confirmed since) and the run has
// not ended: a paused run keeps its confirmed weights, but traffic goes by the pool.
func liveActual(m *liveModel, exp *experiments.Experiment) {
	if m.State.Terminal() {
		return
	}
	var actual store.Weights
	var at time.Time
	for _, e := range m.Events {
		switch e.Type {
		case engine.EventWeightsConfirmed:
			actual = nil
		case engine.EventDrift:
			var d engine.DriftData
			if json.Unmarshal(e.Data, &d) == nil && len(d.Actual) > 0 {
				actual, at = d.Actual, e.At
			}
		}
	}
	setActual(m, actual, at)
}

func setActual(m *liveModel, actual store.Weights, at time.Time) {
	if len(actual) == 0 {
		return
	}
	differ := false
	for i := range m.Weights {
		wt := &m.Weights[i]
		if a, ok := actual[wt.Origin]; ok {
			wt.Actual, wt.HasActual = a, true
			differ = differ || math.Abs(a-wt.Confirmed) >= 0.005
		}
	}
	if !differ {
		for i := range m.Weights {
			m.Weights[i].HasActual = false
		}
		return
	}
	m.Drifted, m.DriftAt = true, at
}

// liveKPIs pairs each KPI's verdict with the latest interval's values (a latency KPI
// judged twice is measured once: "latency (mean)" takes the values of "latency").
func liveKPIs(ks []engine.KPIVerdict, values []engine.KPIValue) []liveKPI {
	vals := map[string]engine.KPIValue{}
	for _, v := range values {
		vals[v.KPI] = v
	}
	var out []liveKPI
	for _, k := range ks {
		v, ok := vals[k.Name]
		if !ok {
			v, ok = vals[strings.SplitN(k.Name, " (", 2)[0]]
		}
		iv := k.Interval
		out = append(out, liveKPI{Name: k.Name, Status: statusText(k.Status), Canary: v.Canary, Baseline: v.Baseline, HasValues: ok,
			Estimate: iv.Estimate, Lower: iv.Lower, Upper: iv.Upper, LowerBounded: iv.LowerBounded, UpperBounded: iv.UpperBounded,
			Ready: iv.Ready, Informative: iv.Informative, Alpha: iv.Alpha, Tolerance: k.Tolerance, Decrease: k.Harm == analysis.Decrease})
	}
	return out
}

// liveFromStore is the model of a run read from the store: verdict watch of a run another
// process on this store drives. The noise model lives only in the driving engine.
func liveFromStore(rec *store.Run, last *store.Decision, events []store.Event) liveModel {
	exp := &experiments.Experiment{}
	if json.Unmarshal(rec.Spec, exp) != nil {
		exp = nil
	}
	var book struct {
		PauseNote string        `json:"pauseNote"`
		RampStart time.Time     `json:"rampStart"`
		PausedFor time.Duration `json:"pausedFor"`
		PausedAt  time.Time     `json:"pausedAt"`
	}
	_ = json.Unmarshal(rec.Data, &book)
	m := liveModel{RampStart: book.RampStart, PausedFor: book.PausedFor, PausedAt: book.PausedAt}
	if rec.State == store.StatePaused {
		m.PauseNote = book.PauseNote
	}
	if exp != nil {
		m.Phases = exp.Spec.Phases()
	}
	liveRecord(&m, exp, rec)
	if last != nil {
		var d engine.DecisionData
		if json.Unmarshal(last.Details, &d) == nil {
			m.Decided = true
			m.Action, m.ActionReason = string(d.Decision.Action), d.Decision.Reason
			m.KPIs = liveKPIs(d.Decision.KPIs, d.Values)
			if d.Decision.ShareMismatch {
				m.ShareMismatch = "the observed traffic shares do not match the weights"
			}
		} else {
			m.Decided, m.Action, m.ActionReason = true, last.Action, last.Reason
		}
	}
	for _, e := range events {
		m.Events = append(m.Events, liveEvent{At: e.At, Type: e.Type, Message: e.Message, Data: e.Data})
	}
	liveActual(&m, exp)
	return m
}

// liveFromServer is the model of a run a server shows (verdict watch --server).
func liveFromServer(url string, d server.RunDetail, recent []server.Message) liveModel {
	r := d.Run
	exp := &experiments.Experiment{}
	if len(d.Spec) == 0 || json.Unmarshal(d.Spec, exp) != nil {
		exp = nil
	}
	rec := store.Run{ID: r.ID, Experiment: r.Experiment, State: r.State, Step: r.Step, Verdict: r.Verdict, Reason: r.Reason,
		EndedBy: r.EndedBy, Current: r.Weights, Original: r.Original, Intent: d.Intent}
	rec.StepElapsed, _ = time.ParseDuration(d.StepElapsed)
	m := liveModel{Source: url, Steps: r.Steps, RampStart: d.RampStart, Stalled: r.Stalled}
	m.Hold, _ = time.ParseDuration(d.Hold)
	m.MaxDuration, _ = time.ParseDuration(d.MaxDuration)
	holdKnown := d.StepElapsed != ""
	if r.State == store.StatePaused {
		m.PauseNote = r.PauseNote
	}
	if r.Orphan != nil {
		m.Orphan = r.Orphan.Hint
	}
	if exp != nil {
		m.Phases = exp.Spec.Phases()
	}
	liveRecord(&m, exp, &rec)
	if !holdKnown {
		// The server says how much of the hold is analysed only for runs it drives: no
		// progress rather than a made-up 0%.
		m.Hold = 0
	}
	if exp == nil {
		m.Canary, m.Baselines = r.Canary, r.Baselines
		for _, o := range sortedKeys(r.Weights) {
			m.Weights = append(m.Weights, liveWeight{Cluster: o, Origin: o, Confirmed: r.Weights[o], Was: r.Original[o]})
		}
	}
	if dec := r.Decision; dec != nil {
		m.Decided, m.Action, m.ActionReason = true, string(dec.Action), dec.Reason
		vals := map[string]engine.KPIValue{}
		for _, v := range d.Values {
			vals[v.KPI] = v
		}
		for _, k := range dec.KPIs {
			v, ok := vals[k.Name]
			if !ok {
				v, ok = vals[strings.SplitN(k.Name, " (", 2)[0]]
			}
			iv := k.Interval
			m.KPIs = append(m.KPIs, liveKPI{Name: k.Name, Status: statusText(analysis.Status(k.Status)), Canary: v.Canary, Baseline: v.Baseline, HasValues: ok,
				Estimate: iv.Estimate, Lower: iv.Lower, Upper: iv.Upper, LowerBounded: iv.LowerBounded, UpperBounded: iv.UpperBounded,
				Ready: iv.Ready, Informative: iv.Informative, Alpha: iv.Alpha, Tolerance: k.Tolerance, Decrease: k.Harm == analysis.Decrease})
		}
	}
	if d.Share != nil && d.Share.Mismatch {
		m.ShareMismatch = d.Share.Reason
	}
	for _, e := range recent {
		m.Events = append(m.Events, liveEvent{At: e.At, Type: e.Type, Message: e.Message, Data: e.Data})
	}
	if len(r.ActualWeights) > 0 && !r.State.Terminal() {
		at := time.Time{}
		for _, e := range m.Events {
			if e.Type == engine.EventDrift {
				at = e.At
			}
		}
		setActual(&m, r.ActualWeights, at)
	} else {
		liveActual(&m, exp)
	}
	return m
}

// liveLines lays a frame out for a window of width × height cells (0: unbounded). What
// matters most comes first and is never cut while anything else is shown: the header
// (state, hold progress, time left, weights), then the KPIs and the decision; the noise
// models and the recent events take what room is left. Every line is cut to width − 1
// cells, so that no terminal wraps it and the frame's height is exactly its line count.
func liveLines(m liveModel, now time.Time, width, height int) []string {
	if m.Loc == nil {
		m.Loc = time.Local
	}
	var head []string
	add := func(format string, a ...any) { head = append(head, fmt.Sprintf(format, a...)) }
	if m.Banner != "" {
		for _, l := range strings.Split(m.Banner, "\n") {
			add("%s", l)
		}
		add("")
	}
	where := ""
	if m.Source != "" {
		where = "   on " + m.Source
	}
	add("Experiment %s   run %s%s", safeText(m.Experiment), safeText(m.RunID), safeText(where))
	if m.Canary != "" {
		variant := ""
		if m.Variant != "" {
			variant = " (" + m.Variant + ")"
		}
		add("Canary     %s%s vs %s", safeText(m.Canary), safeText(variant), safeText(strings.Join(m.Baselines, ", ")))
	}
	state := string(m.State)
	if m.Step > 0 && !m.State.Terminal() {
		state += fmt.Sprintf(" — step %d/%d", m.Step, m.Steps)
		if m.StepWeight != "" {
			state += " at " + m.StepWeight
		}
	}
	// The phases before the ramp (baseline, apply, ready) while the run is in one of them.
	if len(m.Phases) > 1 && !m.State.Terminal() && m.Phase != "" && m.Phase != experiments.PhaseRamp {
		var ps []string
		for _, p := range m.Phases {
			if strings.HasPrefix(p, m.Phase) {
				p = "[" + p + "]"
			}
			ps = append(ps, p)
		}
		state += "   phases " + strings.Join(ps, " → ")
	}
	add("State      %s", state)
	if m.Verdict != "" && m.State.Terminal() {
		add("Verdict    %s — %s", verdictText(m.Verdict), safeText(m.Reason))
	}
	if (m.State == store.StateRamping || m.State == store.StatePaused) && m.Hold > 0 && m.Step > 0 {
		frac := math.Min(1, float64(m.StepElapsed)/float64(m.Hold))
		left := max(m.Hold-m.StepElapsed, 0)
		line := fmt.Sprintf("Hold       %s %3.0f%%  %s of %s, %s left", bar(frac, 16), frac*100, shortDuration(m.StepElapsed), shortDuration(m.Hold), shortDuration(left))
		if m.State == store.StatePaused {
			line += " (clock stopped: paused)"
		} else if width == 0 || utf8.RuneCountInString(line)+31 < width {
			line += " (the clock stops without data)"
		}
		add("%s", line)
	}
	if !m.RampStart.IsZero() && !m.State.Terminal() && m.MaxDuration > 0 {
		el := max(now.Sub(m.RampStart)-m.pausedFor(now), 0)
		add("Elapsed    %s of at most %s, %s left", shortDuration(el), shortDuration(m.MaxDuration), shortDuration(max(m.MaxDuration-el, 0)))
	}
	if m.PauseNote != "" && m.State == store.StatePaused {
		add("Paused     %s", safeText(m.PauseNote))
	}
	if m.Stalled != "" {
		add("Stalled    %s", safeText(m.Stalled))
	}
	if m.Orphan != "" {
		add("Orphaned   %s", safeText(m.Orphan))
	}
	head = append(head, "")
	head = append(head, weightLines(m)...)

	body := kpiLines(m, width)
	if m.ShareMismatch != "" {
		body = append(body, "  traffic share MISMATCH: "+safeText(m.ShareMismatch))
	}
	if m.Decided && m.Action != "" {
		body = append(body, "", fmt.Sprintf("Decision   %s — %s", m.Action, safeText(m.ActionReason)))
	}

	var noise []string
	if len(m.Noise) > 0 {
		noise = append(noise, "", "Noise (learned from the history before the variant)")
		noise = append(noise, table(func(tw io.Writer) {
			for _, n := range m.Noise {
				fmt.Fprintf(tw, "  %s\t%s\n", safeText(n[0]), n[1])
			}
		})...)
	}
	var events []string
	for i := len(m.Events) - 1; i >= 0; i-- {
		e := m.Events[i]
		if e.Type == engine.EventDecision {
			continue
		}
		events = append(events, fmt.Sprintf("  %s  %-18s %s", e.At.In(m.Loc).Format(time.TimeOnly), safeText(e.Type), safeText(firstLine(e.Message))))
	}

	lines := append(head, body...)
	if height <= 0 {
		lines = append(lines, noise...)
		if len(events) > 0 {
			lines = append(lines, "", "Recent events (newest first)")
			lines = append(lines, events[:min(len(events), 8)]...)
		}
		return cutLines(lines, width)
	}
	if len(lines) > height {
		lines = squeeze(lines, len(lines)-height, len(strings.Split(m.Banner, "\n")))
	}
	if len(lines) > height {
		hidden := len(lines) - (height - 1)
		lines = append(lines[:height-1], fmt.Sprintf("… %d more line(s): enlarge the window, or see verdict status %s", hidden, safeText(m.RunID)))
		return cutLines(lines, width)
	}
	room := height - len(lines)
	// The noise models only when at least three events still fit under them.
	if len(noise) > 0 && len(noise)+5 <= room {
		lines = append(lines, noise...)
		room -= len(noise)
	}
	if len(events) > 0 && room >= 3 {
		lines = append(lines, "", "Recent events (newest first)")
		lines = append(lines, events[:min(len(events), room-2)]...)
	}
	return cutLines(lines, width)
}

// squeeze removes up to n lines that only make the frame easier to read, for a window
// too short for all of it: the blank lines between sections, then the banner's lines
// after its first (a banner of bannerLines lines opens the frame).
func squeeze(lines []string, n, bannerLines int) []string {
	out := make([]string, 0, len(lines))
	for i, l := range lines {
		if n > 0 && l == "" && i > 0 {
			n--
			continue
		}
		out = append(out, l)
	}
	if n > 0 && bannerLines > 1 && len(out) > bannerLines {
		k := min(n, bannerLines-1)
		out = append(out[:1], out[1+k:]...)
	}
	return out
}

// weightLines is the weights table: confirmed and, after drift, the pool's actual weights.
func weightLines(m liveModel) []string {
	drift := m.Drifted
	out := []string{}
	if drift {
		at := ""
		if !m.DriftAt.IsZero() {
			at = " at " + m.DriftAt.In(m.Loc).Format(time.TimeOnly)
		}
		out = append(out, fmt.Sprintf("Weights    pool changed outside Verdict%s; traffic goes by ACTUAL", at))
	} else {
		out = append(out, "Weights")
	}
	out = append(out, table(func(tw io.Writer) {
		if drift {
			fmt.Fprintf(tw, "  CLUSTER\tROLE\tCONFIRMED\tACTUAL IN POOL\tWAS\n")
		}
		for _, w := range m.Weights {
			if drift {
				actual := "?"
				if w.HasActual {
					actual = traffic.FormatWeight(w.Actual)
					if math.Abs(w.Actual-w.Confirmed) >= 0.005 {
						actual += " ≠"
					}
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", safeText(w.Cluster), w.Role, traffic.FormatWeight(w.Confirmed), actual, traffic.FormatWeight(w.Was))
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t(was %s)\n", safeText(w.Cluster), w.Role, traffic.FormatWeight(w.Confirmed), traffic.FormatWeight(w.Was))
		}
	})...)
	if m.Writing != "" {
		out = append(out, fmt.Sprintf("  writing %s …", safeText(m.Writing)))
	}
	return out
}

// kpiLines is the KPI table. Its columns say what they cover: the canary's and the
// baselines' values over the last interval only, the effect and its bounds over the whole
// run. Where one row per KPI would not fit the window, each KPI takes two: its name and
// verdict, then its numbers under the same labels.
func kpiLines(m liveModel, width int) []string {
	out := []string{""}
	if !m.Decided || len(m.KPIs) == 0 {
		return append(out, "KPIs       (waiting for the first complete interval)")
	}
	iv := shortDuration(m.Interval)
	if m.Interval == 0 {
		iv = "interval"
	}
	level := "bounds"
	if a := m.KPIs[0].Alpha; a > 0 {
		same := true
		for _, k := range m.KPIs {
			same = same && k.Alpha == a
		}
		if same {
			// The level the engine's reasons and the report name: each bound holds at 1 − α.
			level = strconv.FormatFloat(math.Round(1000*(1-a))/10, 'f', -1, 64) + "% bounds"
		}
	}
	hCanary, hBase, hEffect := "LAST "+iv+" CANARY", "LAST "+iv+" BASELINE", "EFFECT (cumulative, "+level+")"
	type row struct{ name, verdict, canary, base, effect, tol string }
	var rows []row
	for _, k := range m.KPIs {
		c, b := "–", "–"
		if k.HasValues {
			c, b = num(k.Canary), num(k.Baseline)
		}
		effect := "warming up (" + fmt.Sprint(k.Informative) + " intervals)"
		if k.Ready {
			lo, hi := signedPct(k.Lower), signedPct(k.Upper)
			if !k.LowerBounded {
				lo = "-∞"
			}
			if !k.UpperBounded {
				hi = "+∞"
			}
			effect = signedPct(k.Estimate) + " [" + lo + ", " + hi + "]"
		}
		sign := "+"
		if k.Decrease {
			sign = "-"
		}
		rows = append(rows, row{safeText(k.Name), k.Status, c, b, effect, sign + pctText(k.Tolerance)})
	}
	wide := table(func(tw io.Writer) {
		fmt.Fprintf(tw, "  KPI\t%s\t%s\t%s\tTOLERANCE\tVERDICT\n", hCanary, hBase, hEffect)
		for _, r := range rows {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", r.name, r.canary, r.base, r.effect, r.tol, r.verdict)
		}
	})
	fits := true
	for _, l := range wide {
		fits = fits && (width <= 0 || utf8.RuneCountInString(l) < width)
	}
	if fits {
		return append(out, wide...)
	}
	// Two lines per KPI: its name and verdict, then its numbers, aligned under their labels.
	nameW := 0
	for _, r := range rows {
		nameW = max(nameW, utf8.RuneCountInString(r.name))
	}
	nameW = max(nameW, len("KPI"))
	nums := table(func(tw io.Writer) {
		fmt.Fprintf(tw, "    %s\t%s\t%s\tTOL\n", hCanary, hBase, hEffect)
		for _, r := range rows {
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", r.canary, r.base, r.effect, r.tol)
		}
	})
	out = append(out, fmt.Sprintf("  %-*s  VERDICT", nameW, "KPI"), nums[0])
	for i, r := range rows {
		out = append(out, fmt.Sprintf("  %-*s  %s", nameW, r.name, r.verdict), nums[i+1])
	}
	return out
}

func table(fill func(io.Writer)) []string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fill(tw)
	tw.Flush()
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return lines
}

// cutLines cuts every line to width − 1 cells (0: no limit), marking the cut with "…".
func cutLines(lines []string, width int) []string {
	if width <= 1 {
		return lines
	}
	for i, l := range lines {
		if utf8.RuneCountInString(l) >= width {
			r := []rune(l)
			lines[i] = string(r[:width-2]) + "…"
		}
	}
	return lines
}

// shortDuration is d to the second without zero units: 2m, 3h, 1h30m, 45s.
func shortDuration(d time.Duration) string {
	s := d.Truncate(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func verdictText(v string) string { return strings.ToUpper(strings.ReplaceAll(safeText(v), "_", " ")) }

// Terminal control sequences of the live view: the alternate screen (so frames never
// reach the scrollback and the normal screen is back as it was afterwards), cursor home,
// erase to the end of the line and of the screen, cursor hidden while frames are drawn.
const (
	ansiAltScreenOn  = "\x1b[?1049h"
	ansiAltScreenOff = "\x1b[?1049l"
	ansiHome         = "\x1b[H"
	ansiEraseLine    = "\x1b[K"
	ansiEraseDown    = "\x1b[J"
	ansiHideCursor   = "\x1b[?25l"
	ansiShowCursor   = "\x1b[?25h"
)

// liveScreen draws the live view's frames on a terminal's alternate screen. Each frame is
// drawn in place (cursor home, every line erased to its end, the rest of the screen
// erased), fitted to the window's size as read for that frame, so a resize takes effect
// at the next frame. Leave restores the normal screen; it is safe to call more than once
// and from any goroutine, so the paths that end a view (the run's end, a signal, an error)
// all call it.
type liveScreen struct {
	mu     sync.Mutex
	out    io.Writer
	size   func() (width, height int)
	active bool
}

// defaultSize is the window size assumed when the terminal does not say.
const defaultWidth, defaultHeight = 80, 24

func newLiveScreen(out io.Writer) *liveScreen {
	return &liveScreen{out: out, size: func() (int, int) { return terminalSize(out) }}
}

// terminalSize is out's window size, or 80×24 when out is not a terminal or will not say.
func terminalSize(out io.Writer) (width, height int) {
	if f, ok := out.(*os.File); ok {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 0 && h > 0 {
			return w, h
		}
	}
	return defaultWidth, defaultHeight
}

// enter switches to the alternate screen.
func (s *liveScreen) enter() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active {
		return
	}
	s.active = true
	io.WriteString(s.out, ansiAltScreenOn+ansiHideCursor)
}

// draw draws one frame: lines makes the frame's lines for the window's size.
func (s *liveScreen) draw(lines func(width, height int) []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active {
		return
	}
	w, h := s.size()
	ls := lines(w, h)
	if len(ls) > h {
		ls = ls[:h]
	}
	var b strings.Builder
	b.WriteString(ansiHome)
	for i, l := range ls {
		b.WriteString(l)
		b.WriteString(ansiEraseLine)
		// No newline after the last line: on the bottom row it would scroll the frame.
		if i < len(ls)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString(ansiEraseDown)
	io.WriteString(s.out, b.String())
}

// leave restores the normal screen and the cursor.
func (s *liveScreen) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active {
		return
	}
	s.active = false
	io.WriteString(s.out, ansiShowCursor+ansiAltScreenOff)
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

// pausedFor is the ramp time spent paused up to now, as the engine counts it for
// maxDuration.
func (m *liveModel) pausedFor(now time.Time) time.Duration {
	d := m.PausedFor
	if !m.PausedAt.IsZero() {
		start := m.PausedAt
		if m.RampStart.After(start) {
			start = m.RampStart
		}
		d += max(0, now.Sub(start))
	}
	return d
}
