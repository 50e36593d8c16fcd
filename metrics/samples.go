package metrics

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// Selectors returns every series selector a query reads, as PromQL text without range,
// offset or @ modifier: what SampleHealth inspects.
func Selectors(query string) ([]string, error) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(query)
	if err != nil {
		return nil, fmt.Errorf("parse query %q: %w", query, err)
	}
	var out []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		bare := &parser.VectorSelector{Name: vs.Name, LabelMatchers: vs.LabelMatchers}
		out = append(out, bare.String())
		return nil
	})
	slices.Sort(out)
	return slices.Compact(out), nil
}

// LookbackDelta is Prometheus's default lookback: a series with no sample that recent is
// absent from instant queries.
const LookbackDelta = 5 * time.Minute

// SeriesHealth is how one cluster's samples of one selector arrive.
type SeriesHealth struct {
	// Intervals counts the intervals of the range in which the cluster had samples, and
	// Short those with fewer than two: increase() and rate() return nothing for them.
	Intervals, Short int
	// Spacing is the time between samples of the cluster's best-sampled series: the
	// scrape (or federation) interval as Prometheus stored it, estimated from the samples
	// per interval. Zero without samples.
	Spacing time.Duration
	// Age is how old the cluster's newest sample was at the time asked about; LookbackDelta
	// when it is at least that old.
	Age time.Duration
}

// SampleHealth reports, per selector and cluster, how many samples each interval of r
// holds and how old the newest is at t. Two things it catches that an empty KPI query
// cannot tell apart from a wrong label: samples as far apart as the interval (increase()
// over a window holding one sample returns nothing), and series whose source died but
// which a federation server keeps serving without staleness markers.
func (s *Source) SampleHealth(ctx context.Context, query string, r Range, t time.Time) (map[string]map[string]SeriesHealth, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	sels, err := Selectors(query)
	if err != nil {
		return nil, err
	}
	lbl := model.LabelName(s.opts.ClusterLabel)
	iv := model.Duration(r.Interval).String()
	out := map[string]map[string]SeriesHealth{}
	for _, sel := range sels {
		counts, _, err := s.Range(ctx, fmt.Sprintf("max by (%s) (count_over_time(%s[%s]))", lbl, sel, iv), r)
		if err != nil {
			return nil, err
		}
		// timestamp() of a plain selector is the sample's own time, looked up within
		// Prometheus's lookback delta.
		newest, _, err := s.Instant(ctx, fmt.Sprintf("max by (%s) (timestamp(%s))", lbl, sel), t)
		if err != nil {
			return nil, err
		}
		h := map[string]SeriesHealth{}
		for _, ss := range counts {
			c := string(ss.Metric[lbl])
			if c == "" {
				continue
			}
			x := SeriesHealth{Age: LookbackDelta}
			var counts []float64
			var firstAt, lastAt model.Time
			for _, p := range ss.Values {
				n := float64(p.Value)
				if math.IsNaN(n) || n <= 0 {
					continue
				}
				if x.Intervals == 0 {
					firstAt = p.Timestamp
				}
				lastAt = p.Timestamp
				x.Intervals++
				counts = append(counts, n)
				if n < 2 {
					x.Short++
				}
			}
			if x.Intervals == 0 {
				continue
			}
			x.Spacing = spacing(counts, r, firstAt.Time(), lastAt.Time())
			h[c] = x
		}
		if vec, ok := newest.(model.Vector); ok {
			for _, smp := range vec {
				c := string(smp.Metric[lbl])
				ts := float64(smp.Value)
				x, seen := h[c]
				if c == "" || math.IsNaN(ts) || !seen {
					continue
				}
				x.Age = max(0, t.Sub(time.UnixMilli(int64(ts*1000))))
				h[c] = x
			}
		}
		if len(h) > 0 {
			out[sel] = h
		}
	}
	return out, nil
}

// spacing estimates the time between samples from the counts of the intervals that had
// samples, the first ending at first and the last at last. An interval in which the series
// began or stopped holds only part of its samples and would stretch the estimate (a leaf
// that died in the middle of the third of five intervals: 36 s for 30 s scrapes, so its
// death is noticed 18 s later): the first interval is left out when the series began
// after the range's start, the last when it stopped before the range's end, as long as
// one interval remains.
func spacing(counts []float64, r Range, first, last time.Time) time.Duration {
	lo, hi := 0, len(counts)
	if hi-lo > 1 && first.After(r.First()) {
		lo++
	}
	if hi-lo > 1 && last.Before(r.End) {
		hi--
	}
	total := 0.0
	for _, n := range counts[lo:hi] {
		total += n
	}
	return time.Duration(float64(r.Interval) * float64(hi-lo) / total)
}

