package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/traffic"
)

// switchoverArgs are the parsed arguments of verdict switchover.
type switchoverArgs struct {
	run      runArgs
	from, to string
	steps    string
	hold     time.Duration
	dryRun   bool
	yes      bool
	poolFile string
}

func newSwitchoverCmd(g *globals) *cobra.Command {
	var a switchoverArgs
	cmd := &cobra.Command{
		Use:   "switchover FILE --from A --to B",
		Short: "Move a cluster's traffic to another (active → standby) in steps under analysis",
		Long: `Switchover is the runbook step of an active/standby pair, or of any two clusters of an
experiment file: B is ramped up and A down in steps, B judged live against A at every
interval with the file's KPIs and guardrails, and on promotion B takes A's whole weight (the
cut-over) while A stays in the pool at weight 0. A rollback, an abort or an interrupt puts
both back to their original weights. The other clusters of the file, and every origin
outside it, keep their weights. It works on either steerer the file names (a Cloudflare pool
or a Route 53 weighted record set).

FILE is an experiment file that describes the fleet: its traffic target, origins,
Prometheus, KPIs, guardrails, analysis settings, preconditions and notifications are used
as written; its canary, baselines and steps are not. The switchover runs as the experiment
"<name>-switchover-<A>-to-<B>" through the same engine as verdict run, so the claim on the
pool, interrupt safety, verdict abort/pause/promote, --resume and reports all apply.

A standby at weight 0 served no traffic before the run, so there is no history to learn
the noise and the A/B offset from: the history is skipped (the run says so) and B is judged
against A live only, the noise estimated from the run after analysis.minIntervals.

--steps lists B's share of the pair's traffic at each step, each with an optional hold
("10%:5m,50%,100%"); --hold is the hold of the others. A final 100% (the cut-over, not held)
is added when missing.

Without --yes the plan is shown and, on a terminal, confirmation asked; otherwise nothing
changes (--dry-run: only the plan, always). Resume a run left unfinished with the same
command and --resume RUN-ID.

Exit status as verdict run: 0 switched over, 3 rolled back, 4 aborted, 5 inconclusive,
6 a precondition failed, 1 error, 2 invalid input.`,
		Example: "  verdict switchover fleet.yaml --from prod-use1-a --to prod-use1-b --dry-run\n" +
			"  verdict switchover fleet.yaml --from prod-use1-a --to prod-use1-b --steps 10%,50%,100% --hold 15m --yes",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run.file = args[0]
			a.yes = explicitYes(cmd, g, a.yes)
			return runSwitchover(cmd.Context(), g, a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.from, "from", "", "the cluster that gives its traffic away (required)")
	f.StringVar(&a.to, "to", "", "the cluster that takes it over, typically a standby at weight 0 (required)")
	f.StringVar(&a.steps, "steps", experiments.DefaultSwitchoverSteps, "the target's share of the two clusters' traffic at each step, comma-separated, each optionally with its own hold (25%:5m); a final 100% is the cut-over")
	f.DurationVar(&a.hold, "hold", experiments.DefaultSwitchoverHold.Std(), "how long each step is held and judged, unless --steps gives its own")
	f.BoolVar(&a.dryRun, "dry-run", false, "show the plan (every weight at every step) and change nothing")
	f.BoolVar(&a.yes, "yes", false, "start without asking; without it the plan is shown and confirmation asked on a terminal")
	f.StringVar(&a.poolFile, "pool-file", "", "with --dry-run: the pool as Cloudflare JSON, or Route 53 record sets as the AWS CLI prints them, instead of reading it live")
	f.StringVar(&a.run.experiment, "experiment", "", "use this experiment of a multi-document file")
	addRunFlags(cmd, &a.run)
	return cmd
}

func runSwitchover(ctx context.Context, g *globals, a switchoverArgs) error {
	if err := a.run.check(); err != nil {
		return err
	}
	if a.dryRun && a.run.resume != "" {
		return usageErrorf("--dry-run plans a new switchover; --resume drives one already started (verdict status %s shows it)", a.run.resume)
	}
	if a.poolFile != "" && !a.dryRun {
		return usageErrorf("--pool-file is for --dry-run only: a switchover reads the pool it changes")
	}
	if a.hold <= 0 {
		return usageErrorf("--hold must be a positive duration, got %s", a.hold)
	}
	file, err := loadExperiment(a.run.file, a.run.experiment)
	if err != nil {
		return err
	}
	exp, err := experiments.Switchover(file, experiments.SwitchoverOptions{From: a.from, To: a.to, Steps: a.steps, Hold: experiments.Duration(a.hold)})
	if err != nil {
		return withCode(exitInvalid, fmt.Errorf("switchover from %s to %s with %s:\n%w", a.from, a.to, a.run.file, err))
	}
	resumeCmd := switchoverCommand(a)
	if a.run.resume != "" {
		return runExperiment(ctx, g, a.run, exp, resumeCmd)
	}
	if a.yes && !a.dryRun {
		// The run reads the pool itself; this only refuses early what cannot switch over.
		if _, _, err := switchoverPlan(ctx, g, a, file, exp); err != nil {
			return err
		}
		return runExperiment(ctx, g, a.run, exp, resumeCmd)
	}
	view, plan, err := switchoverPlan(ctx, g, a, file, exp)
	if err != nil {
		return err
	}
	if g.json() {
		if err := writeJSON(g.stdout, view); err != nil {
			return withCode(exitError, err)
		}
	} else {
		printSwitchover(g.stdout, exp, view, plan)
	}
	if a.dryRun {
		return nil
	}
	if g.json() || !isTerminal(g.stdout) || !isTerminal(os.Stdin) {
		fmt.Fprintf(g.stdio.err, "Dry run: nothing changed. Re-run with --yes to start the switchover.\n")
		return nil
	}
	fmt.Fprintf(g.stdio.err, "Start the switchover from %s to %s? [y/N] ", safeText(a.from), safeText(a.to))
	line, _ := bufio.NewReader(g.stdio.in).ReadString('\n')
	if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
		fmt.Fprintln(g.stdio.err, "Nothing changed.")
		return nil
	}
	return runExperiment(ctx, g, a.run, exp, resumeCmd)
}

