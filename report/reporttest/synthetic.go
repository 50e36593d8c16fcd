// Package reporttest writes synthetic runs into a store, for tests and benchmarks of
// reports that need a run of a given length without driving the engine through it (the
// report package's golden tests record real runs instead).
package reporttest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// ExperimentYAML is the synthetic runs' experiment: three KPIs (ratio, latency with slow
// share and mean, gauge) over a canary and two baselines, three steps of one hour.
const ExperimentYAML = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: synthetic
spec:
  description: a synthetic run for tests and benchmarks
  canary: {cluster: c1, variant: {autoscaler: karpenter}}
  baselines: [c2, c3]
  traffic:
    cloudflare:
      poolID: 0123456789abcdef0123456789abcdef
      origins: {c1: o1, c2: o2, c3: o3}
    steps:
      - {weight: 5%, hold: 1h}
      - {weight: 15%, hold: 1h}
      - {weight: 33%, hold: 1h}
  prometheus:
    address: http://127.0.0.1:9
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 10%
      guardrail: {max: 5%}
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket[{{.Interval}}]))
      sum: sum by (cluster) (increase(http_request_duration_seconds_sum[{{.Interval}}]))
      count: sum by (cluster) (increase(http_request_duration_seconds_count[{{.Interval}}]))
      slowerThan: 500ms
    - name: cpu-per-request
      type: gauge
      query: sum by (cluster) (rate(container_cpu_usage_seconds_total[{{.Interval}}])) / sum by (cluster) (rate(http_requests_total[{{.Interval}}]))
  analysis:
    interval: 1m
    prePeriod: 30m
    maxDuration: 4h
