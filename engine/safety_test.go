package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// cloudflareVia is a Cloudflare client for the world's emulator through a proxy that fails
// every PATCH with status while failing() holds: a write outage with reads still served.
func cloudflareVia(t *testing.T, w *world, token string, status int, failing func() bool) (*traffic.Cloudflare, *atomic.Int64) {
	t.Helper()
	api, err := url.Parse(w.Emu.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: api.Scheme, Host: api.Host})
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch && failing != nil && failing() {
			refused.Add(1)
			rw.Header().Set("Content-Type", "application/json")
			if status == http.StatusTooManyRequests {
				rw.Header().Set("Retry-After", "60")
			}
			rw.WriteHeader(status)
			fmt.Fprintf(rw, `{"success":false,"errors":[{"code":%d,"message":"injected by the test"}],"messages":[],"result":null}`, 10000+status)
			return
		}
		proxy.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	cf, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: token, AccountID: w.Emu.AccountID(), BaseURL: srv.URL + api.Path,
		MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRateLimitWait: 10 * time.Millisecond, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cf, &refused
}

// TestWriteOutageIsNotBlamedOnPrometheus: Cloudflare refuses every weight write for a
// while (Prometheus answering throughout) right when the run advances to step 2. The run
// keeps collecting and judging KPIs while it retries the write, so the outage is no data
// gap, and the run ends promoted.
func TestWriteOutageIsNotBlamedOnPrometheus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		outage time.Duration
	}{
		{"503 for 75s", http.StatusServiceUnavailable, 75 * time.Second},
		{"429 for 90s", http.StatusTooManyRequests, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.Rate = 1000
			var mu sync.Mutex
			var from time.Time
			failing := func() bool {
				mu.Lock()
				defer mu.Unlock()
				now := w.Now()
				return !from.IsZero() && !now.Before(from) && now.Before(from.Add(tc.outage))
			}
			cf, refused := cloudflareVia(t, w, w.Emu.Token(), tc.status, failing)
			// A tighter noDataTimeout than the world's makes a stopped KPI clock show.
			r := start(t, w, w.engine(func(o *Options) { o.Steerer = cf }), "noDataTimeout: 5m", "noDataTimeout: 2m")
			w.Drive(r, 3*time.Hour, func(now time.Time) {
				mu.Lock()
				defer mu.Unlock()
				if rec := r.Record(); from.IsZero() && rec.Step == 1 && rec.State == store.StateRamping && rec.StepElapsed >= 9*time.Minute {
					from = now
				}
			})
			if refused.Load() == 0 {
				t.Fatal("test setup: no write was refused")
			}
			rec := r.Record()
			t.Logf("%s: %d writes refused; ended %s/%s after %s: %s", tc.name, refused.Load(), rec.State, rec.Verdict, rec.EndedAt.Sub(t0), rec.Reason)
			if strings.Contains(rec.Reason, "no complete KPI data") {
				t.Fatalf("a Cloudflare write outage was blamed on Prometheus: %s", rec.Reason)
			}
			assertEnded(t, r, store.StatePromoted, VerdictPromoted)
			var faultNamesStatus bool
			for _, e := range w.events {
				if e.Type == EventFault && strings.Contains(e.Message, fmt.Sprintf("HTTP %d", tc.status)) {
					faultNamesStatus = true
				}
				if e.Type == EventNoData {
					t.Errorf("no_data event during a Cloudflare outage: %s", e.Message)
				}
			}
			if !faultNamesStatus {
				t.Errorf("no fault names Cloudflare's HTTP %d", tc.status)
			}
		})
	}
}

// TestHarmDuringWriteOutageStillRollsBack: while a step's write is refused, the KPIs are
// still judged, and a harmful canary is rolled back without waiting for Cloudflare to take
// the step; the ending names the load balancer's refusals.
func TestHarmDuringWriteOutageStillRollsBack(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	var broken atomic.Bool
	var writesRefused atomic.Bool
	cf, _ := cloudflareVia(t, w, w.Emu.Token(), http.StatusServiceUnavailable, writesRefused.Load)
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = cf }))
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		rec := r.Record()
		if rec.Step == 1 && rec.State == store.StateRamping && rec.StepElapsed >= 9*time.Minute && !writesRefused.Load() {
			writesRefused.Store(true) // step 2 never lands
		}
		if rec.Intent != nil && rec.Intent.Purpose == "step:2" && !broken.Load() {
			broken.Store(true)
			w.ErrP["c1"] = 0.05 // the variant breaks while the write is stuck
		}
		if rec.State == store.StateRollingBack {
			writesRefused.Store(false) // let the rollback land
		}
	})
	if !broken.Load() {
		t.Fatal("test setup: step 2 was never pending")
	}
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if rec := r.Record(); !strings.Contains(rec.Reason, "error-rate") || !strings.Contains(rec.Reason, "load balancer") {
		t.Errorf("reason should name the KPI and the refused writes: %s", rec.Reason)
	}
}

