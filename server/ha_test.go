package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/store/storetest"
	"github.com/verdict-dev/verdict/traffic"
)

var errCut = errors.New("replica cut off (test)")

// cutStore is a replica's connection to the shared store, which the test can sever, as a
// dead machine or a network partition would: every call fails while cut.
type cutStore struct {
	*store.Postgres
	cut atomic.Bool
}

func (c *cutStore) err() error {
	if c.cut.Load() {
		return errCut
	}
	return nil
}

func (c *cutStore) CreateRun(ctx context.Context, r *store.Run, ev ...store.Event) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.CreateRun(ctx, r, ev...)
}

func (c *cutStore) SaveRun(ctx context.Context, r *store.Run, ev ...store.Event) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.SaveRun(ctx, r, ev...)
}

func (c *cutStore) Run(ctx context.Context, id string) (*store.Run, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.Run(ctx, id)
}

func (c *cutStore) ListRuns(ctx context.Context, o store.ListOptions) ([]*store.Run, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.ListRuns(ctx, o)
}

func (c *cutStore) AddObservations(ctx context.Context, obs []store.Observation) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.AddObservations(ctx, obs)
}

func (c *cutStore) Observations(ctx context.Context, id string) ([]store.Observation, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.Observations(ctx, id)
}

func (c *cutStore) AddDecision(ctx context.Context, d *store.Decision) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.AddDecision(ctx, d)
}

func (c *cutStore) Decisions(ctx context.Context, id string) ([]store.Decision, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.Decisions(ctx, id)
}

func (c *cutStore) Events(ctx context.Context, id string, after int64) ([]store.Event, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.Events(ctx, id, after)
}

func (c *cutStore) PostCommand(ctx context.Context, cmd *store.Command) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.PostCommand(ctx, cmd)
}

func (c *cutStore) PendingCommands(ctx context.Context, id string) ([]store.Command, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Postgres.PendingCommands(ctx, id)
}

func (c *cutStore) CompleteCommand(ctx context.Context, id int64, result string, at time.Time) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.CompleteCommand(ctx, id, result, at)
}

func (c *cutStore) Acquire(ctx context.Context, id, owner string, ttl time.Duration) (store.Lease, error) {
	if err := c.err(); err != nil {
		return store.Lease{}, err
	}
	return c.Postgres.Acquire(ctx, id, owner, ttl)
}

func (c *cutStore) Renew(ctx context.Context, l store.Lease) (store.Lease, error) {
	if err := c.err(); err != nil {
		return store.Lease{}, err
	}
	return c.Postgres.Renew(ctx, l)
}

func (c *cutStore) Release(ctx context.Context, l store.Lease) error {
	if err := c.err(); err != nil {
		return err
	}
	return c.Postgres.Release(ctx, l)
}

// write is one weight write that reached the pool; owner is the holder of the run's lease
// at that moment, as the store says.
type write struct {
	replica, owner string
	at             time.Time
}

// replicaSteerer is a replica's view of the load balancer: cut with its store (a dead
// replica writes nothing), and every write that reaches the pool is logged with its author.
type replicaSteerer struct {
	traffic.Steerer
	name   string
	cut    *atomic.Bool
	mu     *sync.Mutex
	writes *[]write
	leases store.Leaser // the test's own connection: who holds the lease now
}

func (s *replicaSteerer) Pool(ctx context.Context, ref traffic.PoolRef) (traffic.Pool, error) {
	if s.cut.Load() {
		return traffic.Pool{}, errCut
	}
	return s.Steerer.Pool(ctx, ref)
}

func (s *replicaSteerer) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	if s.cut.Load() {
		return errCut
	}
	owner := "nobody"
	if ls, err := s.leases.Leases(ctx); err == nil && len(ls) == 1 { // one run in the test
		owner = ls[0].Owner
	}
	s.mu.Lock()
	*s.writes = append(*s.writes, write{s.name, owner, time.Now()})
	s.mu.Unlock()
	return s.Steerer.SetWeights(ctx, ref, want, expect)
}

type replica struct {
	name string
	st   *cutStore
	srv  *Server
}

