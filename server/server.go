// Package server is Verdict's service mode: it watches a directory of experiment files,
// supervises one engine run per pool (several experiments at once), and exposes them over
// an HTTP API with server-sent events, a web dashboard and Prometheus metrics.
//
// The server never decides anything about an experiment: the engine does. It starts,
// resumes and steps runs, relays their events, and turns people's requests into the
// engine's commands (pause, resume, promote, abort) with who asked and why.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// DefaultListen is where the server listens unless told otherwise: loopback, so that no
// token is needed on a laptop and nothing is exposed by accident.
const DefaultListen = "127.0.0.1:8080"

// Options configure a Server. Store and Steerer (or SteererFor) are required; every other
// field has a default.
type Options struct {
	Store   store.Store
	Steerer traffic.Steerer
	// SteererFor, when set, builds each experiment's own steerer (of its provider) with a
	// logger that names the run (so every log line of an experiment carries its run ID);
	// Steerer may then be nil.
	SteererFor func(exp *experiments.Experiment, log *slog.Logger) (traffic.Steerer, error)

	// Dir is the directory of experiment files to watch (a GitOps checkout). The server
	// drives the runs started from files in it, and resumes them after a restart. Empty
	// means no watching: the server exposes the runs in the store and drives none.
	Dir string
	// Poll is how often Dir is scanned. Default 2s.
	Poll time.Duration

	// Listen is the address to listen on. Default DefaultListen.
	Listen string
	// Token is the bearer token every API request must carry. Required unless Listen is a
	// loopback address; when set it is required on loopback too.
	Token string
	// Tokens are bearer tokens that name who holds them (a person, a CI job), accepted as
	// well as Token. An action authenticated by one is recorded as done by its Name: the
	// who a client sends is then only noted in the reason ("on behalf of ..."). Any token
	// makes every API request need one, on loopback too.
	Tokens []NamedToken

	// AdoptOrphans lets the server take over unfinished runs started elsewhere (verdict
	// run, another serve with another directory), whatever their spec file, once their
	// lease has been expired for OrphanGrace: it drives them from their stored spec. Without
	// it such runs are only listed as orphaned. Needs leases (Replica and a store.Leaser).
	AdoptOrphans bool
	// OrphanGrace is how long a run's lease must have been expired before AdoptOrphans
	// takes it, so that `verdict run --resume` right after a crash wins. Default LeaseTTL.
	OrphanGrace time.Duration

	// MetricsFor connects to an experiment's Prometheus. Default: metrics.New with the
	// experiment's prometheus settings.
	MetricsFor func(*experiments.Experiment) (engine.KPISource, func(), error)
	// Notifier delivers notifications. Default: engine.HTTPNotifier counting failures in
	// Telemetry.
	Notifier engine.Notifier
	// Hooks runs capacity hooks. Default: the engine's (executing the command).
	Hooks engine.HookRunner
	// Clock drives the runs. Default engine.RealClock.
	Clock engine.Clock
	// Tick is how often every run steps. Default: per experiment, a sixth of its analysis
	// interval within 1s–10s.
	Tick time.Duration
	// Settle is passed to the engine (see engine.Options.Settle).
	Settle time.Duration
	// StepTimeout bounds one step of one run. Default 2m.
	StepTimeout time.Duration
	// ActionWait is how long an action request waits for the run to apply it before
	// answering 202 Accepted. Default 10s.
	ActionWait time.Duration
	// Who is the actor recorded for automatic decisions. Default "verdict-serve@HOST".
	Who string
	// LookupEnv resolves ${VAR} in experiment files. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Telemetry receives the server's metrics. Default: a new one.
	Telemetry *Telemetry
	// ReportURL, when set, links each run to its HTML report; default the server's own
	// /runs/{id}/report page.
	ReportURL func(runID string) string
	// Logger defaults to discarding.
	Logger *slog.Logger

	// Replica names this process among the replicas sharing Store (VERDICT_REPLICA, else
	// the hostname and pid). With a Replica set and a Store that implements store.Leaser,
	// every run is driven only by the replica holding its lease: each replica tries to
	// acquire the lease of every unfinished run of Dir it does not drive, at every Poll, and
	// takes the run over (reconciling it against the pool) when it gets it. Empty means no
	// leases: one process owns the store, as before.
	Replica string
	// LeaseTTL is how long a lease lasts without renewal: a dead replica's runs are taken
	// over after about that long. Default 30s.
	LeaseTTL time.Duration
	// LeaseRenew is how often leases are renewed. Default LeaseTTL/3.
	LeaseRenew time.Duration
	// LeaseClock is the time leases are renewed and given up by. Default the wall clock,
	// which is what the store measures leases with; it is not Clock, which may be virtual.
	LeaseClock store.Clock
	// EventPoll is how often a replica sharing the store reads the events of the runs other
	// replicas drive, to relay them on its own event stream (with PostgreSQL, a notification
	// also wakes it at once). Default 1s. Only used with leases.
	EventPoll time.Duration
}