// failingHooks fails every capacity hook call once armed.
type failingHooks struct {
	armed atomic.Bool
	calls atomic.Int64
}

func (h *failingHooks) RunHook(_ context.Context, args []string, _ time.Duration) error {
	if !h.armed.Load() {
		return nil
	}
	h.calls.Add(1)
	return fmt.Errorf("%s: exit status 1: scaler unreachable", args[0])
}

// TestFailingCapacityHookNeverBlocksRollback: the hook fails from step 1 on and the canary
// is harmful; the rollback goes on without the hook, and the failure is recorded.
func TestFailingCapacityHookNeverBlocksRollback(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.025
	hooks := &failingHooks{}
	r := start(t, w, w.engine(func(o *Options) { o.Hooks = hooks }),
		"  preconditions:", "  capacity:\n    hpa: {minReplicas: 100, maxReplicas: 1000}\n    hook: {command: [scale, \"{{.Cluster}}\", \"{{.MinReplicas}}\", \"{{.MaxReplicas}}\"]}\n  preconditions:",
		"{weight: 10%, hold: 10m}", "{weight: 10%, hold: 60m}")
	w.Drive(r, 3*time.Hour, func(time.Time) {
		if r.Record().State == store.StateRamping {
			hooks.armed.Store(true)
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "error-rate") {
		t.Errorf("reason: %s", r.Record().Reason)
	}
	if w.eventTypes()[EventCapacityFailed] == 0 {
		t.Errorf("the hook failure before the rollback was not recorded: %v", w.eventTypes())
	}
	t.Logf("rolled back after %s with %d failed hook calls", r.Record().EndedAt.Sub(t0), hooks.calls.Load())
}

// driftingSteerer changes the pool (someone ran Terraform) right before the next weight
// write once armed.
type driftingSteerer struct {
	traffic.Steerer
	w     *world
	armed atomic.Bool
}

func (d *driftingSteerer) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	if d.armed.CompareAndSwap(true, false) {
		if err := d.w.Emu.SetWeight(d.w.PoolID, "o3", 0.5); err != nil {
			return err
		}
	}
	return d.Steerer.SetWeights(ctx, ref, want, expect)
}

// TestAbortMeetingDriftStaysAnAbort: the pool drifts right before an abort's rollback is
// written; the rollback finishes from the pool as it is, and the run ends as the abort it
// was, with the abort's reason once.
func TestAbortMeetingDriftStaysAnAbort(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	ds := &driftingSteerer{Steerer: w.Steer, w: w}
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = ds }))
	posted := false
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if !posted && now.Sub(t0) > 12*time.Minute && r.Record().State == store.StateRamping {
			posted = true
			ds.armed.Store(true)
			w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionAbort, Who: "bob", Reason: "incident elsewhere"})
		}
	})
	assertEnded(t, r, store.StateAborted, VerdictAborted)
	assertWeights(t, w, original)
	rec := r.Record()
	if rec.EndedBy != "bob" || rec.Reason != "aborted by bob: incident elsewhere" {
		t.Errorf("ending overwritten: by %q, reason %q", rec.EndedBy, rec.Reason)
	}
	if w.eventTypes()[EventDrift] == 0 {
		t.Error("the drift met by the rollback was not recorded")
	}
}

// TestDriftInterruptingPromotionRollsBack: with onDrift rollback, a promotion that meets
// drift becomes a rollback whose reason says the promotion was interrupted.
func TestDriftInterruptingPromotionRollsBack(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	ds := &driftingSteerer{Steerer: w.Steer, w: w}
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = ds }), "onDrift: pause", "onDrift: rollback")
	posted := false
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if !posted && r.Record().Step == 1 && r.Record().State == store.StateRamping {
			posted = true
			ds.armed.Store(true)
			w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: ActionPromote, Who: "carol", Reason: "looks great"})
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if !strings.Contains(r.Record().Reason, "promotion was interrupted") {
		t.Errorf("reason: %s", r.Record().Reason)
	}
}

