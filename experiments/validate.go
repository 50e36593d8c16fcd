package experiments

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/metrics"
)

// validator accumulates problems with their positions.
type validator struct {
	e    *Experiment
	errs ErrorList
}

func (v *validator) errorf(path, format string, a ...any) {
	v.errs = append(v.errs, &FieldError{Pos: v.e.Pos(path), Path: path, Msg: fmt.Sprintf(format, a...)})
}

// written reports whether the file set path; an empty value ("key:") means not set.
func (v *validator) written(path string) bool { return v.e.isSet(path) }

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	kpiName    = regexp.MustCompile(`^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	poolIDChar = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// checkExplicitZeros catches fields written as zero that would otherwise be silently
// replaced by their defaults.
func (e *Experiment) checkExplicitZeros() ErrorList {
	v := &validator{e: e}
	a := e.Spec.Analysis
	ap := e.Spec.Canary.Apply
	for path, zero := range map[string]bool{
		"spec.analysis.interval":              a.Interval == 0,
		"spec.analysis.alpha":                 a.Alpha == 0,
		"spec.analysis.minIntervals":          a.MinIntervals == 0,
		"spec.analysis.maxDuration":           a.MaxDuration == 0,
		"spec.analysis.noDataTimeout":         a.NoDataTimeout == 0,
		"spec.prometheus.timeout":             e.Spec.Prometheus.Timeout == 0,
		"spec.canary.apply.hook.timeout":      ap != nil && ap.Hook != nil && ap.Hook.Timeout == 0,
		"spec.canary.apply.readiness.timeout": ap != nil && ap.Readiness != nil && ap.Readiness.Timeout == 0,
	} {
		if zero && v.written(path) {
			v.errorf(path, "must be positive (leave it out for the default)")
		}
	}
	if a.ShareTolerance == 0 && v.written("spec.analysis.shareTolerance") {
		v.errorf("spec.analysis.shareTolerance", "must be above 0%% and at most %s (leave it out for the default %s)", Fraction(MaxShareTolerance), Fraction(DefaultShareTolerance))
	}
	for i, k := range e.Spec.KPIs {
		if g := k.Guardrail; g != nil && g.For == 0 && v.written(fmt.Sprintf("spec.kpis[%d].guardrail.for", i)) {
			v.errorf(fmt.Sprintf("spec.kpis[%d].guardrail.for", i), "must be at least 1 interval")
		}
	}
	return v.errs
}

// Validate checks the whole experiment after defaults and returns every problem found.
func (e *Experiment) Validate() ErrorList {
	v := &validator{e: e}
	v.header()
	v.clusters()
	v.apply()
	v.traffic()
	v.sourceOfTruth()
	v.prometheus()
	v.kpis()
	v.analysis()
	v.preconditions()
	v.capacity()
	v.notify()
	v.errs.sort()
	return v.errs
}

func (v *validator) header() {
	e := v.e
	switch e.APIVersion {
	case APIVersion:
	case "":
		v.errorf("apiVersion", "required: %s", APIVersion)
	default:
		v.errorf("apiVersion", "unsupported version %q; this verdict reads %s", e.APIVersion, APIVersion)
	}
	switch e.Kind {
	case Kind:
	case "":
		v.errorf("kind", "required: %s", Kind)
	default:
		v.errorf("kind", "must be %s, not %q", Kind, e.Kind)
	}
	switch n := e.Metadata.Name; {
	case n == "":
		v.errorf("metadata.name", "required")
	case len(n) > 63 || !dnsLabel.MatchString(n):
		v.errorf("metadata.name", "%q must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", n)
	}
}

func (v *validator) clusters() {
	s := &v.e.Spec
	if s.Canary.Cluster == "" {
		v.errorf("spec.canary.cluster", "required: the cluster that runs the variant")
	}
	if len(s.Baselines) == 0 {
		v.errorf("spec.baselines", "required: at least one baseline cluster to compare against")
	}
	seen := map[string]bool{}
	for i, b := range s.Baselines {
		p := fmt.Sprintf("spec.baselines[%d]", i)
		switch {
		case b == "":
			v.errorf(p, "empty cluster name")
		case b == s.Canary.Cluster:
			v.errorf(p, "%q is the canary; a cluster cannot be its own baseline", b)
		case seen[b]:
			v.errorf(p, "duplicate cluster %q", b)
		}
		seen[b] = true
	}
}

func (v *validator) traffic() {
	s := &v.e.Spec
	t := &s.Traffic
	switch {
	case t.Cloudflare != nil && t.Route53 != nil:
		v.errorf("spec.traffic.route53", "set either spec.traffic.cloudflare (a Cloudflare load balancer pool) or spec.traffic.route53 (a Route 53 weighted record set), not both")
	case t.Cloudflare != nil:
		v.cloudflare(t.Cloudflare)
	case t.Route53 != nil:
		v.route53(t.Route53)
	default:
		v.errorf("spec.traffic", "required: spec.traffic.cloudflare (a Cloudflare load balancer pool) or spec.traffic.route53 (a Route 53 weighted record set) that carries the clusters")
	}

	if len(t.Steps) == 0 {
		v.errorf("spec.traffic.steps", "required: at least one step, e.g. {weight: 5%%, hold: 10m}")
	}
	prev := Fraction(0)
	for i, st := range t.Steps {
		p := fmt.Sprintf("spec.traffic.steps[%d]", i)
		if !v.written(p + ".weight") {
			v.errorf(p, "weight is required")
		} else if st.Weight <= 0 || st.Weight > 1 {
			v.errorf(p+".weight", "must be above 0%% and at most 100%%, got %s", st.Weight)
		} else if st.Weight <= prev {
			v.errorf(p+".weight", "steps must increase strictly: %s does not exceed the previous step's %s", st.Weight, prev)
		}
		prev = max(prev, st.Weight)
		if i == len(t.Steps)-1 && st.Weight >= 1 {
			v.cutOver(p, i)
			continue
		}
		switch {
		case !v.written(p + ".hold"):
			v.errorf(p, "hold is required, e.g. hold: 10m")
		case st.Hold <= 0:
			v.errorf(p+".hold", "must be a positive duration")
		case st.Hold < s.Analysis.Interval:
			v.errorf(p+".hold", "%s is shorter than one analysis interval (%s)", st.Hold, s.Analysis.Interval)
		}
		if v.written(p + ".minHold") {
			switch {
			case st.MinHold <= 0:
				v.errorf(p+".minHold", "must be a positive duration (leave it out to hold the full %s)", st.Hold)
			case st.Hold > 0 && st.MinHold > st.Hold:
				v.errorf(p+".minHold", "%s is longer than the step's hold of %s", st.MinHold, st.Hold)
			case st.MinHold < s.Analysis.Interval:
				v.errorf(p+".minHold", "%s is shorter than one analysis interval (%s): no KPI can be judged before the first interval ends", st.MinHold, s.Analysis.Interval)
			}
		}
	}
	if t.OnPromote != OnPromoteKeep && t.OnPromote != OnPromoteRestore {
		v.errorf("spec.traffic.onPromote", "must be keep or restore, not %q", t.OnPromote)
	}
	if t.OnRollback != OnRollbackRestore && t.OnRollback != OnRollbackDrain {
		v.errorf("spec.traffic.onRollback", "must be restore or drain, not %q", t.OnRollback)
	}
}

// cutOver checks a migration's final 100% step (steps[i]): the baselines would carry no
// traffic to compare against, so it is written as the promotion rather than held.
func (v *validator) cutOver(p string, i int) {
	const why = "a final step of 100%% is the migration's cut-over: the baselines would carry no traffic to compare against, so it is not held or judged but written when the run promotes"
	if i == 0 {
		v.errorf(p+".weight", why+"; add a step before it (e.g. {weight: 50%%, hold: 30m}) where the canary is judged against the baselines")
	}
	for _, f := range []string{"hold", "minHold"} {
		if v.written(p + "." + f) {
			v.errorf(p+"."+f, why+"; remove %s", f)
		}
	}
	if v.e.Spec.Traffic.OnPromote == OnPromoteRestore {
		v.errorf("spec.traffic.onPromote", "restore would put the legacy clusters' weights back instead of cutting over to the canary; a migration (final step 100%%) needs onPromote: keep")
	}
}

func (v *validator) cloudflare(cf *Cloudflare) {
	switch {
	case cf.PoolID == "":
		v.errorf("spec.traffic.cloudflare.poolID", "required: the Cloudflare load balancer pool that carries the clusters")
	case !poolIDChar.MatchString(cf.PoolID):
		v.errorf("spec.traffic.cloudflare.poolID", "%q is not a pool ID", cf.PoolID)
	}
	if cf.AccountID != "" && !poolIDChar.MatchString(cf.AccountID) {
		v.errorf("spec.traffic.cloudflare.accountID", "%q is not an account ID", cf.AccountID)
	}
	v.originMap("spec.traffic.cloudflare.origins", cf.Origins, "origin", "the pool origin of every cluster")
}

// route53RecordTypes are the record types Route 53 can route by weight.
var route53RecordTypes = []string{"A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "MX", "NAPTR", "PTR", "SPF", "SRV", "SSHFP", "SVCB", "TLSA", "TXT"}

var (
	hostedZoneID = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)
	dnsName      = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?\.?$`)
)

