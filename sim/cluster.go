package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The routes a simulated cluster serves, as an API ingress would label them.
const (
	routeItems    = "/api/items"
	routeSearch   = "/api/search"
	routeCheckout = "/api/checkout"
	routeOther    = "other"
)

// LatencyBuckets are the histogram buckets of http_request_duration_seconds: dense between
// 50 ms and 1 s, where the demo's p99 and slowerThan thresholds sit, and including the
// boundaries experiment files commonly use (0.05 0.1 0.25 0.5 1 2.5).
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2.5, 5, 10}

// ClusterOptions configure one simulated cluster.
type ClusterOptions struct {
	// Name is the cluster's name, the value of its cluster label.
	Name string
	// Profile is how it behaves; change it later with SetProfile.
	Profile Profile
	// Version is exported as app_build_info{version}, so preconditions such as "the same
	// application version everywhere" have something to check. Default "1.42.0".
	Version string
	// Fast records each request's sampled latency without waiting for it. Default false:
	// the handler really takes that long, so the load balancer and clients see it too.
	Fast bool
	// Seed makes the cluster's random draws reproducible; 0 seeds from the clock.
	Seed uint64
	// ListenAddress defaults to "127.0.0.1:0".
	ListenAddress string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock for drift and noise epochs; default time.Now.
	Now func() time.Time
}

// Cluster is one simulated cluster: an HTTP server on loopback that serves a small API with
// the latency and errors of its profile, instrumented with client_golang the way real
// ingresses are, with its metrics on /metrics for Prometheus to scrape.
type Cluster struct {
	name string
	opts ClusterOptions
	b    *behaviour
	reg  *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	cpu      prometheus.Counter
	cpuPer   prometheus.Gauge
	cpuMu    sync.Mutex
	cpuEWMA  float64

	ln      net.Listener
	srv     *http.Server
	serveWG sync.WaitGroup
	once    sync.Once
}

// NewCluster builds a cluster and starts serving it on its listen address.
func NewCluster(o ClusterOptions) (*Cluster, error) {
	if o.Name == "" {
		return nil, errors.New("sim: a cluster needs a name")
	}
	if err := o.Profile.Validate(); err != nil {
		return nil, fmt.Errorf("sim: cluster %s: %w", o.Name, err)
	}
	if o.Version == "" {
		o.Version = "1.42.0"
	}
	if o.ListenAddress == "" {
		o.ListenAddress = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	c := &Cluster{name: o.Name, opts: o, b: newBehaviour(o.Profile, o.Seed, o.Now()), reg: prometheus.NewRegistry()}
	c.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests served, by status code and route.",
	}, []string{"code", "route"})
	c.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to serve an HTTP request, by route.",
		Buckets: LatencyBuckets,
	}, []string{"route"})
	c.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "http_requests_in_flight",
		Help: "HTTP requests being served.",
	})
	c.cpu = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "app_cpu_seconds_total",
		Help: "CPU time spent serving requests (simulated); divide its increase by requests' for CPU per request.",
	})
	c.cpuPer = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "app_cpu_seconds_per_request",
		Help: "Recent CPU time per request (exponentially weighted, simulated).",
	})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "app_build_info",
		Help: "The application version the cluster runs.",
	}, []string{"version"})
	info.WithLabelValues(o.Version).Set(1)
	c.reg.MustRegister(c.requests, c.duration, c.inFlight, c.cpu, c.cpuPer, info)
	// Pre-create the common series so every cluster reports them from its first scrape,
	// as a long-running ingress would, and "no data" means no scrape, not no request.
	for _, r := range []string{routeItems, routeSearch, routeCheckout} {
		c.requests.WithLabelValues("200", r)
		c.requests.WithLabelValues("500", r)
		c.duration.WithLabelValues(r)
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", c.serve)

	ln, err := net.Listen("tcp", o.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("sim: cluster %s: listen on %s: %w", o.Name, o.ListenAddress, err)
	}
	c.ln = ln
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	c.serveWG.Add(1)
	go func() {
		defer c.serveWG.Done()
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("sim: cluster serve", "cluster", o.Name, "err", err)
		}
	}()
	return c, nil
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// URL is the cluster's base URL, the origin address the load balancer forwards to.
func (c *Cluster) URL() string { return "http://" + c.ln.Addr().String() }

// MetricsURL is where Prometheus scrapes the cluster.
func (c *Cluster) MetricsURL() string { return c.URL() + "/metrics" }

// Addr is the listening host:port.
func (c *Cluster) Addr() string { return c.ln.Addr().String() }

// Profile is the profile in effect.
func (c *Cluster) Profile() Profile { return c.b.profile() }

// SetProfile changes how the cluster behaves from the next request on: this is how a
// regression, an outage or a recovery is injected into a running fleet.
func (c *Cluster) SetProfile(p Profile) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("sim: cluster %s: %w", c.name, err)
	}
	c.b.setProfile(p)
	return nil
}

// Close stops the server at once, dropping requests in flight, and waits for it.
func (c *Cluster) Close() error {
	var err error
	c.once.Do(func() {
		err = c.srv.Close()
		c.serveWG.Wait()
	})
	return err
}

func routeOf(path string) string {
	switch path {
	case routeItems, routeSearch, routeCheckout:
		return path
	}
	return routeOther
}

func (c *Cluster) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	route := routeOf(r.URL.Path)
	c.inFlight.Inc()
	defer c.inFlight.Dec()
	if route == routeOther {
		http.NotFound(w, r)
		c.requests.WithLabelValues("404", route).Inc()
		c.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		return
	}
	o := c.b.draw(c.opts.Now(), route)
	observed := o.latency
	if !c.opts.Fast && o.latency > 0 {
		t := time.NewTimer(o.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			// The client went away: nginx's 499.
			c.requests.WithLabelValues("499", route).Inc()
			c.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
			return
		}
		observed = time.Since(start)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(o.status)
	fmt.Fprintf(w, `{"cluster":%q,"status":%d}`+"\n", c.name, o.status)
	c.requests.WithLabelValues(strconv.Itoa(o.status), route).Inc()
	c.duration.WithLabelValues(route).Observe(observed.Seconds())
	c.cpu.Add(o.cpu)
	c.cpuMu.Lock()
	if c.cpuEWMA == 0 {
		c.cpuEWMA = o.cpu
	} else {
		c.cpuEWMA += 0.01 * (o.cpu - c.cpuEWMA)
	}
	c.cpuPer.Set(c.cpuEWMA)
	c.cpuMu.Unlock()
}
