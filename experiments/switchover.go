package experiments

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"time"
)

// Switchover defaults: three steps ending with the cut-over, each judged step held for
// DefaultSwitchoverHold.
const (
	DefaultSwitchoverSteps = "25%,50%,100%"
	DefaultSwitchoverHold  = Duration(10 * time.Minute)
)

// SwitchoverOptions say which two clusters of an experiment file trade traffic and how.
type SwitchoverOptions struct {
	// From is the cluster that gives its traffic away (the baseline); To receives it (the
	// canary), typically a standby at weight 0.
	From, To string
	// Steps is To's share of the two clusters' traffic at each step, as --steps writes it:
	// "25%,50%,100%", a step optionally with its own hold ("25%:5m"). A final 100% (the
	// cut-over) is added when missing. Empty means DefaultSwitchoverSteps.
	Steps string
	// Hold is the hold of every step that does not give its own; 0 means
	// DefaultSwitchoverHold.
	Hold Duration
}

// SwitchoverVariant is the variant key a switchover records on its canary, with the
// cluster it takes over from as value; reports and plans can tell a switchover by it.
const SwitchoverVariant = "switchover-from"

// Switchover derives from e, an experiment file that describes the fleet, the experiment
// that moves the traffic of cluster From to cluster To: To is the canary and From the only
// baseline, so To is judged live against From as it takes over; the other clusters of the
// file are left out and keep their weights. The steps end with the cut-over to 100%, kept
// on promotion; a rollback restores the original weights. The name is
// "<name>-switchover-<from>-to-<to>" (shortened with a hash when longer than 63
// characters). No variant is applied: To runs what it runs.
//
// The result is validated like a file; problems in the flags are reported against the
// flag (--from, --to, --steps, --hold), the others at their place in e's file. The same
// e and options always derive the same experiment, so a run can be resumed with them.
func Switchover(e *Experiment, o SwitchoverOptions) (*Experiment, error) {
	origins := e.Spec.Traffic.Origins()
	clusters := sortedKeys(origins)
	var errs ErrorList
	flagErr := func(flag, format string, a ...any) {
		errs = append(errs, &FieldError{Pos: Pos{File: flag}, Msg: fmt.Sprintf(format, a...)})
	}
	for _, c := range []struct{ flag, name string }{{"--from", o.From}, {"--to", o.To}} {
		switch {
		case c.name == "":
			flagErr(c.flag, "required: a cluster of %s (%s)", e.Metadata.Name, strings.Join(clusters, ", "))
		case origins[c.name] == "":
			msg := fmt.Sprintf("cluster %q is not in %s's %s (clusters: %s)", c.name, e.Metadata.Name, e.Spec.Traffic.originsPath(), strings.Join(clusters, ", "))
			if hint := didYouMean(c.name, clusters); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			flagErr(c.flag, "%s", msg)
		}
	}
	if o.From != "" && o.From == o.To {
		flagErr("--to", "%q is also --from: a switchover moves traffic between two different clusters", o.To)
	}
	hold := o.Hold
	holdFlag := "--hold"
	if hold == 0 {
		hold, holdFlag = DefaultSwitchoverHold, "--hold (default)"
	}
	if hold < 0 {
		flagErr("--hold", "must be a positive duration, got %s", hold)
	}
	spec := o.Steps
	if strings.TrimSpace(spec) == "" {
		spec = DefaultSwitchoverSteps
	}
	steps, stepErrs := parseSwitchoverSteps(spec)
	errs = append(errs, stepErrs...)
	if len(errs) > 0 {
		return nil, errs
	}

	d := &Experiment{APIVersion: e.APIVersion, Kind: e.Kind, Source: e.Source,
		Metadata: Metadata{Name: switchoverName(e.Metadata.Name, o.From, o.To), Labels: maps.Clone(e.Metadata.Labels)}}
	d.Spec = e.Spec
	s := &d.Spec
	s.Description = fmt.Sprintf("switchover from %s to %s, derived from experiment %s (%s)", o.From, o.To, e.Metadata.Name, e.Source.File)
	// Nothing is applied: To runs whatever it runs, and the comparison is To against From.
	s.Canary = Canary{Cluster: o.To, Variant: map[string]string{SwitchoverVariant: o.From}}
	s.Baselines = []string{o.From}
	pair := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for _, c := range []string{o.From, o.To} {
			if v, ok := m[c]; ok {
				out[c] = v
			}
		}
		return out
	}
	t := &s.Traffic
	if cf := t.Cloudflare; cf != nil {
		c := *cf
		c.Origins = pair(cf.Origins)
		t.Cloudflare = &c
	}
	if r := t.Route53; r != nil {
		c := *r
		c.SetIdentifiers = pair(r.SetIdentifiers)
		t.Route53 = &c
	}
	if sot := t.SourceOfTruth; sot != nil {
		c := *sot
		if tf := c.Terraform; tf != nil {
			x := *tf
			if x.Keys != nil {
				x.Keys = pair(x.Keys)
			}
			c.Terraform = &x
		}
		if v := c.Values; v != nil {
			x := *v
			if x.Keys != nil {
				x.Keys = pair(x.Keys)
			}
			c.Values = &x
		}
		t.SourceOfTruth = &c
	}
	t.OnPromote, t.OnRollback = OnPromoteKeep, OnRollbackRestore

	// Positions: what the file wrote stays where it was written; what the flags decided
	// points at the flag. Paths of the file's own canary, baselines and steps would point
	// at lines that no longer describe this experiment, so they go.
	d.positions, d.nulls = map[string]Pos{}, map[string]bool{}
	for p, pos := range e.positions {
		if under(p, "spec.traffic.steps") || under(p, "spec.canary") || under(p, "spec.baselines") ||
			under(p, "spec.traffic.onPromote") || under(p, "spec.traffic.onRollback") {
			continue
		}
		d.positions[p] = pos
	}
	maps.Copy(d.nulls, e.nulls)
	d.positions["spec.canary.cluster"] = Pos{File: "--to"}
	d.positions["spec.baselines"] = Pos{File: "--from"}
	d.positions["spec.baselines[0]"] = Pos{File: "--from"}
	d.positions["spec.traffic.steps"] = Pos{File: "--steps"}
	t.Steps = make([]Step, len(steps))
	for i, st := range steps {
		p := fmt.Sprintf("spec.traffic.steps[%d]", i)
		d.positions[p] = Pos{File: "--steps"}
		d.positions[p+".weight"] = Pos{File: "--steps"}
		t.Steps[i] = Step{Weight: st.Weight}
		if st.Weight >= 1 {
			continue // the cut-over is written on promotion, not held
		}
		t.Steps[i].Hold = hold
		d.positions[p+".hold"] = Pos{File: holdFlag}
		if st.Hold != 0 {
			t.Steps[i].Hold = st.Hold
			d.positions[p+".hold"] = Pos{File: "--steps"}
		}
	}
	if !e.isSet("spec.analysis.maxDuration") {
		// The file's default was twice its own holds; this ramp has its own.
		s.Analysis.MaxDuration = Duration(DefaultMaxDurationPerHold * s.TotalHold())
	}
	if err := d.Validate().Err(); err != nil {
		return d, err
	}
	return d, nil
}