// driving says whether the replica steps the run now.
func (r *replica) driving(id string) bool {
	rr, ok := r.srv.sup.get(id)
	return ok && !rr.isDone()
}

// TestReplicasTakeOverADeadOwner runs three replicas on one PostgreSQL, one emulated pool
// and one Prometheus. Exactly one replica drives the experiment; its owner is cut off
// (dead, as far as the others can tell: it neither renews nor writes) and another takes
// over within the TTL and a step; that one is then stopped cleanly (SIGTERM), which hands
// the run over at once; the run ends promoted, every weight write came from the owner of
// the moment, no interval was decided twice, and a stale token is refused.
func TestReplicasTakeOverADeadOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three replicas for about 20 s")
	}
	dsn := storetest.PostgresSchema(t)
	w := newWorld(t)
	const ttl = 1500 * time.Millisecond
	var mu sync.Mutex
	var writes []write
	var reps []*replica
	mon, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	for i := range 3 {
		name := fmt.Sprintf("replica-%d", i+1)
		pg, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		cs := &cutStore{Postgres: pg}
		rs := &replicaSteerer{Steerer: w.steer, name: name, cut: &cs.cut, mu: &mu, writes: &writes, leases: mon}
		srv := w.server(func(o *Options) {
			o.Store, o.Steerer, o.Replica = cs, rs, name
			o.LeaseTTL, o.LeaseRenew, o.EventPoll = ttl, ttl/3, 100*time.Millisecond
			o.Telemetry = NewTelemetry()
			if testing.Verbose() {
				o.Logger = testLogger(t).With("replica", name)
			}
		})
		reps = append(reps, &replica{name: name, st: cs, srv: srv})
	}
	// Every replica's stream carries the run's events, whoever drives it.
	type streamed struct {
		mu    sync.Mutex
		types map[string]map[string]bool // run ID -> event types
	}
	streams := make([]*streamed, len(reps))
	for i, r := range reps {
		sv := &streamed{types: map[string]map[string]bool{}}
		streams[i] = sv
		s := (&client{t: t, base: r.srv.URL()}).stream("/api/v1/stream", "")
		go func() {
			for s.sc.Scan() {
				line, ok := strings.CutPrefix(s.sc.Text(), "data: ")
				var m Message
				if !ok || json.Unmarshal([]byte(line), &m) != nil || m.RunID == "" {
					continue
				}
				sv.mu.Lock()
				if sv.types[m.RunID] == nil {
					sv.types[m.RunID] = map[string]bool{}
				}
				sv.types[m.RunID][m.Type] = true
				sv.mu.Unlock()
			}
		}()
	}
	w.write("ha.yaml", w.experiment("ha", "a", "10m"))
	c := &client{t: t, base: reps[2].srv.URL()}
	id := c.waitRun("ha")

	owners := func() []*replica {
		var out []*replica
		for _, r := range reps {
			if r.driving(id) {
				out = append(out, r)
			}
		}
		return out
	}
	var overlap atomic.Int32
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() { // exactly one owner at a time, sampled every few milliseconds
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(3 * time.Millisecond):
			}
			if len(owners()) > 1 {
				overlap.Add(1)
			}
		}
	}()
	owner := func() *replica {
		var o *replica
		eventually(t, "one replica driving the run", func() bool {
			if os := owners(); len(os) == 1 {
				o = os[0]
			}
			return o != nil
		})
		return o
	}
	step := func(n int) {
		eventually(t, fmt.Sprintf("step %d", n), func() bool { return c.run(id).Step >= n })
	}
	takeover := func(from *replica) (*replica, time.Duration) {
		t0 := time.Now()
		var to *replica
		eventually(t, "another replica taking the run over", func() bool {
			for _, r := range owners() {
				if r != from {
					to = r
				}
			}
			return to != nil
		})
		return to, time.Since(t0)
	}

	a := owner()
	step(1)
	tokenA := leaseOf(t, reps, a, id)
	a.st.cut.Store(true) // dies without releasing
	b, took := takeover(a)
	t.Logf("owner %s cut off; %s took over after %s (TTL %s)", a.name, b.name, took, ttl)
	if limit := ttl + time.Second; took > limit {
		t.Errorf("takeover after death took %s, want within TTL + a step (%s)", took, limit)
	}
	// The old owner's token is stale: the store refuses its writes, whatever it believes.
	rec, err := b.st.Run(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rec.Fence = tokenA
	if err := b.st.Postgres.SaveRun(context.Background(), rec); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("save with the dead owner's token: %v, want ErrLeaseLost", err)
	}
	if err := b.st.Postgres.AddDecision(context.Background(), &store.Decision{RunID: id, At: w.clk.Now(), Step: 9, Action: "advance", Reason: "stale", Fence: tokenA}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("decision with the dead owner's token: %v, want ErrLeaseLost", err)
	}
	a.st.cut.Store(false) // back from the dead: it must not take the run back
	step(2)
	b.srv.Close() // SIGTERM: persists, then releases
	cNew, took2 := takeover(b)
	t.Logf("owner %s stopped cleanly; %s took over after %s", b.name, cNew.name, took2)
	c = &client{t: t, base: cNew.srv.URL()} // b no longer answers
	if took2 > ttl {
		t.Errorf("takeover after a clean stop took %s, want less than the TTL (%s): the lease should have been released", took2, ttl)
	}

	eventually(t, "the run to end", func() bool { return c.run(id).State.Terminal() })
	close(stopWatch)
	<-watched
	end := c.run(id)
	if end.State != store.StatePromoted || end.Verdict != "promoted" {
		t.Fatalf("run ended %s/%s (%s), want promoted", end.State, end.Verdict, end.Reason)
	}
	if n := overlap.Load(); n > 0 {
		t.Errorf("two replicas drove the run at once in %d samples", n)
	}

	// Every write that reached the pool came from the holder of the lease at that moment.
	mu.Lock()
	var authors []string
	for _, wr := range writes {
		authors = append(authors, wr.replica)
		if wr.owner != wr.replica {
			t.Errorf("%s wrote weights at %s while %s held the lease", wr.replica, wr.at.Format(time.StampMilli), wr.owner)
		}
	}
	nWrites := len(writes)
	mu.Unlock()
	// Three steps (the last one's weights are the promoted ones, so promoting writes
	// nothing); a takeover may repeat a write whose outcome was unknown.
	if nWrites < 3 || nWrites > 5 {
		t.Errorf("%d weight writes (by %v), want 3 (three steps), or a few more after a takeover", nWrites, authors)
	}

	// Every interval decided once.
	ds, err := cNew.st.Decisions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		step    int
		elapsed string
		action  string
	}
	decided := map[key]int{}
	for _, d := range ds {
		var det struct {
			StepElapsed string `json:"stepElapsed"`
		}
		_ = json.Unmarshal(d.Details, &det)
		k := key{d.Step, det.StepElapsed, d.Action}
		decided[k]++
		if decided[k] == 2 {
			t.Errorf("decision recorded twice: step %d at %s elapsed, %s", d.Step, det.StepElapsed, d.Action)
		}
	}
	if len(ds) < 10 {
		t.Errorf("only %d decisions recorded", len(ds))
	}
	// Every replica serves the run as the store has it and streams its end, the stopped
	// one excepted.
	for i, r := range reps {
		if r == b {
			continue
		}
		rc := &client{t: t, base: r.srv.URL()}
		if got := rc.run(id); got.State != store.StatePromoted {
			t.Errorf("%s shows the run %s", r.name, got.State)
		}
		eventually(t, r.name+" streaming the run's end", func() bool {
			streams[i].mu.Lock()
			defer streams[i].mu.Unlock()
			return streams[i].types[id]["run_ended"]
		})
	}
	t.Logf("takeover after death %s, after a clean stop %s; %d writes by %v; %d decisions", took, took2, nWrites, authors, len(ds))
}

// leaseOf returns the token of r's lease on run id.
func leaseOf(t *testing.T, reps []*replica, r *replica, id string) int64 {
	t.Helper()
	ls, err := reps[0].st.Postgres.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.RunID == id && l.Owner == r.name {
			return l.Token
		}
	}
	t.Fatalf("%s holds no lease on %s: %+v", r.name, id, ls)
	return 0
}
