package engine_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// TestScenariosOnTheFleet runs the engine, in real time, against the simulated fleet of
// every built-in scenario: real HTTP clusters behind the emulated Cloudflare pool, scraped
// by the embedded Prometheus. Each scenario says what a correct engine concludes.
func TestScenariosOnTheFleet(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs five experiments of up to four minutes in real time; skipped with -short and -race")
	}
	check := map[string]func(t *testing.T, rec store.Run){
		"good": func(t *testing.T, rec store.Run) {
			if rec.State != store.StatePromoted {
				t.Errorf("good variant ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
		},
		"regression": func(t *testing.T, rec store.Run) {
			if rec.State != store.StateRolledBack || rec.Verdict != engine.VerdictRolledBack {
				t.Errorf("regression ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
		},
		"latency-only": func(t *testing.T, rec store.Run) {
			if rec.State != store.StateRolledBack || rec.Verdict != engine.VerdictRolledBack || !strings.Contains(rec.Reason, "latency") {
				t.Errorf("latency regression ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
		},
		"outage": func(t *testing.T, rec store.Run) {
			if rec.State != store.StateRolledBack || !strings.Contains(rec.Reason, "no complete KPI data") {
				t.Errorf("outage ended %s (%s): %s; want a rollback on the no-data timeout", rec.State, rec.Verdict, rec.Reason)
			}
		},
		"no-traffic-honour": func(t *testing.T, rec store.Run) {
			if rec.State == store.StatePromoted {
				t.Errorf("promoted although the pool did not honour the weights: %s", rec.Reason)
			}
		},
	}
	sem := make(chan struct{}, 2) // two fleets at a time fit two cores
	var wg sync.WaitGroup
	for _, name := range sim.ScenarioNames() {
		want, ok := check[name]
		if !ok {
			t.Errorf("scenario %s has no expectation in this test", name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t.Run(name, func(t *testing.T) {
				rec, rolledBackTo, start := runScenario(t, name)
				want(t, rec)
				if rec.State == store.StateRolledBack {
					for o, w := range start {
						if !traffic.SameWeight(rolledBackTo[o], w) {
							t.Errorf("after the rollback origin %s has weight %v, want %v", o, rolledBackTo[o], w)
						}
					}
				}
				t.Logf("%s: %s after %s — %s", name, rec.Verdict, rec.EndedAt.Sub(rec.StartedAt).Truncate(time.Second), rec.Reason)
			})
		}()
	}
	wg.Wait()
}

func runScenario(t *testing.T, name string) (store.Run, traffic.Weights, traffic.Weights) {
	sc, err := sim.LoadScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := sim.Start(sim.Options{Scenario: sc, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	// The first scrape only warms the TSDB; on a loaded machine a 1s scrape can time out,
	// which is not what these scenarios test, so it is retried.
	for attempt := 1; ; attempt++ {
		err := f.Scrape(ctx)
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	exps, err := experiments.LoadFile(f.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: f.Token(), AccountID: f.AccountID(), BaseURL: f.CloudflareBaseURL(), BackoffBase: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src, err := metrics.New(metrics.Options{Address: f.PrometheusURL(), Timeout: 3 * time.Second, MaxAttempts: 2, RetryBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	st, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ref := traffic.PoolRef{Pool: f.PoolID()}
	before, err := steer.Pool(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Options{Store: st, Steerer: steer, Metrics: src, Settle: 2500 * time.Millisecond, Who: "scenario test"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Start(ctx, exps[0], f.ExperimentFile(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	if err := r.Drive(dctx, engine.RealClock{}, time.Second); err != nil {
		t.Fatalf("drive: %v (state %s)", err, r.Record().State)
	}
	after, err := steer.Pool(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return r.Record(), after.Weights(), before.Weights()
}
