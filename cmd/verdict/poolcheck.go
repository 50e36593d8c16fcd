package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// poolCheck is what `verdict check` finds about the experiment's pool: that the run would
// find it, every mapped origin in it, who else is steering it, and what to know before the
// first weight moves.
type poolCheck struct {
	// Provider is "route53" for a Route 53 weighted record set; empty for Cloudflare.
	Provider string `json:"provider,omitempty"`
	// Checked is false when no credentials are configured (Note says so).
	Checked bool   `json:"checked"`
	Note    string `json:"note,omitempty"`
	ID      string `json:"id,omitempty"`
	Name    string `json:"name,omitempty"`
	// Origins are the experiment's origins as the pool has them now.
	Origins []poolCheckOrigin `json:"origins,omitempty"`
	// Claim is another run steering the pool right now (a run would be refused).
	Claim *poolCheckClaim `json:"claim,omitempty"`
	// LastRun is the note the pool's last finished run left.
	LastRun  *traffic.LastRun     `json:"lastRun,omitempty"`
	Warnings []engine.PoolWarning `json:"warnings,omitempty"`
	// Problems fail the check: the run would not start.
	Problems []string `json:"problems,omitempty"`
	// TTLSeconds is a Route 53 set's DNS TTL, the minimum wait after a weight change
	// before an interval counts; Interval is the analysis interval, for the advice.
	TTLSeconds *float64      `json:"ttlSeconds,omitempty"`
	interval   time.Duration // the analysis interval, for the TTL advice
	// SourceOfTruth compares the declared weights (spec.traffic.sourceOfTruth) with the
	// pool; a mismatch is a problem unless accepted.
	SourceOfTruth *sourceDrift `json:"sourceOfTruth,omitempty"`
	// HealthNote says why origin health is not shown (not readable, no monitor).
	HealthNote  string `json:"healthNote,omitempty"`
	health      bool   // a monitor reports on the pool: show the HEALTH column
	live        traffic.Weights
	acceptDrift bool
}

type poolCheckOrigin struct {
	Cluster string  `json:"cluster"`
	Origin  string  `json:"origin"`
	Present bool    `json:"present"`
	Enabled bool    `json:"enabled"`
	Weight  float64 `json:"weight"`
	// Units is the record's Route 53 weight (0–255); Weight is Units/255.
	Units *int64 `json:"units,omitempty"`
	// Healthy is the load balancer's health verdict on the origin; absent when health
	// was not read or no monitor reports on it. Health says it in words.
	Healthy *bool  `json:"healthy,omitempty"`
	Health  string `json:"health,omitempty"`
}

type poolCheckClaim struct {
	Run   string    `json:"run"`
	Owner string    `json:"owner"`
	Since time.Time `json:"since"`
}

// checkPool reads the experiment's pool the way run will. An unreachable or refusing
// Cloudflare is an error (exit 1); a pool the run could not use is a problem in the result.
func checkPool(ctx context.Context, g *globals, exp *experiments.Experiment, now time.Time) (*poolCheck, error) {
	if exp.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
		return checkRecordSet(ctx, g, exp, now)
	}
	cf := exp.Spec.Traffic.Cloudflare
	out := &poolCheck{ID: cf.PoolID}
	if _, err := traffic.CloudflareOptionsFromEnv(os.LookupEnv); errors.Is(err, traffic.ErrNoCredentials) {
		out.Note = "not checked: set CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) to check the pool too"
		return out, nil
	}
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return nil, err
	}
	out.Checked = true
	pool, err := steer.Pool(ctx, exp.Spec.Traffic.PoolRef())
	switch {
	case errors.Is(err, traffic.ErrNotFound):
		out.Problems = append(out.Problems, fmt.Sprintf("pool %s does not exist, or the token cannot see it (spec.traffic.cloudflare.poolID)", cf.PoolID))
		return out, nil
	case err != nil:
		return nil, withCode(exitError, fmt.Errorf("read pool %s: %w", cf.PoolID, err))
	}
	out.Name = pool.Name
	for _, c := range exp.Spec.Clusters() {
		name := cf.Origins[c]
		o, ok := pool.Origin(name)
		out.Origins = append(out.Origins, poolCheckOrigin{Cluster: c, Origin: name, Present: ok, Enabled: ok && o.Enabled, Weight: o.Weight})
		switch {
		case !ok:
			out.Problems = append(out.Problems, fmt.Sprintf("origin %q of cluster %s is not in pool %s (spec.traffic.cloudflare.origins.%s)", name, c, cf.PoolID, c))
		case !o.Enabled:
			out.Problems = append(out.Problems, fmt.Sprintf("origin %q of cluster %s is disabled in pool %s, so it would get no traffic whatever its weight", name, c, cf.PoolID))
		}
	}
	out.addHealth(ctx, steer, exp)
	out.finish(exp, pool, now, cf.PoolID)
	return out, nil
}

