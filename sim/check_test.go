package sim

import (
	"context"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
)

// TestCheckPassesAgainstFleet runs what `verdict check` runs (metrics.Check) with the
// rendered experiment of a scenario against a fleet that has run for minIntervals
// intervals: every KPI has data for every cluster and the precondition holds. It takes
// about 40 seconds of real time, so it runs in parallel and not with -short.
func TestCheckPassesAgainstFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("needs minIntervals of real time")
	}
	t.Parallel()
	f := startFleet(t, "regression", Options{})
	exps, err := experiments.LoadFile(f.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := exps[0]
	req, err := checkRequest(e)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until minIntervals whole intervals have passed since the first scrape.
	wait := time.Duration(req.MinIntervals+1)*req.Interval + time.Until(f.Started().Truncate(req.Interval).Add(req.Interval))
	time.Sleep(wait)
	req.Lookback = time.Duration(req.MinIntervals) * req.Interval

	src, err := metrics.New(metrics.Options{Address: e.Spec.Prometheus.Address})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rep, err := metrics.Check(context.Background(), src, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range rep.KPIs {
		for _, p := range k.Problems {
			t.Logf("%s: %s", k.Name, p)
		}
		for c, cr := range k.Clusters {
			if cr.Intervals < req.MinIntervals {
				t.Errorf("%s: %s has %d intervals with data, want %d", k.Name, c, cr.Intervals, req.MinIntervals)
			}
		}
	}
	for _, p := range rep.Preconditions {
		if !p.OK {
			t.Errorf("precondition %s: %s", p.Name, p.Problem)
		}
	}
	if !rep.OK {
		t.Errorf("check failed against the fleet")
	}
}

// checkRequest turns an experiment into the request `verdict check` makes.
func checkRequest(e *experiments.Experiment) (metrics.CheckRequest, error) {
	vars := e.Vars("")
	render := func(q string) (string, error) {
		if q == "" {
			return "", nil
		}
		return experiments.RenderQuery(q, vars)
	}
	req := metrics.CheckRequest{
		Clusters:     e.Spec.Clusters(),
		Interval:     e.Spec.Analysis.Interval.Std(),
		MinIntervals: e.Spec.Analysis.MinIntervals,
	}
	for _, k := range e.Spec.KPIs {
		m := metrics.KPI{Name: k.Name, Kind: metrics.Kind(k.Type)}
		for dst, src := range map[*string]string{&m.Events: k.Events, &m.Total: k.Total, &m.Buckets: k.Buckets, &m.Sum: k.Sum, &m.Count: k.Count, &m.Query: k.Query} {
			q, err := render(src)
			if err != nil {
				return req, err
			}
			*dst = q
		}
		req.KPIs = append(req.KPIs, m)
	}
	for _, p := range e.Spec.Preconditions {
		q, err := render(p.Query)
		if err != nil {
			return req, err
		}
		req.Preconditions = append(req.Preconditions, metrics.Precondition{Name: p.Name, Query: q, Expect: p.Expect})
	}
	return req, nil
}
