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

// TestSpacingOfASeriesThatDied: the preflight measures spacing over five intervals. A
// leaf scraped every 30 s that died 2m30s before the check left two samples in each of
// the first two intervals and one in the third; the spacing is still 30 s, and the series
// stale at 2m30s. (Averaging every interval with samples said 36 s: the interval the leaf
// died in holds only part of its samples, and the death was noticed 18 s later.) A series
// born in the middle of the range is measured the same way, and a live one with every
// interval full is unchanged.
func TestSpacingOfASeriesThatDied(t *testing.T) {
	end := time.Now().Truncate(time.Minute)
	var om strings.Builder
	om.WriteString("# TYPE reqs counter\n")
	for _, c := range []struct {
		name        string
		from, until time.Time
	}{
		{"died", end.Add(-30 * time.Minute), end.Add(-150 * time.Second)},
		{"born", end.Add(-150 * time.Second), end},
		{"live", end.Add(-30 * time.Minute), end},
	} {
		for ts := c.from; !ts.After(c.until); ts = ts.Add(30 * time.Second) {
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
	src := source(t, metrics.Options{Address: s.URL()})
	query := `sum by (cluster) (increase(reqs_total[1m]))`
	h, err := src.SampleHealth(context.Background(), query, metrics.AlignedRange(end, time.Minute, 5), end)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"died", "born", "live"} {
		if g := h["reqs_total"][c].Spacing; g != 30*time.Second {
			t.Errorf("%s: spacing %s, want 30s", c, g)
		}
	}
	stale, err := src.StaleSeries(context.Background(), metrics.KPI{Name: "requests", Kind: metrics.KindThroughput, Query: query},
		metrics.AlignedRange(end, time.Minute, 5), end, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 1 || stale[0].Cluster != "died" || stale[0].Age != 150*time.Second {
		t.Errorf("stale series %v, want only died, 2m30s old", stale)
	}
}

// TestStaleSeriesOfALongDeadLeaf: a leaf that died 12 minutes before a preflight over five
// 1m intervals left no sample in the range checked, so the range alone cannot tell it
// from a cluster without the series; its samples from before the range make it stale.
// A cluster with no sample anywhere (a new one that never had traffic) is not. (Before,
// the long-dead cluster went unreported and the run moved weights blind on it.)
func TestStaleSeriesOfALongDeadLeaf(t *testing.T) {
	end := time.Now().Truncate(time.Minute)
	var om strings.Builder
	om.WriteString("# TYPE reqs counter\n")
	for _, c := range []struct {
		name  string
		until time.Time
	}{{"longdead", end.Add(-12 * time.Minute)}, {"live", end}} {
		for ts := end.Add(-30 * time.Minute); !ts.After(c.until); ts = ts.Add(30 * time.Second) {
			fmt.Fprintf(&om, "reqs_total{cluster=%q,code=\"200\"} %d %d\n", c.name, ts.Unix()*10, ts.Unix())
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
	src := source(t, metrics.Options{Address: s.URL()})
	kpi := metrics.KPI{Name: "error-rate", Kind: metrics.KindRatio,
		Events: `sum by (cluster) (increase(reqs_total{code="500"}[1m]))`,
		Total:  `sum by (cluster) (increase(reqs_total[1m]))`}
	rng := metrics.AlignedRange(end, time.Minute, 5)
	got, err := src.StaleSeries(context.Background(), kpi, rng, end, []string{"longdead", "live", "never"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Cluster != "longdead" || got[0].Age != 12*time.Minute || got[0].Spacing != 0 {
		t.Fatalf("stale series %v, want longdead only, 12m old", got)
	}
	if msg := got[0].String(); !strings.Contains(msg, "12m0s old") || !strings.Contains(msg, "stopped reporting") {
		t.Errorf("message: %s", msg)
	}
	// Without the clusters to look for, only what the range holds is checked.
	if got, err := src.StaleSeries(context.Background(), kpi, rng, end, nil); err != nil || len(got) != 0 {
		t.Errorf("no clusters given: stale %v, %v; want none", got, err)
	}
}
