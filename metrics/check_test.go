package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/metrics/internal/fixture"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func healthyRequest(end time.Time) metrics.CheckRequest {
	return metrics.CheckRequest{
		KPIs:     []metrics.KPI{errorRate, latency, cpu, throughput},
		Clusters: []string{fixture.Canary, fixture.Base1, fixture.Base2},
		Preconditions: []metrics.Precondition{{
			Name:   "all-clusters-report",
			Query:  `count(count by (cluster) (cpu_usage{cluster=~"canary|base1|base2"}))`,
			Expect: "== 3",
		}},
		Interval: fixture.Interval,
		End:      end,
	}
}

func brokenRequest(end time.Time) metrics.CheckRequest {
	return metrics.CheckRequest{
		KPIs: []metrics.KPI{
			errorRate,
			{Name: "no-cluster-label", Kind: metrics.KindThroughput, Query: `sum(increase(http_requests_total[1m]))`},
		},
		Clusters: []string{fixture.Canary, fixture.Stopped, fixture.NoErrors, "typo-cluster"},
		Preconditions: []metrics.Precondition{
			{Name: "few-idle", Query: `sum(idle_total)`, Expect: "< 1"},
			{Name: "absent", Query: `count(nonexistent_metric)`, Expect: "== 0"},
			{Name: "per-cluster", Query: `sum by (cluster) (idle_total)`, Expect: ">= 5"},
		},
		Interval:     fixture.Interval,
		MinIntervals: 10,
		End:          end,
	}
}