// switchoverCommand is the command line that derives the same experiment again, for
// --resume hints: every option that shapes it, as resolved.
func switchoverCommand(a switchoverArgs) string {
	parts := []string{"switchover", shellQuote(fileOr(a.run.file)), "--from", shellQuote(a.from), "--to", shellQuote(a.to),
		"--steps", shellQuote(a.steps), "--hold", experiments.Duration(a.hold).String()}
	if a.run.experiment != "" {
		parts = append(parts, "--experiment", shellQuote(a.run.experiment))
	}
	return strings.Join(parts, " ")
}

// switchoverView is the plan of a switchover: the weight plan, and what is particular to
// a switchover (JSON message type switchover_plan).
type switchoverView struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	From    string `json:"from"`
	To      string `json:"to"`
	// Untouched are the file's clusters left out of the switchover (they keep their
	// weights), by cluster and origin.
	Untouched map[string]string `json:"untouched,omitempty"`
	// HistorySkipped says why the run will not read the history: the target carries no
	// traffic now.
	HistorySkipped string `json:"historySkipped,omitempty"`
	// pool, its TTL and health are what the plan was read from, for the human view.
	pool   traffic.Pool
	ttl    time.Duration
	health *traffic.PoolHealth
	planJSON
}

// switchoverPlan reads the pool (live, or --pool-file for a dry run) and plans the
// switchover, refusing one that cannot move any traffic.
func switchoverPlan(ctx context.Context, g *globals, a switchoverArgs, file, exp *experiments.Experiment) (*switchoverView, *experiments.Plan, error) {
	ref := exp.Spec.Traffic.PoolRef()
	var data []byte
	if a.poolFile != "" {
		var err error
		if data, err = os.ReadFile(a.poolFile); err != nil {
			return nil, nil, usageErrorf("read pool file: %v", err)
		}
	}
	pool, ttl, health, err := planPool(ctx, g, exp, a.poolFile, data, a.dryRun)
	if err != nil {
		return nil, nil, err
	}
	origins := exp.Spec.Traffic.Origins()
	weights := pool.Weights()
	if w, ok := weights[origins[a.from]]; ok && w == 0 {
		return nil, nil, withCode(exitInvalid, fmt.Errorf("--from: cluster %s (origin %s) has weight 0 in pool %s: it carries no traffic to switch over", a.from, origins[a.from], ref))
	}
	plan, err := experiments.WeightPlan(exp, poolOrigins(pool))
	if err != nil {
		return nil, nil, withCode(exitInvalid, exp.FieldError(err))
	}
	v := &switchoverView{Type: "switchover_plan", Version: jsonVersion, From: a.from, To: a.to, pool: pool, ttl: ttl, health: health, planJSON: newPlanJSON(exp, plan, ttl)}
	v.SourceOfTruth = compareSource(exp, weights)
	v.Health, v.Unhealthy = planHealth(exp, health)
	if w := weights[origins[a.to]]; w == 0 && exp.Spec.Analysis.History > 0 {
		v.HistorySkipped = fmt.Sprintf("%s (origin %s) has weight 0, so it served no traffic to compare with before the run: the %s of history is skipped and %s is judged against %s live only, the noise estimated from the run after %d intervals of %s",
			a.to, origins[a.to], exp.Spec.Analysis.History, a.to, a.from, exp.Spec.Analysis.MinIntervals, exp.Spec.Analysis.Interval)
	}
	for c, o := range file.Spec.Traffic.Origins() {
		if c != a.from && c != a.to {
			if v.Untouched == nil {
				v.Untouched = map[string]string{}
			}
			v.Untouched[c] = o
		}
	}
	if len(v.Unhealthy) > 0 && slices.Contains(v.Unhealthy, a.to) && !a.dryRun {
		return nil, nil, withCode(exitCheckFailed, fmt.Errorf("--to: cluster %s's origin %s is unhealthy at the load balancer: it would get none of the traffic moved to it", a.to, origins[a.to]))
	}
	return v, plan, nil
}

