package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
)

// Telemetry is what the server says about itself on /metrics: per experiment its phase,
// canary weight and KPI verdicts, counters of decisions and endings, and the health of the
// systems it depends on (Prometheus queries, the Cloudflare API, notifications). Create
// it before the Cloudflare client so that client's transport can be instrumented.
type Telemetry struct {
	reg *prometheus.Registry

	decisions     *prometheus.CounterVec
	rollbacks     *prometheus.CounterVec
	promotions    *prometheus.CounterVec
	queryErrors   *prometheus.CounterVec
	queryDuration *prometheus.HistogramVec
	cfRequests    *prometheus.CounterVec
	notifyFails   *prometheus.CounterVec
	sseClients    prometheus.Gauge
	fileErrors    prometheus.Gauge
	runs          *runCollector
}

// NewTelemetry registers Verdict's metrics (and the Go and process collectors) in a
// registry of its own.
func NewTelemetry() *Telemetry {
	t := &Telemetry{reg: prometheus.NewRegistry()}
	t.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_decisions_total", Help: "Decisions recorded by the engine, by experiment and action (continue, advance, promote, rollback, hold)."}, []string{"experiment", "action"})
	t.rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_rollbacks_total", Help: "Runs that ended rolled back or aborted, by experiment and verdict."}, []string{"experiment", "verdict"})
	t.promotions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_promotions_total", Help: "Runs that ended promoted, by experiment."}, []string{"experiment"})
	t.queryErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_prometheus_query_errors_total", Help: "Failed KPI and precondition queries to Prometheus, by experiment."}, []string{"experiment"})
	t.queryDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "verdict_prometheus_query_duration_seconds", Help: "Latency of KPI and precondition queries to Prometheus.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}, []string{"experiment", "kind"})
	t.cfRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_cloudflare_requests_total", Help: "Requests to the Cloudflare API by method and status code (\"error\" when no response came)."}, []string{"method", "code"})
	t.notifyFails = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "verdict_notification_failures_total", Help: "Notifications that could not be delivered, by experiment and target kind."}, []string{"experiment", "target"})
	t.sseClients = prometheus.NewGauge(prometheus.GaugeOpts{Name: "verdict_sse_clients", Help: "Open event streams."})
	t.fileErrors = prometheus.NewGauge(prometheus.GaugeOpts{Name: "verdict_invalid_files", Help: "Experiment files in the watched directory that do not validate."})
	t.runs = newRunCollector()
	t.reg.MustRegister(t.runs, t.decisions, t.rollbacks, t.promotions, t.queryErrors, t.queryDuration, t.cfRequests, t.notifyFails, t.sseClients, t.fileErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return t
}

// CloudflareTransport counts the Cloudflare API's answers by status code; wrap the
// transport of the Cloudflare client's HTTP client with it. next nil means
// http.DefaultTransport.
func (t *Telemetry) CloudflareTransport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		t.cfRequests.WithLabelValues(r.Method, code).Inc()
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip implements http.RoundTripper.
func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// NotificationFailed counts a failed notification; it fits engine.HTTPNotifier.Failed.
func (t *Telemetry) NotificationFailed(n engine.Notification, target string, _ error) {
	t.notifyFails.WithLabelValues(n.Experiment, target).Inc()
}

