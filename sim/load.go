package sim

import (
	"context"
	"hash/maphash"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// sessionCookie carries the simulated visitor's session, under the name of Cloudflare's
// session-affinity cookie.
const sessionCookie = "__cflb"

// LoadStats counts what the load generator sent and what came back, so tests can check the
// rate and each cluster's share without asking Prometheus.
type LoadStats struct {
	// Sent counts requests started; Completed those answered (any status).
	Sent, Completed int64
	// Failed counts requests with no answer (connection errors, timeouts, shutdown).
	Failed int64
	// Dropped counts arrivals not sent because MaxInFlight requests were outstanding.
	Dropped int64
	// Pinned counts requests that session affinity kept on their original origin.
	Pinned int64
	// ByCluster counts answered requests by the cluster that served them.
	ByCluster map[string]int64
	// ByStatus counts answered requests by HTTP status.
	ByStatus map[int]int64
	// Elapsed is how long the generator has been sending.
	Elapsed time.Duration
}

// generator sends Poisson arrivals at a wave-shaped rate to the edge, each request in its
// own goroutine, at most maxInFlight at once.
type generator struct {
	target      string
	client      *http.Client
	maxInFlight int
	originOf    map[string]string // origin name → cluster name

	mu        sync.Mutex
	load      Load
	rng       *mrand.Rand
	resetNext bool
	start     time.Time
	stats     LoadStats

	sem    chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc
	done   chan struct{}
}

func newGenerator(target string, l Load, seed uint64, maxInFlight int, originOf map[string]string) *generator {
	return &generator{
		target: target,
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				MaxIdleConns:        maxInFlight,
				MaxIdleConnsPerHost: maxInFlight,
				IdleConnTimeout:     30 * time.Second,
			},
			Timeout: 30 * time.Second,
		},
		maxInFlight: maxInFlight,
		originOf:    originOf,
		load:        l,
		rng:         mrand.New(mrand.NewPCG(seed, seed^0x2545f4914f6cdd1d)),
		stats:       LoadStats{ByCluster: map[string]int64{}, ByStatus: map[int]int64{}},
		sem:         make(chan struct{}, maxInFlight),
		done:        make(chan struct{}),
	}
}

// rate is the arrival rate at elapsed time t.
func (l Load) rate(t time.Duration) float64 {
	r := l.Rate
	if l.Amplitude > 0 && l.Period > 0 {
		r *= 1 + l.Amplitude*math.Sin(2*math.Pi*t.Seconds()/l.Period.D().Seconds())
	}
	return math.Max(r, 0.01)
}

func (g *generator) run(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	g.start = time.Now()
	go func() {
		defer close(g.done)
		// A 5 ms tick fires every arrival that is due: cheaper than a timer per request,
		// and Poisson counts per interval are unchanged by the batching.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		next := g.start
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				g.mu.Lock()
				if g.resetNext {
					next, g.resetNext = now, false
				}
				if now.Sub(next) > time.Second {
					// The process stalled: do not send a second's backlog at once.
					next = now
				}
				var due int
				for !next.After(now) {
					due++
					next = next.Add(time.Duration(g.rng.ExpFloat64() / g.load.rate(next.Sub(g.start)) * float64(time.Second)))
				}
				g.mu.Unlock()
				for range due {
					g.fire(ctx)
				}
			}
		}
	}()
}

func (g *generator) setRate(r float64) {
	g.mu.Lock()
	g.load.Rate = r
	g.resetNext = true
	g.mu.Unlock()
}