// addHealth reads what the load balancer's monitors say about the experiment's origins.
// An unhealthy one is a problem: the run refuses to move weights while it is (it would
// carry none of its share, which the healthy origins would take), and ends check_failed.
func (out *poolCheck) addHealth(ctx context.Context, steer traffic.Steerer, exp *experiments.Experiment) {
	h, ok, err := traffic.ReadHealth(ctx, steer, exp.Spec.Traffic.PoolRef())
	switch {
	case err != nil:
		out.HealthNote = "origin health could not be read: " + err.Error()
		return
	case !ok:
		return
	case !h.Monitored:
		out.HealthNote = "no health monitor reports on this pool: Verdict cannot see an origin the load balancer stops sending traffic to"
		return
	}
	out.health = true
	for i, o := range out.Origins {
		if !o.Present || !o.Enabled {
			continue
		}
		o.Health = h.Describe(o.Origin)
		if _, known := h.Origins[o.Origin]; known {
			healthy := h.OriginHealthy(o.Origin)
			o.Healthy = &healthy
			if !healthy {
				out.Problems = append(out.Problems, fmt.Sprintf("origin %q of cluster %s is %s at the load balancer: it gets no traffic and its share goes to the healthy origins; a run refuses to move weights until it is healthy", o.Origin, o.Cluster, o.Health))
			}
		}
		out.Origins[i] = o
	}
}

// checkRecordSet is checkPool for a Route 53 weighted record set: every cluster's
// SetIdentifier in the set, the weights in Route 53's units, and the DNS TTL.
func checkRecordSet(ctx context.Context, g *globals, exp *experiments.Experiment, now time.Time) (*poolCheck, error) {
	ref := exp.Spec.Traffic.PoolRef()
	out := &poolCheck{Provider: experiments.ProviderRoute53, ID: ref.String(), interval: exp.Spec.Analysis.Interval.Std()}
	if err := awsCredentials(ctx); err != nil {
		out.Note = fmt.Sprintf("not checked: %s (%v)", noAWSCredentials, err)
		return out, nil
	}
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return nil, err
	}
	out.Checked = true
	pool, ttl, err := readPoolAndTTL(ctx, steer, exp)
	switch {
	case errors.Is(err, traffic.ErrNotFound):
		out.Problems = append(out.Problems, fmt.Sprintf("record set %s does not exist in hosted zone %s, or the credentials cannot see it (spec.traffic.route53): %v", ref.Pool, ref.Account, err))
		return out, nil
	case errors.Is(err, route53.ErrNotWeighted):
		out.Problems = append(out.Problems, fmt.Sprintf("%v: Verdict steers weighted records only (spec.traffic.route53)", err))
		return out, nil
	case err != nil:
		return nil, withCode(exitError, fmt.Errorf("read record set %s: %w", ref, err))
	}
	out.Name = pool.Name
	secs := ttl.Seconds()
	out.TTLSeconds = &secs
	ids := exp.Spec.Traffic.Origins()
	for _, c := range exp.Spec.Clusters() {
		id := ids[c]
		o, ok := pool.Origin(id)
		u := route53.Units(o.Weight)
		out.Origins = append(out.Origins, poolCheckOrigin{Cluster: c, Origin: id, Present: ok, Enabled: ok, Weight: o.Weight, Units: &u})
		if !ok {
			out.Problems = append(out.Problems, fmt.Sprintf("no record with SetIdentifier %q (cluster %s) in record set %s (spec.traffic.route53.setIdentifiers.%s)", id, c, ref, c))
		}
	}
	out.finish(exp, pool, now, ref.String())
	return out, nil
}