`

// Options shape a synthetic run.
type Options struct {
	// Start is when the run starts (default 2026-11-23T08:00:00Z).
	Start time.Time
	// Intervals is the number of one-minute run intervals (default 180: three hours).
	Intervals int
	// ErrorFactor multiplies the canary's error rate (default 1: no difference).
	ErrorFactor float64
	// Seed makes the data reproducible.
	Seed uint64
}

// Record writes one finished run with its pre-period, observations, a decision per
// interval and the events of a three-step ramp, and returns the run's ID.
func Record(ctx context.Context, st store.Store, o Options) (string, error) {
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	}
	if o.Intervals <= 0 {
		o.Intervals = 180
	}
	if o.ErrorFactor <= 0 {
		o.ErrorFactor = 1
	}
	exps, err := experiments.Load("synthetic.yaml", []byte(ExperimentYAML), experiments.LoadOptions{})
	if err != nil {
		return "", err
	}
	exp := exps[0]
	spec, err := json.Marshal(exp)
	if err != nil {
		return "", err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 17))
	id := fmt.Sprintf("synthetic-%s-%04x", o.Start.Format("20060102t150405"), o.Seed)
	t0 := o.Start
	orig := store.Weights{"o1": 0.33, "o2": 0.33, "o3": 0.34}
	run := &store.Run{ID: id, Experiment: "synthetic", Spec: spec, Pool: "pool", State: store.StatePending, CreatedAt: t0}
	ev := func(at time.Time, typ, msg string, data any) store.Event {
		e := store.Event{RunID: id, At: at, Type: typ, Message: msg}
		if data != nil {
			e.Data, _ = json.Marshal(data)
		}
		return e
	}
	if err := st.CreateRun(ctx, run, ev(t0, engine.EventRunStarted, "run "+id+" of synthetic started by bench", nil)); err != nil {
		return "", err
	}
	iv := time.Minute
	obsAt := func(end time.Time, step int, phase string, w map[string]float64) []store.Observation {
		var out []store.Observation
		oe := engine.Observation{Clusters: map[string]engine.ClusterValues{}}
		lat := engine.Observation{Clusters: map[string]engine.ClusterValues{}}
		cpu := engine.Observation{Clusters: map[string]engine.ClusterValues{}}
		for _, c := range []string{"c1", "c2", "c3"} {
			share := 1.0 / 3
			if w != nil {
				share = w[c]
			}
			n := math.Round(60000 * share * (1 + 0.05*rng.NormFloat64()))
			p := 0.01
			if c == "c1" && phase == "run" {
				p *= o.ErrorFactor
			}
			e := math.Max(0, math.Round(n*p+math.Sqrt(n*p)*rng.NormFloat64()))
			oe.Clusters[c] = engine.ClusterValues{Events: e, Total: n}
			slow := math.Max(0, math.Round(n*0.05+math.Sqrt(n*0.05)*rng.NormFloat64()))
			sum := n * 0.12 * (1 + 0.02*rng.NormFloat64())
			lat.Clusters[c] = engine.ClusterValues{Events: slow, Total: n, Sum: &sum}
			v := 0.002 * (1 + 0.03*rng.NormFloat64())
			cpu.Clusters[c] = engine.ClusterValues{Value: &v}
		}
		if w != nil {
			oe.Weights, lat.Weights, cpu.Weights = w, w, w
		}
		for name, ob := range map[string]engine.Observation{"error-rate": oe, "latency": lat, "cpu-per-request": cpu} {
			b, _ := json.Marshal(ob)
			out = append(out, store.Observation{RunID: id, KPI: name, Start: end.Add(-iv), End: end, Step: step, Phase: phase, Values: b})
		}
		return out
	}
	var obs []store.Observation
	for k := 30; k >= 1; k-- {
		obs = append(obs, obsAt(t0.Add(-time.Duration(k)*iv), 0, "pre", nil)...)
	}
	run.State = store.StateRamping
	run.StartedAt = t0
	var events []store.Event
	steps := []float64{0.05, 0.15, 0.33}
	per := max(o.Intervals/len(steps), 1)
	for i := 0; i < o.Intervals; i++ {
		step := min(i/per, len(steps)-1) + 1
		at := t0.Add(time.Duration(i) * iv)
		if i%per == 0 && i/per < len(steps) {
			s := steps[step-1]
			want := store.Weights{"o1": s, "o2": (1 - s) / 2, "o3": (1 - s) / 2}
			events = append(events, ev(at, engine.EventWeightsConfirmed, fmt.Sprintf("weights for step %d confirmed by read-back", step),
				store.Intent{ID: int64(step), Purpose: fmt.Sprintf("step:%d", step), Want: want, Expect: orig, At: at}))
			events = append(events, ev(at, engine.EventPrecondition, "precondition same-versions: value 0, expect == 0: holds", map[string]any{"name": "same-versions", "value": 0, "expect": "== 0", "ok": true}))
		}
		s := steps[step-1]
		w := map[string]float64{"c1": s, "c2": (1 - s) / 2, "c3": (1 - s) / 2}
		end := at.Add(iv)
		obs = append(obs, obsAt(end, step, "run", w)...)
		d := &store.Decision{RunID: id, At: end.Add(5 * time.Second), Step: step, Action: "continue", Reason: "Continue: every KPI is collecting."}
		d.Details, _ = json.Marshal(map[string]any{"decision": map[string]any{"action": "continue"}, "step": step})
		if err := st.AddDecision(ctx, d); err != nil {
			return "", err
		}
	}
	if err := st.AddObservations(ctx, obs); err != nil {
		return "", err
	}
	end := t0.Add(time.Duration(o.Intervals)*iv + 5*time.Second)
	run.State, run.Verdict, run.Reason, run.EndedBy, run.EndedAt = store.StatePromoted, engine.VerdictPromoted, "Promote: every KPI is within its tolerance.", "bench", end
	events = append(events, ev(end, engine.EventRunEnded, "synthetic: promoted", map[string]any{"state": store.StatePromoted}))
	if err := st.SaveRun(ctx, run, events...); err != nil {
		return "", err
	}
	return id, nil
}