func (g *generator) fire(ctx context.Context) {
	select {
	case g.sem <- struct{}{}:
	default:
		g.mu.Lock()
		g.stats.Dropped++
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	g.stats.Sent++
	session := g.rng.Uint64()
	x := g.rng.Float64()
	g.mu.Unlock()
	method, route := http.MethodGet, routeItems
	switch {
	case x < 0.1:
		method, route = http.MethodPost, routeCheckout
	case x < 0.3:
		route = routeSearch
	}
	g.wg.Add(1)
	go func() {
		defer func() { <-g.sem; g.wg.Done() }()
		req, _ := http.NewRequestWithContext(ctx, method, g.target+route, nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: strconv.FormatUint(session, 16)})
		res, err := g.client.Do(req)
		if err != nil {
			g.mu.Lock()
			g.stats.Failed++
			g.mu.Unlock()
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		origin := res.Header.Get(cfemu.OriginHeader)
		pinned := res.Header.Get(pinnedHeader) != ""
		g.mu.Lock()
		g.stats.Completed++
		g.stats.ByStatus[res.StatusCode]++
		if c, ok := g.originOf[origin]; ok {
			g.stats.ByCluster[c]++
		}
		if pinned {
			g.stats.Pinned++
		}
		g.mu.Unlock()
	}()
}

func (g *generator) snapshot() LoadStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	s.ByCluster = make(map[string]int64, len(g.stats.ByCluster))
	for k, v := range g.stats.ByCluster {
		s.ByCluster[k] = v
	}
	s.ByStatus = make(map[int]int64, len(g.stats.ByStatus))
	for k, v := range g.stats.ByStatus {
		s.ByStatus[k] = v
	}
	if !g.start.IsZero() {
		s.Elapsed = time.Since(g.start)
	}
	return s
}

// stop ends the generator and waits for every request it started.
func (g *generator) stop() {
	if g.cancel != nil {
		g.cancel()
		<-g.done
	}
	g.wg.Wait()
	g.client.CloseIdleConnections()
}

// pinnedHeader marks a response that session affinity routed (the sim's, not Cloudflare's).
const pinnedHeader = "X-Sim-Pinned"

// edge stands in front of the emulator's data plane. A fraction of sessions (affinity) is
// kept on the origin chosen by the weights in effect when the fleet started, ignoring later
// weight changes, as Cloudflare's session affinity keeps returning visitors; the rest go
// through the emulator's data plane, which follows the pool's weights. The emulator has no
// affinity option of its own, so the sim adds it here.
type edge struct {
	data     http.Handler
	affinity float64
	seed     maphash.Seed
	origins  []pinnedOrigin // weights at the start
	total    float64
	proxy    *httputil.ReverseProxy
	tr       *http.Transport
}

type pinnedOrigin struct {
	name   string
	target *url.URL
	weight float64
}

type pinKey struct{}

func newEdge(data http.Handler, affinity float64, origins []pinnedOrigin) *edge {
	e := &edge{data: data, affinity: affinity, seed: maphash.MakeSeed(), origins: origins}
	for _, o := range origins {
		e.total += o.weight
	}
	e.tr = &http.Transport{Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	e.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(pr.In.Context().Value(pinKey{}).(*url.URL))
			pr.SetXForwarded()
		},
		Transport: e.tr,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return e
}

func (e *edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.affinity > 0 && e.total > 0 {
		if c, err := r.Cookie(sessionCookie); err == nil {
			h := maphash.String(e.seed, c.Value)
			if float64(h>>11)/(1<<53) < e.affinity {
				// A pinned session: its origin is a deterministic function of the session,
				// drawn by the original weights.
				x := float64(maphash.String(e.seed, "origin:"+c.Value)>>11) / (1 << 53) * e.total
				o := e.origins[len(e.origins)-1]
				for _, cand := range e.origins {
					if x < cand.weight {
						o = cand
						break
					}
					x -= cand.weight
				}
				if o.weight > 0 {
					w.Header().Set(cfemu.OriginHeader, o.name)
					w.Header().Set(pinnedHeader, "1")
					e.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), pinKey{}, o.target)))
					return
				}
			}
		}
	}
	e.data.ServeHTTP(w, r)
}

func (e *edge) close() { e.tr.CloseIdleConnections() }