// finish adds what every provider's check says: whether the plan fits, the claim, the
// last run and the warnings.
func (out *poolCheck) finish(exp *experiments.Experiment, pool traffic.Pool, now time.Time, id string) {
	out.live = pool.Weights()
	if len(out.Problems) == 0 {
		if _, err := experiments.WeightPlan(exp, poolOrigins(pool)); err != nil {
			out.Problems = append(out.Problems, "the pool cannot carry this experiment: "+exp.FieldError(err).Error())
		}
	}
	if c, ok := pool.Claim(); ok {
		out.Claim = &poolCheckClaim{Run: c.Run, Owner: c.Owner, Since: c.Since}
		out.Problems = append(out.Problems, fmt.Sprintf("pool %s is claimed by run %s (driven by %s since %s): a run would be refused until it ends; abort it, or take the pool over if it is dead", id, c.Run, c.Owner, c.Since.UTC().Format(time.RFC3339)))
	}
	if lr, ok := pool.LastRun(); ok {
		out.LastRun = &lr
	}
	out.Warnings = engine.PoolWarnings(exp, pool, now)
}

func printPoolCheck(w io.Writer, pc *poolCheck) {
	if pc == nil {
		return
	}
	kind := "Pool"
	if pc.Provider == experiments.ProviderRoute53 {
		kind = "Route 53 record set"
	}
	fmt.Fprintf(w, "\n%s %s", kind, pc.ID)
	if pc.Name != "" {
		fmt.Fprintf(w, " (%s)", pc.Name)
	}
	fmt.Fprintln(w)
	if !pc.Checked {
		fmt.Fprintf(w, "  %s\n", pc.Note)
		return
	}
	if len(pc.Origins) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if pc.Provider == experiments.ProviderRoute53 {
			fmt.Fprintln(tw, "  CLUSTER\tSETIDENTIFIER\tWEIGHT NOW\tROUTE 53 (of 255)")
		} else if pc.health {
			fmt.Fprintln(tw, "  CLUSTER\tORIGIN\tWEIGHT NOW\tHEALTH")
		} else {
			fmt.Fprintln(tw, "  CLUSTER\tORIGIN\tWEIGHT NOW")
		}
		for _, o := range pc.Origins {
			if o.Units != nil {
				wt, u := fmt.Sprintf("%.4g", o.Weight), fmt.Sprint(*o.Units)
				if !o.Present {
					wt, u = "missing", "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", safeText(o.Cluster), safeText(o.Origin), wt, u)
				continue
			}
			wt := traffic.FormatWeight(o.Weight)
			switch {
			case !o.Present:
				wt = "missing"
			case !o.Enabled:
				wt += " (disabled)"
			}
			if pc.health {
				hl := o.Health
				if hl == "" {
					hl = "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", safeText(o.Cluster), safeText(o.Origin), wt, safeText(hl))
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", safeText(o.Cluster), safeText(o.Origin), wt)
		}
		tw.Flush()
	}
	if pc.HealthNote != "" {
		fmt.Fprintf(w, "  note: %s\n", safeText(pc.HealthNote))
	}
	if pc.TTLSeconds != nil {
		fmt.Fprintf(w, "  %s.\n", ttlAdvice(time.Duration(*pc.TTLSeconds*float64(time.Second)), pc.interval))
	}
	if pc.LastRun != nil {
		fmt.Fprintf(w, "  last run on this pool: %s, %s at %s\n", safeText(pc.LastRun.Run), safeText(pc.LastRun.Verdict), pc.LastRun.Ended.Local().Format(time.DateTime))
	}
	for _, wn := range pc.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", safeText(wn.Message))
	}
	for _, p := range pc.Problems {
		fmt.Fprintf(w, "  ERROR: %s\n", safeText(p))
	}
	printSourceDrift(w, pc.SourceOfTruth, pc.acceptDrift)
}

// checkSource compares the declared source of truth with the pool read: a mismatch (or a
// file that cannot be read) is a problem unless accept (--accept-drift) or the spec's
// onMismatch: warn accepts it.
func (pc *poolCheck) checkSource(exp *experiments.Experiment, accept bool) {
	if pc == nil || !pc.Checked || pc.live == nil {
		return
	}
	d := compareSource(exp, pc.live)
	if d == nil {
		return
	}
	pc.SourceOfTruth = d
	if sot := exp.Spec.Traffic.SourceOfTruth; sot.OnMismatch == experiments.OnMismatchWarn {
		accept = true
	}
	pc.acceptDrift = accept
	switch {
	case d.Error != "":
		pc.Problems = append(pc.Problems, "source of truth: "+d.Error)
	case !d.InSync && !accept:
		pc.Problems = append(pc.Problems, fmt.Sprintf("source of truth %s disagrees with the live pool (%d origins): the next apply would move traffic; a run ends check_failed (--accept-drift to accept here)", d.Source, len(d.Plan.Changes)))
	}
}
