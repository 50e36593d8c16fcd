package report

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/store"
)

// oneEvidenceKPIs adds to the recorded runs' KPIs what the old copies of the evidence model
// disagreed on: a slow share judged at its own slowTolerance, and a second throughput KPI
// counting other requests (the share check must read the same one live, after a restart
// and in the report). The
// variant is declared live from the start, so the history's offset is subtracted.
var oneEvidenceKPIs = append(append([]string{}, extraKPIs...),
	"kernel: '6.1'}}", "kernel: '6.1'}, apply: {appliedAt: 2026-11-23T08:00:00Z}}",
	"      slowerThan: 500ms\n", "      slowerThan: 500ms\n      slowTolerance: 25%\n",
	"    - name: requests\n", `    - name: requests-timed
      type: throughput
      query: sum by (cluster) (increase(http_request_duration_seconds_bucket{le="0.5"}[{{.Interval}}]))
    - name: requests
`)

// TestOneEvidence checks that a live run, the same run after its process restarted (rebuilt
// from the store), the report of the run and verdict analyze over the run's intervals give
// identical evidence: every decision either process took matches the report's replay at the
// interval it had seen (estimates, bounds, readiness), the final statuses, effects, noise
// models and share check match the engine's, and analyze over the history and the first
// step's intervals reproduces the run's sequences, statuses and noise models.
func TestOneEvidence(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.011
	exp := w.Experiment(oneEvidenceKPIs...)
	r, err := w.engine().Start(ctx, exp, "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	stepUntil := func(r *engine.Run, stop func(store.Run) bool) {
		t.Helper()
		for end := w.Now().Add(3 * time.Hour); !r.Done() && !stop(r.Record()) && w.Now().Before(end); {
			w.Advance(w.Now().Add(30 * time.Second))
			if err := r.Step(ctx, w.Now()); err != nil {
				t.Fatalf("step at %s: %v", w.Now().Format(time.TimeOnly), err)
			}
		}
	}

	// Live, into the middle of step 2; then the process dies.
	stepUntil(r, func(rec store.Run) bool { return rec.Step == 2 && rec.StepElapsed >= 4*time.Minute })
	if r.Done() || r.Record().Step != 2 {
		t.Fatalf("test setup: want the run in step 2, it is %s at step %d", r.Record().State, r.Record().Step)
	}
	crashed := r.Snapshot()
	crashAt := w.Now()

	// A new process opens the same state directory and resumes the run from the store.
	w.St = w.OpenStore()
	r2, err := w.engine().Resume(ctx, r.ID(), exp)
	if err != nil {
		t.Fatal(err)
	}
	resumed := r2.Snapshot()
	if !sameShare(crashed.Share, resumed.Share) {
		t.Errorf("share check after the restart %+v, before %+v", resumed.Share, crashed.Share)
	}
	if a, b := noiseTexts(crashed.Noise), noiseTexts(resumed.Noise); a != b {
		t.Errorf("noise after the restart:\n%s\nbefore:\n%s", b, a)
	}
	stepUntil(r2, func(store.Run) bool { return false })
	if !r2.Done() {
		t.Fatalf("resumed run did not end: %s", r2.Record().State)
	}
	final := r2.Snapshot()

	rep, err := FromStore(ctx, w.St, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "differs from what the engine decided") {
			t.Errorf("report: %s", n)
		}
	}
	byName := map[string]*KPI{}
	for i := range rep.KPIs {
		byName[rep.KPIs[i].Name] = &rep.KPIs[i]
	}
	if k := byName["error-rate"]; k == nil || !k.Effect.PreAdjusted || k.Noise == nil || k.Noise.OffsetIgnored {
		t.Errorf("error-rate: the history's offset was not subtracted: %+v", k)
	}
	if k := byName["latency (slower than 500ms)"]; k == nil || k.Tolerance != 0.25 {
		t.Errorf("slow share judged at tolerance %v, want its slowTolerance 0.25", k)
	}

	// Every decision, before the crash (live) and after it (resumed), is the report's
	// replay at the interval it had seen.
	decs, err := w.St.Decisions(ctx, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	var before, after int
	for _, d := range decs {
		det := decisionDetails(t, d)
		if det.Through.IsZero() {
			continue
		}
		if d.At.Before(crashAt) {
			before++
		} else {
			after++
		}
		for _, kv := range det.Decision.KPIs {
			k := byName[kv.Name]
			if k == nil {
				t.Fatalf("decision at %s judges %s, which the report does not have", d.At.Format(time.TimeOnly), kv.Name)
			}
			p, ok := seqAt(k.Sequence, det.Through)
			if !ok {
				if kv.Interval.Intervals > 0 {
					t.Errorf("%s: the engine decided on %d intervals at %s, the report has none", kv.Name, kv.Interval.Intervals, det.Through.Format(time.TimeOnly))
				}
				continue
			}
			if !samePoint(kv.Interval.Analysis(), p) {
				t.Errorf("%s at %s: engine %+v, report %+v", kv.Name, det.Through.Format(time.TimeOnly), kv.Interval, p)
			}
		}
	}
	t.Logf("%d decisions before the crash, %d after; final %s: %s; share: %s", before, after, final.Decision.Action, final.Decision.Reason, rep.Traffic.Reason)
	if before == 0 || after == 0 {
		t.Fatalf("test setup: %d decisions before the crash and %d after", before, after)
	}

	// The final judgement, noise models and share check are the engine's.
	if final.Decision == nil {
		t.Fatal("no final decision")
	}
	for _, kv := range final.Decision.KPIs {
		k := byName[kv.Name]
		if k.Status != string(kv.Status) || k.StatusReason != kv.Reason || !sameEffect(kv.Interval, k.Effect) || k.Tolerance != kv.Tolerance {
			t.Errorf("%s: engine %s %q %+v (tolerance %v), report %s %q %+v (tolerance %v)", kv.Name, kv.Status, kv.Reason, kv.Interval, kv.Tolerance, k.Status, k.StatusReason, k.Effect, k.Tolerance)
		}
	}
	for _, n := range final.Noise {
		k := byName[n.KPI]
		want := NoiseOf(n, k.Noise.HistoryIntervals, k.Effect.Relative)
		if k.Noise == nil || k.Noise.Compact(time.Minute) != want.Compact(time.Minute) {
			t.Errorf("%s: report noise %+v, engine %+v", n.KPI, k.Noise, want)
		}
		if n.Model == nil {
			t.Errorf("%s: no noise model learned from %d history intervals: %s", n.KPI, k.Noise.HistoryIntervals, n.Fallback)
		}
	}
	if tr := rep.Traffic; !tr.Checked || tr.Mismatch != final.Share.Mismatch || tr.LogBayesFactor != round(final.Share.LogBayesFactor, 0) ||
		(final.Share.Reason != "" && tr.Reason != final.Share.Reason) || tr.Tolerance != final.Share.Tolerance {
		t.Errorf("report share check %+v, engine %+v", tr, final.Share)
	}

	// verdict analyze over the run's history and its first step reads the same intervals
	// as the run did, through the same evidence: the same sequences, statuses and noise.
	var first, last time.Time
	var prev time.Time
	for _, p := range rep.KPIs[0].Series {
		if p.Phase != engine.PhaseRun || p.Step != 1 {
			continue
		}
		if first.IsZero() {
			first = p.End.Add(-time.Minute)
		} else if !p.End.Equal(prev.Add(time.Minute)) {
			t.Fatalf("test setup: step 1 has a gap before %s", p.End.Format(time.TimeOnly))
		}
		prev, last = p.End, p.End
	}
	an, err := Analyze(ctx, w.Src, AnalyzeRequest{Experiment: exp, From: first, To: last, PreFrom: rep.PrePeriod.From, PreTo: rep.PrePeriod.To})
	if err != nil {
		t.Fatal(err)
	}
	var atStep1 *engine.Decision
	for _, d := range decs {
		det := decisionDetails(t, d)
		if !det.Through.IsZero() && !det.Through.After(last) {
			atStep1 = &det.Decision
		}
	}
	if atStep1 == nil {
		t.Fatal("no decision in step 1")
	}
	if an.PrePeriod == nil || *an.PrePeriod != *rep.PrePeriod {
		t.Errorf("analyze history %+v, run %+v", an.PrePeriod, rep.PrePeriod)
	}
	for _, k := range an.KPIs {
		rk := byName[k.Name]
		if rk == nil || rk.Tolerance != k.Tolerance {
			t.Fatalf("analyze judges %s (tolerance %v), the run %+v", k.Name, k.Tolerance, rk)
		}
		if k.Status == StatusNotJudged {
			continue
		}
		n := len(k.Sequence)
		if n == 0 || n > len(rk.Sequence) {
			t.Fatalf("%s: analyze has %d sequence points, the run %d", k.Name, n, len(rk.Sequence))
		}
		for j := range n {
			if !sameSeqPoint(k.Sequence[j], rk.Sequence[j]) {
				t.Errorf("%s after %s: analyze %+v, run %+v", k.Name, k.Sequence[j].End.Format(time.TimeOnly), k.Sequence[j], rk.Sequence[j])
				break
			}
		}
		if !k.Sequence[n-1].End.Equal(last) {
			t.Errorf("%s: analyze ends at %s, want %s", k.Name, k.Sequence[n-1].End.Format(time.TimeOnly), last.Format(time.TimeOnly))
		}
		var kv *engine.KPIVerdict
		for x := range atStep1.KPIs {
			if atStep1.KPIs[x].Name == k.Name {
				kv = &atStep1.KPIs[x]
			}
		}
		if kv == nil || k.Status != string(kv.Status) || k.StatusReason != kv.Reason || !sameEffect(kv.Interval, k.Effect) {
			t.Errorf("%s: analyze %s %q %+v, the run's decision at %s %+v", k.Name, k.Status, k.StatusReason, k.Effect, last.Format(time.TimeOnly), kv)
		}
		if k.Noise == nil || rk.Noise == nil || k.Noise.Compact(time.Minute) != rk.Noise.Compact(time.Minute) {
			t.Errorf("%s: analyze noise %+v, run %+v", k.Name, k.Noise, rk.Noise)
		}
	}
	if an.Traffic.Checked {
		t.Errorf("analyze checked traffic shares without weights: %+v", an.Traffic)
	}
}