func (v *validator) route53(r *Route53) {
	zone := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(r.HostedZoneID), "/hostedzone/"), "hostedzone/")
	switch {
	case zone == "":
		v.errorf("spec.traffic.route53.hostedZoneID", "required: the ID of the hosted zone that holds the record set, e.g. Z0123456789ABCDEFGHIJ")
	case !hostedZoneID.MatchString(zone):
		v.errorf("spec.traffic.route53.hostedZoneID", "%q is not a hosted zone ID (letters and digits, e.g. Z0123456789ABCDEFGHIJ)", r.HostedZoneID)
	}
	name := strings.TrimSpace(r.Record)
	switch {
	case name == "":
		v.errorf("spec.traffic.route53.record", "required: the weighted record set's name, e.g. api.example.com")
	case len(strings.TrimSuffix(name, ".")) > 253 || !dnsName.MatchString(name):
		v.errorf("spec.traffic.route53.record", "%q is not a DNS name like api.example.com", r.Record)
	}
	if typ := strings.ToUpper(strings.TrimSpace(r.Type)); !slices.Contains(route53RecordTypes, typ) {
		msg := fmt.Sprintf("%q is not a record type Route 53 routes by weight (%s)", r.Type, strings.Join(route53RecordTypes, ", "))
		if hint := didYouMean(typ, route53RecordTypes); hint != "" {
			msg += fmt.Sprintf("; did you mean %q?", hint)
		}
		v.errorf("spec.traffic.route53.type", "%s", msg)
	}
	v.originMap("spec.traffic.route53.setIdentifiers", r.SetIdentifiers, "SetIdentifier", "the SetIdentifier of every cluster's weighted record")
}

