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
			total := 0.0
			for _, p := range ss.Values {
				n := float64(p.Value)
				if math.IsNaN(n) || n <= 0 {
					continue
				}
				x.Intervals++
				total += n
				if n < 2 {
					x.Short++
				}
			}
			if x.Intervals == 0 {
				continue
			}
			x.Spacing = time.Duration(float64(r.Interval) * float64(x.Intervals) / total)
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
	return fmt.Sprintf("cluster %s: the newest sample of %s (KPI %s, %s query) is %s old while samples arrived about every %s; its target or federation leaf stopped reporting",
		s.Cluster, s.Selector, s.KPI, s.Role, s.Age.Round(time.Second), s.Spacing.Round(time.Second))
}

// StaleSeries finds, for every query of k, the clusters (of clusters; every cluster when
// empty) whose newest sample at t is older than StaleAge of their spacing over r. It is
// the cheap check a run makes before moving any weight.
func (s *Source) StaleSeries(ctx context.Context, k KPI, r Range, t time.Time, clusters []string) ([]Stale, error) {
	var out []Stale
	seen := map[string]bool{}
	for _, rq := range k.roles() {
		health, err := s.SampleHealth(ctx, rq.query, r, t)
		if err != nil {
			return nil, fmt.Errorf("KPI %s, %s query: %w", k.Name, rq.role, err)
		}
		for _, sel := range sortedKeys(health) {
			for _, c := range sortedKeys(health[sel]) {
				h := health[sel][c]
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
	return out, nil
}
