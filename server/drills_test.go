package server

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

const scheduledDrillYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: sched-drill
spec:
  clusters: [a1, a2, a3]
  drain: [a1, a2]
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {a1: oa1, a2: oa2, a3: oa3}
  hold: 5m
  interval: 1m
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 30%
      guardrail: {max: 20%}
  allowedWindows:
    - {days: [Mon], start: "08:00", end: "12:00"}
  schedule: "*/10 * * * *"
`

// TestScheduledDrills runs a drill file of serve's directory on its schedule: the first
// at the schedule's next time after the start (not at once), the second draining the next
// cluster in turn, each recorded as a run with a report, the pool restored after each.
func TestScheduledDrills(t *testing.T) {
	if testing.Short() {
		t.Skip("compressed real time; skipped with -short")
	}
	w := newWorld(t)
	before := w.poolWeights("a")
	w.write("drill.yaml", strings.NewReplacer("ACCOUNT", w.emu.AccountID(), "POOL", pools["a"], "PROM", w.prom.URL()).Replace(scheduledDrillYAML))
	started := w.clk.Now()
	s := w.server()
	s.StartDrills()
	st := w.openStore()
	var runs []*store.Run
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		all, err := st.ListRuns(context.Background(), store.ListOptions{Experiment: "sched-drill"})
		if err != nil {
			t.Fatal(err)
		}
		runs = runs[:0]
		ended := 0
		for _, r := range all {
			runs = append(runs, r)
			if r.State.Terminal() {
				ended++
			}
		}
		if ended >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].CreatedAt.Before(runs[j].CreatedAt) })
	if len(runs) < 2 {
		t.Fatalf("%d drill runs after a minute", len(runs))
	}
	for i, want := range []string{"a1", "a2"} {
		r := runs[i]
		drain, ok := engine.IsDrill(r)
		if !ok || drain != want {
			t.Errorf("run %d drains %q (drill %v), want %s", i, drain, ok, want)
		}
		if r.State != store.StatePromoted || r.Verdict != engine.VerdictDrillPassed {
			t.Errorf("run %s ended %s (%s): %s", r.ID, r.State, r.Verdict, r.Reason)
		}
		if m := r.CreatedAt.Minute(); m%10 != 0 || r.CreatedAt.Sub(started) < 0 {
			t.Errorf("run %s started at %s, want at a scheduled */10 minute after %s", r.ID, r.CreatedAt.Format(time.TimeOnly), started.Format(time.TimeOnly))
		}
		rep, err := report.FromStore(context.Background(), st, r.ID)
		if err != nil || rep.Verdict != engine.VerdictDrillPassed {
			t.Errorf("report of %s: %v (%+v)", r.ID, err, rep)
		}
	}
	if runs[0].CreatedAt.Sub(started) > 10*time.Minute+time.Minute {
		t.Errorf("first drill at %s, more than one schedule period after the start %s", runs[0].CreatedAt, started)
	}
	if len(runs) > 2 && !runs[2].State.Terminal() {
		return // a third drill holds now; the ended ones restored, as their states say
	}
	after := w.poolWeights("a")
	for o, v := range before {
		if !traffic.SameWeight(after[o], v) {
			t.Errorf("origin %s at %v after the drills, want %v", o, after[o], v)
		}
	}
}

// TestServeResumesAKilledDrill: a drill whose driver died with the cluster drained is taken
// over by serve (its file is in serve's directory), which finishes the hold and restores
// the pool; with the file gone, serve restores the pool at once.
func TestServeResumesAKilledDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("compressed real time; skipped with -short")
	}
	for _, keepFile := range []bool{true, false} {
		name := "file kept: the hold goes on"
		if !keepFile {
			name = "file gone: restored"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			before := w.poolWeights("a")
			y := strings.NewReplacer("ACCOUNT", w.emu.AccountID(), "POOL", pools["a"], "PROM", w.prom.URL(), `  schedule: "*/10 * * * *"`+"\n", "").Replace(scheduledDrillYAML)
			file := w.write("drill.yaml", y)
			ds, err := experiments.LoadDrill(file, []byte(y), experiments.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			src, err := metrics.New(metrics.Options{Address: w.prom.URL(), MaxAttempts: 1, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			st := w.openStore()
			eng, err := engine.New(engine.Options{Store: st, Steerer: w.steer, Metrics: src, Settle: 5 * time.Second, Who: "killed"})
			if err != nil {
				t.Fatal(err)
			}
			dr, err := eng.StartDrill(context.Background(), ds[0], "a1", file, w.clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; dr.Run().Record().State != store.StateRamping; i++ {
				if i > 100 || dr.Done() {
					t.Fatalf("never drained: %+v", dr.Run().Record())
				}
				if err := dr.Step(context.Background(), w.clk.Now()); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if w.poolWeights("a")["oa1"] != 0 {
				t.Fatalf("not drained: %v", w.poolWeights("a"))
			}
			// The driver is gone. serve starts on the directory.
			if !keepFile {
				w.write("drill.yaml", "# emptied\n")
			}
			w.server()
			var rec *store.Run
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if rec, err = st.Run(context.Background(), dr.ID()); err == nil && rec.State.Terminal() {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if rec == nil || !rec.State.Terminal() {
				t.Fatalf("serve did not finish the drill: %+v", rec)
			}
			want := store.StatePromoted
			if !keepFile {
				want = store.StateAborted
			}
			if rec.State != want {
				t.Errorf("ended %s (%s): %s; want %s", rec.State, rec.Verdict, rec.Reason, want)
			}
			after := w.poolWeights("a")
			for o, v := range before {
				if !traffic.SameWeight(after[o], v) {
					t.Errorf("origin %s at %v, want %v", o, after[o], v)
				}
			}
			t.Logf("%s: %s after %s: %s", name, rec.Verdict, rec.EndedAt.Sub(rec.StartedAt), rec.Reason)
		})
	}
}