// originMap checks a cluster → origin map: every cluster mapped, no cluster that is not in
// the experiment, no origin shared by two clusters. what names an origin in messages.
func (v *validator) originMap(path string, origins map[string]string, what, required string) {
	s := &v.e.Spec
	if len(origins) == 0 {
		v.errorf(path, "required: %s", required)
		return
	}
	clusters := s.Clusters()
	for _, c := range clusters {
		if c != "" && origins[c] == "" {
			v.errorf(path, "no %s for cluster %q", what, c)
		}
	}
	known := s.Canary.Cluster != "" && len(s.Baselines) > 0 && !slices.Contains(s.Baselines, "")
	byOrigin := map[string]string{}
	for _, c := range sortedKeys(origins) {
		o := origins[c]
		p := path + "." + c
		// With the canary or a baseline missing, an unmatched origin is most likely that
		// cluster's: saying it is neither would only repeat the first error, wrongly.
		if known && !slices.Contains(clusters, c) {
			msg := fmt.Sprintf("cluster %q is neither the canary nor a baseline", c)
			if hint := didYouMean(c, clusters); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			v.errorf(p, "%s", msg)
		}
		if prev, dup := byOrigin[o]; dup && o != "" {
			v.errorf(p, "%s %q is already the %s of cluster %q", what, o, what, prev)
		}
		byOrigin[o] = c
	}
}

