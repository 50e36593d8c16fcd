// Package sim is Verdict's playground: a fleet of simulated clusters on loopback, each a
// real HTTP server instrumented with client_golang, behind the Cloudflare emulator's data
// plane, fed by a load generator with a daily wave, and scraped by the embedded Prometheus
// with a cluster label. A newcomer runs an experiment against it with no Cloudflare account
// and no Kubernetes (`verdict demo`), and the engine's end-to-end tests use the same world.
//
// A fleet is built from a Scenario (built-in ones in scenarios/*.yaml: good, regression,
// latency-only, outage, no-traffic-honour) which also carries the experiment to run; the
// fleet writes it, with its own addresses filled in, to ExperimentFile.
//
//	f, err := sim.Start(sim.Options{Scenario: sc})
//	if err != nil { ... }
//	defer f.Close()
//	// f.PrometheusURL(), f.CloudflareBaseURL(), f.Token(), f.AccountID(), f.PoolID(),
//	// f.ExperimentFile(); f.SetPrometheus(sim.PrometheusDown); f.SetProfile(...)
package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// Options configure a fleet. Zero fields take the defaults noted on each.
type Options struct {
	// Scenario is the world to build. Default: the built-in "good".
	Scenario *Scenario
	// Rate overrides the scenario's mean request rate (per second) when positive.
	Rate float64
	// ScrapeInterval overrides the scenario's scrape interval when positive.
	ScrapeInterval time.Duration
	// Fast makes clusters record each request's sampled latency without waiting for it,
	// for tests and benchmarks at rates where real waiting would hold many requests open.
	// The metrics are the same; only clients see faster answers.
	Fast bool
	// NoLoad starts the fleet without its load generator (tests that send their own).
	NoLoad bool
	// MaxInFlight bounds the load generator's outstanding requests; arrivals beyond it are
	// counted as dropped. Default 1024.
	MaxInFlight int
	// Seed makes the fleet's random draws reproducible (profiles, load, origin choice);
	// 0 seeds from the clock.
	Seed uint64
	// Dir is where the experiment file is written. Default: a new temporary directory,
	// removed by Close.
	Dir string
	// Token and AccountID are the emulated Cloudflare's; defaults cfemu.DefaultToken and
	// cfemu.DefaultAccountID.
	Token, AccountID string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// DNS, if set, puts the fleet behind a Route 53 weighted record set (in moto_server)
	// instead of the emulated Cloudflare pool; the scenario's experiment should steer it
	// (DNSScenario). The Cloudflare emulator still runs, unused by the data plane.
	DNS *DNSOptions
	// OnNotice, if set, is told of everything the fleet does on its own (the trigger, each
	// scheduled event), for the demo to narrate. It must not block.
	OnNotice func(Notice)
}

// Notice is something the fleet did on its own.
type Notice struct {
	// Elapsed is the time since the fleet started.
	Elapsed time.Duration
	// What describes it, e.g. "prometheus down (outage begins)".
	What string
}

// ClusterInfo describes one cluster of a running fleet.
type ClusterInfo struct {
	Name   string  `json:"name"`
	Origin string  `json:"origin"`
	URL    string  `json:"url"`
	Weight float64 `json:"weight"` // at the start
	Canary bool    `json:"canary"`
}

