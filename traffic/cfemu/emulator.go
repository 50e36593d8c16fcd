// Package cfemu is a Cloudflare Load Balancing emulator: an HTTP server that follows
// Cloudflare's documented API for account pools under /client/v4/ (envelope, Bearer-token
// auth, validation, rate limit), with fault injection, plus a data plane that forwards real
// requests to a pool's origins at random by weight. Verdict's Cloudflare client is tested
// against it, the demo fleet embeds it, and `verdict emulate cloudflare` serves it, so
// experiments can be rehearsed end to end without a Cloudflare account.
//
// Where it knowingly differs from Cloudflare is listed in docs/cloudflare-emulator.md.
package cfemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// DefaultToken is the API token the emulator accepts when Options.Token is empty. It is a
// well-known test value, not a secret.
const DefaultToken = "cfemu-token"

// DefaultAccountID is the account the emulator serves when Options.AccountID is empty.
const DefaultAccountID = "cfemu0000000000000000000000000001"

// Options configures a Server. Zero fields take the defaults noted on each.
type Options struct {
	// Token is the one API token accepted as "Authorization: Bearer <token>"; default
	// DefaultToken.
	Token string
	// AccountID is the one account whose pools exist; other accounts get 403. Default
	// DefaultAccountID.
	AccountID string
	// RateLimit is how many API requests are allowed per RateWindow before every call is
	// blocked with 429 for a whole RateWindow, as Cloudflare does. Defaults 1,200 and 5
	// minutes; a negative RateLimit disables the limiter.
	RateLimit  int
	RateWindow time.Duration
	// DataPool is the pool the data plane serves; default the first pool added.
	DataPool string
	// Seed makes the data plane's origin choice reproducible; 0 seeds randomly.
	Seed uint64
	// Now is the clock for modified_on and the rate limiter; default time.Now. Tests pass
	// a fake clock to exercise the limiter without sleeping.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
	// AfterRequest, if set, is called after each API request has been answered, outside
	// the emulator's lock. Tests use it to change a pool "concurrently", exactly between
	// two calls of the client under test.
	AfterRequest func(r *http.Request, status int)
	// Transport carries data-plane requests to origins; default a keep-alive transport.
	Transport http.RoundTripper
}

// Fault makes the API misbehave, as Cloudflare sometimes does. The zero Fault clears it.
type Fault struct {
	// Fail is how many of the next API calls fail.
	Fail int
	// Status is their HTTP status, default 503. 429 responses carry RetryAfter.
	Status int
	// RetryAfter is sent as Retry-After (whole seconds, rounded up) with a 429.
	RetryAfter time.Duration
	// Drop closes the connection without an answer instead (a network error).
	Drop bool
	// HTML answers with an HTML page instead of the JSON envelope, as an edge proxy
	// failing in front of the API would.
	HTML bool
	// Latency is added to every API call while the fault is set, failing or not.
	Latency time.Duration
	// Applied carries the failing calls out before answering with the failure, as when an
	// edge proxy times out after the API behind it applied a write: the client cannot
	// tell a 5xx that changed the pool from one that did not. Meant for 5xx and Drop; a
	// 429 is never applied on Cloudflare.
	Applied bool
}

// Call is one API request the emulator answered, for tests to inspect.
type Call struct {
	Method string
	Path   string
	Status int // 0 when the connection was dropped by a Fault
}

// Server is a running (or ready to run) emulator. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	mu          sync.Mutex
	pools       map[string]*pool
	order       []string
	fault       Fault
	calls       []Call
	window      []time.Time // request times within the rate window
	blockedTill time.Time

	rngMu sync.Mutex
	rng   *mrand.Rand

	api, data        *http.Server
	apiLn, dataLn    net.Listener
	transport        http.RoundTripper
	ownTransport     *http.Transport
	closeOnce        sync.Once
	serveWG          sync.WaitGroup
	dataPlaneHandler http.Handler
}