// unreadableSteerer fails every pool read while down.
type unreadableSteerer struct {
	traffic.Steerer
	down atomic.Bool
}

func (u *unreadableSteerer) Pool(ctx context.Context, ref traffic.PoolRef) (traffic.Pool, error) {
	if u.down.Load() {
		return traffic.Pool{}, errors.New("read tcp: connection reset by peer")
	}
	return u.Steerer.Pool(ctx, ref)
}

// TestResumeWaitsForAPoolRead: a resume carries on from the pool's weights, so when the
// pool cannot be read the command stays pending and the run stays paused, instead of
// resuming on weights the pool no longer holds.
func TestResumeWaitsForAPoolRead(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	us := &unreadableSteerer{Steerer: w.Steer}
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = us }))
	ctx := context.Background()
	for i := 0; i < 200 && r.Record().State != store.StatePaused; i++ {
		w.Advance(w.Now().Add(30 * time.Second))
		if rec := r.Record(); rec.Step == 2 && rec.Intent == nil && rec.Current["o2"] != 0.5 {
			if err := w.Emu.SetWeight(w.PoolID, "o2", 0.5); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Step(ctx, w.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if r.Record().State != store.StatePaused {
		t.Fatalf("test setup: not paused on drift: %s", r.Record().State)
	}
	us.down.Store(true)
	if err := w.St.PostCommand(ctx, &store.Command{RunID: r.ID(), Action: ActionResume, Who: "alice", Reason: "accepted"}); err != nil {
		t.Fatal(err)
	}
	w.Advance(w.Now().Add(30 * time.Second))
	if err := r.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	if st := r.Record().State; st != store.StatePaused {
		t.Fatalf("resumed without reading the pool: %s, current %v", st, r.Record().Current)
	}
	if cmds, _ := w.St.PendingCommands(ctx, r.ID()); len(cmds) != 1 {
		t.Fatalf("the resume is not pending any more: %v", cmds)
	}
	us.down.Store(false)
	w.Advance(w.Now().Add(30 * time.Second))
	if err := r.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	if rec := r.Record(); rec.State != store.StateRamping || !traffic.SameWeight(rec.Current["o2"], 0.5) {
		t.Fatalf("after the read: %s with %v", rec.State, rec.Current)
	}
	w.Drive(r, 3*time.Hour, nil)
	if !r.Done() {
		t.Fatalf("run did not end: %s", r.Record().State)
	}
}

// TestWrongTokenFailsFast: with a token Cloudflare refuses, the run fails at once with a
// message naming the token, instead of retrying forever; nothing was changed.
func TestWrongTokenFailsFast(t *testing.T) {
	w := newWorld(t)
	bad, _ := cloudflareVia(t, w, "not-the-token", 0, nil)
	r := start(t, w, w.engine(func(o *Options) { o.Steerer = bad }))
	w.Drive(r, 10*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictFailed)
	assertWeights(t, w, original)
	reason := r.Record().Reason
	for _, want := range []string{"Cloudflare refused the API token (HTTP 403)", "nothing was changed", "fix the token"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason lacks %q: %s", want, reason)
		}
	}
	if got := r.Record().EndedAt.Sub(t0); got > time.Minute {
		t.Errorf("failed after %s; a refused token is not retried", got)
	}
}

// TestTokenRefusedMidRunPauses: a process with a refused token takes over a shifted run:
// it pauses with the weights it leaves stated, and once a working token drives the run an
// abort rolls it back.
func TestTokenRefusedMidRunPauses(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 16*time.Minute, nil)
	if r.Record().Step != 2 {
		t.Fatalf("test setup: at step %d", r.Record().Step)
	}
	shifted := w.PoolWeights()
	ctx := context.Background()
	bad, _ := cloudflareVia(t, w, "revoked-token", 0, nil)
	r2, err := w.engine(func(o *Options) { o.Steerer = bad }).Resume(ctx, r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		w.Advance(w.Now().Add(30 * time.Second))
		if err := r2.Step(ctx, w.Now()); err != nil {
			t.Fatal(err)
		}
	}
	s := r2.Snapshot()
	if s.Run.State != store.StatePaused || r2.Done() {
		t.Fatalf("want paused, got %s (%s)", s.Run.State, s.Run.Reason)
	}
	for _, want := range []string{"HTTP 403", "o1=" + traffic.FormatWeight(shifted["o1"]), "--resume " + r.ID(), "verdict abort " + r.ID()} {
		if !strings.Contains(s.PauseNote, want) {
			t.Errorf("pause note lacks %q: %s", want, s.PauseNote)
		}
	}
	assertWeights(t, w, shifted)
	// The token is fixed: a new process drives the run and carries out an abort.
	r3, err := w.engine().Resume(ctx, r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.St.PostCommand(ctx, &store.Command{RunID: r.ID(), Action: ActionAbort, Who: "dave", Reason: "token rotated"}); err != nil {
		t.Fatal(err)
	}
	w.Drive(r3, 10*time.Minute, nil)
	assertEnded(t, r3, store.StateAborted, VerdictAborted)
	assertWeights(t, w, original)
}

// TestClaimRefusesARunFromAnotherStore: a second Verdict with its own state directory sees
// the first run's claim in the pool and refuses to start; taking over is explicit, recorded,
// and the first run sees the takeover as drift.
func TestClaimRefusesARunFromAnotherStore(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 5*time.Minute, nil)
	if r.Record().State != store.StateRamping {
		t.Fatalf("test setup: %s", r.Record().State)
	}
	shifted := w.PoolWeights()
	ctx := context.Background()
	other, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	r2 := start(t, w, w.engine(func(o *Options) { o.Store = other; o.Who = "ci@runner-7" }))
	w.Drive(r2, 5*time.Minute, nil)
	assertEnded(t, r2, store.StateFailed, VerdictCheckFailed)
	for _, want := range []string{r.ID(), "driven by test", "TakeOverPool"} {
		if !strings.Contains(r2.Record().Reason, want) {
			t.Errorf("refusal lacks %q: %s", want, r2.Record().Reason)
		}
	}
	assertWeights(t, w, shifted)

	third, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	r3 := start(t, w, w.engine(func(o *Options) { o.Store = third; o.Who = "ops@laptop"; o.TakeOverPool = true }))
	if err := r3.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	var took bool
	w.mu.Lock()
	for _, e := range w.events {
		if e.Type == EventClaim && e.RunID == r3.ID() && strings.Contains(e.Message, "replaced the claim of run "+r.ID()) {
			took = true
		}
	}
	w.mu.Unlock()
	if !took {
		t.Error("the takeover is not recorded with whose claim it replaced")
	}
	w.Advance(w.Now().Add(30 * time.Second))
	if err := r.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	if s := r.Snapshot(); s.Run.State != store.StatePaused || !strings.Contains(s.PauseNote, "claimed by run "+r3.ID()) {
		t.Errorf("the first run did not treat the takeover as drift: %s, %q", s.Run.State, s.PauseNote)
	}
}

