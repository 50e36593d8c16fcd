package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
)

// Example_check shows what `verdict check` does: connect, check every KPI and precondition
// over the recent past, and branch on the result.
func Example_check() {
	// An embedded Prometheus with one minute of traffic for two clusters.
	prom, _ := embedded.New(embedded.Options{})
	defer prom.Close()
	end := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 41 {
		at := end.Add(-10*time.Minute + time.Duration(i)*15*time.Second)
		_ = prom.Append(
			embedded.Sample{Metric: "requests_total", Labels: map[string]string{"cluster": "canary"}, Time: at, Value: float64(10 * i)},
			embedded.Sample{Metric: "requests_total", Labels: map[string]string{"cluster": "baseline"}, Time: at, Value: float64(30 * i)},
		)
	}
	_ = prom.Start()

	src, err := metrics.New(metrics.Options{Address: prom.URL(), ClusterLabel: "cluster"})
	if err != nil {
		fmt.Println("invalid options:", err)
		return
	}
	defer src.Close()
	rep, err := metrics.Check(context.Background(), src, metrics.CheckRequest{
		KPIs: []metrics.KPI{{
			Name:  "throughput",
			Kind:  metrics.KindThroughput,
			Query: `sum by (cluster) (increase(requests_total[1m]))`,
		}},
		Preconditions: []metrics.Precondition{{
			Name:   "both-clusters",
			Query:  `count(count by (cluster) (requests_total))`,
			Expect: "== 2",
		}},
		Clusters:     []string{"canary", "baseline"},
		Interval:     time.Minute,
		Lookback:     10 * time.Minute,
		MinIntervals: 5,
		End:          end,
	})
	switch {
	case errors.Is(err, metrics.ErrUnreachable), errors.Is(err, metrics.ErrUnauthorized):
		fmt.Println("exit 1:", err)
	case err != nil:
		fmt.Println("exit 2:", err)
	case !rep.OK:
		fmt.Println("exit 6:", rep.KPIs[0].Problems)
	default:
		c := rep.KPIs[0].Clusters["canary"]
		fmt.Printf("ok: canary %v requests in %d intervals; precondition value %v\n", c.Values["requests"], c.Intervals, *rep.Preconditions[0].Value)
	}
	// Output: ok: canary 400 requests in 10 intervals; precondition value 2
}

// ExampleParseExpect shows how the spec validator checks an expect string.
func ExampleParseExpect() {
	e, err := metrics.ParseExpect("< 0.01")
	fmt.Println(e, err, e.Holds(0.005), e.Holds(0.02))
	_, err = metrics.ParseExpect("= 0")
	fmt.Println(err)
	// Output:
	// < 0.01 <nil> true false
	// invalid expect "= 0": want an operator (==, !=, <, <=, >, >=) and a number, e.g. "== 0"
}
