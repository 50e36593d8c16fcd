package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/report"
)

// analyzeArgs are the parsed arguments of verdict analyze.
type analyzeArgs struct {
	prometheus     string
	canary         string
	baselines      []string
	from, to       string
	preFrom, preTo string
	step           time.Duration
	history        *time.Duration // nil: the experiment's analysis.history
	experiment     string         // experiment file
	experimentName string         // one experiment of a multi-document file
	kpiFile        string
	out            reportOutput
}

func newAnalyzeCmd(g *globals) *cobra.Command {
	var a analyzeArgs
	var history time.Duration
	cmd := &cobra.Command{
		Use:   "analyze --from T --to T (--experiment FILE | --kpi FILE --canary C --baseline B1[,B2])",
		Short: "Compare clusters over any past window, without moving traffic",
		Long: `Analyze reads a past window exactly as a live run reads its intervals, through the engine's own
evidence model: the history before the window (the experiment's analysis.history, 6h by
default, or --history, or the explicit window --pre-from/--pre-to) is the baseline each KPI
learns its noise and the canary's offset from, and the window's intervals are judged as a
run's live intervals would be. It reports the same evidence as verdict report: per KPI the
canary against each baseline, the effect with its confidence sequence, the noise model, the
fixed-horizon tests with Kayenta's classification. Useful to compare two clusters that already
differ, or to re-read a past window.

The offset learned from the history is subtracted (difference-in-differences) when the
variant's arrival is declared: by --pre-from/--pre-to (the window is declared to be before the
change) or by the experiment's spec.canary.apply; otherwise it is shown, not subtracted.

KPIs come from an experiment file (--experiment FILE, which also gives canary, baselines,
Prometheus and alpha) or from a KPI file (--kpi FILE: a YAML document with "kpis:" written as
in an experiment, and optionally "analysis:").

Times are RFC 3339 (2026-11-23T08:00:00Z), "now", or relative to now (-2h, -90m, -1d).

Exit status: 0 report written, 1 Prometheus unreachable or failing, 2 invalid input (bad
flags or files, --from not before --to, a window with no data).`,
		Args: cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			takeOutputFile(cmd, g, &a.out)
			return g.resolve(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("history") {
				a.history = &history
			}
			return runAnalyze(cmd, g, a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.prometheus, "prometheus", "", "Prometheus base URL (default: the experiment's)")
	f.StringVar(&a.canary, "canary", "", "the cluster to judge (default: the experiment's canary)")
	f.StringSliceVar(&a.baselines, "baseline", nil, "baseline clusters, comma-separated or repeated (default: the experiment's)")
	f.StringVar(&a.from, "from", "", "start of the window (RFC 3339, now, or relative like -2h)")
	f.StringVar(&a.to, "to", "now", "end of the window")
	f.StringVar(&a.preFrom, "pre-from", "", "start of an explicit history window before --from, declared to be before the change")
	f.StringVar(&a.preTo, "pre-to", "", "end of the explicit history window")
	f.DurationVar(&history, "history", 0, "history before --from to learn the noise from (default: the experiment's analysis.history; 0 reads none)")
	f.DurationVar(&a.step, "step", 0, "interval length (default: the experiment's analysis interval, else 1m)")
	f.StringVar(&a.experiment, "experiment", "", "experiment file whose KPIs (and clusters) to use")
	f.StringVar(&a.experimentName, "experiment-name", "", "pick this experiment of a multi-document --experiment file")
	f.StringVar(&a.kpiFile, "kpi", "", "KPI file (kpis: as in an experiment), instead of --experiment")
	addReportOutputFlags(cmd, &a.out)
	return cmd
}

// parseTime reads an RFC 3339 time, "now", or a duration relative to now ("-2h").
func parseTime(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, nil
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+"):
		d, err := model.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, usageErrorf("--%s %q: not a relative time like -2h or -90m", flag, s)
		}
		if s[0] == '-' {
			return now.Add(-time.Duration(d)), nil
		}
		return now.Add(time.Duration(d)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usageErrorf("--%s %q: not an RFC 3339 time (2026-11-23T08:00:00Z), now, or a relative time like -2h", flag, s)
	}
	return t, nil
}

func runAnalyze(cmd *cobra.Command, g *globals, a analyzeArgs) error {
	if err := a.out.resolve(g); err != nil {
		return err
	}
	now := time.Now()
	req := report.AnalyzeRequest{Canary: a.canary, Baselines: a.baselines, Step: a.step}
	var err error
	for _, t := range []struct {
		flag, val string
		dst       *time.Time
	}{{"from", a.from, &req.From}, {"to", a.to, &req.To}, {"pre-from", a.preFrom, &req.PreFrom}, {"pre-to", a.preTo, &req.PreTo}} {
		if *t.dst, err = parseTime(t.flag, t.val, now); err != nil {
			return err
		}
	}
	if req.From.IsZero() {
		return usageErrorf("--from is required: the start of the window (RFC 3339, or relative like -2h)")
	}
	if !req.From.Before(req.To) {
		return usageErrorf("--from %s is not before --to %s", req.From.UTC().Format(time.RFC3339), req.To.UTC().Format(time.RFC3339))
	}
	if (a.preFrom == "") != (a.preTo == "") {
		return usageErrorf("--pre-from and --pre-to go together")
	}
	if a.step < 0 {
		return usageErrorf("--step must be positive, not %s", a.step)
	}
	if a.history != nil && *a.history < 0 {
		return usageErrorf("--history must not be negative, not %s", *a.history)
	}
	if a.history != nil && a.preFrom != "" {
		return usageErrorf("give --history or --pre-from/--pre-to, not both")
	}

	var exp *experiments.Experiment
	switch {
	case a.experiment != "" && a.kpiFile != "":
		return usageErrorf("give --experiment or --kpi, not both")
	case a.experiment != "":
		if exp, err = loadExperiment(a.experiment, a.experimentName); err != nil {
			return err
		}
	case a.kpiFile != "":
		if a.canary == "" || len(a.baselines) == 0 {
			return usageErrorf("--kpi needs --canary and --baseline")
		}
		if a.prometheus == "" {
			return usageErrorf("--kpi needs --prometheus")
		}
		if exp, err = loadKPIFile(a.kpiFile, a.canary, a.baselines, a.prometheus); err != nil {
			return err
		}
	default:
		return usageErrorf("the KPIs come from --experiment FILE or --kpi FILE")
	}
	if a.prometheus != "" {
		exp.Spec.Prometheus.Address = a.prometheus
	}
	if a.history != nil {
		exp.Spec.Analysis.History = experiments.Duration(*a.history)
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	req.Experiment, req.Prometheus = exp, src.Address()
	req.PlanFromWindow = a.kpiFile != "" // a KPI file has no plan of its own
	ctx := cmd.Context()
	if _, err := src.Version(ctx); err != nil {
		return withCode(exitError, fmt.Errorf("prometheus: %w", err))
	}
	rep, err := report.Analyze(ctx, src, req)
	var qe *metrics.QueryError
	switch {
	case err == nil:
	case errors.Is(err, report.ErrInvalidWindow):
		return withCode(exitInvalid, err)
	case errors.Is(err, report.ErrNoData):
		c, b := req.Canary, req.Baselines
		if c == "" {
			c, b = exp.Spec.Canary.Cluster, exp.Spec.Baselines
		}
		return withCode(exitInvalid, fmt.Errorf("no data for canary %s and baselines %s between %s and %s: check the cluster names, the window and the cluster label (%s)",
			c, strings.Join(b, ", "), req.From.UTC().Format(time.RFC3339), req.To.UTC().Format(time.RFC3339), src.ClusterLabel()))
	case errors.Is(err, metrics.ErrUnreachable), errors.Is(err, metrics.ErrTimeout), errors.Is(err, metrics.ErrUnauthorized):
		return withCode(exitError, err)
	case errors.As(err, &qe) && (qe.Type == "bad_data" || qe.Type == metrics.TypeInvalidResult):
		return withCode(exitInvalid, err)
	default:
		return withCode(exitError, err)
	}
	return writeReport(g, rep, a.out)
}

// loadKPIFile reads a KPI file (a YAML mapping with kpis: and optionally analysis:) by
// placing it in a minimal experiment, so KPIs get exactly an experiment's defaults and
// validation; error positions are mapped back to the KPI file.
func loadKPIFile(file, canary string, baselines []string, prom string) (*experiments.Experiment, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usageErrorf("--kpi: %v", err)
	}
	origins := []string{}
	for _, c := range append([]string{canary}, baselines...) {
		origins = append(origins, fmt.Sprintf("%q: %q", c, c))
	}
	sort.Strings(origins)
	head := fmt.Sprintf(`apiVersion: %s
kind: %s
metadata: {name: analyze}
spec:
  canary: {cluster: %q}
  baselines: [%s]
  traffic: {cloudflare: {poolID: analyze, origins: {%s}}, steps: [{weight: 50%%, hold: 1d}]}
  prometheus: {address: %q}
`, experiments.APIVersion, experiments.Kind, canary, quoteAll(baselines), strings.Join(origins, ", "), prom)
	offset := strings.Count(head, "\n")
	var body strings.Builder
	body.WriteString(head)
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		body.WriteString("  " + line + "\n")
	}
	exps, err := experiments.Load(file, []byte(body.String()), experiments.LoadOptions{})
	if err != nil {
		var list experiments.ErrorList
		if errors.As(err, &list) {
			for _, fe := range list {
				if fe.Line > offset {
					fe.Line -= offset
					fe.Column = max(fe.Column-2, 1)
				} else {
					fe.Line, fe.Column = 0, 0
				}
				fe.Path = strings.TrimPrefix(fe.Path, "spec.")
			}
			return nil, withCode(exitInvalid, fmt.Errorf("--kpi %s: %w", file, list.Err()))
		}
		return nil, withCode(exitInvalid, fmt.Errorf("--kpi %s: %w", file, err))
	}
	if len(exps[0].Spec.KPIs) == 0 {
		return nil, usageErrorf("--kpi %s: no kpis", file)
	}
	return exps[0], nil
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