func (v *validator) prometheus() {
	p := &v.e.Spec.Prometheus
	if p.Address == "" {
		v.errorf("spec.prometheus.address", "required, e.g. http://prometheus.monitoring:9090")
	} else if err := checkURL(p.Address); err != nil {
		v.errorf("spec.prometheus.address", "%v", err)
	}
	if !labelName.MatchString(p.ClusterLabel) {
		v.errorf("spec.prometheus.clusterLabel", "%q is not a Prometheus label name", p.ClusterLabel)
	}
	if p.Timeout < 0 {
		v.errorf("spec.prometheus.timeout", "must be positive")
	}
	if a := p.Auth; a != nil {
		if a.BearerTokenFile != "" && a.Basic != nil {
			v.errorf("spec.prometheus.auth", "set bearerTokenFile or basic, not both")
		}
		if b := a.Basic; b != nil {
			if b.Username == "" {
				v.errorf("spec.prometheus.auth.basic.username", "required")
			}
			if b.PasswordFile == "" {
				v.errorf("spec.prometheus.auth.basic.passwordFile", "required: a file holding the password (secrets never go in experiment files)")
			}
		}
		for _, h := range sortedKeys(a.Headers) {
			hp := "spec.prometheus.auth.headers." + h
			switch {
			case !validHeaderName(h):
				v.errorf(hp, "%q is not a valid HTTP header name", h)
			case strings.EqualFold(h, "Authorization") && (a.BearerTokenFile != "" || a.Basic != nil):
				v.errorf(hp, "conflicts with bearerTokenFile/basic, which set Authorization themselves")
			}
		}
	}
	if t := p.TLS; t != nil && t.InsecureSkipVerify && t.CAFile != "" {
		v.errorf("spec.prometheus.tls", "caFile has no effect with insecureSkipVerify")
	}
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q must start with http:// or https://", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("credentials in the URL are not allowed; use the auth fields")
	}
	return nil
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	return http.CanonicalHeaderKey(h) != "" && !strings.ContainsAny(h, " \t\r\n:()<>@,;\\\"/[]?={}")
}

// kpiQueries names the query fields each KPI type needs and allows.
var kpiQueries = map[string]struct{ required, allowed []string }{
	KPIRatio:      {[]string{"events", "total"}, []string{"events", "total"}},
	KPILatency:    {[]string{"buckets"}, []string{"buckets", "sum", "count"}},
	KPIGauge:      {[]string{"query"}, []string{"query"}},
	KPIThroughput: {[]string{"query"}, []string{"query"}},
}

func (k *KPI) queries() map[string]string {
	return map[string]string{"events": k.Events, "total": k.Total, "buckets": k.Buckets, "sum": k.Sum, "count": k.Count, "query": k.Query}
}