// New returns an emulator with no pools; add them with LoadPools or AddPool, then Start.
func New(o Options) *Server {
	if o.Token == "" {
		o.Token = DefaultToken
	}
	if o.AccountID == "" {
		o.AccountID = DefaultAccountID
	}
	if o.RateLimit == 0 {
		o.RateLimit = 1200
	}
	if o.RateWindow <= 0 {
		o.RateWindow = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	seed := o.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s := &Server{
		opts:  o,
		log:   o.Logger,
		pools: map[string]*pool{},
		rng:   mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	s.transport = o.Transport
	if s.transport == nil {
		s.ownTransport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}
		s.transport = s.ownTransport
	}
	s.dataPlaneHandler = s.newDataPlane()
	return s
}

// Token is the API token the emulator accepts.
func (s *Server) Token() string { return s.opts.Token }

// AccountID is the account whose pools the emulator serves.
func (s *Server) AccountID() string { return s.opts.AccountID }

// Start listens on apiAddr for the API and, unless dataAddr is empty, on dataAddr for the
// data plane, and serves both in the background until Close. Use "127.0.0.1:0" for a free
// port and APIURL / DataURL to learn it.
func (s *Server) Start(apiAddr, dataAddr string) error {
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("cfemu: listen for the API on %s: %w", apiAddr, err)
	}
	s.apiLn = ln
	s.api = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if dataAddr != "" {
		dl, err := net.Listen("tcp", dataAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("cfemu: listen for the data plane on %s: %w", dataAddr, err)
		}
		s.dataLn = dl
		s.data = &http.Server{Handler: s.DataHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	s.serve(s.api, s.apiLn)
	if s.data != nil {
		s.serve(s.data, s.dataLn)
	}
	s.log.Info("Cloudflare emulator listening", "api", s.APIURL(), "data", s.DataURL(), "account", s.opts.AccountID)
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("cfemu: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// APIURL is the base URL to give a Cloudflare client (CLOUDFLARE_BASE_URL), ending in
// /client/v4/; empty before Start.
func (s *Server) APIURL() string {
	if s.apiLn == nil {
		return ""
	}
	return "http://" + s.apiLn.Addr().String() + "/client/v4/"
}

// DataURL is the data plane's base URL; empty when it is not listening.
func (s *Server) DataURL() string {
	if s.dataLn == nil {
		return ""
	}
	return "http://" + s.dataLn.Addr().String()
}

// Close stops both listeners at once and waits for their goroutines.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		for _, srv := range []*http.Server{s.api, s.data} {
			if srv != nil {
				errs = append(errs, srv.Close())
			}
		}
		s.serveWG.Wait()
		if s.ownTransport != nil {
			s.ownTransport.CloseIdleConnections()
		}
	})
	return errors.Join(errs...)
}

// Shutdown stops accepting requests and waits for those in flight, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*http.Server{s.api, s.data} {
		if srv != nil {
			errs = append(errs, srv.Shutdown(ctx))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.Close()
}