// observe counts the decisions and endings in the engine's events.
func (t *Telemetry) observe(e engine.Event, experiment string) {
	switch e.Type {
	case engine.EventDecision:
		var d struct {
			Decision struct {
				Action string `json:"action"`
			} `json:"decision"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Decision.Action != "" {
			t.decisions.WithLabelValues(experiment, d.Decision.Action).Inc()
		}
	case engine.EventRunEnded:
		var d struct {
			State   store.State `json:"state"`
			Verdict string      `json:"verdict"`
		}
		if json.Unmarshal(e.Data, &d) != nil {
			return
		}
		switch d.State {
		case store.StatePromoted:
			t.promotions.WithLabelValues(experiment).Inc()
		case store.StateRolledBack, store.StateAborted:
			t.rollbacks.WithLabelValues(experiment, d.Verdict).Inc()
		}
	}
}

// prepare creates an experiment's error counters at zero, so that rate() and alerts
// work before the first error.
func (t *Telemetry) prepare(exp *experiments.Experiment) {
	name := exp.Metadata.Name
	t.queryErrors.WithLabelValues(name)
	t.promotions.WithLabelValues(name)
	for _, v := range []string{engine.VerdictRolledBack, engine.VerdictAborted} {
		t.rollbacks.WithLabelValues(name, v)
	}
	for i, n := range exp.Spec.Notify {
		kind := "webhook"
		if n.Slack != nil {
			kind = "slack"
		}
		t.notifyFails.WithLabelValues(name, fmt.Sprintf("notify[%d] (%s)", i, kind))
	}
}

// instrumentKPI times an experiment's queries.
func (t *Telemetry) instrumentKPI(src engine.KPISource, experiment string) engine.KPISource {
	return &timedSource{src: src, t: t, exp: experiment}
}

type timedSource struct {
	src engine.KPISource
	t   *Telemetry
	exp string
}

// Fetch implements engine.KPISource.
func (s *timedSource) Fetch(ctx context.Context, kpi metrics.KPI, r metrics.Range, clusters []string) (*metrics.Data, error) {
	start := time.Now()
	d, err := s.src.Fetch(ctx, kpi, r, clusters)
	s.record("kpi", start, err)
	return d, err
}

// Instant implements engine.KPISource.
func (s *timedSource) Instant(ctx context.Context, query string, at time.Time) (model.Value, []string, error) {
	start := time.Now()
	v, w, err := s.src.Instant(ctx, query, at)
	s.record("instant", start, err)
	return v, w, err
}

func (s *timedSource) record(kind string, start time.Time, err error) {
	s.t.queryDuration.WithLabelValues(s.exp, kind).Observe(time.Since(start).Seconds())
	if err != nil {
		s.t.queryErrors.WithLabelValues(s.exp).Inc()
	}
}

// runCollector turns the supervised runs' snapshots into gauges at scrape time, so a
// finished or forgotten run leaves no stale series behind. Series are per experiment, from
// its latest run: a label per run would grow without bound as experiments are re-run, so
// only verdict_experiment_info names the run (join on experiment for it).
type runCollector struct {
	mu                                    sync.Mutex
	sups                                  map[*supervisor]bool
	info, phase, weight, effect, kpiState *prometheus.Desc
	lower, upper, step                    *prometheus.Desc
}

var states = []store.State{store.StatePending, store.StatePreflight, store.StateRamping, store.StatePromoting, store.StatePromoted,
	store.StateRollingBack, store.StateRolledBack, store.StatePaused, store.StateAborted, store.StateFailed}

func newRunCollector() *runCollector {
	l := []string{"experiment"}
	return &runCollector{sups: map[*supervisor]bool{},
		info:     prometheus.NewDesc("verdict_experiment_info", "The latest run of each experiment supervised by this server (value 1).", []string{"experiment", "run", "pool", "canary", "file"}, nil),
		phase:    prometheus.NewDesc("verdict_experiment_phase", "1 for the run's current phase (state), 0 for the others.", append(l, "phase"), nil),
		weight:   prometheus.NewDesc("verdict_experiment_canary_weight", "The canary's share of the experiment's traffic (0–1), from the last weights confirmed by read-back.", l, nil),
		step:     prometheus.NewDesc("verdict_experiment_step", "The run's current traffic step (0 before the first change).", l, nil),
		effect:   prometheus.NewDesc("verdict_kpi_effect", "The KPI's estimated effect of the canary against the baselines (relative for ratios).", append(l, "kpi"), nil),
		lower:    prometheus.NewDesc("verdict_kpi_effect_lower", "Lower bound of the KPI effect's confidence sequence.", append(l, "kpi"), nil),
		upper:    prometheus.NewDesc("verdict_kpi_effect_upper", "Upper bound of the KPI effect's confidence sequence.", append(l, "kpi"), nil),
		kpiState: prometheus.NewDesc("verdict_kpi_status", "1 for the KPI's current status (harm, non-inferior, inconclusive, no data), 0 for the others.", append(l, "kpi", "status"), nil),
	}
}

// Describe implements prometheus.Collector.
func (c *runCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.phase, c.weight, c.step, c.effect, c.lower, c.upper, c.kpiState} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *runCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	var runs []*runner
	for sv := range c.sups {
		runs = append(runs, sv.list()...)
	}
	c.mu.Unlock()
	// The latest run of each experiment (run IDs sort by start time).
	latest := map[string]*runner{}
	for _, r := range runs {
		if cur, ok := latest[r.experiment]; !ok || r.id > cur.id {
			latest[r.experiment] = r
		}
	}
	for _, r := range latest {
		s := r.snapshot()
		exp, id := r.experiment, r.id
		canary := r.exp.Spec.Canary.Cluster
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, exp, id, s.Run.Pool, canary, r.file)
		for _, st := range states {
			v := 0.0
			if s.Run.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, exp, string(st))
		}
		if share, ok := canaryShare(r, s.Run); ok {
			ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, share, exp)
		}
		ch <- prometheus.MustNewConstMetric(c.step, prometheus.GaugeValue, float64(s.Run.Step), exp)
		if s.Decision == nil {
			continue
		}
		for _, k := range s.Decision.KPIs {
			ch <- prometheus.MustNewConstMetric(c.effect, prometheus.GaugeValue, k.Interval.Estimate, exp, k.Name)
			if k.Interval.LowerBounded {
				ch <- prometheus.MustNewConstMetric(c.lower, prometheus.GaugeValue, k.Interval.Lower, exp, k.Name)
			}
			if k.Interval.UpperBounded {
				ch <- prometheus.MustNewConstMetric(c.upper, prometheus.GaugeValue, k.Interval.Upper, exp, k.Name)
			}
			for _, st := range []string{"harm", "non-inferior", "inconclusive", "no data"} {
				v := 0.0
				if string(k.Status) == st {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.kpiState, prometheus.GaugeValue, v, exp, k.Name, st)
			}
		}
	}
}

func (c *runCollector) attach(sv *supervisor, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.sups[sv] = true
	} else {
		delete(c.sups, sv)
	}
}

// canaryShare is the canary origin's weight over the experiment's origins' total.
func canaryShare(r *runner, rec store.Run) (float64, bool) {
	spec := r.exp.Spec
	origins := spec.Traffic.Origins()
	w := rec.Current
	if len(w) == 0 {
		w = rec.Original
	}
	if len(w) == 0 {
		return 0, false
	}
	total := 0.0
	for _, c := range spec.Clusters() {
		total += w[origins[c]]
	}
	if total <= 0 {
		return 0, false
	}
	return w[origins[spec.Canary.Cluster]] / total, true
}

func (t *Telemetry) handler() http.Handler {
	return promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{Registry: t.reg})
}
