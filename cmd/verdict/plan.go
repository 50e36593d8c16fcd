package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// planArgs are the parsed arguments of verdict plan.
type planArgs struct {
	file       string
	poolFile   string
	experiment string
}

func newPlanCmd(g *globals) *cobra.Command {
	var a planArgs
	cmd := &cobra.Command{
		Use:   "plan FILE",
		Short: "Show every weight the experiment will set, before anything changes",
		Long: `Plan reads the pool and prints the weight of every origin at every step, and after a
promotion or a rollback, without changing anything. Origins outside the experiment keep
their weights; the experiment's origins keep their total; baselines keep their proportions.

The pool comes from --pool-file (Cloudflare's JSON, as GET .../pools/{id} returns it,
with or without the API envelope), or, without it, is read live from Cloudflare with the
CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_BASE_URL variables.

For a Route 53 experiment (spec.traffic.route53) --pool-file holds the record sets as
"aws route53 list-resource-record-sets --hosted-zone-id ZONE" prints them; without it the
set is read live with the standard AWS credential chain (AWS_ENDPOINT_URL_ROUTE_53 points
it at moto_server or LocalStack). Weights are shown as fractions and as the 0-255 integers
Route 53 stores (round(w×255)), with the set's DNS TTL: an interval counts only from one
TTL after each change, so intervals shorter than the TTL delay the evidence.

A final step of 100% is a migration's cut-over: written when the run promotes, after
which the legacy clusters carry no traffic and can be removed.`,
		Example: "  verdict plan examples/karpenter.yaml --pool-file examples/pools/use1.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			return runPlan(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.poolFile, "pool-file", "", "pool as Cloudflare JSON, or Route 53 record sets as the AWS CLI prints them (offline plan)")
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "plan only this experiment of a multi-document file")
	return cmd
}

func runPlan(ctx context.Context, g *globals, a planArgs) error {
	exps, err := experiments.LoadFile(a.file, experiments.LoadOptions{})
	if err != nil {
		return withCode(exitInvalid, err)
	}
	if a.experiment != "" {
		var picked []*experiments.Experiment
		for _, e := range exps {
			if e.Metadata.Name == a.experiment {
				picked = append(picked, e)
			}
		}
		if len(picked) == 0 {
			return usageErrorf("%s: no experiment named %q", a.file, a.experiment)
		}
		exps = picked
	}
	var poolData []byte
	if a.poolFile != "" {
		if poolData, err = os.ReadFile(a.poolFile); err != nil {
			return usageErrorf("read pool file: %v", err)
		}
	}
	for _, e := range exps {
		pool, ttl, health, err := planPool(ctx, g, e, a.poolFile, poolData, true)
		if err != nil {
			return err
		}
		plan, err := experiments.WeightPlan(e, poolOrigins(pool))
		if err != nil {
			return withCode(exitInvalid, e.FieldError(err))
		}
		drift := compareSource(e, pool.Weights())
		if g.json() {
			pj := newPlanJSON(e, plan, ttl)
			pj.SourceOfTruth = drift
			pj.Health, pj.Unhealthy = planHealth(e, health)
			if err := writeJSON(g.stdout, pj); err != nil {
				return withCode(exitError, err)
			}
			continue
		}
		printPlan(g.stdout, e, pool, plan, ttl)
		printPlanHealth(g.stdout, e, health)
		accepted := drift != nil && e.Spec.Traffic.SourceOfTruth.OnMismatch == experiments.OnMismatchWarn
		printSourceDrift(g.stdout, drift, accepted)
	}
	return nil
}

