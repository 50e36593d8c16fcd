package experiments

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// KindDrill identifies a drill document: a scheduled practice drain of one cluster, in the
// manner of AWS zonal autoshift's practice runs, judged by the same KPIs as experiments.
const KindDrill = "Drill"

// Drill defaults, documented in docs/drills.md.
const (
	DefaultDrillHold     = 15 * time.Minute
	DefaultDrillTimeZone = "UTC"
	// DefaultAlarmFor is how long an alarm query must return a sample above 0 before it
	// counts as firing: 0, the first sample is enough.
	DefaultAlarmFor = 0
)

// Drill is one drill document. It shares apiVersion, metadata, traffic, prometheus and the
// KPI types with Experiment, so one pool file and one set of KPI queries serve both.
type Drill struct {
	APIVersion string    `yaml:"apiVersion" json:"apiVersion"`
	Kind       string    `yaml:"kind" json:"kind"`
	Metadata   Metadata  `yaml:"metadata" json:"metadata"`
	Spec       DrillSpec `yaml:"spec" json:"spec"`

	// Source is where the document starts; positions and nulls are as in Experiment.
	Source    Pos             `yaml:"-" json:"-"`
	positions map[string]Pos  `yaml:"-"`
	nulls     map[string]bool `yaml:"-"`
}

// DrillSpec is what a drill drains, for how long, when it may run and how it is judged.
type DrillSpec struct {
	Description string `yaml:"description" json:"description,omitempty"`
	// Clusters are every cluster behind the pool (or record set) that the drill touches.
	Clusters []string `yaml:"clusters" json:"clusters"`
	// Drain is the cluster to take out; with several, successive scheduled drills rotate
	// through them. The file may write one name or a list.
	Drain []string `yaml:"drain" json:"drain"`
	// Traffic locates the pool exactly as an experiment's does; steps and the on* policies
	// are not used by a drill.
	Traffic Traffic `yaml:"traffic" json:"traffic"`
	// Hold is how long the cluster stays drained while the survivors are judged.
	Hold Duration `yaml:"hold" json:"hold"`
	// Interval is the analysis interval, default 1m.
	Interval Duration `yaml:"interval" json:"interval"`
	// Alpha is the error level of the before/after comparisons, default 0.05.
	Alpha      float64    `yaml:"alpha" json:"alpha"`
	Prometheus Prometheus `yaml:"prometheus" json:"prometheus"`
	// KPIs are compared, per surviving cluster, between the hold and that cluster's own
	// window of the same length just before the drain; their guardrails apply too.
	KPIs []KPI `yaml:"kpis" json:"kpis"`
	// Guardrails are KPIs judged by their absolute guardrail only, on every survivor.
	Guardrails []KPI `yaml:"guardrails" json:"guardrails,omitempty"`
	// BlockingAlarms must be quiet for the drill to start; OutcomeAlarms must stay quiet
	// while it holds.
	BlockingAlarms []Alarm `yaml:"blockingAlarms" json:"blockingAlarms,omitempty"`
	OutcomeAlarms  []Alarm `yaml:"outcomeAlarms" json:"outcomeAlarms,omitempty"`
	// AllowedWindows are when a drill may run (start and hold); none means any time.
	AllowedWindows []Window `yaml:"allowedWindows" json:"allowedWindows,omitempty"`
	// BlockedDates are days (YYYY-MM-DD in TimeZone) on which no drill runs.
	BlockedDates []string `yaml:"blockedDates" json:"blockedDates,omitempty"`
	// TimeZone is the IANA zone of BlockedDates, Schedule and windows without their own.
	TimeZone string `yaml:"timeZone" json:"timeZone,omitempty"`
	// Schedule is a five-field cron expression (or @daily, @weekly…) for verdict serve.
	Schedule string `yaml:"schedule" json:"schedule,omitempty"`
}

// Alarm is a PromQL query that fires when it returns any sample above 0, for at least For.
type Alarm struct {
	Name  string   `yaml:"name" json:"name"`
	Query string   `yaml:"query" json:"query"`
	For   Duration `yaml:"for" json:"for,omitempty"`
}

