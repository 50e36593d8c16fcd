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
	// Spacing is the time between samples of the cluster's best-sampled series over the
	// window: the scrape (or federation) interval as Prometheus stored it. Zero when fewer
	// than two samples were found.
	Spacing time.Duration
	// Age is how old the cluster's newest sample was at the time asked about; LookbackDelta
	// when it is at least that old.
	Age time.Duration
}

// SampleHealth reports, per selector and cluster, how far apart samples are and how old the
// newest is at t, looking back over window. Two things it catches that an empty KPI query
// cannot tell apart from a wrong label: samples further apart than the analysis interval
// (increase() over a window holding fewer than two samples returns nothing), and series
// whose source died but which a federation server keeps serving without staleness markers.
func (s *Source) SampleHealth(ctx context.Context, query string, t time.Time, window time.Duration) (map[string]map[string]SeriesHealth, error) {
	sels, err := Selectors(query)
	if err != nil {
		return nil, err
	}
	lbl := model.LabelName(s.opts.ClusterLabel)
	w := model.Duration(window).String()
	out := map[string]map[string]SeriesHealth{}
	for _, sel := range sels {
		counts, _, err := s.Instant(ctx, fmt.Sprintf("max by (%s) (count_over_time(%s[%s]))", lbl, sel, w), t)
		if err != nil {
			return nil, err
		}
		// timestamp() of a plain selector is the sample's own time, looked up within
		// Prometheus's lookback delta (5m by default).
		newest, _, err := s.Instant(ctx, fmt.Sprintf("max by (%s) (timestamp(%s))", lbl, sel), t)
		if err != nil {
			return nil, err
		}
		h := map[string]SeriesHealth{}
		if vec, ok := counts.(model.Vector); ok {
			for _, smp := range vec {
				c := string(smp.Metric[lbl])
				if n := float64(smp.Value); c != "" && n >= 2 && !math.IsNaN(n) {
					x := h[c]
					x.Spacing = time.Duration(float64(window) / n)
					x.Age = -1 // until the newest sample is found below
					h[c] = x
				}
			}
		}
		if vec, ok := newest.(model.Vector); ok {
			for _, smp := range vec {
				c := string(smp.Metric[lbl])
				ts := float64(smp.Value)
				if c == "" || math.IsNaN(ts) {
					continue
				}
				x := h[c]
				x.Age = max(0, t.Sub(time.UnixMilli(int64(ts*1000))))
				h[c] = x
			}
		}
		for c, x := range h {
			if x.Age < 0 {
				// Samples in the window but none within the lookback: older than it.
				x.Age = LookbackDelta
			}
			// The samples of a series that stopped fill only the window before its last one.
			if n := float64(window) / float64(x.Spacing); x.Spacing > 0 && x.Age < window {
				x.Spacing = time.Duration(float64(window-x.Age) / n)
			}
			h[c] = x
		}
		if len(h) > 0 {
			out[sel] = h
		}
	}
	return out, nil
}