// printSwitchover is the human view of a switchover's plan: what it is, then the weight
// table as verdict plan shows it.
func printSwitchover(w io.Writer, exp *experiments.Experiment, v *switchoverView, plan *experiments.Plan) {
	origins := exp.Spec.Traffic.Origins()
	fmt.Fprintf(w, "Switchover from %s (%s) to %s (%s): %s is ramped up and %s down, %s judged live against %s at every step;\n",
		safeText(v.From), safeText(origins[v.From]), safeText(v.To), safeText(origins[v.To]), safeText(v.To), safeText(v.From), safeText(v.To), safeText(v.From))
	fmt.Fprintf(w, "on promotion %s takes the pair's whole weight and %s stands by at 0; a rollback or abort restores both.\n", safeText(v.To), safeText(v.From))
	if len(v.Untouched) > 0 {
		var parts []string
		for _, c := range sortedKeys(v.Untouched) {
			parts = append(parts, safeText(c)+" ("+safeText(v.Untouched[c])+")")
		}
		fmt.Fprintf(w, "Left out, keeping their weights: %s.\n", strings.Join(parts, ", "))
	}
	if v.HistorySkipped != "" {
		fmt.Fprintf(w, "History: skipped — %s.\n", safeText(v.HistorySkipped))
	}
	fmt.Fprintln(w)
	printPlan(w, exp, v.pool, plan, v.ttl)
	printPlanHealth(w, exp, v.health)
	accepted := v.SourceOfTruth != nil && exp.Spec.Traffic.SourceOfTruth.OnMismatch == experiments.OnMismatchWarn
	printSourceDrift(w, v.SourceOfTruth, accepted)
}
