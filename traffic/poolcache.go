package traffic

import (
	"context"
	"errors"
	"sync"
	"time"
)

// PoolLister reads every pool of an account in one call; *Cloudflare implements it.
type PoolLister interface {
	ListPools(ctx context.Context, account string) ([]Pool, error)
}

// PoolCacheOptions tunes a PoolCache.
type PoolCacheOptions struct {
	// MaxAge is how old a listing may be when it answers a read; default 10s. It bounds how
	// late a change made outside Verdict is seen, never what a write checks: SetWeights
	// always reads the pool itself.
	MaxAge time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// PoolCache shares pool reads among the runs of one process. Cloudflare allows 1,200 API
// calls per 5 minutes per user, and every run reads its pool at every step to see changes
// made outside Verdict: one read per run per step exhausts that with a few dozen runs. A
// PoolCache answers those reads from one listing of the account's pools, refreshed at most
// once per MaxAge (concurrent readers wait for one refresh), so N runs on an account cost
// one call per MaxAge instead of N per step.
//
// A listing never shows a pool older than the reader may have seen it. It answers a view
// only if its request was sent after the view was made (a run started, resumed or taken
// over from a dead replica reconciles against the pool as it is, never against a listing
// from before the dead owner's last write), and answers for a pool only if sent after the
// pool's last write or direct read through any view. Otherwise a new listing is made,
// which then serves every run.
type PoolCache struct {
	lister PoolLister
	maxAge time.Duration
	now    func() time.Time

	mu       sync.Mutex
	seq      uint64 // orders listings, views, writes and direct reads
	accounts map[string]*listing
	seen     map[PoolRef]uint64 // seq of each pool's last write or direct read
}

// listing is one account's pools as of the moment its request was sent.
type listing struct {
	seq     uint64
	sent    time.Time
	pools   map[string]Pool
	loading chan struct{} // non-nil while the request is in flight; closed when it ends
	err     error
}

// NewPoolCache returns a PoolCache reading through l.
func NewPoolCache(l PoolLister, o PoolCacheOptions) *PoolCache {
	if o.MaxAge <= 0 {
		o.MaxAge = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &PoolCache{lister: l, maxAge: o.MaxAge, now: o.Now, accounts: map[string]*listing{}, seen: map[PoolRef]uint64{}}
}

// Steerer returns a view of s whose pool reads come from the cache and whose writes go to
// s. Make one per run (per start or resume); views share the cache, and s may differ per
// run (for its logs). The view is a Claimer exactly when s is one.
func (c *PoolCache) Steerer(s Steerer) Steerer {
	v := &cachedSteerer{c: c, next: s, made: c.tick()}
	if cl, ok := s.(Claimer); ok {
		return &cachedClaimer{cachedSteerer: v, claimer: cl}
	}
	return v
}

// cachedClaimer is a cached view of a Steerer that is also a Claimer.
type cachedClaimer struct {
	*cachedSteerer
	claimer Claimer
}

// Claim goes to the wrapped Claimer, which reads the pool itself. Like a weight write it
// invalidates the pool's cached listing, so the next read through any view shows the
// claim (or the claim that beat it).
func (v *cachedClaimer) Claim(ctx context.Context, ref PoolRef, cl Claim, force bool) error {
	v.c.markSeen(ref)
	defer v.c.markSeen(ref)
	return v.claimer.Claim(ctx, ref, cl, force)
}

// Release goes to the wrapped Claimer and invalidates the pool's cached listing.
func (v *cachedClaimer) Release(ctx context.Context, ref PoolRef, last LastRun) error {
	v.c.markSeen(ref)
	defer v.c.markSeen(ref)
	return v.claimer.Release(ctx, ref, last)
}

type cachedSteerer struct {
	c    *PoolCache
	next Steerer
	made uint64
}

func (v *cachedSteerer) Pool(ctx context.Context, ref PoolRef) (Pool, error) {
	p, ok, err := v.c.pool(ctx, ref, v.made)
	if ok || err != nil {
		return p, err
	}
	// The listing does not have the pool, or could not be made (an account the token
	// cannot list, the API failing): read it directly, which also reports a missing pool
	// properly.
	v.c.markSeen(ref)
	return v.next.Pool(ctx, ref)
}

// Health goes to the wrapped Steerer when it reads health (HealthReader), uncached: it
// is read at most once a tick per run, and must be current; otherwise it returns
// ErrHealthUnsupported, which ReadHealth treats as "cannot read health".
func (v *cachedSteerer) Health(ctx context.Context, ref PoolRef) (PoolHealth, error) {
	hr, ok := v.next.(HealthReader)
	if !ok {
		return PoolHealth{}, ErrHealthUnsupported
	}
	return hr.Health(ctx, ref)
}

func (v *cachedSteerer) SetWeights(ctx context.Context, ref PoolRef, want, expect Weights) error {
	// Marked before and after: a listing sent while the write is in flight may or may not
	// see it, so it must not answer for this pool.
	v.c.markSeen(ref)
	defer v.c.markSeen(ref)
	return v.next.SetWeights(ctx, ref, want, expect)
}

func (c *PoolCache) tick() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return c.seq
}

func (c *PoolCache) markSeen(ref PoolRef) {
	c.mu.Lock()
	c.seq++
	c.seen[ref] = c.seq
	c.mu.Unlock()
}

// pool answers a read from a listing of ref's account no older than MaxAge and newer than
// both after and the pool's last write or direct read, making one if needed. ok is false
// when the caller should read the pool directly. A listing refused by Cloudflare's rate
// limit or for the token returns its error instead: reading each pool directly would only
// spend more of the same limit and meet the same refusal.
func (c *PoolCache) pool(ctx context.Context, ref PoolRef, after uint64) (Pool, bool, error) {
	c.mu.Lock()
	for {
		l := c.accounts[ref.Account]
		now := c.now()
		if l != nil && l.loading != nil {
			// Another reader's listing is on its way: it may do.
			wait := l.loading
			c.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return Pool{}, false, ctx.Err()
			}
			c.mu.Lock()
			continue
		}
		if l != nil && l.err != nil && now.Sub(l.sent) < c.maxAge/4 {
			// The last listing failed just now: do not list again on every read.
			err := l.err
			c.mu.Unlock()
			return Pool{}, false, onlyRateLimit(err)
		}
		if l != nil && l.err == nil && now.Sub(l.sent) < c.maxAge && l.seq > max(after, c.seen[ref]) {
			p, found := l.pools[ref.Pool]
			c.mu.Unlock()
			if !found {
				return Pool{}, false, nil
			}
			return p.clone(), true, nil
		}
		// Make a listing; readers arriving meanwhile wait for it. Its seq is higher than
		// anything this reader has to be newer than, so the loop ends with it.
		c.seq++
		l = &listing{seq: c.seq, sent: now, loading: make(chan struct{})}
		c.accounts[ref.Account] = l
		c.mu.Unlock()
		pools, err := c.lister.ListPools(ctx, ref.Account)
		c.mu.Lock()
		l.err = err
		if err == nil {
			l.pools = make(map[string]Pool, len(pools))
			for _, p := range pools {
				l.pools[p.ID] = p
			}
		}
		close(l.loading)
		l.loading = nil
		if err != nil {
			c.mu.Unlock()
			return Pool{}, false, onlyRateLimit(err)
		}
	}
}

// onlyRateLimit passes on a listing's error only when a direct read would meet the same
// answer and only spend more calls on it: Cloudflare's rate limit, or a refused token (pool
// permissions are per account, so a token that may not list may not read either).
func onlyRateLimit(err error) error {
	if errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnauthorized) {
		return err
	}
	return nil
}

// clone copies the slices a reader might modify, so readers never share them.
func (p Pool) clone() Pool {
	p.Origins = append([]Origin(nil), p.Origins...)
	p.Raw = append([]byte(nil), p.Raw...)
	return p
}