// NamedToken is a bearer token and the principal it authenticates.
type NamedToken struct {
	// Name is recorded as who for the actions the token authenticates.
	Name string
	// Secret is the bearer token itself.
	Secret string
}

// Server is a running service. Create it with New, then Start (or Run).
type Server struct {
	opts   Options
	tel    *Telemetry
	broker *broker
	sup    *supervisor
	watch  *watcher
	http   *http.Server
	ln     net.Listener

	leaser store.Leaser // nil without leases

	cancel context.CancelFunc
	bg     sync.WaitGroup
	kick   chan struct{}
	once   sync.Once
	runExp sync.Map // run ID -> experiment name, for events
	routes []string // the patterns Handler registered, for the documentation test

	driftMu sync.Mutex
	drift   map[string]driftState // unfinished run ID -> what its events say of drift
}

// streamBacklog is how many messages the server keeps for clients resuming a stream with
// Last-Event-ID (a decision is a few KiB, so at most some tens of MiB).
const streamBacklog = 5000

// ErrTokenRequired means the server was asked to listen beyond loopback without a token.
var ErrTokenRequired = errors.New("a bearer token is required to listen on a non-loopback address")

// New checks the options, fills defaults and refuses an unsafe configuration: a
// non-loopback address without a token.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || (opts.Steerer == nil && opts.SteererFor == nil) {
		return nil, errors.New("server: Store and Steerer (or SteererFor) are required")
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	seen := map[string]bool{}
	opts.Tokens = slices.Clone(opts.Tokens)
	for i, t := range opts.Tokens {
		t.Name = strings.TrimSpace(t.Name)
		if t.Name == "" || t.Secret == "" || Printable(t.Name) != t.Name || len(t.Name) > 200 {
			return nil, fmt.Errorf("server: token %d needs a name (printable, at most 200 bytes) and a secret", i+1)
		}
		if seen[t.Secret] || t.Secret == opts.Token {
			return nil, fmt.Errorf("server: token %q has the same secret as another token", t.Name)
		}
		seen[t.Secret] = true
		opts.Tokens[i] = t
	}
	if !isLoopback(opts.Listen) && opts.Token == "" && len(opts.Tokens) == 0 {
		return nil, fmt.Errorf("refusing to listen on %s: %w (set VERDICT_TOKEN or --token-file, or listen on 127.0.0.1)", opts.Listen, ErrTokenRequired)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Telemetry == nil {
		opts.Telemetry = NewTelemetry()
	}
	if opts.Clock == nil {
		opts.Clock = engine.RealClock{}
	}
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 2 * time.Minute
	}
	if opts.ActionWait <= 0 {
		opts.ActionWait = 10 * time.Second
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.Who == "" {
		host, _ := os.Hostname()
		opts.Who = "verdict-serve@" + host
	}
	if opts.MetricsFor == nil {
		opts.MetricsFor = PrometheusFor
	}
	if opts.Notifier == nil {
		opts.Notifier = &engine.HTTPNotifier{Failed: opts.Telemetry.NotificationFailed}
	}
	if opts.Dir != "" {
		abs, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("experiments directory %s: %w", opts.Dir, err)
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("experiments directory %s is not a readable directory", opts.Dir)
		}
		opts.Dir = abs
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 30 * time.Second
	}
	if opts.LeaseRenew <= 0 || opts.LeaseRenew >= opts.LeaseTTL {
		opts.LeaseRenew = opts.LeaseTTL / 3
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = opts.LeaseTTL
	}
	if opts.EventPoll <= 0 {
		opts.EventPoll = time.Second
	}
	var b [4]byte
	rand.Read(b[:])
	s := &Server{opts: opts, tel: opts.Telemetry, broker: newBroker(hex.EncodeToString(b[:]), streamBacklog), kick: make(chan struct{}, 1)}
	if l, ok := opts.Store.(store.Leaser); ok && opts.Replica != "" {
		s.leaser = l
	}
	s.sup = newSupervisor(s)
	if opts.Dir != "" {
		s.watch = newWatcher(s, opts.Dir)
	}
	s.tel.runs.attach(s.sup, true)
	return s, nil
}

