package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/traffic"
)

// drainArgs are the parsed arguments of verdict drain and verdict restore.
type drainArgs struct {
	origin string // drain: required; restore: optional (only this origin)
	// experiment is an experiment file whose origins map turns a cluster name into its
	// origin (and whose pool and account are the defaults); cluster is the name given when
	// it was a cluster.
	experiment string
	cluster    string
	pool       string
	account    string
	yes        bool
	force      bool // go ahead although a run has claimed the pool
}

func addPoolFlags(cmd *cobra.Command, a *drainArgs) {
	cmd.Flags().StringVar(&a.pool, "pool", "", "Cloudflare pool ID (required)")
	cmd.Flags().StringVar(&a.account, "account", "", "Cloudflare account ID (default $"+traffic.EnvCloudflareAccount+")")
	cmd.Flags().BoolVar(&a.yes, "yes", false, "apply the change; without it the command is a dry run")
	cmd.Flags().BoolVar(&a.force, "force", false, "change the pool although a Verdict run has claimed it (the run will see the change as drift)")
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "experiment file whose origins map resolves CLUSTER to its origin (its pool and account are then the defaults)")
}

// resolveTarget reads --experiment, if given: it fills --pool and --account when they are
// not set, and turns a cluster name into its origin through the origins map. A name that
// is not a cluster there is taken as an origin name.
func resolveTarget(a *drainArgs) error {
	if a.experiment == "" {
		return nil
	}
	exp, err := loadExperiment(a.experiment, "")
	if err != nil {
		return err
	}
	cf := exp.Spec.Traffic.Cloudflare
	if cf == nil {
		return usageErrorf("--experiment %s: drain and restore work on Cloudflare pools; %s steers %s", a.experiment, exp.Metadata.Name, exp.Spec.Traffic.Provider())
	}
	if a.pool == "" {
		a.pool = cf.PoolID
	}
	if a.account == "" {
		a.account = cf.AccountID
	}
	if o, ok := cf.Origins[a.origin]; ok && a.origin != "" {
		a.cluster, a.origin = a.origin, o
	}
	return nil
}

// targetText names what a drain or restore acts on, and how the name given was read.
func targetText(a drainArgs) string {
	switch {
	case a.cluster != "":
		return fmt.Sprintf("cluster %s, origin %s (from the origins map of %s)", a.cluster, a.origin, a.experiment)
	case a.experiment != "":
		return fmt.Sprintf("origin %s (not a cluster in %s: taken as an origin name)", a.origin, a.experiment)
	default:
		return fmt.Sprintf("origin %s (an origin name; with --experiment FILE a cluster name works too)", a.origin)
	}
}

func newDrainCmd(g *globals) *cobra.Command {
	var a drainArgs
	cmd := &cobra.Command{
		Use:   "drain CLUSTER|ORIGIN (--pool POOL_ID | --experiment FILE)",
		Short: "Take a cluster's origin out of a pool's traffic (before upgrading it)",
		Long: `Drain sets the cluster's origin in the pool to weight 0. Name the origin as the pool knows it,
or name the cluster and pass --experiment FILE: its origins map gives the cluster's origin
(and its pool and account are the defaults); the output says which it was.

Every other origin keeps its weight, so the drained origin's share goes to the other enabled
origins in proportion to their weights. The weight it had is saved in the state directory (drains/POOL_ID.json)
for verdict restore.

Drain refuses to take away the last origin carrying traffic, or to leave fewer origins
carrying traffic than the pool's minimum_origins. It also refuses a pool that a Verdict
run has claimed (the claim is in the pool's description, whatever state directory the
run uses), naming the run, who drives it and since when; --force drains it anyway, and
the run meets the change as drift at its next step. Without --yes it only shows the
before/after table.

Credentials come from CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE),
CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_BASE_URL (point it at verdict emulate cloudflare to
rehearse).`,
		Example: "  verdict drain prod-euw1-monday-snorlax --experiment examples/karpenter.yaml\n  verdict drain eu-west --pool 9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c\n  verdict drain eu-west --pool 9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.origin = args[0]
			a.yes = explicitYes(cmd, g, a.yes)
			return runDrain(cmd.Context(), g, a)
		},
	}
	addPoolFlags(cmd, &a)
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var a drainArgs
	cmd := &cobra.Command{
		Use:   "restore [CLUSTER|ORIGIN] (--pool POOL_ID | --experiment FILE)",
		Short: "Put back the weights saved by verdict drain",
		Long: `Restore gives every origin drained from the pool (or only CLUSTER) the weight it had
before the drain, as saved in the state directory. It refuses if a drained origin is no
longer at weight 0 — someone changed the pool since — and writes nothing. Like drain, it
refuses a pool that a Verdict run has claimed unless --force. Without --yes it only shows
the before/after table.`,
		Example: "  verdict restore --pool 9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c --yes",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				a.origin = args[0]
			}
			a.yes = explicitYes(cmd, g, a.yes)
			return runRestore(cmd.Context(), g, a)
		},
	}
	addPoolFlags(cmd, &a)
	return cmd
}

