package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/server"
)

// checkArgs are the parsed arguments of verdict check.
type checkArgs struct {
	file       string
	experiment string
	history    *time.Duration // nil: the experiment's analysis.history
	// acceptDrift accepts a source of truth that disagrees with the pool.
	acceptDrift bool
}

func newCheckCmd(g *globals) *cobra.Command {
	var a checkArgs
	var history time.Duration
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Check that the experiment's KPIs and preconditions return what they should",
		Long: `Check connects to the experiment's Prometheus and runs every KPI and precondition query over
the recent past, printing per cluster the values and the number of intervals with data, and
every problem: no series for a cluster, series without the cluster label, samples too far
apart for the interval, stale series, counter resets, too little traffic, a failing
precondition. With Cloudflare credentials it reads the pool as the run will: it must exist
with every mapped origin enabled and no other run's claim on it; it shows the current
weights, the pool's last run, and warns when step 1 would undo a recent promotion or lower a
canary that carries more than an even share. With spec.traffic.sourceOfTruth it compares the
declared weights (Terraform or a values file) with the pool and shows a mismatch the way
terraform plan would: a problem unless --accept-drift. Nothing is changed.

It then learns each KPI's noise model from the recent history (--history, by default the
experiment's analysis.history, as the run will) and prints it: how noisy an interval is beyond
its counts, how long that noise persists, what an interval is therefore worth, and the canary's
offset against its baselines. And it forecasts the run: that history is replayed as an A/A run
through the engine's own statistics and decision rule, at each step's traffic share, to say
whether the evidence for non-inferiority can arrive before the holds end or the run will most
likely end inconclusive, and whether the canary cluster already differs from its baselines.
The forecast is advice: it does not change the exit status.

Exit status: 0 the experiment can run, 1 Prometheus or Cloudflare cannot be reached, 2 invalid
input, 6 a check failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			if cmd.Flags().Changed("history") {
				if history < 0 {
					return usageErrorf("--history must not be negative, not %s", history)
				}
				a.history = &history
			}
			return runCheck(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "check this experiment of a multi-document file")
	cmd.Flags().BoolVar(&a.acceptDrift, "accept-drift", false, "do not fail when spec.traffic.sourceOfTruth disagrees with the live pool (it is still shown)")
	cmd.Flags().DurationVar(&history, "history", 0, "how much recent history to learn the noise from and replay in the forecast (default: the experiment's analysis.history; 0 skips both)")
	return cmd
}

func runCheck(ctx context.Context, g *globals, a checkArgs) error {
	exp, err := loadExperiment(a.file, a.experiment)
	if err != nil {
		return err
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	kpis, err := engine.MetricsKPIs(exp)
	if err != nil {
		return withCode(exitInvalid, err)
	}
	vars := exp.Vars(exp.Spec.Canary.Cluster)
	var pcs []metrics.Precondition
	for _, pc := range exp.Spec.Preconditions {
		q, err := experiments.RenderQuery(pc.Query, vars)
		if err != nil {
			return withCode(exitInvalid, err)
		}
		pcs = append(pcs, metrics.Precondition{Name: pc.Name, Query: q, Expect: pc.Expect})
	}
	rep, err := metrics.Check(ctx, src, metrics.CheckRequest{
		KPIs: kpis, Preconditions: pcs, Clusters: exp.Spec.Clusters(),
		Interval: exp.Spec.Analysis.Interval.Std(), MinIntervals: exp.Spec.Analysis.MinIntervals,
	})
	switch {
	case errors.Is(err, metrics.ErrInvalidRequest):
		return withCode(exitInvalid, err)
	case err != nil:
		return withCode(exitError, err)
	}
	pc, err := checkPool(ctx, g, exp, time.Now())
	if err != nil {
		return err
	}
	pc.checkSource(exp, a.acceptDrift)
	ok := rep.OK && len(pc.Problems) == 0
	history := exp.Spec.Analysis.History.Std()
	if a.history != nil {
		history = *a.history
	}
	var fc *engine.Forecast
	var fcErr error
	if history > 0 && rep.OK {
		iv := exp.Spec.Analysis.Interval.Std()
		n := max(int(history/iv), exp.Spec.Analysis.MinIntervals)
		fc, fcErr = engine.ForecastRun(ctx, exp, src, time.Now(), n)
	}
	noise := checkNoiseOf(fc)
	if g.json() {
		out := struct {
			server.TypeMeta
			*metrics.Report
			// Noise is each judged KPI's noise model learned from the history window, in
			// the report's form (docs/report-json.md).
			Noise []checkNoise `json:"noise,omitempty"`
			// Pool is what the run would find in the load balancer.
			Pool          *poolCheck       `json:"pool"`
			Ready         bool             `json:"ready"`
			Forecast      *engine.Forecast `json:"forecast,omitempty"`
			ForecastError string           `json:"forecastError,omitempty"`
		}{TypeMeta: server.Meta(server.KindCheckResult), Report: rep, Noise: noise, Pool: pc, Ready: ok, Forecast: fc}
		if fcErr != nil {
			out.ForecastError = fcErr.Error()
		}
		if err := writeJSON(g.stdout, out); err != nil {
			return withCode(exitError, err)
		}
	} else {
		printCheck(g, exp, rep, pc, ok)
		printNoise(g, exp, fc, noise)
		printForecast(g, exp, fc, fcErr)
	}
	if !ok {
		return silentExit(exitCheckFailed)
	}
	return nil
}

func printCheck(g *globals, exp *experiments.Experiment, rep *metrics.Report, pc *poolCheck, ok bool) {
	w := g.stdout
	fmt.Fprintf(w, "Prometheus %s (version %s)\n", rep.Prometheus.Address, rep.Prometheus.Version)
	fmt.Fprintf(w, "Window %s to %s, intervals of %s\n", rep.Window.Start.Local().Format("15:04:05"), rep.Window.End.Local().Format("15:04:05"), exp.Spec.Analysis.Interval)
	for _, k := range rep.KPIs {
		fmt.Fprintf(w, "\nKPI %s (%s)\n", k.Name, k.Kind)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  CLUSTER\tINTERVALS\tVALUES")
		for _, c := range exp.Spec.Clusters() {
			cr := k.Clusters[c]
			var parts []string
			for _, name := range sortedKeys(cr.Values) {
				parts = append(parts, fmt.Sprintf("%s=%s", name, num(cr.Values[name])))
			}
			vals := strings.Join(parts, " ")
			if vals == "" {
				vals = "no data"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", c, cr.Intervals, vals)
		}
		tw.Flush()
		for _, p := range k.Problems {
			fmt.Fprintf(w, "  %s: %s\n", strings.ToUpper(p.Severity), p.Message)
		}
	}
	if len(rep.Preconditions) > 0 {
		fmt.Fprintln(w, "\nPreconditions")
		for _, p := range rep.Preconditions {
			val := "no data"
			if p.Value != nil {
				val = num(*p.Value)
			}
			mark := "ok  "
			if !p.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %s: value %s, expect %s %s\n", mark, p.Name, val, p.Expect, p.Problem)
		}
	}
	printPoolCheck(w, pc)
	if ok {
		fmt.Fprintln(w, "\nOK: the experiment can run.")
	} else {
		fmt.Fprintln(w, "\nFAILED: fix the problems above before running the experiment.")
	}
}

func printForecast(g *globals, exp *experiments.Experiment, f *engine.Forecast, err error) {
	w := g.stdout
	if err != nil {
		fmt.Fprintf(w, "\nForecast: not possible: %v\n", err)
		return
	}
	if f == nil {
		return
	}
	fmt.Fprintf(w, "\nForecast: the canary cluster's last %d intervals replayed as an A/A run at each step's share (an estimate)\n", f.Intervals)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range f.KPIs {
		when := "not proven within " + experiments.Duration(f.After).String()
		if k.Reached {
			when = "non-inferior after " + experiments.Duration(k.NonInferiorAfter).String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t(tolerance %+.1f%%)\n", k.Name, when, 100*k.Tolerance)
	}
	tw.Flush()
	switch {
	case f.Action == analysis.Promote:
		fmt.Fprintf(w, "  → likely promoted after %s (the holds end at %s).\n", experiments.Duration(f.After), experiments.Duration(f.PlannedEnd))
	case f.After >= f.MaxDuration:
		fmt.Fprintf(w, "  → likely inconclusive at maxDuration %s (onInconclusive: %s): %s\n", experiments.Duration(f.MaxDuration), exp.Spec.Analysis.OnInconclusive, f.Reason)
		fmt.Fprintln(w, "    At this traffic the evidence does not arrive in time: larger steps, longer holds or wider tolerances would help.")
	default:
		fmt.Fprintf(w, "  → likely rolled back after %s at step %d, before the variant matters: %s\n", experiments.Duration(f.After), f.Step, f.Reason)
		fmt.Fprintln(w, "    The canary cluster already differs from its baselines; compare them with verdict analyze (a pre-period adjusts for a steady difference).")
	}
}

// checkNoise is one judged KPI's noise model as verdict check prints it in JSON.
type checkNoise struct {
	KPI string `json:"kpi"`
	*report.Noise
}

// checkNoiseOf reads the noise models the forecast learned from the history window.
func checkNoiseOf(f *engine.Forecast) []checkNoise {
	if f == nil {
		return nil
	}
	var out []checkNoise
	for _, n := range f.Noise {
		// The engine judges ratio KPIs and gauges (latency means included) as log ratios.
		out = append(out, checkNoise{KPI: n.KPI, Noise: report.NoiseOf(n, f.Intervals, true)})
	}
	return out
}

func printNoise(g *globals, exp *experiments.Experiment, f *engine.Forecast, noise []checkNoise) {
	if f == nil || len(noise) == 0 {
		return
	}
	w := g.stdout
	fmt.Fprintf(w, "\nNoise learned from the history, as the run will learn it (%s to %s, %d complete intervals)\n",
		f.Window.Start.Local().Format("15:04"), f.Window.End.Local().Format("15:04"), f.Intervals)
	iv := exp.Spec.Analysis.Interval.Std()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range noise {
		fmt.Fprintf(tw, "  %s\t%s\n", n.KPI, n.Compact(iv))
	}
	tw.Flush()
}