// PrometheusFor is the default Options.MetricsFor: a KPI source for the experiment's
// Prometheus with its auth and TLS settings.
func PrometheusFor(exp *experiments.Experiment) (engine.KPISource, func(), error) {
	p := exp.Spec.Prometheus
	o := metrics.Options{Address: p.Address, ClusterLabel: p.ClusterLabel, Timeout: p.Timeout.Std()}
	if a := p.Auth; a != nil {
		o.BearerTokenFile = a.BearerTokenFile
		o.Headers = a.Headers
		if b := a.Basic; b != nil {
			o.BasicAuth = &metrics.BasicAuth{Username: b.Username, PasswordFile: b.PasswordFile}
		}
	}
	if t := p.TLS; t != nil {
		o.TLSCAFile = t.CAFile
	}
	src, err := metrics.New(o)
	if err != nil {
		return nil, nil, err
	}
	return src, src.Close, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Start listens, resumes the runs a previous server left unfinished, and starts watching.
// It returns once the listener is open.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.Listen, err)
	}
	s.ln = ln
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // event streams lift it for themselves
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	// Resume first, so that from its first answer the server drives the runs it owns.
	if s.watch != nil {
		if err := s.watch.resumeOwned(ctx); err != nil {
			s.opts.Logger.Error("resume runs", "err", err)
		}
	}
	if s.leaser != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.relay(ctx)
		}()
	}
	s.bg.Add(2)
	go func() {
		defer s.bg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.opts.Logger.Error("http server", "err", err)
		}
	}()
	go func() {
		defer s.bg.Done()
		if s.watch != nil {
			s.watch.loop(ctx, s.opts.Poll, s.kick)
		}
	}()
	s.opts.Logger.Info("verdict server listening", "addr", ln.Addr().String(), "dir", s.opts.Dir, "auth", s.authRequired(), "adopt_orphans", s.opts.AdoptOrphans && s.leaser != nil, "replica", s.opts.Replica, "leases", s.leaser != nil)
	return nil
}

// Addr is the address the server listens on (with the real port when Listen asked for 0).
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.opts.Listen
	}
	return s.ln.Addr().String()
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Rescan asks the watcher to scan the directory now instead of at its next poll.
func (s *Server) Rescan() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close stops watching, lets every run finish its current step and persist, leaves the
// pools as they are (the next start resumes the runs), ends the event streams and stops
// listening.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.StepTimeout+5*time.Second)
		defer cancel()
		err = s.sup.shutdown(ctx)
		s.broker.close()
		s.tel.runs.attach(s.sup, false)
		if s.http != nil {
			hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
			if e := s.http.Shutdown(hctx); e != nil {
				s.http.Close()
			}
			hcancel()
		}
		s.bg.Wait()
		s.opts.Logger.Info("verdict server stopped; unfinished runs resume at the next start")
	})
	return err
}

// Run starts the server and serves until ctx ends (SIGTERM), then closes it.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// observe relays an engine event to the stream, the metrics and the log.
func (s *Server) observe(e engine.Event) {
	name := ""
	if e.Type == engine.EventRunStarted {
		var d struct {
			Experiment string `json:"experiment"`
		}
		if json.Unmarshal(e.Data, &d) == nil {
			s.runExp.Store(e.RunID, d.Experiment)
		}
	}
	if v, ok := s.runExp.Load(e.RunID); ok {
		name = v.(string)
	} else if r, ok := s.sup.get(e.RunID); ok {
		name = r.experiment
		s.runExp.Store(e.RunID, name)
	}
	s.tel.observe(e, name)
	s.broker.publish(Message{Type: e.Type, RunID: e.RunID, At: e.At, Message: e.Message, Data: e.Data})
}

// notice publishes something the server itself did or refused, and logs it.
func (s *Server) notice(typ, run, msg string, data map[string]any) {
	var raw json.RawMessage
	if data != nil {
		raw = mustJSON(data)
	}
	lvl := slog.LevelInfo
	switch typ {
	case "file_invalid", "spec_refused", "run_stalled", "experiment_not_started":
		lvl = slog.LevelWarn
	}
	attrs := []any{"type", typ}
	if run != "" {
		attrs = append(attrs, "run", run)
	}
	// Parts of a notice come from files and runs (paths, errors quoting a value): shown
	// escaped, so none can forge a line or act on a terminal.
	msg = printableLines(msg)
	s.opts.Logger.Log(context.Background(), lvl, msg, attrs...)
	s.broker.publish(Message{Type: typ, RunID: run, At: s.opts.Clock.Now(), Message: msg, Data: raw})
}
