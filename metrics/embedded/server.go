// Package embedded runs a small Prometheus inside the verdict process: the real Prometheus
// TSDB and PromQL engine behind the HTTP API endpoints that Verdict's KPI source uses, a
// scrape loop that pulls /metrics from targets and labels them with their cluster, and a
// retention window.
//
// It exists so that `verdict demo` and the tests can run the whole system with one command and
// no external Prometheus, while still querying real PromQL over a real TSDB. It is a library
// used by the demo, not a Prometheus replacement: no remote write, no rules, no service
// discovery, no native histograms.
//
// Typical use:
//
//	srv, err := embedded.New(embedded.Options{ScrapeInterval: 5 * time.Second})
//	if err != nil { ... }
//	defer srv.Close()
//	srv.AddTarget("http://127.0.0.1:8081/metrics", map[string]string{"cluster": "canary"})
//	if err := srv.Start(); err != nil { ... }
//	// point metrics.Options{Address: srv.URL()} at it
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"
)

// Version is what the embedded server reports in /api/v1/status/buildinfo, so that a report
// says which engine answered. It names the Prometheus library version it is built on.
const Version = "3.16.0-verdict-embedded"

// Options configure an embedded Prometheus. The zero value is usable: every zero field is
// replaced by the default documented on it.
type Options struct {
	// Dir is the TSDB directory. Empty means a new temporary directory, removed by Close.
	// Reusing a directory across New/Close keeps the data (a restart, as in the demo's
	// outage scenario).
	Dir string
	// ListenAddress is where Start listens. Default "127.0.0.1:0" (a free loopback port).
	ListenAddress string
	// ScrapeInterval is how often each target is scraped. Default 15s.
	ScrapeInterval time.Duration
	// ScrapeTimeout bounds one scrape. Default 10s, capped at ScrapeInterval.
	ScrapeTimeout time.Duration
	// Retention is how long samples are kept. Default 24h. Like Prometheus, data is
	// deleted a block at a time, so old samples may outlive Retention by up to a block.
	Retention time.Duration
	// LookbackDelta is PromQL's staleness window for instant vectors. Default 5m.
	LookbackDelta time.Duration
	// QueryTimeout is the longest a query may run (a request's timeout parameter can only
	// shorten it). Default 2m.
	QueryTimeout time.Duration
	// MaxSamples bounds the samples one query may load into memory. Default 50,000,000.
	MaxSamples int
	// ClusterLabel is the label AddTarget requires on every target. Default "cluster".
	ClusterLabel string
	// Logger receives operational messages. Default: discard.
	Logger *slog.Logger
	// ScrapeClient performs scrapes. Default: a client of its own, closed by Close.
	ScrapeClient *http.Client
	// Now is the clock for scrape timestamps and default query times. Default time.Now.
	Now func() time.Time
}

func (o *Options) fill() {
	if o.ListenAddress == "" {
		o.ListenAddress = "127.0.0.1:0"
	}
	if o.ScrapeInterval <= 0 {
		o.ScrapeInterval = 15 * time.Second
	}
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = 10 * time.Second
	}
	if o.ScrapeTimeout > o.ScrapeInterval {
		o.ScrapeTimeout = o.ScrapeInterval
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	if o.LookbackDelta <= 0 {
		o.LookbackDelta = 5 * time.Minute
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 2 * time.Minute
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = 50_000_000
	}
	if o.ClusterLabel == "" {
		o.ClusterLabel = "cluster"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server is an embedded Prometheus. Create it with New, add targets and samples, Start it to
// serve HTTP and scrape, and Close it to release everything it holds.
type Server struct {
	opts    Options
	tempDir bool
	db      *tsdb.DB
	engine  *promql.Engine
	handler http.Handler
	client  *http.Client
	ownsCli bool

	ready atomic.Bool

	mu       sync.Mutex
	targets  map[string]*target
	started  bool
	closed   bool
	ln       net.Listener
	srv      *http.Server
	serveErr chan error
	loopCtx  context.Context
	stop     context.CancelFunc
	loops    sync.WaitGroup
}

// New opens the TSDB and builds the query engine and HTTP handler. It does not listen or
// scrape until Start, so samples can be loaded first.
func New(opts Options) (*Server, error) {
	opts.fill()
	s := &Server{opts: opts, targets: map[string]*target{}}
	if s.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "verdict-prometheus-")
		if err != nil {
			return nil, fmt.Errorf("create embedded Prometheus directory: %w", err)
		}
		s.opts.Dir, s.tempDir = dir, true
	}
	tsdbOpts := tsdb.DefaultOptions()
	tsdbOpts.RetentionDuration = opts.Retention.Milliseconds()
	db, err := tsdb.Open(s.opts.Dir, opts.Logger, nil, tsdbOpts, nil)
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("open embedded Prometheus TSDB in %s: %w", s.opts.Dir, err)
	}
	s.db = db
	s.engine = promql.NewEngine(promql.EngineOpts{
		Logger:               opts.Logger,
		MaxSamples:           opts.MaxSamples,
		Timeout:              opts.QueryTimeout,
		LookbackDelta:        opts.LookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		NoStepSubqueryIntervalFn: func(int64) int64 {
			return opts.ScrapeInterval.Milliseconds()
		},
	})
	s.client = opts.ScrapeClient
	if s.client == nil {
		s.client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		}}
		s.ownsCli = true
	}
	s.handler = s.newHandler()
	s.loopCtx, s.stop = context.WithCancel(context.Background())
	return s, nil
}

// Start listens on Options.ListenAddress, serves the HTTP API and starts scraping every
// target. /-/ready answers 200 once Start has returned.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("embedded Prometheus: Start after Close")
	}
	if s.started {
		return errors.New("embedded Prometheus: already started")
	}
	ln, err := net.Listen("tcp", s.opts.ListenAddress)
	if err != nil {
		return fmt.Errorf("embedded Prometheus: listen on %s: %w", s.opts.ListenAddress, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	s.started = true
	for _, t := range s.targets {
		s.startLoop(t)
	}
	s.ready.Store(true)
	s.opts.Logger.Info("embedded Prometheus started", "address", ln.Addr().String())
	return nil
}

// Close stops scraping and serving, closes the TSDB and removes a temporary directory.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.ready.Store(false)
	s.stop()
	srv, serveErr := s.srv, s.serveErr
	s.mu.Unlock()

	s.loops.Wait()
	var errs []error
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		cancel()
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if s.ownsCli {
		s.client.CloseIdleConnections()
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close embedded Prometheus TSDB: %w", err))
	}
	s.engine.Close()
	s.removeTemp()
	return errors.Join(errs...)
}

func (s *Server) removeTemp() {
	if s.tempDir {
		_ = os.RemoveAll(s.opts.Dir)
	}
}

// Addr is the host:port the server listens on; empty before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL to give a Prometheus client (metrics.Options.Address); empty before
// Start.
func (s *Server) URL() string {
	if a := s.Addr(); a != "" {
		return "http://" + a
	}
	return ""
}

// Handler serves the API without a listener of the server's own, for mounting it inside
// another HTTP server (the demo's, for example). /-/ready reflects Start and Close.
func (s *Server) Handler() http.Handler { return s.handler }

// Dir is the TSDB directory (useful to reopen the same data after Close).
func (s *Server) Dir() string { return s.opts.Dir }

// buildInfo is the payload of /api/v1/status/buildinfo.
func buildInfo() map[string]string {
	return map[string]string{
		"version":   Version,
		"revision":  "",
		"branch":    "",
		"buildUser": "verdict",
		"buildDate": "",
		"goVersion": runtime.Version(),
	}
}