// planPool reads the pool a plan is drawn on: from the --pool-file export when poolFile
// is set (its contents poolData), otherwise live through the Steerer exactly as a run
// will, with the load balancer's origin health when a monitor reports on it. fileHint
// says whether the command takes --pool-file, so missing credentials can suggest it.
func planPool(ctx context.Context, g *globals, e *experiments.Experiment, poolFile string, poolData []byte, fileHint bool) (pool traffic.Pool, ttl time.Duration, health *traffic.PoolHealth, err error) {
	if poolFile != "" {
		pool, ttl, err = decodePoolFile(e, poolFile, poolData)
		return pool, ttl, nil, err
	}
	steer, err := steererFor(ctx, g, e)
	if err != nil {
		switch {
		case !fileHint:
		case e.Spec.Traffic.Provider() == experiments.ProviderRoute53:
			err = usageErrorf("plan needs the record set: pass --pool-file SETS.json (aws route53 list-resource-record-sets output), or give AWS credentials to read it live: %v", err)
		default:
			if _, cerr := traffic.CloudflareOptionsFromEnv(os.LookupEnv); errors.Is(cerr, traffic.ErrNoCredentials) {
				err = usageErrorf("plan needs the pool: pass --pool-file POOL.json, or set CLOUDFLARE_API_TOKEN to read it live")
			}
		}
		return pool, 0, nil, err
	}
	ref := e.Spec.Traffic.PoolRef()
	if pool, ttl, err = readPoolAndTTL(ctx, steer, e); err != nil {
		return pool, 0, nil, withCode(exitError, fmt.Errorf("read pool %s: %w", ref, err))
	}
	if h, ok, err := traffic.ReadHealth(ctx, steer, ref); err != nil {
		g.log.Warn("could not read the pool's origin health", "pool", ref.String(), "err", err)
	} else if ok && h.Monitored {
		health = &h
	}
	return pool, ttl, health, nil
}

// planJSON is the JSON view of a plan: the weights, and what the run does around them.
type planJSON struct {
	server.TypeMeta
	Experiment string   `json:"experiment"`
	Phases     []string `json:"phases"`
	// ApplyDuring is the canary's traffic while the variant is applied; empty when the
	// engine does not apply it.
	ApplyDuring    string               `json:"applyDuring,omitempty"`
	History        experiments.Duration `json:"history"`
	ShareTolerance experiments.Fraction `json:"shareTolerance"`
	// Migration is set when the final step gives the canary all the traffic: what the
	// promotion leaves (experiments.Spec.MigrationNote).
	Migration string `json:"migration,omitempty"`
	// Route53 is set for a Route 53 experiment: the record set, its TTL and every weight
	// in Route 53's units.
	Route53 *planRoute53 `json:"route53,omitempty"`
	// SourceOfTruth compares spec.traffic.sourceOfTruth with the pool.
	SourceOfTruth *sourceDrift `json:"sourceOfTruth,omitempty"`
	// Health is the load balancer's verdict on each cluster's origin, when a monitor
	// reports on the pool; Unhealthy lists the clusters whose origin is unhealthy (a run
	// would not move weights).
	Health    map[string]string `json:"health,omitempty"`
	Unhealthy []string          `json:"unhealthy,omitempty"`
	*experiments.Plan
}

// planHealth maps each cluster to its origin's health and lists the unhealthy clusters.
func planHealth(e *experiments.Experiment, h *traffic.PoolHealth) (map[string]string, []string) {
	if h == nil {
		return nil, nil
	}
	out := map[string]string{}
	var bad []string
	origins := e.Spec.Traffic.Origins()
	for _, c := range e.Spec.Clusters() {
		out[c] = h.Describe(origins[c])
		if !h.OriginHealthy(origins[c]) {
			bad = append(bad, c)
		}
	}
	return out, bad
}

// printPlanHealth shows each cluster's origin health and warns about an unhealthy one:
// it carries none of its weight's share (the healthy origins take it), so the plan's
// shares are not what the load balancer does, and a run refuses to start.
func printPlanHealth(w io.Writer, e *experiments.Experiment, h *traffic.PoolHealth) {
	health, bad := planHealth(e, h)
	if health == nil {
		return
	}
	origins := e.Spec.Traffic.Origins()
	fmt.Fprintln(w, "\nOrigin health at the load balancer:")
	for _, c := range e.Spec.Clusters() {
		fmt.Fprintf(w, "  %s (%s): %s\n", safeText(c), safeText(origins[c]), safeText(health[c]))
	}
	for _, c := range bad {
		fmt.Fprintf(w, "WARNING: cluster %s's origin %q is unhealthy: the load balancer sends it nothing and gives its share to the healthy origins, so the shares above do not hold; a run refuses to move weights until it is healthy.\n", safeText(c), safeText(origins[c]))
	}
}

