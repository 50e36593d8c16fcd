package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
)

// samplesServer holds reqs_total for three clusters: "fast" scraped every 15s, "slow"
// federated every 60s, and "dead" scraped every 15s until 2 minutes before end.
func samplesServer(t *testing.T, end time.Time) *embedded.Server {
	t.Helper()
	var om strings.Builder
	om.WriteString("# TYPE reqs counter\n")
	for _, c := range []struct {
		name   string
		every  time.Duration
		stopAt time.Time
	}{{"fast", 15 * time.Second, end}, {"slow", time.Minute, end}, {"dead", 15 * time.Second, end.Add(-2 * time.Minute)}} {
		for ts := end.Add(-30 * time.Minute); !ts.After(c.stopAt); ts = ts.Add(c.every) {
			fmt.Fprintf(&om, "reqs_total{cluster=%q} %d %d\n", c.name, ts.Unix()*10, ts.Unix())
		}
	}
	om.WriteString("# EOF\n")
	s, err := embedded.New(embedded.Options{ScrapeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.LoadOpenMetrics(strings.NewReader(om.String())); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSampleHealth(t *testing.T) {
	end := time.Now().Truncate(time.Minute)
	src := source(t, metrics.Options{Address: samplesServer(t, end).URL()})
	h, err := src.SampleHealth(context.Background(), `sum by (cluster) (increase(reqs_total[1m]))`, metrics.AlignedRange(end, time.Minute, 10), end)
	if err != nil {
		t.Fatal(err)
	}
	got := h["reqs_total"]
	for c, want := range map[string]struct{ spacing, ageMin, ageMax time.Duration }{
		"fast": {15 * time.Second, 0, time.Second},
		"slow": {time.Minute, 0, time.Second},
		"dead": {15 * time.Second, 2 * time.Minute, 2*time.Minute + time.Second},
	} {
		g := got[c]
		if d := g.Spacing - want.spacing; d < -want.spacing/10 || d > want.spacing/10 {
			t.Errorf("%s: spacing %s, want about %s", c, g.Spacing, want.spacing)
		}
		if g.Age < want.ageMin || g.Age > want.ageMax {
			t.Errorf("%s: age %s, want %s..%s", c, g.Age, want.ageMin, want.ageMax)
		}
	}
}

// A KPI over a 1m interval on series federated every 60s has no data; check must say why
// (the spacing), not blame the cluster label. A series that stopped updating is stale.
func TestCheckNamesSpacingAndStaleness(t *testing.T) {
	end := time.Now().Truncate(time.Minute)
	src := source(t, metrics.Options{Address: samplesServer(t, end).URL()})
	rep, err := metrics.Check(context.Background(), src, metrics.CheckRequest{
		KPIs:     []metrics.KPI{{Name: "rps", Kind: metrics.KindThroughput, Query: `sum by (cluster) (increase(reqs_total[1m]))`}},
		Clusters: []string{"fast", "slow", "dead"},
		Interval: time.Minute, MinIntervals: 5, End: end,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK {
		t.Error("check passed with a sparse and a stale cluster")
	}
	var slow, dead, fast []string
	for _, p := range rep.KPIs[0].Problems {
		switch p.Cluster {
		case "slow":
			slow = append(slow, p.Severity+": "+p.Message)
		case "dead":
			dead = append(dead, p.Severity+": "+p.Message)
		case "fast":
			fast = append(fast, p.Severity+": "+p.Message)
		}
	}
	if len(slow) == 0 || !strings.Contains(slow[0], "about 1m0s apart, as far as the 1m interval") || strings.Contains(strings.Join(slow, "\n"), "is cluster=") {
		t.Errorf("slow cluster problems:\n%s", strings.Join(slow, "\n"))
	}
	if !strings.Contains(strings.Join(dead, "\n"), "stale") {
		t.Errorf("dead cluster problems lack staleness:\n%s", strings.Join(dead, "\n"))
	}
	if len(fast) != 0 {
		t.Errorf("healthy cluster has problems:\n%s", strings.Join(fast, "\n"))
	}
}