// SwitchoverNote is what a switchover's plan and promotion say about the cluster it took
// the traffic from: "switchover: after promotion c2 (o2) carries no traffic and stands by
// at weight 0; switch back with --from c1 --to c2". It is "" unless s was derived by
// Switchover. Unlike a migration's legacy clusters, that cluster is not to be removed.
func (s *Spec) SwitchoverNote() string {
	from := s.Canary.Variant[SwitchoverVariant]
	if from == "" || len(s.Baselines) != 1 || s.Baselines[0] != from || !s.Traffic.Migration() {
		return ""
	}
	return fmt.Sprintf("switchover: after promotion %s (%s) carries no traffic and stands by at weight 0; switch back with --from %s --to %s",
		from, s.Traffic.Origins()[from], s.Canary.Cluster, from)
}

// under reports whether path is field or inside it.
func under(path, field string) bool {
	return path == field || strings.HasPrefix(path, field+".") || strings.HasPrefix(path, field+"[")
}

// parseSwitchoverSteps reads --steps: comma-separated shares, each optionally with a
// hold after a colon, strictly increasing, ending with 100% (added when missing).
func parseSwitchoverSteps(spec string) ([]Step, ErrorList) {
	var errs ErrorList
	bad := func(format string, a ...any) {
		errs = append(errs, &FieldError{Pos: Pos{File: "--steps"}, Msg: fmt.Sprintf(format, a...)})
	}
	var steps []Step
	prev := Fraction(0)
	for i, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		w, h, withHold := strings.Cut(item, ":")
		var st Step
		if err := st.Weight.decodeScalar(w); err != nil || w == "" {
			bad("step %d: %q is not a share like 25%%", i+1, item)
			continue
		}
		if withHold {
			if err := st.Hold.decodeScalar(h); err != nil || st.Hold <= 0 {
				bad("step %d: hold %q is not a positive duration like 10m", i+1, h)
				continue
			}
		}
		switch {
		case st.Weight <= 0 || st.Weight > 1:
			bad("step %d: %s must be above 0%% and at most 100%%", i+1, st.Weight)
		case st.Weight <= prev:
			bad("step %d: steps must increase strictly: %s does not exceed %s", i+1, st.Weight, prev)
		case st.Weight >= 1 && withHold:
			bad("step %d: 100%% is the cut-over, written when the run promotes, so it has no hold", i+1)
		}
		prev = max(prev, st.Weight)
		steps = append(steps, st)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if steps[len(steps)-1].Weight < 1 {
		steps = append(steps, Step{Weight: 1})
	}
	if len(steps) < 2 {
		bad("%q has no step before the cut-over to 100%%: add at least one, e.g. 50%%,100%%, where the target is judged against the source", spec)
		return nil, errs
	}
	return steps, nil
}

// switchoverName is "<name>-switchover-<from>-to-<to>", made a valid metadata.name:
// lower case, other characters as '-', and when longer than 63 characters cut and ended
// with a hash of the full name, so that two switchovers never share a name.
func switchoverName(name, from, to string) string {
	full := name + "-switchover-" + from + "-to-" + to
	var b strings.Builder
	for _, r := range strings.ToLower(full) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(full))
	return strings.Trim(n[:min(len(n), 54)], "-") + "-" + hex.EncodeToString(sum[:4])
}