type decisionDetail struct {
	Decision engine.Decision `json:"decision"`
	Through  time.Time       `json:"decidedThrough"`
}

func decisionDetails(t *testing.T, d store.Decision) decisionDetail {
	t.Helper()
	var det decisionDetail
	if err := json.Unmarshal(d.Details, &det); err != nil {
		t.Fatalf("decision at %s: %v", d.At, err)
	}
	return det
}

// seqAt is the sequence after the last interval ending at or before t.
func seqAt(seq []SeqPoint, t time.Time) (SeqPoint, bool) {
	var p SeqPoint
	ok := false
	for _, s := range seq {
		if s.End.After(t) {
			break
		}
		p, ok = s, true
	}
	return p, ok
}

func eqPtr(a, b *float64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func samePoint(iv analysis.Interval, p SeqPoint) bool {
	return round(iv.Estimate, 0) == p.Estimate && eqPtr(boundPtr(iv.Lower, iv.LowerBounded), p.Lower) &&
		eqPtr(boundPtr(iv.Upper, iv.UpperBounded), p.Upper) && iv.Ready == p.Ready
}

func sameSeqPoint(a, b SeqPoint) bool {
	return a.End.Equal(b.End) && a.Estimate == b.Estimate && eqPtr(a.Lower, b.Lower) && eqPtr(a.Upper, b.Upper) && a.Ready == b.Ready
}

func sameEffect(iv engine.Interval, e Effect) bool {
	return eqPtr(fptr(iv.Estimate), e.Estimate) && eqPtr(boundPtr(iv.Lower, iv.LowerBounded), e.CILow) && eqPtr(boundPtr(iv.Upper, iv.UpperBounded), e.CIHigh) &&
		iv.Intervals == e.Intervals && iv.PreAdjusted == e.PreAdjusted && iv.Relative == e.Relative
}

func sameShare(a, b engine.ShareResult) bool {
	return a.Mismatch == b.Mismatch && a.LogBayesFactor == b.LogBayesFactor && a.Reason == b.Reason
}

func noiseTexts(ns []engine.KPINoise) string {
	var b strings.Builder
	for _, n := range ns {
		b.WriteString(n.KPI + ": " + NoiseOf(n, 0, true).Compact(time.Minute) + "\n")
	}
	return b.String()
}