// planRoute53 is what a Route 53 plan adds: weights are written as round(w×255).
type planRoute53 struct {
	HostedZoneID string `json:"hostedZoneID"`
	Record       string `json:"record"`
	Type         string `json:"type"`
	// TTLSeconds is the set's DNS TTL, the minimum wait after a change before an interval
	// counts.
	TTLSeconds float64 `json:"ttlSeconds"`
	// Units are the records' Route 53 weights (0–255) at every step (steps[0] is now),
	// after a promotion and after a rollback, by SetIdentifier.
	Units    []map[string]int64 `json:"units"`
	Promote  map[string]int64   `json:"promoteUnits"`
	Rollback map[string]int64   `json:"rollbackUnits"`
}

func stepUnits(st experiments.PlanStep) map[string]int64 {
	m := make(map[string]int64, len(st.Origins))
	for _, o := range st.Origins {
		m[o.Name] = route53.Units(o.Weight)
	}
	return m
}

func newPlanJSON(e *experiments.Experiment, plan *experiments.Plan, ttl time.Duration) planJSON {
	a := &e.Spec.Analysis
	out := planJSON{TypeMeta: server.Meta(server.KindPlanResult), Experiment: plan.Experiment, Phases: e.Spec.Phases(), History: a.History, ShareTolerance: a.ShareTolerance, Plan: plan,
		Migration: e.Spec.MigrationNote()}
	if ap := e.Spec.Canary.Apply; ap != nil && (ap.Hook != nil || ap.Readiness != nil) {
		out.ApplyDuring = ap.During
	}
	if e.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
		ref := e.Spec.Traffic.PoolRef()
		_, name, typ, _ := route53.ParseRef(ref)
		r := &planRoute53{HostedZoneID: ref.Account, Record: name, Type: typ, TTLSeconds: ttl.Seconds(),
			Promote: stepUnits(plan.Promote), Rollback: stepUnits(plan.Rollback)}
		for _, st := range plan.Steps {
			r.Units = append(r.Units, stepUnits(st))
		}
		out.Route53 = r
	}
	return out
}

