package traffic_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

const cachePool = `{"id": "%032x", "name": "pool-%d", "enabled": true, "minimum_origins": 1,
 "origins": [
  {"name": "o1", "address": "c1.example.com", "enabled": true, "weight": 0.33},
  {"name": "o2", "address": "c2.example.com", "enabled": true, "weight": 0.33},
  {"name": "o3", "address": "c3.example.com", "enabled": true, "weight": 0.34}
 ]}`

// cacheWorld is an emulator with n pools on one account, a client, and a settable clock.
type cacheWorld struct {
	emu   *cfemu.Server
	cf    *traffic.Cloudflare
	refs  []traffic.PoolRef
	mu    sync.Mutex
	clock time.Time
}

func newCacheWorld(t *testing.T, n int) *cacheWorld {
	t.Helper()
	var pools []string
	for i := range n {
		pools = append(pools, fmt.Sprintf(cachePool, i+1, i))
	}
	s := startEmu(t, cfemu.Options{RateLimit: -1}, "["+strings.Join(pools, ",")+"]", nil)
	w := &cacheWorld{emu: s.emu, cf: s.client, clock: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	for _, id := range s.emu.PoolIDs() {
		w.refs = append(w.refs, traffic.PoolRef{Pool: id})
	}
	return w
}

func (w *cacheWorld) now() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.clock }

func (w *cacheWorld) advance(d time.Duration) { w.mu.Lock(); w.clock = w.clock.Add(d); w.mu.Unlock() }

// gets counts the emulator's GET calls: listings and single-pool reads.
func (w *cacheWorld) gets() (lists, reads int) {
	for _, c := range w.emu.Calls() {
		if c.Method != "GET" {
			continue
		}
		if strings.HasSuffix(c.Path, "/pools") {
			lists++
		} else {
			reads++
		}
	}
	return lists, reads
}

func weightOf(t *testing.T, p traffic.Pool, origin string) float64 {
	t.Helper()
	o, ok := p.Origin(origin)
	if !ok {
		t.Fatalf("pool %s has no origin %s", p.ID, origin)
	}
	return o.Weight
}

