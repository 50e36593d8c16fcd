package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/store"
)

// liveT0 is the golden frames' "now".
var liveT0 = time.Date(2026, 3, 1, 12, 20, 0, 0, time.UTC)

// goldenRun is the karpenter example at step 2 of 3 (15%), 2m of its 5m hold analysed,
// with three KPIs judged: the state of the live view's golden frames, changed by each case.
func goldenRun(t *testing.T) liveModel {
	t.Helper()
	exp, err := loadExperiment("../../examples/karpenter.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	o := exp.Spec.Traffic.Origins()
	canary, b1, b2 := o[exp.Spec.Canary.Cluster], o[exp.Spec.Baselines[0]], o[exp.Spec.Baselines[1]]
	rec := store.Run{ID: "r-7f3a9c", Experiment: exp.Metadata.Name, State: store.StateRamping, Step: 2, StepElapsed: 2 * time.Minute,
		Original: store.Weights{canary: 0.33, b1: 0.33, b2: 0.34}, Current: store.Weights{canary: 0.15, b1: 0.42, b2: 0.43}}
	iv := func(est, lo, hi float64) analysis.Interval {
		return analysis.Interval{Estimate: est, Lower: lo, Upper: hi, LowerBounded: true, UpperBounded: true, Relative: true, Alpha: 0.025, Intervals: 9, Informative: 9, Ready: true}
	}
	dec := &analysis.Decision{Action: analysis.Continue, Reason: "no KPI shows harm and not every KPI is proven non-inferior yet", KPIs: []analysis.KPIVerdict{
		{Name: "error-rate", Status: analysis.Inconclusive, Interval: iv(0.499, 0.121, 0.9), Tolerance: 0.1, Harm: analysis.Increase},
		{Name: "p99-latency", Status: analysis.NonInferior, Interval: iv(-0.021, -0.08, 0.04), Tolerance: 0.05, Harm: analysis.Increase},
		{Name: "pending-pods", Status: analysis.Inconclusive, Interval: analysis.Interval{Estimate: 0.1, Informative: 2, Alpha: 0.025}, Tolerance: 0.2, Harm: analysis.Increase},
	}}
	sd := engine.DecisionOf(*dec)
	snap := engine.Snapshot{Run: rec, Steps: 3, Hold: 5 * time.Minute, Decision: &sd, Phases: []string{"ramp"}, Phase: "ramp",
		RampStart: liveT0.Add(-14 * time.Minute), MaxDuration: exp.Spec.Analysis.MaxDuration.Std(),
		Values: []engine.KPIValue{{KPI: "error-rate", Canary: 0.0242, Baseline: 0.0161}, {KPI: "p99-latency", Canary: 0.412, Baseline: 0.421}, {KPI: "pending-pods", Canary: 3, Baseline: 2}},
		Noise:  []engine.KPINoise{{KPI: "error-rate", HistoryIntervals: 3, Fallback: "too little history"}}}
	data, _ := json.Marshal(engine.WeightsData{Purpose: "step 2", Want: rec.Current})
	recent := []engine.Event{
		{Type: engine.EventRunStarted, At: liveT0.Add(-16 * time.Minute), Message: "run started"},
		{Type: engine.EventStateChanged, At: liveT0.Add(-14 * time.Minute), Message: "Preflight → Ramping (step 1)"},
		{Type: engine.EventWeightsConfirmed, At: liveT0.Add(-14 * time.Minute), Message: "step 1: weights confirmed"},
		{Type: engine.EventDecision, At: liveT0.Add(-8 * time.Minute), Message: "advance"},
		{Type: engine.EventWeightsConfirmed, At: liveT0.Add(-7 * time.Minute), Message: "step 2: weights confirmed", Data: data},
	}
	m := liveFromSnapshot("", exp, snap, recent)
	m.Loc = time.UTC
	return m
}

// TestLiveViewGolden renders the live view's frame at 80×24 (and one at 132×40) for the
// states a person watches: ramping with a hold in progress, paused on drift with the
// pool's actual weights, and ended. Every frame fits its window: no more lines than rows,
// no line as wide as the window. go test ./cmd/verdict -run TestLiveViewGolden -update
// rewrites testdata/liveview-*.golden.
func TestLiveViewGolden(t *testing.T) {
	cases := map[string]struct {
		edit          func(*liveModel)
		width, height int
		want          []string
	}{
		"ramping-80x24": {width: 80, height: 24,
			want: []string{"State      Ramping — step 2/3 at 15%", "Hold       [######..........]  40%  2m of 5m, 3m left", "LAST 1m CANARY", "LAST 1m BASELINE", "EFFECT (cumulative, 97.5% bounds)", "+49.9% [+12.1%, +90.0%]"}},
		"ramping-132x40": {width: 132, height: 40,
			want: []string{"  KPI           LAST 1m CANARY  LAST 1m BASELINE  EFFECT (cumulative, 97.5% bounds)  TOLERANCE  VERDICT", "(the clock stops without data)", "Noise (learned"}},
		"paused-on-drift-80x24": {width: 80, height: 24, edit: func(m *liveModel) {
			m.State, m.PauseNote = store.StatePaused, "pool 17b5962d changed outside Verdict: origin weights differ"
			o := m.Weights
			actual, _ := json.Marshal(engine.DriftData{During: "ramp", OnDrift: "pause", Actual: store.Weights{o[0].Origin: 0.5, o[1].Origin: 0.25, o[2].Origin: 0.25}})
			m.Events = append(m.Events, liveEvent{Type: engine.EventDrift, At: liveT0.Add(-time.Minute), Message: "pool changed outside Verdict", Data: actual},
				liveEvent{Type: engine.EventStateChanged, At: liveT0.Add(-time.Minute), Message: "Ramping → Paused"})
			liveActual(m, nil)
		}, want: []string{"State      Paused — step 2/3 at 15%", "ACTUAL IN POOL", "0.5 ≠", "(clock stopped: paused)", "Paused     pool 17b5962d changed outside Verdict"}},
		// The demo's frame: a two-line banner and four KPIs. The blank lines between
		// sections give way first, so the KPIs and the decision still fit in 24 rows.
		"demo-banner-80x24": {width: 80, height: 24, edit: func(m *liveModel) {
			m.Banner = "Verdict demo 1/2 — scenario \"regression\": the canary's release doubles server errors\nExpected: rollback. Fleet: 3 clusters behind the emulated Cloudflare pool"
			m.KPIs = append(m.KPIs, liveKPI{Name: "cpu-per-request", Status: "ok", Canary: 0.0236, Baseline: 0.0224, HasValues: true, Estimate: 0.056, Lower: 0.028, Upper: 0.084,
				LowerBounded: true, UpperBounded: true, Ready: true, Alpha: 0.025, Tolerance: 0.1})
		}, want: []string{"Verdict demo 1/2", "Decision   continue", "cpu-per-request", "State      Ramping — step 2/3 at 15%"}},
		"ended-80x24": {width: 80, height: 24, edit: func(m *liveModel) {
			m.State, m.Verdict, m.Reason, m.EndedBy = store.StateRolledBack, engine.VerdictRolledBack, "error-rate: harm (+49.9% [+12.1%, +90.0%] vs tolerance +10.0%)", "verdict"
			for i := range m.Weights {
				m.Weights[i].Confirmed = m.Weights[i].Was
			}
			m.Action, m.ActionReason = "rollback", "error-rate shows harm"
			m.Events = append(m.Events, liveEvent{Type: engine.EventRunEnded, At: liveT0, Message: "rolled back"})
		}, want: []string{"Verdict    ROLLED BACK — error-rate: harm", "Decision   rollback — error-rate shows harm", "run_ended"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := goldenRun(t)
			if c.edit != nil {
				c.edit(&m)
			}
			lines := liveLines(m, liveT0, c.width, c.height)
			if len(lines) > c.height {
				t.Errorf("%d lines in a %d-row window", len(lines), c.height)
			}
			for _, l := range lines {
				if n := utf8.RuneCountInString(l); n >= c.width {
					t.Errorf("line of %d cells in a %d-column window: %q", n, c.width, l)
				}
			}
			// The header is what must never scroll away: state, hold, time left, weights.
			head := strings.Join(lines[:min(len(lines), 8)], "\n")
			if !strings.Contains(head, "\nExperiment ") && !strings.HasPrefix(head, "Experiment ") || !strings.Contains(head, "\nState ") {
				t.Errorf("the frame does not open with the header:\n%s", strings.Join(lines, "\n"))
			}
			got := strings.Join(lines, "\n") + "\n"
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("frame lacks %q:\n%s", w, got)
				}
			}
			checkGolden(t, filepath.Join("testdata", "liveview-"+name+".golden"), got)
		})
	}
}

