package experiments

import "time"

// Defaults, documented in docs/experiment-spec.md.
const (
	DefaultClusterLabel       = "cluster"
	DefaultPrometheusTimeout  = 30 * time.Second
	DefaultInterval           = time.Minute
	DefaultAlpha              = 0.05
	DefaultHistory            = 24 * time.Hour // same-code history read before the run
	DefaultShareTolerance     = 0.05           // relative observed/configured share gap that is a mismatch
	DefaultApplyHookTimeout   = 10 * time.Minute
	DefaultReadinessTimeout   = 30 * time.Minute
	DefaultMinIntervals       = 10
	DefaultNoDataTimeout      = 10 * time.Minute
	DefaultGuardrailFor       = 2
	DefaultHookTimeout        = 5 * time.Minute
	DefaultLatencyQuantile    = 0.99
	DefaultLatencyTolerance   = 0.05
	DefaultSlowTolerance      = 0.20
	DefaultRelativeTolerance  = 0.10
	DefaultMaxDurationPerHold = 2 // maxDuration defaults to this many times the sum of holds

	// MaxHistory bounds spec.analysis.history: older history says little about today's
	// clusters, and reading it costs the Prometheus server.
	MaxHistory = 7 * 24 * time.Hour
	// MinHistoryIntervals is the shortest non-zero history, in analysis intervals.
	MinHistoryIntervals = 2
	// MaxShareTolerance bounds spec.analysis.shareTolerance: a wider tolerance would let a
	// canary that gets half its traffic pass the traffic-share check.
	MaxShareTolerance = 0.5
)

// SetDefaults fills every field the file left out. It is idempotent.
func (e *Experiment) SetDefaults() {
	s := &e.Spec
	if s.Traffic.OnPromote == "" {
		s.Traffic.OnPromote = OnPromoteKeep
	}
	if s.Traffic.OnRollback == "" {
		s.Traffic.OnRollback = OnRollbackRestore
	}
	if r := s.Traffic.Route53; r != nil && r.Type == "" {
		r.Type = DefaultRecordType
	}
	if s.Prometheus.ClusterLabel == "" {
		s.Prometheus.ClusterLabel = DefaultClusterLabel
	}
	if s.Prometheus.Timeout == 0 {
		s.Prometheus.Timeout = Duration(DefaultPrometheusTimeout)
	}
	for i := range s.KPIs {
		k := &s.KPIs[i]
		if k.Harm == "" {
			k.Harm = HarmIncrease
			if k.Type == KPIThroughput {
				k.Harm = HarmDecrease
			}
		}
		if k.Tolerance == nil {
			t := Fraction(DefaultRelativeTolerance)
			if k.Type == KPILatency {
				t = DefaultLatencyTolerance
			}
			k.Tolerance = &t
		}
		if k.Type == KPILatency && k.Quantile == 0 {
			k.Quantile = DefaultLatencyQuantile
		}
		if k.Type == KPILatency && k.SlowerThan != nil && k.SlowTolerance == nil {
			t := Fraction(DefaultSlowTolerance)
			k.SlowTolerance = &t
		}
		if k.Guardrail != nil && k.Guardrail.For == 0 {
			k.Guardrail.For = DefaultGuardrailFor
		}
	}
	a := &s.Analysis
	if a.Interval == 0 {
		a.Interval = Duration(DefaultInterval)
	}
	if a.Alpha == 0 {
		a.Alpha = DefaultAlpha
	}
	a.History = e.history()
	a.PrePeriod = a.History // the engine still reads the deprecated name
	if a.ShareTolerance == 0 {
		a.ShareTolerance = DefaultShareTolerance
	}
	if a.MinIntervals == 0 {
		a.MinIntervals = DefaultMinIntervals
	}
	if a.MaxDuration == 0 {
		a.MaxDuration = Duration(DefaultMaxDurationPerHold * s.TotalHold())
	}
	if a.NoDataTimeout == 0 {
		a.NoDataTimeout = Duration(DefaultNoDataTimeout)
	}
	if a.OnInconclusive == "" {
		a.OnInconclusive = OnInconclusiveRollback
	}
	if a.OnDrift == "" {
		a.OnDrift = OnDriftPause
	}
	if ap := s.Canary.Apply; ap != nil {
		if ap.During == "" && (ap.Hook != nil || ap.Readiness != nil) {
			ap.During = ApplyDuringFirstStep
		}
		if ap.Hook != nil && ap.Hook.Timeout == 0 {
			ap.Hook.Timeout = Duration(DefaultApplyHookTimeout)
		}
		if r := ap.Readiness; r != nil && r.Timeout == 0 {
			r.Timeout = Duration(DefaultReadinessTimeout)
		}
	}
	if c := s.Capacity; c != nil {
		if c.HPA.DefaultMinReplicas == 0 {
			c.HPA.DefaultMinReplicas = 1
		}
		if c.HPA.DefaultMaxReplicas == 0 {
			c.HPA.DefaultMaxReplicas = c.HPA.DefaultMinReplicas
		}
		if c.Hook != nil && c.Hook.Timeout == 0 {
			c.Hook.Timeout = Duration(DefaultHookTimeout)
		}
	}
}

// history resolves spec.analysis.history and its deprecated alias prePeriod. A written
// value wins (history over prePeriod; writing both is a validation error), and 0s written
// means off. Without positions (a spec built in Go or read back from JSON) a non-zero
// value wins, and both zero means the default.
func (e *Experiment) history() Duration {
	a := &e.Spec.Analysis
	hist, pre := e.isSet("spec.analysis.history"), e.isSet("spec.analysis.prePeriod")
	switch {
	case hist:
		return a.History
	case pre:
		return a.PrePeriod
	case a.History != 0:
		return a.History
	case a.PrePeriod != 0:
		return a.PrePeriod
	}
	return Duration(DefaultHistory)
}

// TotalHold is the sum of every judged step's hold (a migration's cut-over is not held):
// the shortest possible run after preflight.
func (s *Spec) TotalHold() time.Duration {
	var d time.Duration
	for _, st := range s.Traffic.Steps[:s.Traffic.JudgedSteps()] {
		d += st.Hold.Std()
	}
	return d
}