func (v *validator) kpis() {
	s := &v.e.Spec
	if len(s.KPIs) == 0 {
		v.errorf("spec.kpis", "required: at least one KPI to judge the canary by")
	}
	vars := v.e.Vars(s.Canary.Cluster)
	names := map[string]bool{}
	for i := range s.KPIs {
		k := &s.KPIs[i]
		p := fmt.Sprintf("spec.kpis[%d]", i)
		switch {
		case k.Name == "":
			v.errorf(p+".name", "required")
		case !kpiName.MatchString(k.Name):
			v.errorf(p+".name", "%q: use letters, digits, '-', '_' and '.'", k.Name)
		case names[k.Name]:
			v.errorf(p+".name", "duplicate KPI name %q", k.Name)
		}
		names[k.Name] = true

		q, ok := kpiQueries[k.Type]
		if !ok {
			msg := fmt.Sprintf("must be one of ratio, latency, gauge, throughput, not %q", k.Type)
			if k.Type == "" {
				msg = "required: ratio, latency, gauge or throughput"
			} else if hint := didYouMean(k.Type, []string{KPIRatio, KPILatency, KPIGauge, KPIThroughput}); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			v.errorf(p+".type", "%s", msg)
		} else {
			all := k.queries()
			for _, f := range []string{"events", "total", "buckets", "sum", "count", "query"} {
				fp := p + "." + f
				tmpl := all[f]
				switch {
				case slices.Contains(q.required, f) && tmpl == "":
					v.errorf(p, "%s is required for a %s KPI", f, k.Type)
				case tmpl != "" && !slices.Contains(q.allowed, f):
					v.errorf(fp, "not used by a %s KPI (it uses %s)", k.Type, strings.Join(q.allowed, ", "))
				case tmpl != "":
					want := []string{s.Prometheus.ClusterLabel}
					if f == "buckets" {
						want = append(want, "le")
					}
					v.query(fp, tmpl, vars, want)
				}
			}
			if k.Type != KPILatency {
				if k.SlowerThan != nil {
					v.errorf(p+".slowerThan", "only latency KPIs have slowerThan")
				}
				if v.written(p + ".quantile") {
					v.errorf(p+".quantile", "only latency KPIs have a quantile")
				}
			} else {
				if k.SlowerThan != nil && *k.SlowerThan <= 0 {
					v.errorf(p+".slowerThan", "must be a positive duration")
				}
				if k.Quantile <= 0 || k.Quantile >= 1 {
					v.errorf(p+".quantile", "must be between 0 and 1, e.g. 0.99")
				}
				if k.SlowerThan == nil && (k.Sum == "" || k.Count == "") {
					v.errorf(p, "a latency KPI needs slowerThan (judge the slow share) or sum and count (judge the mean)")
				}
			}
		}
		if k.Harm != HarmIncrease && k.Harm != HarmDecrease {
			v.errorf(p+".harm", "must be increase or decrease, not %q", k.Harm)
		}
		if t := *k.Tolerance; t < 0 || t > 1 {
			v.errorf(p+".tolerance", "must be between 0%% and 100%%, got %s", t)
		}
		if t := k.SlowTolerance; t != nil {
			switch {
			case k.Type != KPILatency || k.SlowerThan == nil:
				v.errorf(p+".slowTolerance", "only latency KPIs with slowerThan have a slow share")
			case *t < 0 || *t > 1:
				v.errorf(p+".slowTolerance", "must be between 0%% and 100%%, got %s", *t)
			}
		}
		if g := k.Guardrail; g != nil {
			gp := p + ".guardrail"
			switch {
			case g.Max == nil && g.Min == nil:
				v.errorf(gp, "set max, min or both")
			case g.Max != nil && g.Min != nil && g.Min.Float() >= g.Max.Float():
				v.errorf(gp+".min", "%v is not below max %v", g.Min.Float(), g.Max.Float())
			}
			if g.For < 1 {
				v.errorf(gp+".for", "must be at least 1 interval")
			}
			// A limit the KPI can never cross is a guardrail that never fires (or always does).
			for _, b := range []struct {
				name string
				t    *Threshold
			}{{"max", g.Max}, {"min", g.Min}} {
				if b.t == nil {
					continue
				}
				x := b.t.Float()
				switch {
				case k.Type == KPIRatio && (x < 0 || x > 1):
					v.errorf(gp+"."+b.name, "%v is not a rate: a ratio KPI is between 0 and 1 (write 2%% or 0.02)", x)
				case k.Type != KPIRatio && k.Type != KPIGauge && x < 0:
					v.errorf(gp+"."+b.name, "%v is negative; a %s KPI never is", x, k.Type)
				}
			}
		}
	}
}

// query checks that a template renders, parses as PromQL and returns a series per cluster.
func (v *validator) query(path, tmpl string, vars QueryVars, keep []string) {
	q, expr, err := ParseQuery(tmpl, vars)
	if err != nil {
		v.errorf(path, "%v", err)
		return
	}
	if !keepsLabels(expr, keep...) {
		v.errorf(path, "must aggregate by the cluster label: wrap it as sum by (%s) (...) so it returns one series per cluster (query: %s)", strings.Join(keep, ", "), q)
	}
}

func (v *validator) analysis() {
	s := &v.e.Spec
	a := &s.Analysis
	if a.Interval < Duration(time.Second) {
		v.errorf("spec.analysis.interval", "must be at least 1s")
	}
	if !(a.Alpha > 0 && a.Alpha < 0.5) || math.IsNaN(a.Alpha) {
		v.errorf("spec.analysis.alpha", "must be between 0 and 0.5 (exclusive), got %v", a.Alpha)
	}
	if a.MinIntervals < 1 {
		v.errorf("spec.analysis.minIntervals", "must be at least 1")
	}
	if hold := s.TotalHold(); hold > 0 && a.Interval > 0 {
		if need := time.Duration(a.MinIntervals) * a.Interval.Std(); hold < need {
			v.errorf("spec.analysis.minIntervals", "%d intervals of %s need %s, but the steps hold for only %s in all", a.MinIntervals, a.Interval, Duration(need), Duration(hold))
		}
		if a.MaxDuration.Std() < hold {
			v.errorf("spec.analysis.maxDuration", "%s is shorter than the steps' total hold of %s", a.MaxDuration, Duration(hold))
		}
	}
	if a.NoDataTimeout < a.Interval {
		v.errorf("spec.analysis.noDataTimeout", "%s is shorter than one interval (%s)", a.NoDataTimeout, a.Interval)
	}
	v.history()
	if st := a.ShareTolerance; st != 0 && (st < 0 || st > MaxShareTolerance) {
		v.errorf("spec.analysis.shareTolerance", "must be above 0%% and at most %s, got %s", Fraction(MaxShareTolerance), st)
	}
	switch a.OnInconclusive {
	case OnInconclusiveRollback, OnInconclusivePromote, OnInconclusivePause:
	default:
		v.errorf("spec.analysis.onInconclusive", "must be rollback, promote or pause, not %q", a.OnInconclusive)
	}
	switch a.OnDrift {
	case OnDriftPause, OnDriftRollback, OnDriftIgnore:
	default:
		v.errorf("spec.analysis.onDrift", "must be pause, rollback or ignore, not %q", a.OnDrift)
	}
}

