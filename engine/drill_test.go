package engine

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

const drillTestYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: world-drill
spec:
  clusters: [c1, c2, c3]
  drain: [c1, c2]
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {c1: o1, c2: o2, c3: o3}
  hold: 10m
  interval: 1m
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
      guardrail: {max: 20%, for: 2}
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count[{{.Interval}}]))
      slowerThan: 500ms
      tolerance: 15%
  guardrails:
    - name: pods
      type: gauge
      query: sum by (cluster) (kube_pod_info)
      guardrail: {min: 1, for: 1}
  blockingAlarms:
    - {name: paging, query: 'sum(kube_pod_info{cluster="nowhere"})'}
  outcomeAlarms:
    - {name: errors-burning, query: 'sum(rate(http_requests_total{code="500"}[1m])) > 50'}
  allowedWindows:
    - {days: [Mon, Tue, Wed, Thu], start: "07:00", end: "16:00", timeZone: UTC}
  blockedDates: ["2026-12-24"]
`

func (w *world) drill(edits ...string) *experiments.Drill {
	w.t.Helper()
	y := strings.NewReplacer("ACCOUNT", w.Emu.AccountID(), "POOL", w.PoolID, "PROM", w.Prom.URL()).Replace(drillTestYAML)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(y, edits[i]) {
			w.t.Fatalf("test bug: %q not in the drill", edits[i])
		}
		y = strings.Replace(y, edits[i], edits[i+1], 1)
	}
	ds, err := experiments.LoadDrill("drill.yaml", []byte(y), experiments.LoadOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return ds[0]
}

func sameOrigins(t *testing.T, got, want map[string]float64) {
	t.Helper()
	for o, v := range want {
		if !traffic.SameWeight(got[o], v) {
			t.Errorf("origin %s has weight %v, want %v (pool %v)", o, got[o], v, got)
		}
	}
}

func TestDrillPassesAndRestores(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	dr, err := w.engine().StartDrill(context.Background(), w.drill(), "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	var drained map[string]float64
	w.Drive(dr, 40*time.Minute, func(time.Time) {
		if drained == nil && dr.Run().Record().State == store.StateRamping {
			drained = w.PoolWeights()
		}
	})
	rec := dr.Run().Record()
	if rec.State != store.StatePromoted || rec.Verdict != VerdictDrillPassed {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	// While drained: c1's origin at 0, the survivors keep their proportions and the total,
	// the standby outside the drill untouched.
	if drained == nil {
		t.Fatal("never saw the drill holding")
	}
	if drained["o1"] != 0 || !traffic.SameWeight(drained["o2"]+drained["o3"], before["o1"]+before["o2"]+before["o3"]) || drained["standby"] != before["standby"] {
		t.Errorf("drained pool %v from %v", drained, before)
	}
	sameOrigins(t, w.PoolWeights(), before)
	took := rec.EndedAt.Sub(rec.StartedAt)
	if took < 10*time.Minute || took > 15*time.Minute {
		t.Errorf("drill took %s, want its 10m hold plus a few intervals", took)
	}
	ev := dr.Evaluation()
	if ev == nil || ev.Intervals != ev.Planned || ev.Planned < 8 || len(ev.KPIs) != 2*4 {
		t.Fatalf("evaluation %+v", ev)
	}
	if !strings.Contains(rec.Reason, "weights restored") {
		t.Errorf("reason %q", rec.Reason)
	}
	ds, err := w.St.Decisions(context.Background(), rec.ID)
	if err != nil || len(ds) < 5 {
		t.Errorf("%d decisions recorded (%v)", len(ds), err)
	}
	t.Logf("passed in %s: %s", took, rec.Reason)
}

func TestDrillBlocked(t *testing.T) {
	for name, tc := range map[string]struct {
		edits []string
		want  string
	}{
		"blocking alarm":  {[]string{`kube_pod_info{cluster="nowhere"}`, `kube_pod_info`}, "blocking alarm paging is firing"},
		"outside window":  {[]string{"days: [Mon, Tue, Wed, Thu]", "days: [Tue, Wed]"}, "outside every allowed window"},
		"hold overruns":   {[]string{`end: "16:00"`, `end: "08:05"`}, "outside every allowed window"},
		"blocked date":    {[]string{`["2026-12-24"]`, `["2026-11-23"]`}, "2026-11-23 is a blocked date"},
		"no data before":  {[]string{"sum by (cluster) (kube_pod_info)", `sum by (cluster) (kube_pod_info{pod="none"})`}, "KPI pods has no data for c2"},
		"already drained": {nil, "already has weight 0"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			if name == "already drained" {
				if err := w.Steer.SetWeights(context.Background(), traffic.PoolRef{Account: w.Emu.AccountID(), Pool: w.PoolID}, traffic.Weights{"o1": 0, "o2": 0.4, "o3": 0.4}, traffic.Weights{"o1": 0.26, "o2": 0.27, "o3": 0.27}); err != nil {
					t.Fatal(err)
				}
			}
			before := w.PoolWeights()
			dr, err := w.engine().StartDrill(context.Background(), w.drill(tc.edits...), "c1", "drill.yaml", w.Now())
			if err != nil {
				t.Fatal(err)
			}
			w.Drive(dr, 5*time.Minute, nil)
			rec := dr.Run().Record()
			if rec.State != store.StateFailed || rec.Verdict != VerdictDrillBlocked || !strings.Contains(rec.Reason, tc.want) {
				t.Fatalf("ended %s (%s): %s; want blocked: %s", rec.State, rec.Verdict, rec.Reason, tc.want)
			}
			if !strings.Contains(rec.Reason, "nothing was changed") {
				t.Errorf("reason %q does not say nothing changed", rec.Reason)
			}
			if n := w.eventTypes()[EventWeightsIntent]; n != 0 {
				t.Errorf("%d weight intents for a blocked drill", n)
			}
			sameOrigins(t, w.PoolWeights(), before)
			if rec.EndedAt.Sub(rec.CreatedAt) > time.Minute {
				t.Errorf("blocked after %s, want at the first step", rec.EndedAt.Sub(rec.CreatedAt))
			}
		})
	}
}

func TestDrillGuardrailBreachRestoresAtOnce(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	dr, err := w.engine().StartDrill(context.Background(), w.drill(), "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	var breach time.Time
	w.Drive(dr, 40*time.Minute, func(now time.Time) {
		if breach.IsZero() && dr.Run().Record().State == store.StateRamping && now.Sub(dr.Run().Record().StartedAt) >= 3*time.Minute {
			breach = now
			w.ErrP["c2"] = 0.3 // c2 cannot take c1's traffic: 30% errors
		}
	})
	rec := dr.Run().Record()
	if rec.State != store.StateRolledBack || rec.Verdict != VerdictFailed {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	if !strings.Contains(rec.Reason, "c2") || !strings.Contains(rec.Reason, "restored at once") {
		t.Errorf("reason %q", rec.Reason)
	}
	sameOrigins(t, w.PoolWeights(), before)
	// Two intervals beyond the guardrail, the settle time and a tick: within four minutes,
	// well before the 10m hold would have ended.
	if took := rec.EndedAt.Sub(breach); took > 4*time.Minute {
		t.Errorf("restored %s after the breach", took)
	}
	t.Logf("breach at +%s, restored %s later: %s", breach.Sub(rec.StartedAt), rec.EndedAt.Sub(breach), rec.Reason)
}

func TestDrillOutcomeAlarmRestores(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	// 200 requests/s at 1% errors is 2 errors/s: the alarm is quiet until c3 goes to 8%.
	dr, err := w.engine().StartDrill(context.Background(), w.drill(`> 50'}`, `> 4'}`), "c2", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	var fired time.Time
	w.Drive(dr, 40*time.Minute, func(now time.Time) {
		if fired.IsZero() && dr.Run().Record().State == store.StateRamping && now.Sub(dr.Run().Record().StartedAt) >= 4*time.Minute {
			fired = now
			w.ErrP["c3"] = 0.08
		}
	})
	rec := dr.Run().Record()
	if rec.State != store.StateRolledBack || !strings.Contains(rec.Reason, "outcome alarm errors-burning fired") {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	if fired.IsZero() || rec.EndedAt.Before(fired) || rec.EndedAt.Sub(fired) > 2*time.Minute {
		t.Errorf("alarm raised at %s, drill ended %s", fired, rec.EndedAt)
	}
	sameOrigins(t, w.PoolWeights(), before)
}

// trafficLostDrill starts a drill of c2 whose one outcome alarm, traffic-lost, fires
// after forDur when the users' traffic drops: the KPIs (ratios) do not see that, so the
// alarm alone decides when the drill ends.
func (w *world) trafficLostDrill(forDur string, opts ...func(*Options)) (*experiments.Drill, *DrillRun) {
	w.t.Helper()
	d := w.drill(`{name: errors-burning, query: 'sum(rate(http_requests_total{code="500"}[1m])) > 50'}`,
		`{name: traffic-lost, query: 'sum(rate(http_requests_total[1m])) < 100', for: `+forDur+`}`)
	dr, err := w.engine(opts...).StartDrill(context.Background(), d, "c2", "drill.yaml", w.Now())
	if err != nil {
		w.t.Fatal(err)
	}
	return d, dr
}

// TestDrillOutcomeAlarmForSurvivesARestart: an alarm's `for` counts from when it was
// first seen firing, also across a restart of the engine: a restart in the middle of an
// outage must not hold the drained pool for another full `for`.
func TestDrillOutcomeAlarmForSurvivesARestart(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	d, dr := w.trafficLostDrill("4m")
	var raised, seen time.Time
	for range 60 {
		w.Advance(w.Now().Add(30 * time.Second))
		if raised.IsZero() && dr.Run().Record().State == store.StateRamping && w.Now().Sub(dr.Run().Record().StartedAt) >= 4*time.Minute {
			raised = w.Now()
			w.Rate /= 4
		}
		if err := dr.Step(context.Background(), w.Now()); err != nil {
			t.Fatal(err)
		}
		if dr.Done() {
			t.Fatalf("drill ended before the restart: %s", dr.Run().Record().Reason)
		}
		if ev := dr.Evaluation(); seen.IsZero() && ev != nil && len(ev.Alarms) > 0 {
			seen = w.Now()
		}
		if !seen.IsZero() && w.Now().Sub(seen) >= 2*time.Minute {
			break
		}
	}
	if seen.IsZero() {
		t.Fatal("the outcome alarm never fired")
	}
	id := dr.ID()
	resumed := w.Now()
	again, err := newWorldEngineOnReopenedStore(w).ResumeDrill(context.Background(), id, d)
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(again, 20*time.Minute, nil)
	rec := again.Run().Record()
	if rec.State != store.StateRolledBack || !strings.Contains(rec.Reason, "outcome alarm traffic-lost fired") {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	// Seen firing 2m before the restart with `for: 4m`: restored about 2m after it, not 4m.
	if took := rec.EndedAt.Sub(resumed); took >= 3*time.Minute {
		t.Errorf("restored %s after the restart (first seen firing %s before it), want the rest of the 4m `for`", took, resumed.Sub(seen))
	}
	if took := rec.EndedAt.Sub(seen); took < 4*time.Minute {
		t.Errorf("restored %s after the alarm was first seen firing, before its 4m `for`", took)
	}
	t.Logf("alarm raised +%s, seen +%s, restart +%s, restored +%s", raised.Sub(rec.StartedAt), seen.Sub(rec.StartedAt), resumed.Sub(rec.StartedAt), rec.EndedAt.Sub(rec.StartedAt))
	sameOrigins(t, w.PoolWeights(), before)
}

// TestDrillDoesNotPassWithAPendingOutcomeAlarm: an alarm that begins firing shortly before
// the hold ends is pending, not quiet: the drill holds on and fails when its `for` passes.
func TestDrillDoesNotPassWithAPendingOutcomeAlarm(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	_, dr := w.trafficLostDrill("5m")
	var raised time.Time
	w.Drive(dr, 40*time.Minute, func(now time.Time) {
		rec := dr.Run().Record()
		// 3 minutes before the 10m hold ends
		if raised.IsZero() && rec.State == store.StateRamping && !dr.Run().book.StepStart.IsZero() && now.Sub(dr.Run().book.StepStart) >= 7*time.Minute {
			raised = now
			w.Rate /= 4
		}
	})
	rec := dr.Run().Record()
	if rec.State != store.StateRolledBack || !strings.Contains(rec.Reason, "outcome alarm traffic-lost fired") {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	if took := rec.EndedAt.Sub(raised); took < 5*time.Minute || took > 7*time.Minute {
		t.Errorf("failed %s after the traffic dropped, want its 5m `for` and the alarm's 1m rate window", took)
	}
	sameOrigins(t, w.PoolWeights(), before)
}

// unreadableAlarms fails the instant queries (the outcome alarms') while failing is set,
// as a Prometheus that answers range queries but times out on an alarm's would.
type unreadableAlarms struct {
	KPISource
	failing atomic.Bool
}

func (s *unreadableAlarms) Instant(ctx context.Context, query string, t time.Time) (model.Value, []string, error) {
	if s.failing.Load() {
		return nil, nil, errors.New("query timed out in expression evaluation")
	}
	return s.KPISource.Instant(ctx, query, t)
}

// TestDrillHoldsWhileAnOutcomeAlarmCannotBeRead: an alarm that cannot be read is not
// quiet. A drill whose alarm query fails at the end of the hold neither passes nor fails
// at once: it holds on until the query answers again (and passes if the alarm is quiet),
// or restores the pool once it has been unread for noDataTimeout.
func TestDrillHoldsWhileAnOutcomeAlarmCannotBeRead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		outage   time.Duration // from 7m into the 10m hold
		want     store.State
		inReason string
	}{
		{"recovers", 5 * time.Minute, store.StatePromoted, ""},
		{"stays unreadable", time.Hour, store.StateRolledBack, "outcome alarm traffic-lost could not be evaluated for 10m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.PoolWeights()
			var src *unreadableAlarms
			_, dr := w.trafficLostDrill("2m", func(o *Options) {
				src = &unreadableAlarms{KPISource: o.Metrics}
				o.Metrics = src
			})
			var broke, mended time.Time
			w.Drive(dr, time.Hour, func(now time.Time) {
				start := dr.Run().book.StepStart
				if broke.IsZero() && dr.Run().Record().State == store.StateRamping && !start.IsZero() && now.Sub(start) >= 7*time.Minute {
					broke = now
					src.failing.Store(true)
				}
				if !broke.IsZero() && mended.IsZero() && now.Sub(broke) >= tc.outage {
					mended = now
					src.failing.Store(false)
				}
			})
			rec := dr.Run().Record()
			if broke.IsZero() {
				t.Fatalf("the drill ended %s before its hold: %s", rec.State, rec.Reason)
			}
			if rec.State != tc.want || !strings.Contains(rec.Reason, tc.inReason) {
				t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
			took := rec.EndedAt.Sub(broke)
			switch tc.want {
			case store.StatePromoted:
				// The hold ended 3m into the outage; the pass waits for the query to answer.
				if mended.IsZero() || rec.EndedAt.Before(mended) || rec.EndedAt.Sub(mended) > 2*time.Minute {
					t.Errorf("passed %s after the query failed (it answered again after %s)", took, tc.outage)
				}
			default:
				if took < 10*time.Minute || took > 12*time.Minute {
					t.Errorf("restored %s after the alarm query began failing, want its 10m noDataTimeout", took)
				}
			}
			if n := w.eventTypes()[EventFault]; n == 0 {
				t.Error("no fault event for the failing alarm query")
			}
			sameOrigins(t, w.PoolWeights(), before)
		})
	}
}

// writeThenFail lands a weight write and reports it failed, as a process killed right
// after the load balancer took the write would leave it.
type writeThenFail struct {
	traffic.Steerer
	armed bool
}

func (s *writeThenFail) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	if err := s.Steerer.SetWeights(ctx, ref, want, expect); err != nil || !s.armed {
		return err
	}
	return errors.New("connection reset by peer")
}

func TestDrillKilledMidDrillIsRestoredOrResumed(t *testing.T) {
	for _, withFile := range []bool{false, true} {
		name := "without the file: restore"
		if withFile {
			name = "with the file: resume the hold"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			before := w.PoolWeights()
			d := w.drill()
			steer := &writeThenFail{Steerer: w.Steer, armed: true}
			dr, err := w.engine(func(o *Options) { o.Steerer = steer }).StartDrill(context.Background(), d, "c1", "drill.yaml", w.Now())
			if err != nil {
				t.Fatal(err)
			}
			// Step until the drain is written but not confirmed: the "killed" process.
			for range 10 {
				w.Advance(w.Now().Add(30 * time.Second))
				if err := dr.Step(context.Background(), w.Now()); err != nil {
					t.Fatal(err)
				}
				if dr.Run().Record().Intent != nil {
					break
				}
			}
			if dr.Run().Record().Intent == nil || w.PoolWeights()["o1"] != 0 {
				t.Fatalf("no drain in flight: intent %v, pool %v", dr.Run().Record().Intent, w.PoolWeights())
			}
			id := dr.ID()
			w.Advance(w.Now().Add(2 * time.Minute)) // the process is dead for a while

			fresh := newWorldEngineOnReopenedStore(w)
			var file *experiments.Drill
			if withFile {
				file = d
			}
			resumed := w.Now()
			again, err := fresh.ResumeDrill(context.Background(), id, file)
			if err != nil {
				t.Fatal(err)
			}
			w.Drive(again, 40*time.Minute, nil)
			rec := again.Run().Record()
			sameOrigins(t, w.PoolWeights(), before)
			if withFile {
				if rec.State != store.StatePromoted || rec.Verdict != VerdictDrillPassed {
					t.Fatalf("resumed drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
				}
				return
			}
			if rec.State != store.StateAborted || !strings.Contains(rec.Reason, "restoring") {
				t.Fatalf("resumed drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
			if took := rec.EndedAt.Sub(resumed); took > time.Minute {
				t.Errorf("restored %s after the resume, want at its first steps", took)
			}
		})
	}
}

func newWorldEngineOnReopenedStore(w *world) *Engine {
	st := w.OpenStore()
	return w.engine(func(o *Options) { o.Store = st; o.Who = "second" })
}

func TestDrillResumeRefusesAChangedFile(t *testing.T) {
	w := newWorld(t)
	dr, err := w.engine().StartDrill(context.Background(), w.drill(), "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.engine().ResumeDrill(context.Background(), dr.ID(), w.drill("hold: 10m", "hold: 20m")); !errors.Is(err, ErrSpecChanged) {
		t.Fatalf("resume with a changed hold: %v", err)
	}
	if drain, ok := IsDrill(&store.Run{Spec: dr.Run().Record().Spec}); !ok || drain != "c1" {
		t.Errorf("IsDrill = %q, %v", drain, ok)
	}
}

// TestDrillAbortedThroughTheExperimentPath: `verdict abort` resumes any run as an
// experiment, without its file; a drained drill must come back to its original weights that
// way too.
func TestDrillAbortedThroughTheExperimentPath(t *testing.T) {
	w := newWorld(t)
	before := w.PoolWeights()
	dr, err := w.engine().StartDrill(context.Background(), w.drill(), "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		w.Advance(w.Now().Add(30 * time.Second))
		if err := dr.Step(context.Background(), w.Now()); err != nil {
			t.Fatal(err)
		}
		if dr.Run().Record().State == store.StateRamping {
			break
		}
	}
	if w.PoolWeights()["o1"] != 0 {
		t.Fatalf("not drained: %v", w.PoolWeights())
	}
	if err := w.St.PostCommand(context.Background(), &store.Command{RunID: dr.ID(), Action: ActionAbort, Who: "oncall", Reason: "pager"}); err != nil {
		t.Fatal(err)
	}
	r, err := newWorldEngineOnReopenedStore(w).Resume(context.Background(), dr.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(r, 5*time.Minute, nil)
	rec := r.Record()
	if rec.State != store.StateAborted || !strings.Contains(rec.Reason, "pager") {
		t.Fatalf("ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	sameOrigins(t, w.PoolWeights(), before)
}

// TestDrillWithADeadLeafNeverDrains: a survivor's samples stopped (its federation leaf
// died); draining would push traffic onto a cluster nobody can see. The drill stops before
// any weight moves, naming the cluster.
func TestDrillWithADeadLeafNeverDrains(t *testing.T) {
	w := newWorld(t)
	w.Dead = map[string]bool{"c3": true}
	w.Advance(w.Now().Add(2 * time.Minute))
	before := w.PoolWeights()
	dr, err := w.engine().StartDrill(context.Background(), w.drill(), "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(dr, 10*time.Minute, nil)
	rec := dr.Run().Record()
	if rec.State != store.StateFailed || rec.Verdict != VerdictCheckFailed || !strings.Contains(rec.Reason, "cluster c3") {
		t.Fatalf("drill ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
	}
	sameOrigins(t, w.PoolWeights(), before)
	if w.eventTypes()[EventWeightsIntent] != 0 {
		t.Error("a drain was intended while c3's series were stale")
	}
}

// TestAlarmClock: the pending time counts what was seen firing, not the time the engine
// was away (the alarm may have cleared meanwhile), and a changed query starts over.
func TestAlarmClock(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var c alarmClock
	steps := []struct {
		at      time.Duration
		query   string
		pending time.Duration
		moved   bool
	}{
		{0, "q", 0, true},
		{30 * time.Second, "q", 30 * time.Second, false},
		{90 * time.Second, "q", 90 * time.Second, false}, // a minute between ticks is no gap
		{20 * time.Minute, "q", 90 * time.Second, true},  // away 18m30s: the count resumes at 1m30s
		{20*time.Minute + 30*time.Second, "q", 2 * time.Minute, false},
		{21 * time.Minute, "other", 0, true}, // a new query is a new alarm
	}
	for _, s := range steps {
		pending, moved := c.observe(s.query, at(s.at), 2*time.Minute)
		if pending != s.pending || moved != s.moved {
			t.Errorf("at +%s (%s): pending %s, moved %v; want %s, %v", s.at, s.query, pending, moved, s.pending, s.moved)
		}
	}
}