// Fleet is a running playground. Its methods are safe for concurrent use.
type Fleet struct {
	opts  Options
	sc    *Scenario
	log   *slog.Logger
	start time.Time

	clusters []*Cluster
	specs    []ClusterSpec
	emu      *cfemu.Server
	poolID   string
	prom     *embedded.Server
	front    *promFront
	edge     *edge
	edgeSrv  *http.Server
	edgeLn   net.Listener
	edgeDone chan struct{}
	gen      *generator
	dns      *dnsPlane // with Options.DNS

	dir, expPath string
	poolPath     string
	ownDir       bool

	mu        sync.Mutex
	triggered time.Time
	fired     []bool
	variantOn bool

	ctlCancel context.CancelFunc
	ctlDone   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Start builds and starts a fleet: the clusters, the emulator with one pool holding one
// origin per cluster, the edge in front of its data plane, the embedded Prometheus scraping
// every cluster, the experiment file, the load generator and the scenario's schedule. On
// error everything started so far is stopped.
func Start(o Options) (*Fleet, error) {
	if o.Scenario == nil {
		sc, err := LoadScenario("good")
		if err != nil {
			return nil, err
		}
		o.Scenario = sc
	}
	sc := o.Scenario.withDefaults()
	if o.Rate > 0 {
		sc.Load.Rate = o.Rate
	}
	if o.ScrapeInterval > 0 {
		sc.ScrapeInterval = Duration(o.ScrapeInterval)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("sim: scenario %s: %w", sc.Name, err)
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 1024
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Token == "" {
		o.Token = cfemu.DefaultToken
	}
	if o.AccountID == "" {
		o.AccountID = cfemu.DefaultAccountID
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{opts: o, sc: sc, log: o.Logger, start: time.Now(), specs: sc.Clusters, fired: make([]bool, len(sc.Events))}
	if err := f.startAll(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *Fleet) startAll() error {
	sc, o := f.sc, f.opts

	// Clusters. The canary runs the variant from the start unless the scenario says
	// otherwise: the canary cluster is the variant.
	f.variantOn = sc.Variant.From == FromStart
	for i, spec := range f.specs {
		p := spec.Profile
		if spec.Canary && f.variantOn {
			p = p.With(sc.Variant.Effect)
		}
		c, err := NewCluster(ClusterOptions{
			Name: spec.Name, Profile: p, Version: spec.Version, Fast: o.Fast,
			Seed: o.Seed + uint64(i+1)*0x9e3779b97f4a7c15, Logger: f.log,
		})
		if err != nil {
			return err
		}
		f.clusters = append(f.clusters, c)
	}

	// The emulated Cloudflare pool, one origin per cluster.
	f.emu = cfemu.New(cfemu.Options{Token: o.Token, AccountID: o.AccountID, Seed: o.Seed ^ 0x5bd1e995, Logger: f.log})
	f.poolID = newPoolID()
	type origin struct {
		Name    string  `json:"name"`
		Address string  `json:"address"`
		Enabled bool    `json:"enabled"`
		Weight  float64 `json:"weight"`
	}
	pool := struct {
		ID             string            `json:"id"`
		Name           string            `json:"name"`
		Description    string            `json:"description"`
		Enabled        bool              `json:"enabled"`
		MinimumOrigins int               `json:"minimum_origins"`
		OriginSteering map[string]string `json:"origin_steering"`
		Origins        []origin          `json:"origins"`
	}{ID: f.poolID, Name: sc.PoolName, Description: "verdict demo fleet, scenario " + sc.Name,
		Enabled: true, MinimumOrigins: 1, OriginSteering: map[string]string{"policy": "random"}}
	var pinned []pinnedOrigin
	originOf := map[string]string{}
	for i, spec := range f.specs {
		pool.Origins = append(pool.Origins, origin{Name: spec.Origin, Address: f.clusters[i].URL(), Enabled: true, Weight: spec.Weight})
		u, _ := url.Parse(f.clusters[i].URL())
		pinned = append(pinned, pinnedOrigin{name: spec.Origin, target: u, weight: spec.Weight})
		originOf[spec.Origin] = spec.Name
	}
	data, err := json.Marshal(pool)
	if err != nil {
		return err
	}
	if _, err := f.emu.LoadPools(data); err != nil {
		return fmt.Errorf("sim: create the pool: %w", err)
	}
	// The emulator's data plane is served by the edge below, not by a listener of its own.
	if err := f.emu.Start("127.0.0.1:0", ""); err != nil {
		return fmt.Errorf("sim: %w", err)
	}

	// The edge: the data plane plus session affinity.
	var plane http.Handler = f.emu.DataHandler()
	if o.DNS != nil {
		if err := f.startDNS(*o.DNS); err != nil {
			return err
		}
		plane = f.dns
	}
	f.edge = newEdge(plane, sc.Affinity, pinned)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("sim: listen for the data plane: %w", err)
	}
	f.edgeLn = ln
	f.edgeSrv = &http.Server{Handler: f.edge, ReadHeaderTimeout: 10 * time.Second}
	f.edgeDone = make(chan struct{})
	go func() {
		defer close(f.edgeDone)
		if err := f.edgeSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.log.Error("sim: data plane serve", "err", err)
		}
	}()

	// Prometheus, scraping every cluster with its cluster label. Its API is served on a
	// listener of the fleet's, so that an outage can take it away while scraping goes on.
	f.prom, err = embedded.New(embedded.Options{ScrapeInterval: sc.ScrapeInterval.D(), Logger: f.log})
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	for _, c := range f.clusters {
		if err := f.prom.AddTarget(c.MetricsURL(), map[string]string{"cluster": c.Name()}); err != nil {
			return fmt.Errorf("sim: %w", err)
		}
	}
	if err := f.prom.Start(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	f.front = &promFront{handler: f.prom.Handler(), log: f.log}
	if err := f.front.listen("127.0.0.1:0"); err != nil {
		return err
	}

	// The experiment file.
	if err := f.writeExperiment(); err != nil {
		return err
	}

	// Load and schedule.
	if !o.NoLoad {
		f.gen = newGenerator(f.DataURL(), sc.Load, o.Seed^0xa0761d6478bd642f, o.MaxInFlight, originOf)
		f.gen.run(context.Background())
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.ctlCancel, f.ctlDone = cancel, make(chan struct{})
	go f.control(ctx, f.poolWeights())
	f.log.Info("sim: fleet started", "scenario", sc.Name, "prometheus", f.PrometheusURL(), "cloudflare", f.CloudflareBaseURL(), "pool", f.poolID, "data", f.DataURL())
	return nil
}

func (f *Fleet) writeExperiment() error {
	f.dir = f.opts.Dir
	if f.dir == "" {
		d, err := os.MkdirTemp("", "verdict-demo-")
		if err != nil {
			return fmt.Errorf("sim: experiment directory: %w", err)
		}
		f.dir, f.ownDir = d, true
	}
	f.expPath = filepath.Join(f.dir, f.sc.Name+".yaml")
	body := "# Rendered by the verdict demo fleet for scenario " + f.sc.Name + ": " + f.sc.Description + "\n" +
		f.sc.RenderExperiment(f.PrometheusURL(), f.poolID, f.AccountID())
	if f.dns != nil {
		body = strings.NewReplacer(PlaceholderHostedZoneID, f.dns.zone, PlaceholderRecordName, f.dns.name).Replace(body)
	}
	if err := os.WriteFile(f.expPath, []byte(body), 0o644); err != nil {
		return fmt.Errorf("sim: write experiment: %w", err)
	}
	// The pool as it starts, for `verdict plan --pool-file`.
	raw, _ := f.emu.Pool(f.poolID)
	if f.dns != nil {
		var err error
		if raw, err = f.dns.recordSetsJSON(); err != nil {
			return fmt.Errorf("sim: %w", err)
		}
	}
	f.poolPath = filepath.Join(f.dir, "pool.json")
	if err := os.WriteFile(f.poolPath, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("sim: write pool file: %w", err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	if _, err := experiments.LoadFile(f.expPath, experiments.LoadOptions{LookupEnv: noEnv}); err != nil {
		return fmt.Errorf("sim: scenario %s: its experiment is invalid: %w", f.sc.Name, err)
	}
	return nil
}

func newPoolID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// control runs the schedule and watches the pool for the experiment's first weight change.
func (f *Fleet) control(ctx context.Context, initial map[string]float64) {
	defer close(f.ctlDone)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if _, ok := f.Triggered(); !ok {
				if w := f.poolWeights(); w != nil && !equalWeights(w, initial) {
					f.trigger("the pool's weights changed")
				}
			}
			f.runDue(now)
		}
	}
}

func (f *Fleet) runDue(now time.Time) {
	f.mu.Lock()
	var due []Event
	for i, e := range f.sc.Events {
		if f.fired[i] {
			continue
		}
		base := f.start
		if e.From == FromTrigger {
			if f.triggered.IsZero() {
				continue
			}
			base = f.triggered
		}
		if !now.Before(base.Add(e.At.D())) {
			f.fired[i] = true
			due = append(due, e)
		}
	}
	f.mu.Unlock()
	for _, e := range due {
		if err := f.apply(e); err != nil {
			f.log.Error("sim: scheduled event failed", "event", e.String(), "err", err)
			f.notice(fmt.Sprintf("%s failed: %v", e, err))
			continue
		}
		f.notice(e.String())
	}
}

func (f *Fleet) apply(e Event) error {
	switch {
	case e.Prometheus != "":
		return f.SetPrometheus(e.Prometheus)
	case e.Effect != nil:
		spec, _ := f.sc.cluster(e.Cluster)
		return f.SetProfile(spec.Name, spec.Profile.With(*e.Effect))
	case e.Variant == "apply":
		return f.ApplyVariant()
	case e.Variant == "clear":
		return f.ClearVariant()
	case e.Rate > 0:
		return f.SetRate(e.Rate)
	}
	return nil
}

func (f *Fleet) notice(what string) {
	f.log.Info("sim: "+what, "elapsed", time.Since(f.start).Round(time.Second))
	if f.opts.OnNotice != nil {
		f.opts.OnNotice(Notice{Elapsed: time.Since(f.start), What: what})
	}
}

// poolWeights reads the pool's origin weights from the emulator, or the record set's.
func (f *Fleet) poolWeights() map[string]float64 {
	if f.dns != nil {
		return f.dns.fractions()
	}
	raw, ok := f.emu.Pool(f.poolID)
	if !ok {
		return nil
	}
	var p struct {
		Origins []struct {
			Name   string  `json:"name"`
			Weight float64 `json:"weight"`
		} `json:"origins"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return nil
	}
	w := make(map[string]float64, len(p.Origins))
	for _, o := range p.Origins {
		w[o.Name] = o.Weight
	}
	return w
}

func equalWeights(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Trigger marks the experiment's start: events scheduled from the trigger count from now,
// and a variant that starts at the trigger is applied. The fleet calls it itself when the
// pool's weights first change; an engine test may call it earlier. Only the first call
// counts.
func (f *Fleet) Trigger() { f.trigger("triggered") }

func (f *Fleet) trigger(why string) {
	f.mu.Lock()
	if !f.triggered.IsZero() {
		f.mu.Unlock()
		return
	}
	f.triggered = time.Now()
	applyVariant := f.sc.Variant.From == FromTrigger
	f.mu.Unlock()
	f.notice("experiment started: " + why)
	if applyVariant {
		if err := f.ApplyVariant(); err != nil {
			f.log.Error("sim: apply variant", "err", err)
		} else {
			f.notice("canary variant applied: " + f.sc.Variant.Effect.String())
		}
	}
	f.runDue(time.Now())
}

// Triggered returns when the experiment started (Trigger), if it has.
func (f *Fleet) Triggered() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.triggered, !f.triggered.IsZero()
}

// ApplyVariant puts the scenario's variant effect on the canary's profile.
func (f *Fleet) ApplyVariant() error {
	spec, _ := f.sc.cluster("canary")
	if err := f.SetProfile(spec.Name, spec.Profile.With(f.sc.Variant.Effect)); err != nil {
		return err
	}
	f.mu.Lock()
	f.variantOn = true
	f.mu.Unlock()
	return nil
}

// ClearVariant returns the canary to its scenario profile: a recovery, or an A/A run.
func (f *Fleet) ClearVariant() error {
	spec, _ := f.sc.cluster("canary")
	if err := f.SetProfile(spec.Name, spec.Profile); err != nil {
		return err
	}
	f.mu.Lock()
	f.variantOn = false
	f.mu.Unlock()
	return nil
}

// Cluster returns a cluster by name ("canary" for the canary).
func (f *Fleet) Cluster(name string) (*Cluster, bool) {
	for i, s := range f.specs {
		if s.Name == name || (name == "canary" && s.Canary) {
			return f.clusters[i], true
		}
	}
	return nil, false
}

// Profile returns a cluster's profile in effect.
func (f *Fleet) Profile(cluster string) (Profile, error) {
	c, ok := f.Cluster(cluster)
	if !ok {
		return Profile{}, fmt.Errorf("sim: no cluster %q", cluster)
	}
	return c.Profile(), nil
}

// SetProfile changes a cluster's behaviour from its next request on ("canary" names the
// canary): how a test injects a regression, an outage or a recovery into a running fleet.
// Applying the variant (ApplyVariant, or the trigger when the variant starts there) later
// replaces the canary's profile again; call Trigger first to fix the order.
func (f *Fleet) SetProfile(cluster string, p Profile) error {
	c, ok := f.Cluster(cluster)
	if !ok {
		return fmt.Errorf("sim: no cluster %q", cluster)
	}
	return c.SetProfile(p)
}

// SetRate changes the load's mean request rate (per second) at once.
func (f *Fleet) SetRate(rate float64) error {
	if rate <= 0 {
		return fmt.Errorf("sim: rate %g must be positive", rate)
	}
	if f.gen == nil {
		return errors.New("sim: the fleet has no load generator (Options.NoLoad)")
	}
	f.gen.setRate(rate)
	return nil
}

// SetPrometheus makes the Prometheus API answer (PrometheusUp), refuse connections
// (PrometheusDown: unreachable) or answer 503 (PrometheusErrors). Scraping goes on
// throughout, as it would when only the path from Verdict to Prometheus fails, so the data
// is there when it comes back.
func (f *Fleet) SetPrometheus(state string) error { return f.front.set(state) }

// PrometheusState is the Prometheus API's current state: PrometheusUp, PrometheusDown or
// PrometheusErrors.
func (f *Fleet) PrometheusState() string { return f.front.state() }

// Scrape scrapes every cluster now, so a test sees a change without waiting for the
// scrape interval.
func (f *Fleet) Scrape(ctx context.Context) error { return f.prom.Scrape(ctx) }

// Stats returns the load generator's counts (zero with Options.NoLoad).
func (f *Fleet) Stats() LoadStats {
	if f.gen == nil {
		return LoadStats{ByCluster: map[string]int64{}, ByStatus: map[int]int64{}}
	}
	return f.gen.snapshot()
}

// Scenario is the scenario the fleet runs, with Options' overrides applied.
func (f *Fleet) Scenario() *Scenario { return f.sc }

// Started is when the fleet started.
func (f *Fleet) Started() time.Time { return f.start }

// Clusters describes the fleet's clusters in pool order.
func (f *Fleet) Clusters() []ClusterInfo {
	out := make([]ClusterInfo, len(f.specs))
	for i, s := range f.specs {
		out[i] = ClusterInfo{Name: s.Name, Origin: s.Origin, URL: f.clusters[i].URL(), Weight: s.Weight, Canary: s.Canary}
	}
	return out
}

// Canary is the canary cluster's name.
func (f *Fleet) Canary() string { return f.sc.Canary() }

// PrometheusURL is the base URL of the Prometheus HTTP API (spec.prometheus.address).
func (f *Fleet) PrometheusURL() string { return "http://" + f.front.addr }

// CloudflareBaseURL is the emulated Cloudflare API's base URL (CLOUDFLARE_BASE_URL).
func (f *Fleet) CloudflareBaseURL() string { return f.emu.APIURL() }

// Token is the API token the emulated Cloudflare accepts (CLOUDFLARE_API_TOKEN).
func (f *Fleet) Token() string { return f.emu.Token() }

// AccountID is the emulated Cloudflare account (CLOUDFLARE_ACCOUNT_ID).
func (f *Fleet) AccountID() string { return f.emu.AccountID() }

// PoolID is the pool carrying the clusters (spec.traffic.cloudflare.poolID).
func (f *Fleet) PoolID() string { return f.poolID }

// DataURL is the load balancer's address: requests sent here reach a cluster by weight.
func (f *Fleet) DataURL() string { return "http://" + f.edgeLn.Addr().String() }

// ExperimentFile is the scenario's experiment, rendered with the fleet's addresses and
// checked with experiments.LoadFile.
func (f *Fleet) ExperimentFile() string { return f.expPath }

// PoolFile is the pool as it was at the start, in Cloudflare's JSON, written next to the
// experiment file for `verdict plan --pool-file`.
func (f *Fleet) PoolFile() string { return f.poolPath }

// Env is the environment that points Verdict's Cloudflare client at the fleet, in the
// order printed by the demo; with Options.DNS, the AWS SDK's Route 53 client instead.
func (f *Fleet) Env() [][2]string {
	if f.dns != nil {
		return [][2]string{
			{"AWS_ENDPOINT_URL_ROUTE_53", f.dns.o.Endpoint},
			{"AWS_REGION", "us-east-1"},
			{"AWS_ACCESS_KEY_ID", f.dns.o.AccessKeyID},
			{"AWS_SECRET_ACCESS_KEY", f.dns.o.SecretAccessKey},
		}
	}
	return [][2]string{
		{"CLOUDFLARE_BASE_URL", f.CloudflareBaseURL()},
		{"CLOUDFLARE_API_TOKEN", f.Token()},
		{"CLOUDFLARE_ACCOUNT_ID", f.AccountID()},
	}
}

// Emulator is the emulated Cloudflare, for tests that inject API faults or set weights
// out of band.
func (f *Fleet) Emulator() *cfemu.Server { return f.emu }

// Prometheus is the embedded Prometheus, for tests that load samples or scrape.
func (f *Fleet) Prometheus() *embedded.Server { return f.prom }

// Addrs lists every address the fleet listens on, so tests can check that Close freed them.
func (f *Fleet) Addrs() []string {
	var a []string
	for _, c := range f.clusters {
		a = append(a, c.Addr())
	}
	if u, err := url.Parse(f.emu.APIURL()); err == nil {
		a = append(a, u.Host)
	}
	a = append(a, f.edgeLn.Addr().String(), f.front.addr, f.prom.Addr())
	return a
}

// Close stops the load, then every server, and removes the experiment directory it created.
// It is safe to call more than once.
func (f *Fleet) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		if f.ctlCancel != nil {
			f.ctlCancel()
			<-f.ctlDone
		}
		if f.gen != nil {
			f.gen.stop()
		}
		if f.edgeSrv != nil {
			errs = append(errs, f.edgeSrv.Close())
			<-f.edgeDone
			f.edge.close()
		}
		if f.dns != nil {
			f.dns.close()
		}
		if f.emu != nil {
			errs = append(errs, f.emu.Close())
		}
		if f.front != nil {
			f.front.close()
		}
		if f.prom != nil {
			errs = append(errs, f.prom.Close())
		}
		for _, c := range f.clusters {
			errs = append(errs, c.Close())
		}
		if f.ownDir {
			errs = append(errs, os.RemoveAll(f.dir))
		}
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}

// promFront serves the embedded Prometheus's API on the fleet's own listener, which an
// outage closes (connections refused) and a recovery reopens on the same address. The
// embedded server has no switch for that, so the fleet adds it; its own listener stays
// unused.
type promFront struct {
	handler  http.Handler
	log      *slog.Logger
	addr     string
	erroring atomic.Bool

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{}
}

func (p *promFront) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sim: listen for Prometheus on %s: %w", addr, err)
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("sim: Prometheus serve", "err", err)
		}
	}()
	p.srv, p.done = srv, done
	return nil
}

func (p *promFront) serve(w http.ResponseWriter, r *http.Request) {
	if p.erroring.Load() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"status":"error","errorType":"unavailable","error":"simulated Prometheus outage"}`)
		return
	}
	p.handler.ServeHTTP(w, r)
}

func (p *promFront) set(state string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch state {
	case PrometheusUp, PrometheusErrors:
		p.erroring.Store(state == PrometheusErrors)
		if p.srv == nil {
			return p.listen(p.addr)
		}
		return nil
	case PrometheusDown:
		p.erroring.Store(false)
		p.stopLocked()
		return nil
	}
	return fmt.Errorf("sim: Prometheus state %q must be up, down or errors", state)
}

func (p *promFront) state() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.srv == nil:
		return PrometheusDown
	case p.erroring.Load():
		return PrometheusErrors
	}
	return PrometheusUp
}

func (p *promFront) stopLocked() {
	if p.srv != nil {
		_ = p.srv.Close()
		<-p.done
		p.srv = nil
	}
}

func (p *promFront) close() {
	p.mu.Lock()
	p.stopLocked()
	p.mu.Unlock()
}