// history checks spec.analysis.history and its deprecated alias prePeriod, after defaults
// (which copy the written one into both).
func (v *validator) history() {
	a := &v.e.Spec.Analysis
	path := "spec.analysis.history"
	if v.written("spec.analysis.prePeriod") {
		if v.written(path) {
			v.errorf("spec.analysis.prePeriod", "prePeriod is the deprecated name of history; keep one")
			return
		}
		path = "spec.analysis.prePeriod"
	}
	h := a.History
	what := h.String()
	if !v.written(path) {
		what = "the default history of " + what
	}
	switch {
	case h < 0:
		v.errorf(path, "must not be negative")
	case h > 0 && a.Interval > 0 && h.Std() < MinHistoryIntervals*a.Interval.Std():
		v.errorf(path, "%s is shorter than %d analysis intervals (%s), too little to learn noise from; write 0s to turn history off", what, MinHistoryIntervals, Duration(MinHistoryIntervals*a.Interval.Std()))
	case h.Std() > MaxHistory:
		v.errorf(path, "%s is longer than 7 days; older history says little about the clusters today", what)
	}
}

// apply checks spec.canary.apply: either appliedAt alone, or a hook and/or a readiness
// query the engine waits for after the baseline.
func (v *validator) apply() {
	s := &v.e.Spec
	a := s.Canary.Apply
	if a == nil {
		return
	}
	const p = "spec.canary.apply"
	if !a.Declared() {
		v.errorf(p, "declare appliedAt (the variant is already live), hook (a command that applies it) or readiness (a query that says it is live); or leave apply out")
	}
	if a.AppliedAt != nil && (a.Hook != nil || a.Readiness != nil) {
		v.errorf(p+".appliedAt", "an already applied variant needs neither hook nor readiness: keep appliedAt, or remove it to have the variant applied during the run")
	}
	if a.AppliedAt != nil && a.AppliedAt.IsZero() {
		v.errorf(p+".appliedAt", "must be a real time, e.g. 2026-12-05T09:30:00Z")
	}
	if v.written(p + ".during") {
		switch {
		case a.Hook == nil && a.Readiness == nil:
			v.errorf(p+".during", "only with hook or readiness: it is the canary's traffic while the variant is applied")
		case a.During != ApplyDuringFirstStep && a.During != ApplyDuringDrained:
			msg := fmt.Sprintf("must be %s or %s, not %q", ApplyDuringFirstStep, ApplyDuringDrained, a.During)
			if hint := didYouMean(a.During, []string{ApplyDuringFirstStep, ApplyDuringDrained}); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			v.errorf(p+".during", "%s", msg)
		}
	}
	vars := v.e.Vars(s.Canary.Cluster)
	if hk := a.Hook; hk != nil {
		if len(hk.Command) == 0 || hk.Command[0] == "" {
			v.errorf(p+".hook.command", "required: the program and its arguments, e.g. [kubectl, --context, \"{{.Cluster}}\", apply, -k, overlays/variant]")
		}
		for i, arg := range hk.Command {
			if _, err := RenderApplyHookArg(arg, vars); err != nil {
				v.errorf(fmt.Sprintf("%s.hook.command[%d]", p, i), "%v", err)
			}
		}
	}
	if r := a.Readiness; r != nil {
		if r.Query == "" {
			v.errorf(p+".readiness.query", "required: an instant query that says the variant is live on the canary")
		} else if _, _, err := ParseQuery(r.Query, vars); err != nil {
			v.errorf(p+".readiness.query", "%v", err)
		}
		if r.Expect == "" {
			v.errorf(p+".readiness.expect", `required, e.g. "== 1"`)
		} else if _, err := metrics.ParseExpect(r.Expect); err != nil {
			v.errorf(p+".readiness.expect", "%v", err)
		}
	}
}

