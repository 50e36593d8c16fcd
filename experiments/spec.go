// Package experiments defines the experiment file: its types, loading with exact error
// positions, defaults, validation, PromQL templating and the weight plan.
package experiments

import "time"

// APIVersion and Kind identify an experiment document.
const (
	APIVersion = "verdict.dev/v1alpha1"
	Kind       = "Experiment"
)

// Experiment is one experiment document. Field names follow the YAML keys.
type Experiment struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`

	// Source is where the document starts, and positions maps field paths (spec.kpis[0].name)
	// to where they were written, so later checks can still point at the right line.
	Source    Pos            `yaml:"-" json:"-"`
	positions map[string]Pos `yaml:"-"`
	// nulls are the paths written with an empty value, which means "not set".
	nulls map[string]bool `yaml:"-"`
}

// isSet reports whether the file wrote a value at path (an empty value does not count).
func (e *Experiment) isSet(path string) bool {
	_, ok := e.positions[path]
	return ok && !e.nulls[path]
}

// Pos returns where the field at path (or its nearest written ancestor) is in the file.
func (e *Experiment) Pos(path string) Pos {
	for p := path; ; {
		if pos, ok := e.positions[p]; ok {
			return pos
		}
		i := lastSep(p)
		if i < 0 {
			return e.Source
		}
		p = p[:i]
	}
}

func lastSep(p string) int {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '.' || p[i] == '[' {
			return i
		}
	}
	return -1
}

// Metadata names the experiment. The name is its identity in the state store and reports.
type Metadata struct {
	Name   string            `yaml:"name" json:"name"`
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
}

// Spec is what the experiment changes, how traffic moves, and how it is judged.
type Spec struct {
	Description   string         `yaml:"description" json:"description,omitempty"`
	Canary        Canary         `yaml:"canary" json:"canary"`
	Baselines     []string       `yaml:"baselines" json:"baselines"`
	Traffic       Traffic        `yaml:"traffic" json:"traffic"`
	Prometheus    Prometheus     `yaml:"prometheus" json:"prometheus"`
	KPIs          []KPI          `yaml:"kpis" json:"kpis"`
	Analysis      Analysis       `yaml:"analysis" json:"analysis"`
	Preconditions []Precondition `yaml:"preconditions" json:"preconditions,omitempty"`
	Capacity      *Capacity      `yaml:"capacity" json:"capacity,omitempty"`
	Notify        []Notify       `yaml:"notify" json:"notify,omitempty"`
}

// Canary is the cluster that runs the variant.
type Canary struct {
	Cluster string `yaml:"cluster" json:"cluster"`
	// Variant says what differs on the canary (autoscaler: karpenter); it is recorded in
	// state and reports, never interpreted.
	Variant map[string]string `yaml:"variant" json:"variant,omitempty"`
	// Apply says how the variant reaches the canary, so that the baseline window (the
	// history the engine learns the canary/baseline offset and noise from) ends before it.
	// Nil keeps the old behaviour, with a warning: the comparison then assumes the
	// clusters were equal before the run.
	Apply *Apply `yaml:"apply" json:"apply,omitempty"`
}

// Apply declares when and how the variant arrives on the canary. Exactly one of two
// shapes: AppliedAt alone (the variant is already live), or Hook and/or Readiness (the
// variant arrives during the run, after the baseline is captured).
type Apply struct {
	// AppliedAt is when the variant went live on the canary; the baseline is the history
	// before it.
	AppliedAt *time.Time `yaml:"appliedAt" json:"appliedAt,omitempty"`
	// Hook is a command the engine runs once the baseline is captured; its arguments are
	// templates over the query variables, {{.Cluster}} being the canary.
	Hook *Hook `yaml:"hook" json:"hook,omitempty"`
	// During is the canary's traffic while the hook runs and until Readiness holds:
	// ApplyDuringFirstStep or ApplyDuringDrained.
	During string `yaml:"during" json:"during,omitempty"`
	// Readiness is waited for after the hook, or alone when something else (GitOps)
	// applies the variant. It must not hold when the baseline is captured.
	Readiness *Readiness `yaml:"readiness" json:"readiness,omitempty"`
}

// Apply.During values.
const (
	// ApplyDuringFirstStep gives the canary the first step's weight while the variant is
	// applied.
	ApplyDuringFirstStep = "firstStep"
	// ApplyDuringDrained takes the canary to weight 0 (the baselines take its share)
	// until the variant is ready, e.g. for a Kubernetes upgrade.
	ApplyDuringDrained = "drained"
)

// Readiness is an instant query that says the variant is live on the canary. Query is a
// PromQL template over the query variables ({{.Cluster}} is the canary) and Expect has the
// preconditions' syntax ("== 1").
type Readiness struct {
	Query  string `yaml:"query" json:"query"`
	Expect string `yaml:"expect" json:"expect"`
	// Timeout is how long the engine waits for Query to satisfy Expect before it rolls
	// back.
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Clusters returns the canary followed by the baselines.
func (s *Spec) Clusters() []string {
	return append([]string{s.Canary.Cluster}, s.Baselines...)
}

// Traffic says which pool carries the experiment and how the canary's share grows.
// Exactly one of Cloudflare and Route53 is set; callers use Provider, Origins and PoolRef
// rather than either field, so that engine, reports and commands work with both.
type Traffic struct {
	// Cloudflare and Route53 are pointers so that a stored spec (which always had
	// "cloudflare") reads back unchanged and a Route 53 spec writes no empty "cloudflare".
	Cloudflare *Cloudflare `yaml:"cloudflare" json:"cloudflare,omitempty"`
	Route53    *Route53    `yaml:"route53" json:"route53,omitempty"`
	Steps      []Step      `yaml:"steps" json:"steps"`
	// OnPromote is keep (leave the final weights) or restore (put the original weights back).
	OnPromote string `yaml:"onPromote" json:"onPromote"`
	// OnRollback is restore (original weights) or drain (canary to 0, baselines take its share).
	OnRollback string `yaml:"onRollback" json:"onRollback"`
	// SourceOfTruth, when set, is where the pool's weights are declared in Git (a
	// Terraform or values file): compared before the run, written back after an ending
	// that changes the intended weights.
	SourceOfTruth *SourceOfTruth `yaml:"sourceOfTruth" json:"sourceOfTruth,omitempty"`
}

// On* values.
const (
	OnPromoteKeep     = "keep"
	OnPromoteRestore  = "restore"
	OnRollbackRestore = "restore"
	OnRollbackDrain   = "drain"
)

// Cloudflare locates the load balancer pool and maps clusters to its origins.
type Cloudflare struct {
	AccountID string            `yaml:"accountID" json:"accountID,omitempty"`
	PoolID    string            `yaml:"poolID" json:"poolID"`
	Origins   map[string]string `yaml:"origins" json:"origins"` // cluster -> origin name
}

// Route53 locates the weighted record set (one name and type in a hosted zone) and maps
// clusters to its records, each named by its SetIdentifier.
type Route53 struct {
	HostedZoneID string `yaml:"hostedZoneID" json:"hostedZoneID"`
	// Record is the record set's DNS name, e.g. api.example.com (the final dot optional).
	Record string `yaml:"record" json:"record"`
	// Type is the record type, default A.
	Type           string            `yaml:"type" json:"type"`
	SetIdentifiers map[string]string `yaml:"setIdentifiers" json:"setIdentifiers"` // cluster -> SetIdentifier
}

// Step is one stage of the ramp: the canary's share of the experiment's traffic, held for
// a while under analysis.
type Step struct {
	Weight Fraction `yaml:"weight" json:"weight"`
	Hold   Duration `yaml:"hold" json:"hold"`
	// MinHold, when set, lets the step advance as soon as every KPI is already
	// non-inferior and MinHold has passed; without it the step waits its full Hold.
	MinHold Duration `yaml:"minHold" json:"minHold,omitempty"`
}

// Prometheus is where KPIs are read from.
type Prometheus struct {
	Address string `yaml:"address" json:"address"`
	// ClusterLabel is the label that names a cluster in every KPI series (often an external
	// label added by federation or remote write).
	ClusterLabel string   `yaml:"clusterLabel" json:"clusterLabel"`
	Timeout      Duration `yaml:"timeout" json:"timeout"`
	Auth         *Auth    `yaml:"auth" json:"auth,omitempty"`
	TLS          *TLS     `yaml:"tls" json:"tls,omitempty"`
}

// Auth holds references to credentials, never the credentials themselves, so experiment
// files can live in Git.
type Auth struct {
	BearerTokenFile string            `yaml:"bearerTokenFile" json:"bearerTokenFile,omitempty"`
	Basic           *BasicAuth        `yaml:"basic" json:"basic,omitempty"`
	Headers         map[string]string `yaml:"headers" json:"-"` // may carry secrets: never serialised
}

// BasicAuth reads its password from a file.
type BasicAuth struct {
	Username     string `yaml:"username" json:"username"`
	PasswordFile string `yaml:"passwordFile" json:"passwordFile"`
}

// TLS configures how the Prometheus server's certificate is checked.
type TLS struct {
	CAFile             string `yaml:"caFile" json:"caFile,omitempty"`
	ServerName         string `yaml:"serverName" json:"serverName,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify" json:"insecureSkipVerify,omitempty"`
}

// KPI kinds.
const (
	KPIRatio      = "ratio"      // events / total, tested as counts
	KPILatency    = "latency"    // a histogram: slow share and mean latency
	KPIGauge      = "gauge"      // one value per interval per cluster
	KPIThroughput = "throughput" // requests per cluster, checked against the weights
)

// Harm directions.
const (
	HarmIncrease = "increase"
	HarmDecrease = "decrease"
)

// KPI is one measure compared between canary and baselines. Queries are PromQL templates
// that must return one series per cluster.
type KPI struct {
	Name string `yaml:"name" json:"name"`
	Type string `yaml:"type" json:"type"`

	// ratio
	Events string `yaml:"events" json:"events,omitempty"`
	Total  string `yaml:"total" json:"total,omitempty"`
	// latency
	Buckets    string    `yaml:"buckets" json:"buckets,omitempty"`
	Sum        string    `yaml:"sum" json:"sum,omitempty"`
	Count      string    `yaml:"count" json:"count,omitempty"`
	SlowerThan *Duration `yaml:"slowerThan" json:"slowerThan,omitempty"`
	Quantile   float64   `yaml:"quantile" json:"quantile,omitempty"` // shown, never tested
	// gauge, throughput
	Query string `yaml:"query" json:"query,omitempty"`

	Harm      string    `yaml:"harm" json:"harm"`
	Tolerance *Fraction `yaml:"tolerance" json:"tolerance"`
	// SlowTolerance is the margin for a latency KPI's slow share (requests slower than
	// slowerThan), a count ratio much noisier than the mean that Tolerance bounds.
	SlowTolerance *Fraction  `yaml:"slowTolerance" json:"slowTolerance,omitempty"`
	Guardrail     *Guardrail `yaml:"guardrail" json:"guardrail,omitempty"`
	// Critical KPIs roll back on harm alone; for others harm also rolls back, but they may be
	// left out of promotion with allowInconclusive.
	AllowInconclusive bool `yaml:"allowInconclusive" json:"allowInconclusive,omitempty"`
}

// Guardrail is an absolute limit on the canary's own value, acted on whatever the
// statistics say once it is breached For consecutive intervals.
type Guardrail struct {
	Max *Threshold `yaml:"max" json:"max,omitempty"`
	Min *Threshold `yaml:"min" json:"min,omitempty"`
	For int        `yaml:"for" json:"for"`
}

// Analysis tunes how and how long the experiment is judged.
type Analysis struct {
	Interval Duration `yaml:"interval" json:"interval"`
	Alpha    float64  `yaml:"alpha" json:"alpha"`
	// History is how much same-code history before the run is read to learn each KPI's
	// cluster-level noise and the canary/baseline offset; 0 disables it (the run then
	// falls back to in-run noise estimates).
	History Duration `yaml:"history" json:"history"`
	// PrePeriod is the deprecated name of History. After SetDefaults both hold the same
	// value.
	PrePeriod Duration `yaml:"prePeriod" json:"prePeriod"`
	// ShareTolerance is the relative difference between a cluster's observed and
	// configured traffic share that counts as a mismatch.
	ShareTolerance Fraction `yaml:"shareTolerance" json:"shareTolerance"`
	// MinIntervals is the number of intervals before any verdict. With History it is only
	// the floor for KPIs whose history was too short to learn their noise from.
	MinIntervals   int      `yaml:"minIntervals" json:"minIntervals"`
	MaxDuration    Duration `yaml:"maxDuration" json:"maxDuration"`
	NoDataTimeout  Duration `yaml:"noDataTimeout" json:"noDataTimeout"`
	OnInconclusive string   `yaml:"onInconclusive" json:"onInconclusive"`
	OnDrift        string   `yaml:"onDrift" json:"onDrift"`
}

// Analysis actions.
const (
	OnInconclusiveRollback = "rollback"
	OnInconclusivePromote  = "promote"
	OnInconclusivePause    = "pause"
	OnDriftPause           = "pause"
	OnDriftRollback        = "rollback"
	OnDriftIgnore          = "ignore"
)

// Precondition is an instant query that must satisfy Expect before and during the run,
// e.g. that canary and baselines run the same application versions.
type Precondition struct {
	Name   string `yaml:"name" json:"name"`
	Query  string `yaml:"query" json:"query"`
	Expect string `yaml:"expect" json:"expect"`
}

// Capacity pre-scales clusters before their traffic rises, using the HPA formula
// min = max(defaultMin, minReplicas·p/100), max = max(defaultMax, maxReplicas·p/100) for a
// cluster with p% of the pool's traffic.
type Capacity struct {
	HPA  HPA   `yaml:"hpa" json:"hpa"`
	Hook *Hook `yaml:"hook" json:"hook,omitempty"`
}

// HPA holds the service's replica bounds for 100% of the traffic.
type HPA struct {
	MinReplicas        int `yaml:"minReplicas" json:"minReplicas"`
	MaxReplicas        int `yaml:"maxReplicas" json:"maxReplicas"`
	DefaultMinReplicas int `yaml:"defaultMinReplicas" json:"defaultMinReplicas"`
	DefaultMaxReplicas int `yaml:"defaultMaxReplicas" json:"defaultMaxReplicas"`
}

// Hook is a command: in spec.capacity it applies replica bounds to a cluster, with
// arguments templated over {{.Cluster}}, {{.MinReplicas}}, {{.MaxReplicas}} and
// {{.Percent}}; in spec.canary.apply it applies the variant, with arguments templated over
// the query variables ({{.Cluster}} is the canary).
type Hook struct {
	Command []string `yaml:"command" json:"command"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Notify is one notification target; exactly one of its fields is set.
type Notify struct {
	Slack   *SlackNotify   `yaml:"slack" json:"slack,omitempty"`
	Webhook *WebhookNotify `yaml:"webhook" json:"webhook,omitempty"`
	// On limits the events sent: start, step, verdict, end. Empty means all.
	On []string `yaml:"on" json:"on,omitempty"`
}

// SlackNotify posts to a Slack incoming webhook. The URL is a secret: never serialised.
type SlackNotify struct {
	WebhookURL string `yaml:"webhookURL" json:"-"`
}

// WebhookNotify posts a JSON event to any URL.
type WebhookNotify struct {
	URL     string            `yaml:"url" json:"-"`
	Headers map[string]string `yaml:"headers" json:"-"`
}

// NotifyEvents are the events a notification can be limited to.
var NotifyEvents = []string{"start", "step", "verdict", "end"}