// SetFault replaces the current fault; SetFault(Fault{}) clears it.
func (s *Server) SetFault(f Fault) {
	if f.Fail > 0 && f.Status == 0 {
		f.Status = http.StatusServiceUnavailable
	}
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// Calls returns the API requests answered so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// LoadPools adds the pools in a Cloudflare-shaped JSON document: a bare pool object, the
// envelope GET .../pools/{id} returns, a JSON list of pools, or the envelope of a list.
// Pools without an id get a random one; each pool is validated as a PUT would be.
func (s *Server) LoadPools(data []byte) ([]string, error) {
	docs, err := parsePoolDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("cfemu: load pools: %w", err)
	}
	var ids []string
	for i, d := range docs {
		id, err := s.addPool(d)
		if err != nil {
			return ids, fmt.Errorf("cfemu: load pools: pool %d: %w", i, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// LoadFile is LoadPools on a file's contents.
func (s *Server) LoadFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cfemu: read pool file: %w", err)
	}
	ids, err := s.LoadPools(b)
	if err != nil {
		return ids, fmt.Errorf("%s: %w", path, err)
	}
	return ids, nil
}

// AddPool adds one pool object (Cloudflare JSON) and returns its id.
func (s *Server) AddPool(data []byte) (string, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return "", fmt.Errorf("cfemu: add pool: %w", err)
	}
	return s.addPool(obj)
}

func (s *Server) addPool(obj map[string]json.RawMessage) (string, error) {
	fields, origins, _, err := splitPool(obj)
	if err != nil {
		return "", err
	}
	if err := validate(fields, origins); err != nil {
		return "", err
	}
	var id string
	_ = json.Unmarshal(fields["id"], &id)
	if id == "" {
		id = newID()
	}
	created, modified, disabled := fields["created_on"], fields["modified_on"], fields["disabled_at"]
	originDisabled := make([]json.RawMessage, len(origins))
	for i, o := range origins {
		originDisabled[i] = o["disabled_at"]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.pools[id]; dup {
		return "", fmt.Errorf("pool id %q is already loaded", id)
	}
	p := &pool{id: id, unhealthy: map[string]bool{}}
	p.store(fields, origins, s.opts.Now())
	// A loaded file keeps its own timestamps, so a saved emulator state reloads unchanged.
	if created != nil {
		p.fields["created_on"] = created
	}
	if modified != nil {
		p.fields["modified_on"] = modified
	}
	if disabled != nil && p.fields["disabled_at"] != nil {
		p.fields["disabled_at"] = disabled
	}
	for i, o := range p.origins {
		if originDisabled[i] != nil && o["disabled_at"] != nil {
			o["disabled_at"] = originDisabled[i]
		}
	}
	s.pools[id] = p
	s.order = append(s.order, id)
	return id, nil
}

// PoolIDs lists the pools in the order they were added.
func (s *Server) PoolIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// Pool returns a pool as the API would (the bare pool object).
func (s *Server) Pool(id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[id]
	if !ok {
		return nil, false
	}
	return p.marshal(), true
}

// SavePools writes every pool as a JSON list of Cloudflare pool objects, which LoadPools
// reads back.
func (s *Server) SavePools(w io.Writer) error {
	s.mu.Lock()
	list := make([]json.RawMessage, 0, len(s.order))
	for _, id := range s.order {
		list = append(list, s.pools[id].marshal())
	}
	s.mu.Unlock()
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("cfemu: save pools: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// SaveFile writes SavePools to path atomically (temporary file, then rename).
func (s *Server) SaveFile(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".cfemu-pools-*.json")
	if err != nil {
		return fmt.Errorf("cfemu: save pools to %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := s.SavePools(f); err != nil {
		f.Close()
		return fmt.Errorf("cfemu: save pools to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cfemu: save pools to %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("cfemu: save pools to %s: %w", path, err)
	}
	return nil
}

// SetWeight changes one origin's weight out of band, as a person in the dashboard or a
// Terraform apply would; tests use it to create drift. It validates like the API and
// updates modified_on.
func (s *Server) SetWeight(poolID, origin string, weight float64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[poolID]
	if !ok {
		return fmt.Errorf("cfemu: no pool %q", poolID)
	}
	origins := make([]map[string]json.RawMessage, 0, len(p.origins))
	found := false
	for _, o := range p.origins {
		c := make(map[string]json.RawMessage, len(o))
		for k, v := range o {
			c[k] = v
		}
		var n string
		_ = json.Unmarshal(c["name"], &n)
		if n == origin {
			c["weight"], _ = json.Marshal(weight)
			found = true
		}
		origins = append(origins, c)
	}
	if !found {
		return fmt.Errorf("cfemu: pool %q has no origin %q", poolID, origin)
	}
	fields := make(map[string]json.RawMessage, len(p.fields))
	for k, v := range p.fields {
		fields[k] = v
	}
	if err := validate(fields, origins); err != nil {
		return fmt.Errorf("cfemu: set weight of %q in pool %q: %w", origin, poolID, err)
	}
	p.store(fields, origins, s.opts.Now())
	return nil
}

// Patch applies body to the pool as an API PATCH would (the fields given replace the
// pool's; "origins", when given, replaces the whole list), out of band and without
// faults or the rate limit: a person in the dashboard, a Terraform apply or another
// Verdict changing the pool. Tests use it for concurrent changes other than a weight.
func (s *Server) Patch(poolID string, body []byte) error {
	obj, err := decodeObject(body)
	if err != nil {
		return fmt.Errorf("cfemu: patch pool %q: %w", poolID, err)
	}
	fields, origins, hasOrigins, err := splitPool(obj)
	if err != nil {
		return fmt.Errorf("cfemu: patch pool %q: %w", poolID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[poolID]
	if !ok {
		return fmt.Errorf("cfemu: no pool %q", poolID)
	}
	fields, origins = p.patched(fields, origins, hasOrigins)
	if err := validate(fields, origins); err != nil {
		return fmt.Errorf("cfemu: patch pool %q: %w", poolID, err)
	}
	p.store(fields, origins, s.opts.Now())
	return nil
}

// SetOriginHealth marks an origin healthy or not. The emulator runs no monitors; an
// unhealthy origin gets no data-plane traffic and shows as unhealthy in /health.
func (s *Server) SetOriginHealth(poolID, origin string, healthy bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[poolID]
	if !ok {
		return fmt.Errorf("cfemu: no pool %q", poolID)
	}
	for _, o := range p.view().Origins {
		if o.Name == origin {
			if healthy {
				delete(p.unhealthy, origin)
			} else {
				p.unhealthy[origin] = true
			}
			return nil
		}
	}
	return fmt.Errorf("cfemu: pool %q has no origin %q", poolID, origin)
}
