package experiments_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
)

// Cluster names come from people and inventory systems: "eu.west-1", "prod:a", "k8s/blue".
// Rendered into PromQL they must select exactly their own series — "eu.west-1" must not
// match its regex neighbour "euxwest-1" — and a quote or backslash must not break the query.
func TestClusterNamesQuotedForPromQL(t *testing.T) {
	clusters := []string{"eu.west-1", "prod:a", "k8s/blue", `odd"name\x`}
	decoy := "euxwest-1" // matches eu.west-1 if the dot were a regex wildcard
	yaml := fmt.Sprintf(`apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata: {name: names}
spec:
  canary: {cluster: %q, variant: {cni: cilium}}
  baselines: [%q, %q, %q]
  traffic:
    cloudflare:
      poolID: pool1
      origins: {%q: o1, %q: o2, %q: o3, %q: o4}
    steps: [{weight: 10%%, hold: 10m}]
  prometheus: {address: http://127.0.0.1:9090}
  kpis:
    - name: errors
      type: ratio
      events: sum by (cluster) (increase(reqs_total{code="500", cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by (cluster) (increase(reqs_total{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      tolerance: 10%%
  preconditions:
    - name: canary-up
      query: sum(up{cluster="{{.Cluster}}"})
      expect: ">= 1"
`, clusters[0], clusters[1], clusters[2], clusters[3], clusters[0], clusters[1], clusters[2], clusters[3])
	exps, err := experiments.Load("names.yaml", []byte(yaml), experiments.LoadOptions{})
	if err != nil {
		t.Fatalf("an experiment whose cluster names hold '.', ':', '/', '\"' and '\\' must validate: %v", err)
	}
	exp := exps[0]

	// Each cluster serves a distinct number of requests; the decoy serves far more.
	end := time.Now().Truncate(time.Minute).Add(-2 * time.Minute)
	var om strings.Builder
	all := append(append([]string{}, clusters...), decoy)
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	om.WriteString("# TYPE reqs counter\n")
	for i, c := range all {
		per := float64(100 * (i + 1))
		if c == decoy {
			per = 1e6
		}
		for _, code := range []string{"200", "500"} {
			for m := 0; m <= 40; m++ {
				v := per * float64(m) / 4
				if code == "500" {
					v = float64(i+1) * float64(m) / 4
				}
				fmt.Fprintf(&om, "reqs_total{cluster=\"%s\",code=\"%s\"} %g %d\n", esc.Replace(c), code, v, end.Add(time.Duration(m-40)*15*time.Second).Unix())
			}
		}
	}
	om.WriteString("# TYPE up gauge\n")
	for _, c := range all {
		for m := 0; m <= 40; m++ {
			fmt.Fprintf(&om, "up{cluster=\"%s\"} 1 %d\n", esc.Replace(c), end.Add(time.Duration(m-40)*15*time.Second).Unix())
		}
	}
	om.WriteString("# EOF\n")
	srv, err := embedded.New(embedded.Options{ScrapeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.LoadOpenMetrics(strings.NewReader(om.String())); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	src, err := metrics.New(metrics.Options{Address: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	vars := exp.Vars(exp.Spec.Canary.Cluster)
	k := exp.Spec.KPIs[0]
	kpi := metrics.KPI{Name: k.Name, Kind: metrics.KindRatio}
	if kpi.Events, err = experiments.RenderQuery(k.Events, vars); err != nil {
		t.Fatal(err)
	}
	if kpi.Total, err = experiments.RenderQuery(k.Total, vars); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rng := metrics.Range{Start: end.Add(-5 * time.Minute), End: end, Interval: time.Minute}
	data, err := src.Fetch(ctx, kpi, rng, all)
	if err != nil {
		t.Fatalf("fetch %q: %v", kpi.Total, err)
	}
	if d := data.Clusters[decoy]; d != nil && len(d.Intervals) > 0 {
		t.Errorf("the query for %v also selected %q: %s", clusters, decoy, kpi.Total)
	}
	for i, c := range clusters {
		cd, ok := data.Clusters[c]
		if !ok || len(cd.Intervals) == 0 {
			t.Errorf("cluster %q: no data from %s", c, kpi.Total)
			continue
		}
		got := cd.Intervals[len(cd.Intervals)-1]
		wantTotal := float64(100*(i+1) + (i + 1))
		if got.Total < wantTotal*0.99 || got.Total > wantTotal*1.01 || got.Events < float64(i+1)*0.99 {
			t.Errorf("cluster %q: last interval events/total %v/%v, want %v/%v", c, got.Events, got.Total, i+1, wantTotal)
		}
	}

	// {{.Cluster}} in an equality matcher selects the one cluster too.
	q, err := experiments.RenderQuery(exp.Spec.Preconditions[0].Query, vars)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := src.Instant(ctx, q, end)
	if err != nil {
		t.Fatalf("precondition %s: %v", q, err)
	}
	if s := v.String(); !strings.Contains(s, "=> 1 @") {
		t.Errorf("precondition %s = %s, want exactly the canary's up=1", q, s)
	}

}
