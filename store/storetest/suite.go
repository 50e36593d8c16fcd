// Package storetest is the conformance suite every store.Store implementation must pass.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// Run runs the suite; open returns a new, empty store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)
	newRun := func(id, pool string) *store.Run {
		return &store.Run{ID: id, Experiment: "exp-" + id, Pool: pool, State: store.StatePending,
			Spec: json.RawMessage(`{"name":"x"}`), Original: store.Weights{"a": 0.5, "b": 0.5}, CreatedAt: t0}
	}

	t.Run("create and read", func(t *testing.T) {
		s := open(t)
		r := newRun("r1", "acct/pool1")
		if err := s.CreateRun(ctx, r, store.Event{Type: "run_started", Message: "started", At: t0}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Run(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Experiment != "exp-r1" || got.Original["b"] != 0.5 || got.Version != 1 || string(got.Spec) != `{"name":"x"}` {
			t.Errorf("read back %+v", got)
		}
		byName, err := s.Run(ctx, "exp-r1")
		if err != nil || byName.ID != "r1" {
			t.Errorf("by experiment name: %v %v", byName, err)
		}
		if _, err := s.Run(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing run: %v", err)
		}
		ev, err := s.Events(ctx, "r1", 0)
		if err != nil || len(ev) != 1 || ev[0].Type != "run_started" || !ev[0].At.Equal(t0) {
			t.Errorf("events %+v %v", ev, err)
		}
	})

	t.Run("one unfinished run per pool", func(t *testing.T) {
		s := open(t)
		if err := s.CreateRun(ctx, newRun("r1", "p")); err != nil {
			t.Fatal(err)
		}
		err := s.CreateRun(ctx, newRun("r2", "p"))
		var busy *store.PoolBusyError
		if !errors.As(err, &busy) || busy.RunID != "r1" || !errors.Is(err, store.ErrPoolBusy) {
			t.Fatalf("second run on the pool: %v", err)
		}
		if err := s.CreateRun(ctx, newRun("r3", "other")); err != nil {
			t.Fatalf("another pool must be free: %v", err)
		}
		r1, _ := s.Run(ctx, "r1")
		r1.State = store.StateRolledBack
		if err := s.SaveRun(ctx, r1); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRun(ctx, newRun("r2", "p")); err != nil {
			t.Fatalf("a finished run must free its pool: %v", err)
		}
		un, err := s.ListRuns(ctx, store.ListOptions{Unfinished: true})
		if err != nil || len(un) != 2 {
			t.Errorf("unfinished runs: %d %v", len(un), err)
		}
	})

	t.Run("concurrent creators race for one pool", func(t *testing.T) {
		s := open(t)
		raceCreate(t, []store.Store{s}, newRun)
	})

	t.Run("save is optimistic and atomic with its events", func(t *testing.T) {
		s := open(t)
		r := newRun("r1", "p")
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		stale := *r
		r.State, r.Step = store.StateRamping, 1
		r.Intent = &store.Intent{ID: 1, Purpose: "step 1", Want: store.Weights{"a": 0.1, "b": 0.9}, Expect: store.Weights{"a": 0.5, "b": 0.5}, At: t0}
		if err := s.SaveRun(ctx, r, store.Event{Type: "weights_intent", Message: "step 1"}); err != nil {
			t.Fatal(err)
		}
		if r.Version != 2 {
			t.Errorf("version after save %d", r.Version)
		}
		stale.State = store.StateAborted
		if err := s.SaveRun(ctx, &stale, store.Event{Type: "lost", Message: "must not be stored"}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("stale save: %v", err)
		}
		got, _ := s.Run(ctx, "r1")
		if got.State != store.StateRamping || got.Intent == nil || got.Intent.Want["a"] != 0.1 {
			t.Errorf("stored %+v", got)
		}
		ev, _ := s.Events(ctx, "r1", 0)
		for _, e := range ev {
			if e.Type == "lost" {
				t.Error("an event of a failed save was stored")
			}
		}
	})

	t.Run("observations replace on replay", func(t *testing.T) {
		s := open(t)
		s.CreateRun(ctx, newRun("r1", "p"))
		obs := []store.Observation{
			{RunID: "r1", KPI: "errors", Start: t0, End: t0.Add(time.Minute), Step: 1, Phase: "run", Values: json.RawMessage(`{"c":1}`)},
			{RunID: "r1", KPI: "errors", Start: t0.Add(time.Minute), End: t0.Add(2 * time.Minute), Step: 1, Phase: "run", Values: json.RawMessage(`{"c":2}`)},
		}
		if err := s.AddObservations(ctx, obs); err != nil {
			t.Fatal(err)
		}
		obs[1].Values = json.RawMessage(`{"c":3}`)
		if err := s.AddObservations(ctx, obs[1:]); err != nil {
			t.Fatal(err)
		}
		got, err := s.Observations(ctx, "r1")
		if err != nil || len(got) != 2 || string(got[1].Values) != `{"c":3}` || !got[0].End.Equal(t0.Add(time.Minute)) {
			t.Errorf("observations %+v %v", got, err)
		}
	})

	t.Run("decisions and commands", func(t *testing.T) {
		s := open(t)
		s.CreateRun(ctx, newRun("r1", "p"))
		d := &store.Decision{RunID: "r1", At: t0, Step: 1, Action: "continue", Reason: "inconclusive", Details: json.RawMessage(`{"kpis":[]}`)}
		if err := s.AddDecision(ctx, d); err != nil || d.Seq == 0 {
			t.Fatal(err)
		}
		ds, err := s.Decisions(ctx, "r1")
		if err != nil || len(ds) != 1 || ds[0].Reason != "inconclusive" || string(ds[0].Details) != `{"kpis":[]}` {
			t.Errorf("decisions %+v %v", ds, err)
		}
		c := &store.Command{RunID: "r1", Action: "pause", Who: "alice", Reason: "deploy freeze"}
		if err := s.PostCommand(ctx, c); err != nil || c.ID == 0 {
			t.Fatal(err)
		}
		pend, _ := s.PendingCommands(ctx, "r1")
		if len(pend) != 1 || pend[0].Who != "alice" {
			t.Fatalf("pending %+v", pend)
		}
		if err := s.CompleteCommand(ctx, c.ID, "paused", t0); err != nil {
			t.Fatal(err)
		}
		if pend, _ := s.PendingCommands(ctx, "r1"); len(pend) != 0 {
			t.Errorf("completed command still pending")
		}
	})

	t.Run("concurrent saves keep every event", func(t *testing.T) {
		s := open(t)
		for i := range 4 {
			s.CreateRun(ctx, newRun(fmt.Sprintf("r%d", i), fmt.Sprintf("p%d", i)))
		}
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := s.Run(ctx, fmt.Sprintf("r%d", i))
				if err != nil {
					t.Error(err)
					return
				}
				for j := range 10 {
					r.Step = j
					if err := s.SaveRun(ctx, r, store.Event{Type: "tick", Message: "x"}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		ev, err := s.Events(ctx, "", 0)
		if err != nil || len(ev) != 40 {
			t.Fatalf("got %d events, want 40 (%v)", len(ev), err)
		}
		for i := 1; i < len(ev); i++ {
			if ev[i].Seq <= ev[i-1].Seq {
				t.Fatal("events out of order")
			}
		}
	})
}
