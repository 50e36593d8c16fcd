package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/traffic"
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
CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_BASE_URL variables.`,
		Example: "  verdict plan examples/karpenter.yaml --pool-file examples/pools/use1.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			return runPlan(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.poolFile, "pool-file", "", "pool as Cloudflare JSON (offline plan)")
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
	var pool traffic.Pool
	if a.poolFile != "" {
		data, err := os.ReadFile(a.poolFile)
		if err != nil {
			return usageErrorf("read pool file: %v", err)
		}
		if pool, err = traffic.DecodePool(data); err != nil {
			return usageErrorf("%s: %v", a.poolFile, err)
		}
	}
	for _, e := range exps {
		if a.poolFile == "" {
			// Live: read the pool through the Steerer, exactly as run will.
			steer, err := steererFromEnv(g)
			if err != nil {
				return usageErrorf("plan needs the pool: pass --pool-file POOL.json, or set CLOUDFLARE_API_TOKEN to read it live")
			}
			if pool, err = steer.Pool(ctx, traffic.PoolRef{Account: e.Spec.Traffic.Cloudflare.AccountID, Pool: e.Spec.Traffic.Cloudflare.PoolID}); err != nil {
				return withCode(exitError, fmt.Errorf("read pool %s: %w", e.Spec.Traffic.Cloudflare.PoolID, err))
			}
		}
		if id := e.Spec.Traffic.Cloudflare.PoolID; pool.ID != "" && id != pool.ID {
			return usageErrorf("%s: pool %s is not the experiment's pool %s (spec.traffic.cloudflare.poolID)", a.poolFile, pool.ID, id)
		}
		plan, err := experiments.WeightPlan(e, poolOrigins(pool))
		if err != nil {
			return withCode(exitInvalid, e.FieldError(err))
		}
		if g.json() {
			if err := writeJSON(g.stdout, plan); err != nil {
				return withCode(exitError, err)
			}
			continue
		}
		printPlan(g.stdout, e, pool, plan)
	}
	return nil
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
func printPlan(w io.Writer, e *experiments.Experiment, pool traffic.Pool, plan *experiments.Plan) {
	s := &e.Spec
	fmt.Fprintf(w, "Experiment %s: canary %s, baselines %s\n", e.Metadata.Name, s.Canary.Cluster, strings.Join(s.Baselines, ", "))
	fmt.Fprintf(w, "Pool %s (%s, origin steering %s, %d origins)\n\n", pool.ID, pool.Name, pool.SteeringPolicy, len(pool.Origins))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"ORIGIN", "CLUSTER", "NOW"}
	for _, st := range plan.Steps[1:] {
		header = append(header, fmt.Sprintf("STEP %d (%s, %s)", st.Step, pct(st.CanaryShare), st.Hold))
	}
	header = append(header, "PROMOTE ("+s.Traffic.OnPromote+")", "ROLLBACK ("+s.Traffic.OnRollback+")")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	cols := append(append([]experiments.PlanStep{}, plan.Steps...), plan.Promote, plan.Rollback)
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
			if j > 0 && j < len(plan.Steps) {
				prev = plan.Steps[j-1]
			}
			if j > 0 && prev.Origins[i].Weight != ow.Weight {
				mark = "~ "
			}
			row = append(row, fmt.Sprintf("%s%.2f (%s)", mark, ow.Weight, pct(ow.Share)))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	totals := []string{"total", ""}
	for _, st := range cols {
		t := 0
		for _, o := range st.Origins {
			t += int(o.Weight*100 + 0.5)
		}
		totals = append(totals, fmt.Sprintf("  %.2f", float64(t)/100))
	}
	fmt.Fprintln(tw, strings.Join(totals, "\t"))
	tw.Flush()

	if s.Capacity != nil {
		fmt.Fprintln(w, "\nReplicas (min-max) per step, from the HPA formula:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header[1:len(plan.Steps)+2], "\t"))
		for _, c := range s.Clusters() {
			row := []string{c}
			for _, st := range plan.Steps {
				r := st.Replicas[c]
				row = append(row, fmt.Sprintf("%d-%d", r.Min, r.Max))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	if pool.SteeringPolicy != "random" {
		fmt.Fprintf(w, "\nWarning: origin steering %q does not split traffic exactly by weight; the traffic-share check will tell how far the real split is.\n", pool.SteeringPolicy)
	}
	fmt.Fprintf(w, "\nNothing has been changed. %d weight change(s) over %d step(s); total hold %s.\n\n", countChanges(plan), len(plan.Steps)-1, experiments.Duration(s.TotalHold()))
}

func countChanges(p *experiments.Plan) int {
	n := 0
	for i := 1; i < len(p.Steps); i++ {
		for j, o := range p.Steps[i].Origins {
			if o.Weight != p.Steps[i-1].Origins[j].Weight {
				n++
			}
		}
	}
	return n
}

func pct(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", f*100), "0"), ".") + "%"
}
