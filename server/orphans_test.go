package server

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// elsewhere is a `verdict run` process on the world's state directory, with its spec file
// outside the watched directory: it holds the run's lease until it "crashes" (stops
// renewing without releasing, as SIGKILL leaves it).
type elsewhere struct {
	t     *testing.T
	st    *store.SQLite
	crash context.CancelFunc
}

const elsewhereOwner = "verdict-run@elsewhere"

func (e *elsewhere) hold(id string, ttl time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := store.AcquireHold(ctx, e.st, id, elsewhereOwner, store.HoldOptions{TTL: ttl}); err != nil {
		e.t.Fatal(err)
	}
	e.crash = cancel
	e.t.Cleanup(cancel)
}

func (c *client) orphans() []Orphan {
	var out struct {
		Orphans []Orphan `json:"orphans"`
	}
	c.do("GET", "/api/v1/runs", nil, &out)
	return out.Orphans
}

// TestOrphanedRunsListedThenAdopted: a run started by another process (spec file outside
// the watched directory) whose process dies is listed as orphaned, with who drove it last,
// since when and how to finish it, and is not touched without --adopt-orphans. With it, a
// driver that comes back within the grace period keeps its run; once it dies for good, the
// server adopts the run from its stored spec after the grace period, says so, and drives it
// (an abort through the server restores the pool).
func TestOrphanedRunsListedThenAdopted(t *testing.T) {
	w := newWorld(t)
	const ttl = time.Second
	ctx := context.Background()
	outside := filepath.Join(t.TempDir(), "cli.yaml")
	if err := os.WriteFile(outside, []byte(w.experiment("cli", "b", "3h")), 0o600); err != nil {
		t.Fatal(err)
	}
	exps, err := experiments.LoadFile(outside, experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := w.poolWeights("b")

	// verdict run, elsewhere: starts the run, holds its lease, shifts the pool.
	cli := &elsewhere{t: t, st: w.openStore()}
	src, closeSrc, err := PrometheusFor(exps[0])
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	eng, err := engine.New(engine.Options{Store: cli.st, Steerer: w.steer, Metrics: src, Who: elsewhereOwner, Settle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run, err := eng.Start(ctx, exps[0], outside, w.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := run.ID()
	cli.hold(id, ttl)
	for i := 0; run.Snapshot().Run.Step < 1; i++ {
		if i > 200 {
			t.Fatalf("the run did not reach step 1: %+v", run.Snapshot().Run)
		}
		if err := run.Step(ctx, w.clk.Now()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	shifted := w.poolWeights("b")

	// A server without --adopt-orphans sees the lease, then the crash.
	a := w.server(func(o *Options) { o.Replica, o.LeaseTTL = "serve-a", ttl })
	ca := &client{t: t, base: a.URL()}
	ev := ca.stream("/api/v1/stream", "")
	time.Sleep(300 * time.Millisecond)
	if o := ca.orphans(); len(o) != 0 {
		t.Fatalf("orphans while verdict run lives: %+v", o)
	}
	crashed := time.Now()
	cli.crash()
	m := ev.waitFor(t, "run_orphaned")
	t.Logf("notice: %s", m.Message)
	if m.RunID != id || !strings.Contains(m.Message, "last driven by "+elsewhereOwner) || !strings.Contains(m.Message, "verdict abort "+id) || !strings.Contains(m.Message, "--adopt-orphans") {
		t.Errorf("orphan notice: %+v", m)
	}
	orph := ca.orphans()
	if len(orph) != 1 || orph[0].Run != id || orph[0].LastOwner != elsewhereOwner || !orph[0].SinceExact || orph[0].Since.Before(crashed) || !orph[0].AdoptAt.IsZero() {
		t.Fatalf("orphans: %+v", orph)
	}
	if r := ca.run(id); r.Orphan == nil || r.Supervised || !strings.Contains(r.Orphan.Hint, "verdict abort "+id) {
		t.Errorf("run summary of an orphan: %+v", r)
	}
	time.Sleep(2 * ttl) // well past any grace: still nobody's
	if o := ownerOf(cli.st, id); o != "" {
		t.Errorf("without --adopt-orphans the run was taken by %q", o)
	}
	if got := w.poolWeights("b"); !maps.Equal(got, shifted) {
		t.Errorf("pool moved without a driver: %v, was %v", got, shifted)
	}
	a.Close()

	// verdict run --resume comes back; a server with --adopt-orphans starts meanwhile and
	// leaves the run to it.
	cli.hold(id, ttl)
	b := w.server(func(o *Options) { o.Replica, o.LeaseTTL, o.AdoptOrphans, o.OrphanGrace = "serve-b", ttl, true, 2*ttl })
	cb := &client{t: t, base: b.URL()}
	ev = cb.stream("/api/v1/stream", "")
	time.Sleep(500 * time.Millisecond)
	if o := cb.orphans(); len(o) != 0 || ownerOf(cli.st, id) != elsewhereOwner {
		t.Fatalf("with its driver back: orphans %+v, owner %q", o, ownerOf(cli.st, id))
	}
	crashed = time.Now()
	cli.crash()
	m = ev.waitFor(t, "run_orphaned")
	if m.RunID != id || !strings.Contains(m.Message, "adopts it at") {
		t.Errorf("orphan notice under --adopt-orphans: %+v", m)
	}
	m = ev.waitFor(t, "run_adopted")
	t.Logf("notice: %s", m.Message)
	adopted := time.Since(crashed)
	if m.RunID != id || !strings.Contains(m.Message, "last driven by "+elsewhereOwner) || !strings.Contains(m.Message, "nobody had driven it since") || !strings.Contains(m.Message, "serve-b") {
		t.Errorf("adoption notice: %+v", m)
	}
	// The lease runs out TTL after its last renewal, which can come a renewal period (a
	// fraction of the TTL) before the crash: the bound allows half a TTL for it.
	if min := ttl + 2*ttl; adopted < min-ttl/2 {
		t.Errorf("adopted %s after the crash, before lease TTL + grace (%s)", adopted, min)
	}
	eventually(t, "serve-b to hold the lease", func() bool { return ownerOf(cli.st, id) == "serve-b" })
	if r := cb.run(id); !r.Supervised || r.Orphan != nil {
		t.Errorf("adopted run: %+v", r)
	}
	if o := cb.orphans(); len(o) != 0 {
		t.Errorf("orphans after adoption: %+v", o)
	}
	// The server drives it: an abort rolls the pool back.
	var res ActionResult
	cb.do("POST", "/api/v1/runs/"+id+"/abort", ActionRequest{Who: "dave", Reason: "adopted, now ended"}, &res)
	eventually(t, "the adopted run to end", func() bool { return cb.run(id).State.Terminal() })
	if r := cb.run(id); r.State != store.StateAborted {
		t.Errorf("adopted run after abort: %s %s", r.State, r.Reason)
	}
	if got := w.poolWeights("b"); !maps.Equal(got, original) {
		t.Errorf("pool after aborting the adopted run: %v, want %v", got, original)
	}
	t.Logf("orphan adopted %s after its driver's crash (lease TTL %s + grace %s)", adopted.Round(time.Millisecond), ttl, 2*ttl)
}
