package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics/embedded"
)

const checkExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata: {name: check-me}
spec:
  canary: {cluster: c1}
  baselines: [c2, CLUSTER3]
  traffic:
    cloudflare: {poolID: p1, origins: {c1: o1, c2: o2, CLUSTER3: o3}}
    steps: [{weight: 10%, hold: 10m}]
  prometheus: {address: PROM}
  kpis:
    - name: errors
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code="500"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
  analysis: {interval: 1m, minIntervals: 5}
  preconditions:
    - {name: all-up, query: 'min(up{cluster=~"{{.Clusters}}"})', expect: "== 1"}
`

// checkProm serves 40 minutes of request counters for c1..c3 ending now.
func checkProm(t *testing.T) *embedded.Server {
	t.Helper()
	s, err := embedded.New(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now()
	var samples []embedded.Sample
	for i := 160; i >= 0; i-- {
		at := now.Add(-time.Duration(i) * 15 * time.Second)
		n := float64(160-i) * 150
		for _, c := range []string{"c1", "c2", "c3"} {
			samples = append(samples,
				embedded.Sample{Metric: "http_requests_total", Labels: map[string]string{"cluster": c, "code": "200"}, Time: at, Value: n},
				embedded.Sample{Metric: "http_requests_total", Labels: map[string]string{"cluster": c, "code": "500"}, Time: at, Value: n / 100},
				embedded.Sample{Metric: "up", Labels: map[string]string{"cluster": c}, Time: at, Value: 1},
			)
		}
	}
	if err := s.Append(samples...); err != nil {
		t.Fatal(err)
	}
	return s
}

func writeCheckExperiment(t *testing.T, prom, third string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "exp.yaml")
	body := strings.NewReplacer("PROM", prom, "CLUSTER3", third).Replace(checkExperiment)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCommand(t *testing.T) {
	prom := checkProm(t)

	code, out, errOut := runCLI(t, "check", writeCheckExperiment(t, prom.URL(), "c3"))
	if code != exitOK {
		t.Fatalf("healthy experiment: exit %d\n%s%s", code, out, errOut)
	}
	// 600 requests a minute per cluster at 1% errors: at a 10% step the canary sees about two
	// errors a minute, far too few to prove a 10% tolerance in the 20 minutes allowed.
	for _, want := range []string{"KPI errors (ratio)", "c1", "OK: the experiment can run", "all-up",
		"Noise learned from the history, as the run will learn it", "errors  no cluster-level noise beyond sampling, offset ", "(not subtracted)",
		"Forecast: the canary cluster's last ", "errors  not proven within 20m", "likely inconclusive at maxDuration 20m"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("healthy:\n%s", out)

	code, out, _ = runCLI(t, "check", "-o", "json", "--history", "30m", writeCheckExperiment(t, prom.URL(), "c3"))
	var fc struct {
		OK    bool `json:"ok"`
		Noise []struct {
			KPI              string   `json:"kpi"`
			HistoryIntervals int      `json:"historyIntervals"`
			ClusterSD        *float64 `json:"clusterSD"`
			OffsetSE         *float64 `json:"offsetSE"`
		} `json:"noise"`
		Forecast *struct {
			Intervals int    `json:"intervals"`
			Action    string `json:"action"`
			KPIs      []struct {
				Name    string `json:"name"`
				Reached bool   `json:"reached"`
			} `json:"kpis"`
		} `json:"forecast"`
	}
	if err := json.Unmarshal([]byte(out), &fc); err != nil || code != exitOK || !fc.OK || fc.Forecast == nil ||
		fc.Forecast.Intervals != 30 || fc.Forecast.Action != "rollback" || len(fc.Forecast.KPIs) != 1 || fc.Forecast.KPIs[0].Reached ||
		len(fc.Noise) != 1 || fc.Noise[0].KPI != "errors" || fc.Noise[0].HistoryIntervals != 30 || fc.Noise[0].ClusterSD == nil || fc.Noise[0].OffsetSE == nil {
		t.Errorf("JSON forecast over 30m: exit %d, %v\n%s", code, err, out)
	}

	code, out, _ = runCLI(t, "check", "-o", "json", writeCheckExperiment(t, prom.URL(), "c9"))
	if code != exitCheckFailed {
		t.Fatalf("a cluster without data: exit %d, want %d\n%s", code, exitCheckFailed, out)
	}
	var rep struct {
		OK   bool `json:"ok"`
		KPIs []struct {
			Clusters map[string]struct {
				Intervals int `json:"intervals"`
			} `json:"clusters"`
			Problems []struct{ Cluster, Message string } `json:"problems"`
		} `json:"kpis"`
		Preconditions []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"preconditions"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.OK || rep.KPIs[0].Clusters["c9"].Intervals != 0 || rep.KPIs[0].Clusters["c1"].Intervals < 5 {
		t.Errorf("report %+v", rep)
	}
	found := false
	for _, p := range rep.KPIs[0].Problems {
		found = found || p.Cluster == "c9"
	}
	if !found {
		t.Errorf("no problem names the silent cluster: %+v", rep.KPIs[0].Problems)
	}

	addr := prom.URL()
	prom.Close()
	code, _, errOut = runCLI(t, "check", writeCheckExperiment(t, addr, "c3"))
	if code != exitError || !strings.Contains(errOut, "cannot reach Prometheus") || strings.Count(errOut, "\n") > 2 {
		t.Errorf("unreachable Prometheus: exit %d, want 1 with one clear line:\n%s", code, errOut)
	}
}