// Window is a weekly time window, e.g. Mon–Thu 09:00–16:00 Europe/Berlin.
type Window struct {
	Days     []string `yaml:"days" json:"days"`
	Start    string   `yaml:"start" json:"start"`
	End      string   `yaml:"end" json:"end"`
	TimeZone string   `yaml:"timeZone" json:"timeZone,omitempty"`
}

func (d *Drill) isSet(path string) bool {
	_, ok := d.positions[path]
	return ok && !d.nulls[path]
}

// Pos returns where the field at path (or its nearest written ancestor) is in the file.
func (d *Drill) Pos(path string) Pos {
	for p := path; ; {
		if pos, ok := d.positions[p]; ok {
			return pos
		}
		i := lastSep(p)
		if i < 0 {
			return d.Source
		}
		p = p[:i]
	}
}

// FileKind returns the kind of the first document in data ("Experiment", "Drill", or ""
// when it cannot be read), so that commands and serve pick the right loader.
func FileKind(data []byte) string {
	var head struct {
		Kind string `yaml:"kind"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		if err := dec.Decode(&head); err != nil {
			return ""
		}
		if head.Kind != "" {
			return head.Kind
		}
	}
}

// LoadDrillFile reads every drill in the named file, applies defaults and validates them,
// with the same errors LoadFile gives for experiments.
func LoadDrillFile(path string, opts LoadOptions) ([]*Drill, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return LoadDrill(path, data, opts)
}

// LoadDrill is LoadDrillFile on bytes already read; name is used in error positions.
func LoadDrill(name string, data []byte, opts LoadOptions) ([]*Drill, error) {
	return loadDocuments(name, data, opts, "drill", func(n *yaml.Node, d *decoder, mapping bool) *Drill {
		dr := &Drill{Source: Pos{File: name, Line: n.Line, Column: n.Column}}
		if mapping {
			drainAsList(n)
			d.decode(n, reflect.ValueOf(dr).Elem(), "")
		}
		dr.positions, dr.nulls = d.positions, d.nulls
		return dr
	}, func(dr *Drill) string { return dr.Metadata.Name })
}

// drainAsList rewrites `drain: c1` as `drain: [c1]` in the node tree, so the strict decoder
// reads both spellings into one list and its errors keep their positions.
func drainAsList(root *yaml.Node) {
	spec := mappingValue(root, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(spec.Content); i += 2 {
		if v := spec.Content[i+1]; spec.Content[i].Value == "drain" && v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
			spec.Content[i+1] = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: v.Line, Column: v.Column, Content: []*yaml.Node{v}}
		}
	}
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func (d *Drill) checkExplicitZeros() ErrorList {
	var errs ErrorList
	for path, zero := range map[string]bool{
		"spec.hold":               d.Spec.Hold == 0,
		"spec.interval":           d.Spec.Interval == 0,
		"spec.alpha":              d.Spec.Alpha == 0,
		"spec.prometheus.timeout": d.Spec.Prometheus.Timeout == 0,
	} {
		if zero && d.isSet(path) {
			errs = append(errs, &FieldError{Pos: d.Pos(path), Path: path, Msg: "must be positive (leave it out for the default)"})
		}
	}
	return errs
}

// SetDefaults fills every field the file left out. It is idempotent.
func (d *Drill) SetDefaults() {
	s := &d.Spec
	if s.Hold == 0 {
		s.Hold = Duration(DefaultDrillHold)
	}
	if s.Interval == 0 {
		s.Interval = Duration(DefaultInterval)
	}
	if s.Alpha == 0 {
		s.Alpha = DefaultAlpha
	}
	if s.TimeZone == "" {
		s.TimeZone = DefaultDrillTimeZone
	}
	for i := range s.AllowedWindows {
		if s.AllowedWindows[i].TimeZone == "" {
			s.AllowedWindows[i].TimeZone = s.TimeZone
		}
	}
	// KPIs and guardrails take the experiment's KPI defaults (harm, tolerance, guardrail
	// for), from the experiment's own code.
	e := &Experiment{Spec: Spec{KPIs: s.KPIs}}
	e.SetDefaults()
	g := &Experiment{Spec: Spec{KPIs: s.Guardrails}}
	g.SetDefaults()
}

// Experiment is the drill as the engine runs it: an experiment whose canary is the cluster
// drained (its one step at weight 0, held for the drill's hold) and whose baselines are the
// survivors. Its kind stays Drill, so stored runs, status and reports can tell the two
// apart; its spec is what a drill run stores, secrets excluded as for experiments.
func (d *Drill) Experiment(drain string) *Experiment {
	s := &d.Spec
	var survivors []string
	for _, c := range s.Clusters {
		if c != drain {
			survivors = append(survivors, c)
		}
	}
	kpis := slices.Clone(s.KPIs)
	for _, g := range s.Guardrails {
		g.Tolerance = nil // judged by the guardrail only; a tolerance is filled in by defaults
		kpis = append(kpis, g)
	}
	labels := maps.Clone(d.Metadata.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[DrillDrainLabel] = drain
	e := &Experiment{
		APIVersion: d.APIVersion,
		Kind:       KindDrill,
		Metadata:   Metadata{Name: d.Metadata.Name, Labels: labels},
		Spec: Spec{
			Description: s.Description,
			Canary:      Canary{Cluster: drain},
			Baselines:   survivors,
			Traffic: Traffic{Cloudflare: s.Traffic.Cloudflare, Route53: s.Traffic.Route53,
				Steps:     []Step{{Weight: 0, Hold: s.Hold}},
				OnPromote: OnPromoteRestore, OnRollback: OnRollbackRestore},
			Prometheus: s.Prometheus,
			KPIs:       kpis,
			Analysis: Analysis{Interval: s.Interval, Alpha: s.Alpha, History: s.Hold, PrePeriod: s.Hold,
				MinIntervals: drillMinIntervals(s.Hold, s.Interval), MaxDuration: Duration(DefaultMaxDurationPerHold * s.Hold.Std()),
				// A drill never leaves a pool drained for a person to look at: drift restores.
				OnDrift: OnDriftRollback, OnInconclusive: OnInconclusiveRollback},
		},
		Source: d.Source,
	}
	e.SetDefaults()
	return e
}

// drillMinIntervals is how many intervals a before/after comparison needs before it may
// find harm: ten, as for experiments, but at least three and at most half the hold, so a
// short drill can still fail on its KPIs (its guardrails and alarms act from the first).
func drillMinIntervals(hold, interval Duration) int {
	n := 0
	if interval > 0 {
		n = int(hold / interval)
	}
	return max(3, min(DefaultMinIntervals, n/2))
}

// DrillDrainLabel is the label on a drill's experiment that names the cluster drained.
const DrillDrainLabel = "verdict.dev/drain"

// GuardrailOnly reports whether the experiment's KPI i came from a drill's spec.guardrails:
// it is judged by its guardrail alone.
func (d *Drill) GuardrailOnly(i int) bool { return i >= len(d.Spec.KPIs) }

// DrainAt is the cluster the n-th drill (0-based) drains: the list rotates.
func (d *Drill) DrainAt(n int) string {
	if len(d.Spec.Drain) == 0 {
		return ""
	}
	return d.Spec.Drain[((n%len(d.Spec.Drain))+len(d.Spec.Drain))%len(d.Spec.Drain)]
}

// Survivors are the clusters other than drain, in file order.
func (d *Drill) Survivors(drain string) []string {
	var out []string
	for _, c := range d.Spec.Clusters {
		if c != drain {
			out = append(out, c)
		}
	}
	return out
}

// Summary is what verdict validate says of a valid drill: "NAME is valid (drains c1 then
// c2 for 15m, …)".
func (d *Drill) Summary() string {
	s := fmt.Sprintf("%s is valid (drains %s for %s, %d survivor(s), %d KPI(s), %d guardrail(s), %d blocking and %d outcome alarm(s)",
		d.Metadata.Name, strings.Join(d.Spec.Drain, " then "), d.Spec.Hold, max(0, len(d.Spec.Clusters)-1), len(d.Spec.KPIs), len(d.Spec.Guardrails), len(d.Spec.BlockingAlarms), len(d.Spec.OutcomeAlarms))
	if d.Spec.Schedule != "" {
		s += ", schedule " + d.Spec.Schedule
	}
	return s + ")"
}
