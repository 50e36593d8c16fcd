package metrics

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// counterFuncs are the PromQL functions whose range argument is a counter.
var counterFuncs = map[string]bool{"increase": true, "rate": true, "irate": true}

// CounterSelectors returns the counter selectors inside increase(), rate() and irate() calls
// of a query, as PromQL text without the range: the series whose resets Verdict reports.
func CounterSelectors(query string) ([]string, error) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(query)
	if err != nil {
		return nil, fmt.Errorf("parse query %q: %w", query, err)
	}
	var out []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		call, ok := node.(*parser.Call)
		if !ok || !counterFuncs[call.Func.Name] {
			return nil
		}
		for _, arg := range call.Args {
			ms, ok := arg.(*parser.MatrixSelector)
			if !ok {
				continue
			}
			if vs, ok := ms.VectorSelector.(*parser.VectorSelector); ok {
				out = append(out, vs.String())
			}
		}
		return nil
	})
	slices.Sort(out)
	return slices.Compact(out), nil
}

// CounterResets counts, per cluster, the resets over r of the counters that query reads
// (see CounterSelectors). increase() compensates for resets, but a reset during an
// experiment usually means a restart or a crash loop that the user should know about.
// The result maps selector → cluster → resets; clusters with no reset are left out.
func (s *Source) CounterResets(ctx context.Context, query string, r Range) (map[string]map[string]int, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	sels, err := CounterSelectors(query)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]int{}
	for _, sel := range sels {
		q := fmt.Sprintf("sum by (%s) (resets(%s[%s]))", s.opts.ClusterLabel, sel, model.Duration(r.End.Sub(r.Start)))
		v, _, err := s.Instant(ctx, q, r.End)
		if err != nil {
			return nil, err
		}
		vec, ok := v.(model.Vector)
		if !ok {
			continue
		}
		for _, smp := range vec {
			c := string(smp.Metric[model.LabelName(s.opts.ClusterLabel)])
			n := float64(smp.Value)
			if c == "" || n <= 0 || math.IsNaN(n) {
				continue
			}
			if out[sel] == nil {
				out[sel] = map[string]int{}
			}
			out[sel][c] = int(n)
		}
	}
	return out, nil
}