// explicitYes honours --yes only when it was typed on the command line: a VERDICT_YES in
// the environment or "yes: true" in a config file must not turn every drain into a live one.
func explicitYes(cmd *cobra.Command, g *globals, yes bool) bool {
	if yes && !cmd.Flags().Changed("yes") {
		g.log.Warn("ignoring --yes from the environment or config file; pass --yes on the command line to apply")
		return false
	}
	return yes
}

// cloudflareFromEnv builds the Cloudflare Steerer from the environment, with --account
// taking precedence over CLOUDFLARE_ACCOUNT_ID.
func cloudflareFromEnv(g *globals, account string) (*traffic.Cloudflare, error) {
	o, err := traffic.CloudflareOptionsFromEnv(os.LookupEnv)
	if errors.Is(err, traffic.ErrNoCredentials) {
		return nil, usageErrorf("%v", err)
	}
	if account != "" {
		o.AccountID = account
	}
	if o.AccountID == "" {
		return nil, usageErrorf("no Cloudflare account: pass --account or set %s", traffic.EnvCloudflareAccount)
	}
	o.Logger = g.log
	c, err := traffic.NewCloudflare(o)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return c, nil
}

func checkPoolArgs(a drainArgs) error {
	if a.pool == "" {
		return usageErrorf("--pool is required: the Cloudflare pool ID")
	}
	if _, err := traffic.DrainRecordPath("", a.pool); err != nil {
		return usageErrorf("--pool: %v", err)
	}
	return nil
}

// readPool reads the pool; an unknown pool is the user's input, hence exit 2.
func readPool(ctx context.Context, s traffic.Steerer, ref traffic.PoolRef) (traffic.Pool, error) {
	p, err := s.Pool(ctx, ref)
	if errors.Is(err, traffic.ErrNotFound) {
		return p, withCode(exitInvalid, fmt.Errorf("--pool %s: %w", ref.Pool, err))
	}
	if err != nil {
		return p, withCode(exitError, err)
	}
	return p, nil
}