// TestPoolCacheSharesReads: 60 runs reading their pools at every step cost one listing per
// MaxAge, whatever the number of runs, and concurrent readers wait for one listing.
func TestPoolCacheSharesReads(t *testing.T) {
	w := newCacheWorld(t, 60)
	cache := traffic.NewPoolCache(w.cf, traffic.PoolCacheOptions{MaxAge: 10 * time.Second, Now: w.now})
	views := make([]traffic.Steerer, len(w.refs))
	for i := range views {
		views[i] = cache.Steerer(w.cf)
	}
	const steps = 5
	for range steps {
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i, v := range views {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := v.Pool(context.Background(), w.refs[i])
				if err != nil || p.ID != w.refs[i].Pool || len(p.Origins) != 3 {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d reads failed or returned the wrong pool", failed.Load())
		}
		w.advance(10 * time.Second)
	}
	lists, reads := w.gets()
	if lists != steps || reads != 0 {
		t.Errorf("%d runs × %d steps: %d listings and %d pool reads, want %d listings and no pool reads", len(views), steps, lists, reads, steps)
	}
	t.Logf("%d pool reads answered by %d API calls (%d without the cache)", len(views)*steps, lists+reads, len(views)*steps)
	// A run resumed or taken over reconciles against the pool as it is: a listing sent
	// before its view was made does not answer it, even while fresh; the new listing then
	// answers everyone.
	ctx := context.Background()
	views[0].Pool(ctx, w.refs[0]) // a fresh listing
	w.advance(time.Second)
	resumed := cache.Steerer(w.cf)
	resumed.Pool(ctx, w.refs[0]) // not from it: a new listing
	resumed.Pool(ctx, w.refs[0])
	views[1].Pool(ctx, w.refs[1]) // the new listing answers the others too
	if l, r := w.gets(); l != lists+2 || r != reads {
		t.Errorf("a resumed run's reads: %d listings, %d reads; want %d, %d (one listing before it, one for it)", l, r, lists+2, reads)
	}
}

// TestPoolCacheSeesOwnWrites: a run's own write is never hidden by a listing, not even one
// whose request went out before the write and whose answer arrives after it.
func TestPoolCacheSeesOwnWrites(t *testing.T) {
	w := newCacheWorld(t, 3)
	slow := &gatedLister{next: w.cf, listed: make(chan struct{}), release: make(chan struct{})}
	cache := traffic.NewPoolCache(slow, traffic.PoolCacheOptions{MaxAge: time.Minute, Now: w.now})
	view := cache.Steerer(w.cf)
	other := cache.Steerer(w.cf)
	ctx := context.Background()
	ref := w.refs[0]
	// Both runs are going; the listing they read from expires.
	for _, v := range []traffic.Steerer{view, other} {
		for _, r := range w.refs {
			if _, err := v.Pool(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.advance(time.Minute)
	slow.armed.Store(true)

	// Another run's read starts a listing, which reads the pools and then stalls.
	done := make(chan traffic.Pool)
	go func() {
		p, err := other.Pool(ctx, ref)
		if err != nil {
			t.Error(err)
		}
		done <- p
	}()
	<-slow.listed
	// Meanwhile this run writes its pool.
	want := traffic.Weights{"o1": 0.1, "o2": 0.45, "o3": 0.45}
	if err := view.SetWeights(ctx, ref, want, traffic.Weights{"o1": 0.33, "o2": 0.33, "o3": 0.34}); err != nil {
		t.Fatal(err)
	}
	close(slow.release)
	<-done // that reader may see either; it was not ordered after the write
	w.advance(time.Second)
	// That listing predates the write: it does not answer for the written pool; a newer
	// listing does, and answers for the others too.
	listsBefore, readsBefore := w.gets()
	p, err := view.Pool(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := weightOf(t, p, "o1"); got != 0.1 {
		t.Errorf("after its own write a run reads o1 = %v from a stale listing, want 0.1", got)
	}
	if _, err := other.Pool(ctx, w.refs[1]); err != nil {
		t.Fatal(err)
	}
	// (The other run's reader, whose listing the write overtook, may have made that new
	// listing already.)
	if lists, reads := w.gets(); lists > listsBefore+1 || reads != readsBefore {
		t.Errorf("after the write: %d listings and %d reads, want at most one new listing (%d, %d)", lists, reads, listsBefore+1, readsBefore)
	}
}

// gatedLister, once armed, lists, says so, and waits for release before answering.
type gatedLister struct {
	next    traffic.PoolLister
	armed   atomic.Bool
	listed  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedLister) ListPools(ctx context.Context, account string) ([]traffic.Pool, error) {
	p, err := g.next.ListPools(ctx, account)
	if !g.armed.Load() {
		return p, err
	}
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.listed)
		<-g.release
	}
	return p, err
}

// TestPoolCacheSeesOutsideChangesWithinMaxAge: a change made outside Verdict shows in the
// reads at the latest MaxAge later, so drift is still caught.
func TestPoolCacheSeesOutsideChangesWithinMaxAge(t *testing.T) {
	w := newCacheWorld(t, 2)
	cache := traffic.NewPoolCache(w.cf, traffic.PoolCacheOptions{MaxAge: 10 * time.Second, Now: w.now})
	view := cache.Steerer(w.cf)
	ctx := context.Background()
	if _, err := view.Pool(ctx, w.refs[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetWeight(w.refs[0].Pool, "o1", 0.5); err != nil {
		t.Fatal(err)
	}
	w.advance(9 * time.Second)
	p, _ := view.Pool(ctx, w.refs[0])
	if got := weightOf(t, p, "o1"); got != 0.33 {
		t.Fatalf("within MaxAge the listing answers (o1 = %v, want the listed 0.33)", got)
	}
	w.advance(time.Second)
	p, _ = view.Pool(ctx, w.refs[0])
	if got := weightOf(t, p, "o1"); got != 0.5 {
		t.Errorf("MaxAge after an outside change, o1 reads %v, want 0.5", got)
	}
}

// failingLister cannot list (a token scoped to single pools, or the API failing).
type failingLister struct{ calls atomic.Int64 }

func (f *failingLister) ListPools(context.Context, string) ([]traffic.Pool, error) {
	f.calls.Add(1)
	return nil, errors.New("list pools: 403 forbidden (test)")
}

// TestPoolCacheFallsBackToDirectReads: when listing fails, reads go to the pool directly,
// and the listing is not retried on every read.
func TestPoolCacheFallsBackToDirectReads(t *testing.T) {
	w := newCacheWorld(t, 2)
	fl := &failingLister{}
	cache := traffic.NewPoolCache(fl, traffic.PoolCacheOptions{MaxAge: 20 * time.Second, Now: w.now})
	view := cache.Steerer(w.cf)
	ctx := context.Background()
	for i := range 10 {
		p, err := view.Pool(ctx, w.refs[i%2])
		if err != nil || p.ID != w.refs[i%2].Pool {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if n := fl.calls.Load(); n != 1 {
		t.Errorf("%d listings attempted for 10 reads right after a failure, want 1", n)
	}
	if _, reads := w.gets(); reads != 10 {
		t.Errorf("%d direct reads, want 10", reads)
	}
	w.advance(5 * time.Second)
	view.Pool(ctx, w.refs[0])
	if n := fl.calls.Load(); n != 2 {
		t.Errorf("after MaxAge/4 the listing should be tried again (%d attempts)", n)
	}
	// Refused by the rate limit, the listing's error is the answer: direct reads would spend
	// more of the same limit.
	w.advance(5 * time.Second)
	rl := traffic.NewPoolCache(w.cf, traffic.PoolCacheOptions{MaxAge: 20 * time.Second, Now: w.now})
	v2 := rl.Steerer(w.cf)
	v2.Pool(ctx, w.refs[0])
	w.advance(time.Minute)
	w.emu.SetFault(cfemu.Fault{Fail: 1, Status: 429, RetryAfter: time.Hour})
	_, before := w.gets()
	if _, err := v2.Pool(ctx, w.refs[0]); !errors.Is(err, traffic.ErrRateLimited) {
		t.Errorf("a rate-limited listing: %v, want ErrRateLimited", err)
	}
	if _, err := v2.Pool(ctx, w.refs[0]); !errors.Is(err, traffic.ErrRateLimited) {
		t.Errorf("right after a rate-limited listing: %v, want ErrRateLimited", err)
	}
	if l, reads := w.gets(); reads != before {
		t.Errorf("%d direct reads after a rate-limited listing (%d listings), want none", reads-before, l)
	}
	// A pool the listing does not have (missing) reports the direct read's error.
	if _, err := cache.Steerer(w.cf).Pool(ctx, traffic.PoolRef{Pool: fmt.Sprintf("%032x", 999)}); err == nil {
		t.Error("reading a missing pool through the cache succeeded")
	}
}

// TestPoolCacheViewIsClaimerOnlyIfWrappedIs: serve type-asserts traffic.Claimer on its
// views, so a view must not claim to be one over a Steerer that cannot claim; over one
// that can, a claim through one view is seen by the next read through another.
func TestPoolCacheViewIsClaimerOnlyIfWrappedIs(t *testing.T) {
	w := newCacheWorld(t, 2)
	cache := traffic.NewPoolCache(w.cf, traffic.PoolCacheOptions{MaxAge: time.Hour, Now: w.now})
	if _, ok := cache.Steerer(struct{ traffic.Steerer }{w.cf}).(traffic.Claimer); ok {
		t.Errorf("a view over a Steerer without claims is a Claimer")
	}
	a, b := cache.Steerer(w.cf), cache.Steerer(w.cf)
	if _, err := b.Pool(context.Background(), w.refs[0]); err != nil { // fills the listing
		t.Fatal(err)
	}
	cl, ok := a.(traffic.Claimer)
	if !ok {
		t.Fatalf("a view over *Cloudflare is not a Claimer")
	}
	claim := traffic.Claim{Run: "run-1", Owner: "serve-a", Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	if err := cl.Claim(context.Background(), w.refs[0], claim, false); err != nil {
		t.Fatal(err)
	}
	p, err := b.Pool(context.Background(), w.refs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := p.Claim(); !ok || got.Run != "run-1" {
		t.Errorf("read through another view after the claim: claim %+v, %v; want run-1 (the listing from before must not answer)", got, ok)
	}
}

// TestPoolCacheRefusedTokenIsTheAnswer: a listing refused for the token is final: the read
// fails with ErrUnauthorized after that one call instead of trying each pool directly.
func TestPoolCacheRefusedTokenIsTheAnswer(t *testing.T) {
	s := startEmu(t, cfemu.Options{RateLimit: -1}, "", func(o *traffic.CloudflareOptions) { o.Token = "wrong-" + testToken })
	view := traffic.NewPoolCache(s.client, traffic.PoolCacheOptions{}).Steerer(s.client)
	_, err := view.Pool(context.Background(), s.ref)
	if !errors.Is(err, traffic.ErrUnauthorized) {
		t.Fatalf("read with a refused token: %v, want ErrUnauthorized", err)
	}
	if n := len(s.emu.Calls()); n != 1 {
		t.Errorf("API calls = %d, want 1", n)
	}
}