func TestCheckHealthy(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	rep, err := metrics.Check(context.Background(), src, healthyRequest(fixtureEnd.Add(20*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Errorf("want OK, got %+v", rep)
	}
	if rep.Prometheus.Version != embedded.Version || rep.Prometheus.Address != src.Address() {
		t.Errorf("prometheus %+v", rep.Prometheus)
	}
	if !rep.Window.End.Equal(fixtureEnd) || rep.Window.Interval != "1m" {
		t.Errorf("window %+v", rep.Window)
	}
	er := rep.KPIs[0]
	can := er.Clusters[fixture.Canary]
	if can.Intervals != 30 || can.Values["events"] != 120 || can.Values["total"] != 1200 || can.Values["ratio"] != 0.1 {
		t.Errorf("canary error-rate %+v", can)
	}
	// base2's restart is a warning, not a failure.
	var sawReset bool
	for _, p := range er.Problems {
		if p.Severity == metrics.SeverityError {
			t.Errorf("unexpected error problem %v", p)
		}
		sawReset = sawReset || (p.Cluster == fixture.Base2 && strings.Contains(p.Message, "counter reset"))
	}
	if !sawReset {
		t.Errorf("base2's counter reset not reported: %v", er.Problems)
	}
	if lat := rep.KPIs[1].Clusters[fixture.Base1]; lat.Values["count"] != 2400 || lat.Values["mean"] != 0.2 || lat.Values["le=0.1"] != 1800 {
		t.Errorf("latency %+v", lat)
	}
	if p := rep.Preconditions[0]; !p.OK || p.Value == nil || *p.Value != 3 || p.Expect != "== 3" {
		t.Errorf("precondition %+v", p)
	}
}

func TestCheckBroken(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	rep, err := metrics.Check(context.Background(), src, brokenRequest(fixtureEnd))
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK {
		t.Error("a broken experiment passed the check")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the CLI's JSON view should: "< 1", not "\u003c 1"
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	got := strings.ReplaceAll(string(b), src.Address(), "http://PROMETHEUS")
	golden := filepath.Join("testdata", "check-broken.json")
	if *update {
		if err := os.WriteFile(golden, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if strings.TrimSpace(string(want)) != strings.TrimSpace(got) {
		t.Errorf("report differs from %s (go test -update rewrites it):\n%s", golden, got)
	}

	// The JSON has the shape `verdict check --output json` promises.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, path := range [][]string{
		{"prometheus", "address"}, {"prometheus", "version"}, {"kpis"}, {"preconditions"}, {"ok"},
	} {
		var cur any = m
		for _, k := range path {
			cur = cur.(map[string]any)[k]
		}
		if cur == nil {
			t.Errorf("missing %v", path)
		}
	}
	k := m["kpis"].([]any)[0].(map[string]any)
	can := k["clusters"].(map[string]any)[fixture.Canary].(map[string]any)
	if can["intervals"].(float64) != 30 || can["values"].(map[string]any)["events"].(float64) != 120 {
		t.Errorf("canary %v", can)
	}
	if len(k["problems"].([]any)) == 0 {
		t.Error("no problems listed")
	}
}

func TestCheckInvalidRequest(t *testing.T) {
	src := source(t, metrics.Options{Address: closedAddress(t)})
	for name, req := range map[string]metrics.CheckRequest{
		"no interval": {KPIs: []metrics.KPI{cpu}},
		"bad kind":    {KPIs: []metrics.KPI{{Name: "x", Kind: "p99"}}, Interval: time.Minute},
		"bad expect":  {Preconditions: []metrics.Precondition{{Name: "p", Query: "1", Expect: "= 0"}}, Interval: time.Minute},
	} {
		if _, err := metrics.Check(context.Background(), src, req); !errors.Is(err, metrics.ErrInvalidRequest) || strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("%s: want a validation error before contacting Prometheus, got %v", name, err)
		}
	}
}

func TestCheckProblems(t *testing.T) {
	src := source(t, metrics.Options{Address: fleet(t, fixtureEnd).URL()})
	nan := metrics.KPI{Name: "nan", Kind: metrics.KindGauge, Query: `sum by (cluster) (increase(idle_total[1m])) / sum by (cluster) (increase(idle_total[1m]))`}
	tests := []struct {
		name     string
		req      metrics.CheckRequest
		severity string
		cluster  string
		want     string
	}{
		{"too little traffic", metrics.CheckRequest{KPIs: []metrics.KPI{errorRate}, Clusters: []string{fixture.Stopped},
			End: fixtureEnd.Add(-25 * time.Minute), Lookback: 10 * time.Minute},
			metrics.SeverityError, fixture.Stopped, "too little traffic: 5 of the last 10 intervals have data, fewer than the minimum of 10"},
		{"NaN", metrics.CheckRequest{KPIs: []metrics.KPI{nan}, Clusters: []string{fixture.Canary}, MinIntervals: 1},
			metrics.SeverityWarning, fixture.Canary, "30 interval(s) dropped because value is NaN"},
		{"one role without series", metrics.CheckRequest{KPIs: []metrics.KPI{{Name: "l", Kind: metrics.KindLatency, Buckets: latency.Buckets, Sum: `sum by (cluster) (increase(nonexistent_sum[1m]))`}}, Clusters: []string{fixture.Canary}},
			metrics.SeverityError, fixture.Canary, `no series from the sum query "sum by (cluster) (increase(nonexistent_sum[1m]))"`},
		{"counter reset", metrics.CheckRequest{KPIs: []metrics.KPI{throughput}, Clusters: []string{fixture.Base2}},
			metrics.SeverityWarning, fixture.Base2, "2 counter reset(s) of http_requests_total in the window"},
		{"Prometheus warning", metrics.CheckRequest{KPIs: []metrics.KPI{{Name: "w", Kind: metrics.KindGauge, Query: `histogram_quantile(0.9, sum by (cluster) (rate(cpu_usage[1m])))`}}, Clusters: []string{fixture.Canary}},
			metrics.SeverityWarning, "", "Prometheus warning: "},
		{"Prometheus info", metrics.CheckRequest{KPIs: []metrics.KPI{{Name: "i", Kind: metrics.KindGauge, Query: `sum by (cluster) (rate(cpu_usage[1m]))`}}, Clusters: []string{fixture.Canary}},
			metrics.SeverityWarning, "", "Prometheus warning: info: PromQL info: metric might not be a counter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Interval = fixture.Interval
			if tt.req.End.IsZero() {
				tt.req.End = fixtureEnd
			}
			rep, err := metrics.Check(context.Background(), src, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range rep.KPIs[0].Problems {
				if p.Severity == tt.severity && p.Cluster == tt.cluster && strings.Contains(p.Message, tt.want) {
					if rep.OK && tt.severity == metrics.SeverityError {
						t.Errorf("OK with an error problem")
					}
					return
				}
			}
			t.Errorf("no %s problem for %q containing %q in %v", tt.severity, tt.cluster, tt.want, rep.KPIs[0].Problems)
		})
	}
}