func (v *validator) preconditions() {
	s := &v.e.Spec
	vars := v.e.Vars(s.Canary.Cluster)
	names := map[string]bool{}
	for i, pc := range s.Preconditions {
		p := fmt.Sprintf("spec.preconditions[%d]", i)
		switch {
		case pc.Name == "":
			v.errorf(p+".name", "required")
		case names[pc.Name]:
			v.errorf(p+".name", "duplicate precondition name %q", pc.Name)
		}
		names[pc.Name] = true
		if pc.Query == "" {
			v.errorf(p+".query", "required")
		} else if _, _, err := ParseQuery(pc.Query, vars); err != nil {
			v.errorf(p+".query", "%v", err)
		}
		if pc.Expect == "" {
			v.errorf(p+".expect", `required, e.g. "== 0" or "< 0.01"`)
		} else if _, err := metrics.ParseExpect(pc.Expect); err != nil {
			v.errorf(p+".expect", "%v", err)
		}
	}
}

func (v *validator) capacity() {
	c := v.e.Spec.Capacity
	if c == nil {
		return
	}
	h := c.HPA
	if h.MinReplicas < 1 {
		v.errorf("spec.capacity.hpa.minReplicas", "must be at least 1")
	}
	if h.MaxReplicas < h.MinReplicas {
		v.errorf("spec.capacity.hpa.maxReplicas", "%d is below minReplicas %d", h.MaxReplicas, h.MinReplicas)
	}
	if h.DefaultMinReplicas < 0 {
		v.errorf("spec.capacity.hpa.defaultMinReplicas", "must not be negative")
	}
	if h.DefaultMaxReplicas < h.DefaultMinReplicas {
		v.errorf("spec.capacity.hpa.defaultMaxReplicas", "%d is below defaultMinReplicas %d", h.DefaultMaxReplicas, h.DefaultMinReplicas)
	}
	if hk := c.Hook; hk != nil {
		if len(hk.Command) == 0 || hk.Command[0] == "" {
			v.errorf("spec.capacity.hook.command", "required: the program and its arguments")
		}
		for i, arg := range hk.Command {
			if _, err := RenderHookArg(arg, HookVars{Cluster: "c", MinReplicas: 1, MaxReplicas: 1, Percent: 1}); err != nil {
				v.errorf(fmt.Sprintf("spec.capacity.hook.command[%d]", i), "%v", err)
			}
		}
	}
}

func (v *validator) notify() {
	for i, n := range v.e.Spec.Notify {
		p := fmt.Sprintf("spec.notify[%d]", i)
		switch {
		case n.Slack == nil && n.Webhook == nil:
			v.errorf(p, "set slack or webhook")
		case n.Slack != nil && n.Webhook != nil:
			v.errorf(p, "set slack or webhook, not both (use two entries)")
		case n.Slack != nil:
			if n.Slack.WebhookURL == "" {
				v.errorf(p+".slack.webhookURL", "required")
			} else if err := checkURL(n.Slack.WebhookURL); err != nil {
				v.errorf(p+".slack.webhookURL", "%s", redactURLError(err, n.Slack.WebhookURL))
			}
		case n.Webhook != nil:
			if n.Webhook.URL == "" {
				v.errorf(p+".webhook.url", "required")
			} else if err := checkURL(n.Webhook.URL); err != nil {
				v.errorf(p+".webhook.url", "%s", redactURLError(err, n.Webhook.URL))
			}
		}
		for j, on := range n.On {
			if !slices.Contains(NotifyEvents, on) {
				v.errorf(fmt.Sprintf("%s.on[%d]", p, j), "unknown event %q (known: %s)", on, strings.Join(NotifyEvents, ", "))
			}
		}
	}
}

// redactURLError keeps webhook URLs, which are secrets, out of error messages.
func redactURLError(err error, secret string) string {
	return strings.ReplaceAll(err.Error(), strconv.Quote(secret), "the URL")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