func runDrain(ctx context.Context, g *globals, a drainArgs) error {
	if err := resolveTarget(&a); err != nil {
		return err
	}
	if err := checkPoolArgs(a); err != nil {
		return err
	}
	state, err := g.stateDir()
	if err != nil {
		return withCode(exitError, err)
	}
	cf, err := cloudflareFromEnv(g, a.account)
	if err != nil {
		return err
	}
	ref := traffic.PoolRef{Account: a.account, Pool: a.pool}
	p, err := readPool(ctx, cf, ref)
	if err != nil {
		return err
	}
	plan, err := traffic.PlanDrain(p, a.origin)
	if err != nil {
		if a.cluster == "" && a.experiment == "" {
			err = fmt.Errorf("%w (drain takes the origin's name in the pool; to name a cluster, add --experiment FILE so its origins map can resolve it)", err)
		}
		return withCode(exitInvalid, err)
	}
	v := &changeView{g: g, kind: "drain", origin: a.origin, cluster: a.cluster, subject: targetText(a), plan: plan}
	if err := v.addHealth(ctx, cf, ref); err != nil {
		return err
	}
	if plan.NoOp() {
		return v.render(false, fmt.Sprintf("Origin %q already has weight 0; nothing to do.", a.origin))
	}
	if err := v.checkClaim(ref, a); err != nil {
		return err
	}
	if !a.yes {
		return v.render(false, v.forcedNote()+"Dry run: nothing changed. Re-run with --yes to apply.")
	}

	// Save the weight to come back to before touching the pool, so a crash after the
	// write still leaves a way back.
	rec, _, err := traffic.LoadDrainRecord(state, a.pool)
	if err != nil {
		return withCode(exitError, err)
	}
	prev, had := rec.Origins[a.origin]
	rec.Account = a.account
	rec.Origins[a.origin] = traffic.DrainedOrigin{Weight: plan.Expect[a.origin], DrainedAt: time.Now().UTC()}
	if err := traffic.SaveDrainRecord(state, rec); err != nil {
		return withCode(exitError, err)
	}
	if err := cf.SetWeights(ctx, ref, plan.Want, plan.Expect); err != nil {
		var de *traffic.DriftError
		if errors.As(err, &de) && de.Phase != traffic.PhaseAfterWrite {
			// Nothing was written: forget the weight we just saved.
			if had {
				rec.Origins[a.origin] = prev
			} else {
				delete(rec.Origins, a.origin)
			}
			if serr := traffic.SaveDrainRecord(state, rec); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		return withCode(exitError, fmt.Errorf("drain %q: %w", a.origin, err))
	}
	path, _ := traffic.DrainRecordPath(state, a.pool)
	return v.render(true, v.forcedNote()+fmt.Sprintf("Drained %q. Saved its weight %s to %s; put it back with: verdict restore --pool %s --yes",
		a.origin, traffic.FormatWeight(plan.Expect[a.origin]), path, a.pool))
}

func runRestore(ctx context.Context, g *globals, a drainArgs) error {
	if err := resolveTarget(&a); err != nil {
		return err
	}
	if err := checkPoolArgs(a); err != nil {
		return err
	}
	state, err := g.stateDir()
	if err != nil {
		return withCode(exitError, err)
	}
	rec, ok, err := traffic.LoadDrainRecord(state, a.pool)
	if err != nil {
		return withCode(exitError, err)
	}
	path, _ := traffic.DrainRecordPath(state, a.pool)
	if !ok {
		return usageErrorf("nothing to restore: no drain of pool %s is saved (%s)", a.pool, path)
	}
	if a.account == "" {
		a.account = rec.Account
	}
	cf, err := cloudflareFromEnv(g, a.account)
	if err != nil {
		return err
	}
	ref := traffic.PoolRef{Account: a.account, Pool: a.pool}
	p, err := readPool(ctx, cf, ref)
	if err != nil {
		return err
	}
	plan, err := traffic.PlanRestore(p, rec, a.origin)
	if err != nil {
		return withCode(exitInvalid, err)
	}
	v := &changeView{g: g, kind: "restore", origin: a.origin, cluster: a.cluster, plan: plan}
	if a.origin != "" {
		v.subject = targetText(a)
	}
	if err := v.addHealth(ctx, cf, ref); err != nil {
		return err
	}
	if err := traffic.CheckDrift(p, ref, "before write", plan.Expect); err != nil {
		_ = v.render(false, "")
		return withCode(exitError, fmt.Errorf("%w\nThe pool changed since the drain; check it, then edit or delete %s", err, path))
	}
	if plan.NoOp() {
		return v.render(false, "Weights are already as saved; nothing to do.")
	}
	if err := v.checkClaim(ref, a); err != nil {
		return err
	}
	if !a.yes {
		return v.render(false, v.forcedNote()+"Dry run: nothing changed. Re-run with --yes to apply.")
	}
	if err := cf.SetWeights(ctx, ref, plan.Want, plan.Expect); err != nil {
		return withCode(exitError, fmt.Errorf("restore pool %s: %w", a.pool, err))
	}
	for name := range plan.Want {
		delete(rec.Origins, name)
	}
	if err := traffic.SaveDrainRecord(state, rec); err != nil {
		return withCode(exitError, fmt.Errorf("weights restored, but updating %s failed: %w", path, err))
	}
	return v.render(true, v.forcedNote()+"Restored the saved weights.")
}

// addHealth reads the pool's origin health so the preview shows the shares the load
// balancer really gives (an unhealthy origin carries nothing). A change that would leave
// no healthy origin carrying traffic is refused after showing the table. A failed health
// read is logged and the preview falls back to weights alone, saying so.
func (v *changeView) addHealth(ctx context.Context, s traffic.Steerer, ref traffic.PoolRef) error {
	h, ok, err := traffic.ReadHealth(ctx, s, ref)
	if err != nil {
		v.g.log.Warn("could not read the pool's origin health; shares assume every enabled origin is healthy", "pool", ref.String(), "err", err)
		v.healthNote = "Origin health could not be read (" + err.Error() + "); the shares assume every enabled origin is healthy."
		return nil
	}
	if !ok {
		return nil
	}
	plan, err := v.plan.WithHealth(h)
	v.plan = plan
	if err != nil {
		_ = v.render(false, "")
		return withCode(exitInvalid, err)
	}
	v.healthNote = plan.UnhealthyNote()
	return nil
}

// note joins the health note with a command's message.
func (v *changeView) note(message string) string {
	switch {
	case v.healthNote == "":
		return message
	case message == "":
		return v.healthNote
	}
	return v.healthNote + "\n" + message
}

// checkClaim refuses a change to a pool a run has claimed, after showing the table with
// the claim, unless --force; with --force it notes the override for the final message.
func (v *changeView) checkClaim(ref traffic.PoolRef, a drainArgs) error {
	err := traffic.RefuseClaimed(v.plan.Pool, ref)
	if err == nil {
		return nil
	}
	if a.force {
		v.forced = true
		c, _ := v.plan.Pool.Claim()
		v.g.log.Warn("overriding the pool's claim (--force)", "pool", ref.String(), "run", c.Run, "owner", c.Owner)
		return nil
	}
	_ = v.render(false, "")
	c, _ := v.plan.Pool.Claim()
	return withCode(exitInvalid, fmt.Errorf("%s %s: %w\nRun %s is steering this pool, so changing its weights would skew that experiment. "+
		"Let it finish or abort it (verdict abort %s), or pass --force to %s anyway", v.kind, v.target(), err, c.Run, c.Run, v.kind))
}

func (v *changeView) target() string {
	if v.origin != "" {
		return strconv.Quote(v.origin)
	}
	return "pool " + v.plan.Pool.ID
}

// forcedNote is the first line of the final message when --force overrode a claim.
func (v *changeView) forcedNote() string {
	if !v.forced {
		return ""
	}
	c, _ := v.plan.Pool.Claim()
	return fmt.Sprintf("Overrode the claim of run %s (driven by %s since %s) because of --force; the run will see this change as drift at its next step.\n",
		c.Run, c.Owner, c.Since.UTC().Format(time.RFC3339))
}

// changeView renders a drain or restore as a before/after table, or as one JSON message.
type changeView struct {
	g      *globals
	kind   string // drain | restore
	origin string
	// cluster is the cluster whose origin this is, when the command was given a cluster;
	// target says what the name given was read as.
	cluster, subject string
	plan             traffic.ChangePlan
	forced           bool // --force overrode a run's claim
	// healthNote says which origins are unhealthy, or that health could not be read.
	healthNote string
}

func (v *changeView) render(applied bool, message string) error {
	claim, claimed := v.plan.Pool.Claim()
	message = v.note(message)
	if v.g.json() {
		kind := server.KindDrainResult
		if v.kind == "restore" {
			kind = server.KindRestoreResult
		}
		msg := server.DrainResult{TypeMeta: server.Meta(kind), Pool: v.plan.Pool.ID, PoolName: v.plan.Pool.Name,
			Origin: v.origin, Cluster: v.cluster, Applied: applied, Message: message, ClaimOverridden: v.forced}
		if claimed {
			msg.Claim = &server.PoolClaim{Run: claim.Run, Owner: claim.Owner, Since: claim.Since.UTC()}
		}
		for _, c := range v.plan.Changes {
			o := server.DrainOrigin{Name: c.Name, Enabled: c.Enabled,
				WeightBefore: c.Before, WeightAfter: c.After, ShareBefore: round4(c.ShareBefore), ShareAfter: round4(c.ShareAfter), Health: c.Health}
			if c.Health != "" && c.Health != "unknown" {
				healthy := !c.Unhealthy
				o.Healthy = &healthy
			}
			msg.Origins = append(msg.Origins, o)
		}
		if err := writeJSON(v.g.stdout, msg); err != nil {
			return withCode(exitError, err)
		}
		return nil
	}
	if v.subject != "" {
		fmt.Fprintf(v.g.stdout, "%s %s\n", strings.ToUpper(v.kind[:1])+v.kind[1:]+":", safeText(v.subject))
	}
	printChangeTable(v.g.stdout, v.kind, v.plan)
	if claimed {
		fmt.Fprintf(v.g.stdout, "\nClaimed by run %s (driven by %s since %s).\n", claim.Run, claim.Owner, claim.Since.UTC().Format(time.RFC3339))
	}
	if message != "" {
		fmt.Fprintf(v.g.stdout, "\n%s\n", message)
	}
	return nil
}

func round4(f float64) float64 { return float64(int64(f*10000+0.5)) / 10000 }

// printChangeTable prints every origin's weight and traffic share before and after, with
// ~ marking the origins whose weight changes (as terraform plan marks updates).
func printChangeTable(w io.Writer, kind string, plan traffic.ChangePlan) {
	fmt.Fprintf(w, "%s pool %s (%s)\n\n", strings.ToUpper(kind[:1])+kind[1:], plan.Pool.ID, plan.Pool.Name)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The HEALTH column appears when a monitor reports on the pool.
	health := plan.Health != nil && plan.Health.Monitored
	head := "  ORIGIN\tENABLED\tWEIGHT BEFORE\tWEIGHT AFTER\tSHARE BEFORE\tSHARE AFTER"
	if health {
		head += "\tHEALTH"
	}
	fmt.Fprintln(tw, head)
	for _, c := range plan.Changes {
		mark := "  "
		if c.Changed() {
			mark = "~ "
		}
		enabled := "yes"
		if !c.Enabled {
			enabled = "no"
		}
		line := fmt.Sprintf("%s%s\t%s\t%.2f\t%.2f\t%s\t%s", mark, c.Name, enabled, c.Before, c.After, sharePct(c.ShareBefore), sharePct(c.ShareAfter))
		if health {
			line += "\t" + c.Health
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

func sharePct(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", f*100), "0"), ".") + "%"
}