func poolOrigins(p traffic.Pool) []experiments.PoolOrigin {
	out := make([]experiments.PoolOrigin, 0, len(p.Origins))
	for _, o := range p.Origins {
		out = append(out, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
	}
	return out
}

// printPlan shows the plan as a table with one column per step; a weight that changes from
// the column before is marked with ~, the way terraform plan marks updates.
//
// For Route 53 every weight is shown with the integer Route 53 stores beside it
// ("0.10=26": round(w×255)) and shares are of the set's integer total, what resolvers
// answer by; the DNS TTL and what it costs each step follow the table.
func printPlan(w io.Writer, e *experiments.Experiment, pool traffic.Pool, plan *experiments.Plan, ttl time.Duration) {
	s := &e.Spec
	dns := s.Traffic.Provider() == experiments.ProviderRoute53
	fmt.Fprintf(w, "Experiment %s: canary %s, baselines %s\n", e.Metadata.Name, s.Canary.Cluster, strings.Join(s.Baselines, ", "))
	if dns {
		ref := s.Traffic.PoolRef()
		_, name, typ, _ := route53.ParseRef(ref)
		fmt.Fprintf(w, "Route 53 weighted record set %s %s in hosted zone %s (%d records, TTL %s; weights are fractions=Route 53 units of 255)\n\n", name, typ, ref.Account, len(pool.Origins), experiments.Duration(ttl))
	} else {
		fmt.Fprintf(w, "Pool %s (%s, origin steering %s, %d origins)\n\n", pool.ID, pool.Name, pool.SteeringPolicy, len(pool.Origins))
	}
	printPhases(w, e)

	// The run's columns in order: now, [drained while the variant is applied], the steps;
	// then the two endings, each compared with now.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"ORIGIN", "CLUSTER", "NOW"}
	run := []experiments.PlanStep{plan.Steps[0]}
	if plan.Drained != nil {
		header = append(header, "APPLY (drained)")
		run = append(run, *plan.Drained)
	}
	for _, st := range plan.Steps[1:] {
		h := fmt.Sprintf("STEP %d (%s, %s)", st.Step, pct(st.CanaryShare), st.Hold)
		if s.Traffic.Migration() && st.Step == len(s.Traffic.Steps) {
			h = fmt.Sprintf("STEP %d (%s, cut-over on promotion)", st.Step, pct(st.CanaryShare))
		} else if st.MinHold > 0 {
			h = fmt.Sprintf("STEP %d (%s, %s, min %s)", st.Step, pct(st.CanaryShare), st.Hold, st.MinHold)
		}
		header = append(header, h)
		run = append(run, st)
	}
	header = append(header, "PROMOTE ("+s.Traffic.OnPromote+")", "ROLLBACK ("+s.Traffic.OnRollback+")")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	cols := append(append([]experiments.PlanStep{}, run...), plan.Promote, plan.Rollback)
	for i, o := range plan.Steps[0].Origins {
		cluster := o.Cluster
		if cluster == "" {
			cluster = "-"
		}
		row := []string{o.Name, cluster}
		for j, st := range cols {
			ow := st.Origins[i]
			mark := "  "
			prev := plan.Steps[0]
			if j > 0 && j < len(run) {
				prev = run[j-1]
			}
			if j > 0 && prev.Origins[i].Weight != ow.Weight {
				mark = "~ "
			}
			if dns && j == 0 {
				// Now is the set as read, not its 0.01-grid plan weight: 127 stays 127.
				now := poolUnits(pool)
				row = append(row, fmt.Sprintf("%s%.2f=%d (%s)", mark, ow.Weight, now[i], pct(shareOf(now, i))))
				continue
			}
			if dns {
				row = append(row, fmt.Sprintf("%s%.2f=%d (%s)", mark, ow.Weight, route53.Units(ow.Weight), pct(unitShare(st, i))))
				continue
			}
			row = append(row, fmt.Sprintf("%s%.2f (%s)", mark, ow.Weight, pct(ow.Share)))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	totals := []string{"total", ""}
	for j, st := range cols {
		t := 0
		var u int64
		for i, o := range st.Origins {
			t += int(o.Weight*100 + 0.5)
			if j == 0 {
				u += poolUnits(pool)[i]
			} else {
				u += route53.Units(o.Weight)
			}
		}
		if dns {
			totals = append(totals, fmt.Sprintf("  %.2f=%d", float64(t)/100, u))
			continue
		}
		totals = append(totals, fmt.Sprintf("  %.2f", float64(t)/100))
	}
	fmt.Fprintln(tw, strings.Join(totals, "\t"))
	tw.Flush()

	if s.Capacity != nil {
		fmt.Fprintln(w, "\nReplicas (min-max) per step, from the HPA formula:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header[1:len(run)+2], "\t"))
		for _, c := range s.Clusters() {
			row := []string{c}
			for _, st := range run {
				r := st.Replicas[c]
				row = append(row, fmt.Sprintf("%d-%d", r.Min, r.Max))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	if dns {
		now := poolUnits(pool)
		if s.Traffic.OnRollback == experiments.OnRollbackRestore {
			for i, o := range plan.Rollback.Origins {
				if u := route53.Units(o.Weight); o.Cluster != "" && u != now[i] {
					fmt.Fprintf(w, "\nNote: a rollback writes %s back as %d, not its %d now: Verdict restores weights on its 0.01 grid, which Route 53 stores as round(w×255).\n", safeText(o.Name), u, now[i])
				}
			}
		}
		fmt.Fprintf(w, "\n%s.\n", ttlAdvice(ttl, s.Analysis.Interval.Std()))
		if ttl > s.Analysis.Interval.Std() {
			fmt.Fprintf(w, "\nWarning: the TTL (%s) is longer than the analysis interval (%s): shorten the TTL on the record set (30-60s) or lengthen the interval.\n", experiments.Duration(ttl), s.Analysis.Interval)
		}
	} else if pool.SteeringPolicy != "random" {
		fmt.Fprintf(w, "\nWarning: origin steering %q does not split traffic exactly by weight; the traffic-share check will tell how far the real split is.\n", pool.SteeringPolicy)
	}
	if c, ok := pool.Claim(); ok {
		fmt.Fprintf(w, "\nWarning: pool is claimed by run %s (driven by %s since %s): a run now would be refused until that one ends.\n", safeText(c.Run), safeText(c.Owner), c.Since.UTC().Format(time.RFC3339))
	}
	for _, wn := range engine.PoolWarnings(e, pool, time.Now()) {
		fmt.Fprintf(w, "\nWarning: %s.\n", safeText(wn.Message))
	}
	if note := s.MigrationNote(); note != "" {
		fmt.Fprintf(w, "\n%s%s.\n", strings.ToUpper(note[:1]), note[1:])
	}
	fmt.Fprintf(w, "\nNothing has been changed. %d weight change(s) over %d step(s); total hold %s.\n\n", countChanges(run), len(plan.Steps)-1, experiments.Duration(s.TotalHold()))
}

// poolUnits is every origin's Route 53 weight as read, in the pool's order (the plan's).
func poolUnits(p traffic.Pool) []int64 {
	out := make([]int64, len(p.Origins))
	for i, o := range p.Origins {
		out[i] = route53.Units(o.Weight)
	}
	return out
}

func shareOf(units []int64, i int) float64 {
	var total int64
	for _, u := range units {
		total += u
	}
	if total == 0 {
		return 0
	}
	return float64(units[i]) / float64(total)
}

// unitShare is origin i's share of the answers at st by Route 53's integer weights, which
// is what resolvers split by (the plan's Share is of the 0.01-grid weights).
func unitShare(st experiments.PlanStep, i int) float64 {
	units := make([]int64, len(st.Origins))
	for k, o := range st.Origins {
		units[k] = route53.Units(o.Weight)
	}
	return shareOf(units, i)
}

// printPhases says what the run does before and around the weight table: its phases, how
// the variant arrives (hook and readiness rendered for the canary), and the history and
// share tolerance the analysis uses.
func printPhases(w io.Writer, e *experiments.Experiment) {
	s := &e.Spec
	fmt.Fprintf(w, "phases: %s\n", strings.Join(s.Phases(), " → "))
	historyEnd := "the run"
	if a := s.Canary.Apply; a != nil {
		if a.AppliedAt != nil {
			historyEnd = "appliedAt"
		}
		if h := a.Hook; h != nil {
			args, err := e.ApplyHookCommand()
			if err != nil { // validated on load: cannot happen
				args = h.Command
			}
			fmt.Fprintf(w, "apply: %s (timeout %s)\n", shellJoin(args), h.Timeout)
		}
		if r := a.Readiness; r != nil {
			q, err := e.ReadinessQuery()
			if err != nil {
				q = r.Query
			}
			fmt.Fprintf(w, "ready: %s %s (waited for up to %s, then rollback)\n", q, r.Expect, r.Timeout)
		}
		switch {
		case a.Hook == nil && a.Readiness == nil:
		case a.During == experiments.ApplyDuringDrained:
			fmt.Fprintln(w, "while applying: the canary is drained (weight 0), the baselines take its share")
		case len(s.Traffic.Steps) > 0:
			fmt.Fprintf(w, "while applying: the canary carries step 1's weight (%s)\n", s.Traffic.Steps[0].Weight)
		}
	}
	an := &s.Analysis
	if an.History > 0 {
		fmt.Fprintf(w, "history: %s before %s, to learn each KPI's noise and the canary/baseline offset\n", an.History, historyEnd)
	} else {
		fmt.Fprintln(w, "history: off (noise is estimated from the run itself)")
	}
	fmt.Fprintf(w, "share tolerance: %s (observed against configured traffic share)\n\n", an.ShareTolerance)
}

// shellJoin writes a command the way a shell would read it back.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}();&|<>#~") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// countChanges counts the origin weights that change along the run's columns.
func countChanges(run []experiments.PlanStep) int {
	n := 0
	for i := 1; i < len(run); i++ {
		for j, o := range run[i].Origins {
			if o.Weight != run[i-1].Origins[j].Weight {
				n++
			}
		}
	}
	return n
}

func pct(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", f*100), "0"), ".") + "%"
}
