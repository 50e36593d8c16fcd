package experiments

import "time"

// Defaults, documented in docs/experiment-spec.md.
const (
	DefaultClusterLabel       = "cluster"
	DefaultPrometheusTimeout  = 30 * time.Second
	DefaultInterval           = time.Minute
	DefaultAlpha              = 0.05
	DefaultPrePeriod          = 30 * time.Minute
	DefaultMinIntervals       = 10
	DefaultNoDataTimeout      = 10 * time.Minute
	DefaultGuardrailFor       = 2
	DefaultHookTimeout        = 5 * time.Minute
	DefaultLatencyQuantile    = 0.99
	DefaultLatencyTolerance   = 0.05
	DefaultSlowTolerance      = 0.20
	DefaultRelativeTolerance  = 0.10
	DefaultMaxDurationPerHold = 2 // maxDuration defaults to this many times the sum of holds
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
	if _, written := e.positions["spec.analysis.prePeriod"]; a.PrePeriod == 0 && !written {
		a.PrePeriod = Duration(DefaultPrePeriod) // prePeriod: 0s turns calibration off
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

// TotalHold is the sum of every step's hold: the shortest possible run after preflight.
func (s *Spec) TotalHold() time.Duration {
	var d time.Duration
	for _, st := range s.Traffic.Steps {
		d += st.Hold.Std()
	}
	return d
}