// StaleAge is how old a cluster's newest sample may be before its series counts as stale:
// three times the spacing its samples arrive at, and at least 30 s.
func StaleAge(spacing time.Duration) time.Duration { return max(3*spacing, 30*time.Second) }

// Stale is one cluster's series that stopped receiving samples while Prometheus (often a
// federation server, which keeps serving a dead leaf's last values without staleness
// markers) still has them.
type Stale struct {
	KPI, Role, Selector, Cluster string
	// Age is how old the newest sample is; Spacing how far apart samples used to arrive.
	Age, Spacing time.Duration
}

func (s Stale) String() string {
	if s.Spacing == 0 {
		return fmt.Sprintf("cluster %s: the newest sample of %s (KPI %s) is %s old and none of the KPI's series has a recent one; its target or federation leaf stopped reporting (or its series vanished in a restart with no traffic since)",
			s.Cluster, s.Selector, s.KPI, s.Age.Round(time.Second))
	}
	return fmt.Sprintf("cluster %s: the newest sample of %s (KPI %s, %s query) is %s old while samples arrived about every %s; its target or federation leaf stopped reporting",
		s.Cluster, s.Selector, s.KPI, s.Role, s.Age.Round(time.Second), s.Spacing.Round(time.Second))
}

// StaleSeries finds, for every query of k, the clusters (of clusters; every cluster when
// empty) whose newest sample at t is older than StaleAge of their spacing over r. It is
// the cheap check a run makes before moving any weight.
//
// A cluster of clusters with no sample of any of k's series in r, but with some in the
// deadHorizon before t, is stale too, with Spacing 0: its leaf died longer ago than r
// reaches back (five 1m intervals in the preflight). One with no sample in the horizon
// either is left alone: it may never have served traffic (a new cluster at weight 0),
// which the KPIs report as missing data once the run starts.
func (s *Source) StaleSeries(ctx context.Context, k KPI, r Range, t time.Time, clusters []string) ([]Stale, error) {
	var out []Stale
	seen := map[string]bool{}
	heard := map[string]bool{} // clusters with a sample of any series in r
	var sels []string
	for _, rq := range k.roles() {
		health, err := s.SampleHealth(ctx, rq.query, r, t)
		if err != nil {
			return nil, fmt.Errorf("KPI %s, %s query: %w", k.Name, rq.role, err)
		}
		rsels, err := Selectors(rq.query)
		if err != nil {
			return nil, err
		}
		for _, sel := range rsels {
			if !slices.Contains(sels, sel) {
				sels = append(sels, sel)
			}
		}
		for _, sel := range sortedKeys(health) {
			for _, c := range sortedKeys(health[sel]) {
				h := health[sel][c]
				heard[c] = true
				key := sel + "\x00" + c
				if seen[key] || (len(clusters) > 0 && !slices.Contains(clusters, c)) {
					continue
				}
				seen[key] = true
				if h.Age > StaleAge(h.Spacing) {
					out = append(out, Stale{KPI: k.Name, Role: rq.role, Selector: sel, Cluster: c, Age: h.Age, Spacing: h.Spacing})
				}
			}
		}
	}
	var silent []string
	for _, c := range clusters {
		if !heard[c] {
			silent = append(silent, c)
		}
	}
	if len(silent) == 0 {
		return out, nil
	}
	lbl := model.LabelName(s.opts.ClusterLabel)
	for _, sel := range sels {
		// timestamp() at each step of the subquery is the newest sample within the
		// lookback delta: their maximum is the newest sample in the horizon.
		q := fmt.Sprintf("max by (%s) (max_over_time(timestamp(%s)[%s:%s]))", lbl, sel, model.Duration(deadHorizon), model.Duration(time.Minute))
		v, _, err := s.Instant(ctx, q, t)
		if err != nil {
			return nil, fmt.Errorf("KPI %s, newest samples of %s: %w", k.Name, sel, err)
		}
		vec, _ := v.(model.Vector)
		for _, smp := range vec {
			c, ts := string(smp.Metric[lbl]), float64(smp.Value)
			if !slices.Contains(silent, c) || math.IsNaN(ts) {
				continue
			}
			out = append(out, Stale{KPI: k.Name, Role: RoleAny, Selector: sel, Cluster: c, Age: max(0, t.Sub(time.UnixMilli(int64(ts*1000))))})
		}
	}
	return out, nil
}

// deadHorizon is how far back StaleSeries looks for the last samples of a cluster that has
// none in the range it checks.
const deadHorizon = 6 * time.Hour

// RoleAny is the Role of a Stale series found beyond the checked range: no series of any
// of the KPI's queries had a sample of its cluster in the range.
const RoleAny = "any"