// TestPreflightWarnsBeforeUndoingAPromotion: the pool's last run promoted minutes ago and
// the canary carries more than an even share; the run warns, and goes on.
func TestPreflightWarnsBeforeUndoingAPromotion(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	ctx := context.Background()
	ref := traffic.PoolRef{Account: w.Emu.AccountID(), Pool: w.PoolID}
	if err := w.Steer.Release(ctx, ref, traffic.LastRun{Run: "earlier-run", Verdict: VerdictPromoted, Ended: w.Now().Add(-10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Emu.SetWeight(w.PoolID, "o1", 0.5); err != nil {
		t.Fatal(err)
	}
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Minute, nil)
	var warnings []string
	w.mu.Lock()
	for _, e := range w.events {
		if e.Type == EventWarning {
			warnings = append(warnings, e.Message)
		}
	}
	w.mu.Unlock()
	joined := strings.Join(warnings, "\n")
	if len(warnings) != 2 || !strings.Contains(joined, "earlier-run promoted") || !strings.Contains(joined, "step 1 lowers the canary c1") {
		t.Errorf("warnings: %q", warnings)
	}
	if st := r.Record().State; st != store.StateRamping {
		t.Errorf("warnings must not block: %s (%s)", st, r.Record().Reason)
	}
}

// TestSnapshotIsRaceFree: a live view reads the run from its own goroutine while Step runs
// (go test -race).
func TestSnapshotIsRaceFree(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	stop := make(chan struct{})
	var reads atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := r.Snapshot()
			total := 0.0
			for _, v := range s.Run.Current {
				total += v
			}
			if in := r.Record().Intent; in != nil {
				for _, v := range in.Want {
					total += v
				}
			}
			_ = fmt.Sprint(s.Values, s.Decision, s.Noise, total)
			reads.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	w.Drive(r, 3*time.Hour, nil)
	close(stop)
	wg.Wait()
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	if reads.Load() == 0 {
		t.Fatal("the view never read")
	}
}

// TestResumeRenewsTheClaim: the process that resumes a run puts its own name on the pool's
// claim, so whoever looks at the pool sees who drives it now.
func TestResumeRenewsTheClaim(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine())
	w.Drive(r, 3*time.Minute, nil)
	ctx := context.Background()
	ref := traffic.PoolRef{Account: w.Emu.AccountID(), Pool: w.PoolID}
	p, err := w.Steer.Pool(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := p.Claim(); !ok || c.Run != r.ID() || c.Owner != "test" {
		t.Fatalf("pool claim after preflight: %+v %v (description %q)", c, ok, p.Description)
	}
	r2, err := w.engine(func(o *Options) { o.Who = "verdict@host-2" }).Resume(ctx, r.ID(), w.Experiment())
	if err != nil {
		t.Fatal(err)
	}
	w.Advance(w.Now().Add(30 * time.Second))
	if err := r2.Step(ctx, w.Now()); err != nil {
		t.Fatal(err)
	}
	if p, err = w.Steer.Pool(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if c, _ := p.Claim(); c.Run != r.ID() || c.Owner != "verdict@host-2" {
		t.Errorf("claim after the resume: %+v", c)
	}
	if st := r2.Record().State; st != store.StateRamping {
		t.Errorf("the renewed claim was taken for another run's: %s", st)
	}
}

// scaleDownFailingHooks fails only for the baselines once armed. In this world step 1 lowers
// the canary's share, so the rollback scales the canary up (works) and the baselines down
// (fails).
type scaleDownFailingHooks struct {
	armed atomic.Bool
	calls atomic.Int32
}

func (h *scaleDownFailingHooks) RunHook(_ context.Context, args []string, _ time.Duration) error {
	if !h.armed.Load() || args[1] == "c1" {
		return nil
	}
	h.calls.Add(1)
	return fmt.Errorf("%s: exit status 1: scaler unreachable", args[0])
}

// TestFailedScaleDownIsStored: a scale-down hook failing after the traffic moved is part of
// the run's stored history (not only a log line), in order after the rollback.
func TestFailedScaleDownIsStored(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.025
	hooks := &scaleDownFailingHooks{}
	r := start(t, w, w.engine(func(o *Options) { o.Hooks = hooks }),
		"  preconditions:", "  capacity:\n    hpa: {minReplicas: 100, maxReplicas: 1000}\n    hook: {command: [scale, \"{{.Cluster}}\", \"{{.MinReplicas}}\", \"{{.MaxReplicas}}\"]}\n  preconditions:",
		"{weight: 10%, hold: 10m}", "{weight: 10%, hold: 60m}")
	w.Drive(r, 3*time.Hour, func(time.Time) {
		if r.Record().State == store.StateRamping {
			hooks.armed.Store(true)
		}
	})
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	assertWeights(t, w, original)
	if hooks.calls.Load() == 0 {
		t.Fatal("the baselines' scale-down hook was never called")
	}
	evs, err := w.St.Events(context.Background(), r.Record().ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	ended, failed := -1, -1
	for i, ev := range evs {
		switch {
		case ev.Type == EventCapacityFailed && strings.Contains(ev.Message, "scaling down"):
			failed = i
		case ev.Type == EventRunEnded:
			ended = i
		}
	}
	if failed < 0 {
		for _, ev := range evs {
			t.Log(ev.Type, ev.Message)
		}
		t.Fatalf("the failed scale-down is not in the stored events (%d events)", len(evs))
	}
	if ended < 0 || failed < ended {
		t.Errorf("stored order: ended at %d, scale-down failure at %d; want the failure after the ending", ended, failed)
	}
}
