package sim

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed scenarios/*.yaml
var scenarioFS embed.FS

// Placeholders in a scenario's experiment that the fleet fills in once it knows its
// addresses. They are not {{...}} templates, which experiment files use for PromQL.
const (
	PlaceholderPrometheusURL = "@PROMETHEUS_URL@"
	PlaceholderPoolID        = "@POOL_ID@"
	PlaceholderAccountID     = "@ACCOUNT_ID@"
)

// When a variant or an event takes effect.
const (
	// FromStart counts from the fleet's start.
	FromStart = "start"
	// FromTrigger counts from Fleet.Trigger: the experiment's first weight change, which
	// the fleet also detects on its own by watching the pool.
	FromTrigger = "trigger"
)

// Prometheus states an event can set; see Fleet.SetPrometheus.
const (
	PrometheusUp     = "up"     // answering normally
	PrometheusDown   = "down"   // connections refused, as when Prometheus is unreachable
	PrometheusErrors = "errors" // every API call answers 503, as an overloaded Prometheus does
)

// Scenario is a world for an experiment to run in: the clusters and their profiles, the
// canary's variant, the load, what happens when, and the experiment to run against it. The
// demo and the engine's end-to-end tests share them, so a scenario's name says what Verdict
// is expected to conclude.
type Scenario struct {
	// Name identifies the scenario (the file name without .yaml for built-in ones).
	Name string `yaml:"name"`
	// Description says in one line what happens.
	Description string `yaml:"description"`
	// Expect is the verdict a correct engine reaches: promote, rollback, pause or
	// inconclusive. Recorded for tests and the demo's narration, never interpreted here.
	Expect string `yaml:"expect"`
	// PoolName names the emulated Cloudflare pool. Default "prod-use1".
	PoolName string `yaml:"poolName"`
	// ScrapeInterval is how often Prometheus scrapes each cluster. Default 1s, so that a
	// 5s analysis interval holds several samples for increase().
	ScrapeInterval Duration `yaml:"scrapeInterval"`
	// Load is the traffic sent through the load balancer.
	Load Load `yaml:"load"`
	// Profile is every cluster's profile unless the cluster overrides some fields.
	Profile Profile `yaml:"-"`
	// Clusters are the fleet's clusters, one origin each in the pool.
	Clusters []ClusterSpec `yaml:"-"`
	// Variant is how the canary differs, and from when.
	Variant Variant `yaml:"variant"`
	// Affinity is the fraction of sessions the load balancer keeps on the origin it first
	// chose, ignoring weight changes, as session affinity does. 0 honours every change.
	Affinity float64 `yaml:"affinity"`
	// Events change the world during the run (a Prometheus outage, a recovery).
	Events []Event `yaml:"events"`
	// Experiment is the experiment file to run against the fleet, with the Placeholder*
	// strings where the fleet's addresses go.
	Experiment string `yaml:"experiment"`
}

// Load is the traffic the load generator sends: Poisson arrivals at a rate that follows a
// sine wave, a compressed day, so that canary and baselines share a changing load as they
// do in production (statistics.md §1.3).
type Load struct {
	// Rate is the mean rate in requests per second. Default 200.
	Rate float64 `yaml:"rate"`
	// Amplitude is the wave's relative amplitude in [0, 0.9]: 0.25 swings ±25%.
	Amplitude float64 `yaml:"amplitude"`
	// Period is the wave's period (a "day"). Default 4m.
	Period Duration `yaml:"period"`
}

// ClusterSpec is one cluster of a scenario.
type ClusterSpec struct {
	// Name is the cluster's name (its cluster label).
	Name string `yaml:"name"`
	// Origin is its origin's name in the pool. Default: the name with "-origin".
	Origin string `yaml:"origin"`
	// Weight is the origin's weight in the pool at the start (0–1, hundredths).
	Weight float64 `yaml:"weight"`
	// Canary marks the one cluster that runs the variant.
	Canary bool `yaml:"canary"`
	// Version is the application version it reports. Default "1.42.0".
	Version string `yaml:"version"`
	// Profile is the scenario's profile with this cluster's overrides applied.
	Profile Profile `yaml:"-"`
}

// Variant is the canary's change.
type Variant struct {
	// Effect is how the canary's profile differs from its baseline profile.
	Effect Effect `yaml:"effect"`
	// From is when it takes effect: FromStart (the default: the canary cluster is the
	// variant before the experiment begins) or FromTrigger (the first weight change). The
	// built-in scenarios use FromTrigger: an experiment with a pre-period calibrates the
	// canary against the baselines on data from before the first weight change
	// (statistics.md §1.5), and a variant already in effect then would be calibrated away.
	From string `yaml:"from"`
}

// Event is one scheduled change. Exactly one of Prometheus, Effect (with Cluster), Variant
// and Rate is set.
type Event struct {
	// At is the delay after From.
	At Duration `yaml:"at"`
	// From is FromStart (default) or FromTrigger.
	From string `yaml:"from"`
	// Prometheus sets the embedded Prometheus's API up, down or erroring.
	Prometheus string `yaml:"prometheus,omitempty"`
	// Cluster and Effect set a cluster's profile to its scenario profile changed by Effect
	// ("canary" names the canary).
	Cluster string  `yaml:"cluster,omitempty"`
	Effect  *Effect `yaml:"effect,omitempty"`
	// Variant is "apply" or "clear": the canary's variant on or off.
	Variant string `yaml:"variant,omitempty"`
	// Rate changes the load's mean rate.
	Rate float64 `yaml:"rate,omitempty"`
	// Note is said when the event happens, for the demo's narration.
	Note string `yaml:"note,omitempty"`
}

// String describes the event's action.
func (e Event) String() string {
	var s string
	switch {
	case e.Prometheus != "":
		s = "prometheus " + e.Prometheus
	case e.Effect != nil:
		s = fmt.Sprintf("cluster %s: %s", e.Cluster, e.Effect)
	case e.Variant != "":
		s = "variant " + e.Variant
	case e.Rate > 0:
		s = fmt.Sprintf("rate %g/s", e.Rate)
	}
	if e.Note != "" {
		s += " (" + e.Note + ")"
	}
	return s
}

// rawScenario is the file's shape: profiles stay YAML nodes so that a cluster's profile can
// override only some fields of the scenario's.
type rawScenario struct {
	Scenario `yaml:",inline"`
	Profile  yaml.Node    `yaml:"profile"`
	Clusters []rawCluster `yaml:"clusters"`
}

type rawCluster struct {
	ClusterSpec `yaml:",inline"`
	Profile     yaml.Node `yaml:"profile"`
}

// ScenarioNames lists the built-in scenarios.
func ScenarioNames() []string {
	entries, _ := fs.ReadDir(scenarioFS, "scenarios")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// LoadScenario returns a built-in scenario by name, or reads a scenario file when name is a
// path (contains a slash or ends in .yaml).
func LoadScenario(name string) (*Scenario, error) {
	if strings.ContainsRune(name, '/') || strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("sim: read scenario: %w", err)
		}
		return ParseScenario(name, data)
	}
	data, err := scenarioFS.ReadFile(path.Join("scenarios", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("sim: no scenario %q (built-in: %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	return ParseScenario(name+".yaml", data)
}

// ParseScenario decodes a scenario file strictly (unknown fields are errors), applies the
// defaults and validates it. file names the source in errors.
func ParseScenario(file string, data []byte) (*Scenario, error) {
	raw := rawScenario{Scenario: Scenario{
		PoolName:       "prod-use1",
		ScrapeInterval: Duration(time.Second),
		Load:           Load{Rate: 200, Amplitude: 0.25, Period: Duration(4 * time.Minute)},
	}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	s := raw.Scenario
	s.Profile = DefaultProfile()
	if err := decodeProfile(&raw.Profile, &s.Profile); err != nil {
		return nil, fmt.Errorf("%s: profile: %w", file, err)
	}
	for i, rc := range raw.Clusters {
		c := rc.ClusterSpec
		c.Profile = s.Profile
		if err := decodeProfile(&rc.Profile, &c.Profile); err != nil {
			return nil, fmt.Errorf("%s: clusters[%d].profile: %w", file, i, err)
		}
		s.Clusters = append(s.Clusters, c)
	}
	sc := s.withDefaults()
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return sc, nil
}

// withDefaults returns a copy of s, sharing nothing mutable with it, with the defaults of
// fields a Go caller may leave empty: pool name, scrape interval, rate, origin names, and
// when the variant and events apply.
func (s *Scenario) withDefaults() *Scenario {
	c := *s
	c.Clusters = slices.Clone(s.Clusters)
	c.Events = slices.Clone(s.Events)
	if c.PoolName == "" {
		c.PoolName = "prod-use1"
	}
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = Duration(time.Second)
	}
	if c.Load.Rate == 0 {
		c.Load.Rate = 200
	}
	if c.Load.Amplitude > 0 && c.Load.Period == 0 {
		c.Load.Period = Duration(4 * time.Minute)
	}
	for i := range c.Clusters {
		if c.Clusters[i].Origin == "" {
			c.Clusters[i].Origin = c.Clusters[i].Name + "-origin"
		}
	}
	if c.Variant.From == "" {
		c.Variant.From = FromStart
	}
	for i := range c.Events {
		if c.Events[i].From == "" {
			c.Events[i].From = FromStart
		}
		if e := c.Events[i].Effect; e != nil {
			cp := *e
			c.Events[i].Effect = &cp
		}
	}
	return &c
}

// decodeProfile decodes a profile node strictly onto p, keeping the fields it does not set.
func decodeProfile(n *yaml.Node, p *Profile) error {
	if n.Kind == 0 {
		return nil
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(p)
}

// Validate checks that the scenario can run, naming the field at fault.
func (s *Scenario) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.Name == "" {
		add("name: required")
	}
	if len(s.Clusters) < 2 {
		add("clusters: need at least two (a canary and a baseline)")
	}
	canaries := 0
	seen := map[string]bool{}
	seenOrigin := map[string]bool{}
	total := 0.0
	for i, c := range s.Clusters {
		if c.Name == "" {
			add("clusters[%d].name: required", i)
		}
		if seen[c.Name] || seenOrigin[c.Origin] {
			add("clusters[%d]: duplicate cluster or origin name %q", i, c.Name)
		}
		seen[c.Name], seenOrigin[c.Origin] = true, true
		if c.Canary {
			canaries++
		}
		if c.Weight < 0 || c.Weight > 1 || math.Abs(c.Weight*100-math.Round(c.Weight*100)) > 1e-9 {
			add("clusters[%d].weight: %g must be in [0, 1] in hundredths, as Cloudflare requires", i, c.Weight)
		}
		total += c.Weight
		if err := c.Profile.Validate(); err != nil {
			add("clusters[%d].%w", i, err)
		}
	}
	if canaries != 1 {
		add("clusters: exactly one must be the canary, found %d", canaries)
	}
	if len(s.Clusters) > 0 && total <= 0 {
		add("clusters: the weights add up to 0; no traffic would flow")
	}
	if s.ScrapeInterval.D() < 100*time.Millisecond {
		add("scrapeInterval: %s is below 100ms", s.ScrapeInterval.D())
	}
	if s.Load.Rate <= 0 {
		add("load.rate: %g must be positive", s.Load.Rate)
	}
	if s.Load.Amplitude < 0 || s.Load.Amplitude > 0.9 {
		add("load.amplitude: %g must be in [0, 0.9]", s.Load.Amplitude)
	}
	if s.Load.Amplitude > 0 && s.Load.Period <= 0 {
		add("load.period: required with an amplitude")
	}
	if s.Affinity < 0 || s.Affinity > 1 {
		add("affinity: %g must be in [0, 1]", s.Affinity)
	}
	if s.Variant.From != FromStart && s.Variant.From != FromTrigger {
		add("variant.from: %q must be %s or %s", s.Variant.From, FromStart, FromTrigger)
	}
	for i, e := range s.Events {
		if err := s.validateEvent(e); err != nil {
			add("events[%d]: %w", i, err)
		}
	}
	if strings.TrimSpace(s.Experiment) == "" {
		add("experiment: required")
	}
	return errors.Join(errs...)
}

func (s *Scenario) validateEvent(e Event) error {
	actions := 0
	if e.Prometheus != "" {
		actions++
		if !slices.Contains([]string{PrometheusUp, PrometheusDown, PrometheusErrors}, e.Prometheus) {
			return fmt.Errorf("prometheus: %q must be up, down or errors", e.Prometheus)
		}
	}
	if e.Effect != nil {
		actions++
		if _, ok := s.cluster(e.Cluster); !ok {
			return fmt.Errorf("cluster: %q is not a cluster of the scenario (or \"canary\")", e.Cluster)
		}
	} else if e.Cluster != "" {
		return fmt.Errorf("cluster: needs an effect")
	}
	if e.Variant != "" {
		actions++
		if e.Variant != "apply" && e.Variant != "clear" {
			return fmt.Errorf("variant: %q must be apply or clear", e.Variant)
		}
	}
	if e.Rate < 0 {
		return fmt.Errorf("rate: %g must be positive", e.Rate)
	}
	if e.Rate > 0 {
		actions++
	}
	if actions != 1 {
		return fmt.Errorf("needs exactly one of prometheus, cluster+effect, variant, rate; has %d", actions)
	}
	if e.From != FromStart && e.From != FromTrigger {
		return fmt.Errorf("from: %q must be %s or %s", e.From, FromStart, FromTrigger)
	}
	if e.At < 0 {
		return fmt.Errorf("at: must not be negative")
	}
	return nil
}

// cluster finds a cluster by name; "canary" is the canary.
func (s *Scenario) cluster(name string) (ClusterSpec, bool) {
	for _, c := range s.Clusters {
		if c.Name == name || (name == "canary" && c.Canary) {
			return c, true
		}
	}
	return ClusterSpec{}, false
}

// Canary is the canary cluster's name.
func (s *Scenario) Canary() string {
	c, _ := s.cluster("canary")
	return c.Name
}

// RenderExperiment fills the experiment's placeholders.
func (s *Scenario) RenderExperiment(prometheusURL, poolID, accountID string) string {
	return strings.NewReplacer(
		PlaceholderPrometheusURL, prometheusURL,
		PlaceholderPoolID, poolID,
		PlaceholderAccountID, accountID,
	).Replace(s.Experiment)
}