// TestLiveViewSmallWindow: a window too small for the header and the KPIs still gets
// exactly its height, the header first, and says what it hides.
func TestLiveViewSmallWindow(t *testing.T) {
	lines := liveLines(goldenRun(t), liveT0, 60, 12)
	if len(lines) != 12 || !strings.HasPrefix(lines[0], "Experiment ") || !strings.Contains(lines[11], "more line(s): enlarge the window") {
		t.Errorf("a 60×12 window:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLiveScreen: frames go to the alternate screen, each drawn in place with the cursor
// homed, lines erased to their ends and the rest of the screen erased, never more lines
// than the window has rows and no newline after the last (which would scroll the frame);
// leaving restores the normal screen and the cursor once, however often it is called.
func TestLiveScreen(t *testing.T) {
	var b strings.Builder
	s := newLiveScreen(&b)
	s.size = func() (int, int) { return 80, 3 }
	s.draw(func(w, h int) []string { return []string{"not yet"} })
	if b.Len() != 0 {
		t.Fatalf("drawn before entering the alternate screen: %q", b.String())
	}
	s.enter()
	s.draw(func(w, h int) []string {
		if w != 80 || h != 3 {
			t.Errorf("frame asked for %d×%d, want 80×3", w, h)
		}
		return []string{"one", "two", "three", "four"}
	})
	s.leave()
	s.leave()
	want := ansiAltScreenOn + ansiHideCursor + ansiHome + "one" + ansiEraseLine + "\ntwo" + ansiEraseLine + "\nthree" + ansiEraseLine + ansiEraseDown + ansiShowCursor + ansiAltScreenOff
	if b.String() != want {
		t.Errorf("screen output\n%q\nwant\n%q", b.String(), want)
	}
}

func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}
