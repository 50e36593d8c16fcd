// Package traffictest is the conformance suite every traffic.Steerer must pass: the
// guarantees experiments rely on (change only what was asked, refuse on drift and write
// nothing, keep every other field, verify by reading back) checked once, against each
// implementation, as Alertmanager's notify tests do for its integrations.
package traffictest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
)

// PoolJSON is the pool every implementation loads before each test, in Cloudflare's
// shape (other providers translate it). It has two baselines sharing traffic, a canary at
// weight 0, a disabled standby, and fields Verdict does not model that must survive writes.
const PoolJSON = `{
  "id": "9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c",
  "name": "checkout-pool",
  "description": "checkout clusters, managed by Terraform",
  "enabled": true,
  "minimum_origins": 1,
  "monitor": "f1aba936b94213e5b8dca0c0dbf1f9cc",
  "origin_steering": {"policy": "random"},
  "notification_email": "oncall@example.com",
  "check_regions": ["WEU", "ENAM"],
  "origins": [
    {"name": "eu-west", "address": "10.0.1.10", "enabled": true, "weight": 0.5, "port": 8443,
     "header": {"Host": ["checkout.example.com"]}, "virtual_network_id": "a5624d4e-044a-4ff0-b3e1-e2465353d4b4"},
    {"name": "eu-central", "address": "10.0.2.10", "enabled": true, "weight": 0.5, "port": 8443,
     "header": {"Host": ["checkout.example.com"]}},
    {"name": "canary", "address": "10.0.3.10", "enabled": true, "weight": 0, "port": 8443,
     "header": {"Host": ["checkout.example.com"]}, "flatten_cname": false},
    {"name": "standby", "address": "standby.example.net", "enabled": false, "weight": 1}
  ]
}`

// PoolID is the id of PoolJSON.
const PoolID = "9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c"

// Env is one Steerer under test, set up with PoolJSON loaded.
type Env struct {
	Steerer traffic.Steerer
	Ref     traffic.PoolRef
	// SetExternally changes an origin's weight behind the Steerer's back, the way a
	// Terraform apply or a person in the dashboard would.
	SetExternally func(origin string, weight float64) error
}

// Run runs the suite; setup is called once per test and must return a fresh Env.
func Run(t *testing.T, setup func(t *testing.T) Env) {
	t.Run("ReadsEveryOrigin", func(t *testing.T) { testRead(t, setup(t)) })
	t.Run("SetWeightsChangesOnlyNamedOrigins", func(t *testing.T) { testSet(t, setup(t)) })
	t.Run("DriftIsRefusedAndNothingWritten", func(t *testing.T) { testDrift(t, setup(t)) })
	t.Run("InvalidRequestsAreRefused", func(t *testing.T) { testInvalid(t, setup(t)) })
	t.Run("NoOpWriteSucceeds", func(t *testing.T) { testNoOp(t, setup(t)) })
	t.Run("ConcurrentReadersDuringWrites", func(t *testing.T) { testConcurrent(t, setup(t)) })
	t.Run("Claims", func(t *testing.T) { runClaims(t, setup) })
}

// description is PoolJSON's human description, which claims must keep.
const description = "checkout clusters, managed by Terraform"

var (
	since  = time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	claimA = traffic.Claim{Run: "checkout-canary-7f3a", Owner: "verdict-run@ci-runner-12", Since: since}
	claimB = traffic.Claim{Run: "checkout-hotfix-91c0", Owner: "serve-replica-b", Since: since.Add(time.Hour)}
)

// runClaims checks traffic.Claimer when the Steerer implements it: a claim is visible in
// the pool, refused to another run unless forced, and handed over as a LastRun note.
func runClaims(t *testing.T, setup func(t *testing.T) Env) {
	if _, ok := setup(t).Steerer.(traffic.Claimer); !ok {
		t.Skip("the Steerer does not implement traffic.Claimer")
	}
	claimer := func(e Env) traffic.Claimer { return e.Steerer.(traffic.Claimer) }
	ctx := context.Background()

	t.Run("ClaimFreePool", func(t *testing.T) {
		e := setup(t)
		before := mustPool(t, e)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatalf("Claim on a free pool: %v", err)
		}
		after := mustPool(t, e)
		wantClaim(t, after, claimA)
		if !strings.HasPrefix(after.Description, description) {
			t.Errorf("description = %q, want the human text %q kept", after.Description, description)
		}
		if !sameWeights(after.Weights(), before.Weights()) {
			t.Errorf("claim changed weights: %v -> %v", before.Weights(), after.Weights())
		}
		for i, o := range before.Origins {
			if diff := objectDiff(o.Raw, after.Origins[i].Raw); diff != "" {
				t.Errorf("claim changed origin %q: %s", o.Name, diff)
			}
		}
		if diff := objectDiff(before.Raw, after.Raw, "description", "modified_on", "origins"); diff != "" {
			t.Errorf("claim changed a pool field other than description: %s", diff)
		}
	})
	t.Run("RenewOwnClaim", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		renewed := claimA
		renewed.Owner = "verdict-run@ci-runner-13"
		if err := claimer(e).Claim(ctx, e.Ref, renewed, false); err != nil {
			t.Fatalf("renewing the run's own claim: %v", err)
		}
		wantClaim(t, mustPool(t, e), renewed)
	})
	t.Run("RefuseAnotherRunsClaim", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		err := claimer(e).Claim(ctx, e.Ref, claimB, false)
		var ce *traffic.ClaimedError
		if !errors.As(err, &ce) || !errors.Is(err, traffic.ErrClaimed) {
			t.Fatalf("Claim over another run's claim: err = %v, want *ClaimedError", err)
		}
		if ce.Claim.Run != claimA.Run || ce.Claim.Owner != claimA.Owner || !ce.Claim.Since.Equal(claimA.Since) {
			t.Errorf("ClaimedError names %+v, want %+v", ce.Claim, claimA)
		}
		for _, want := range []string{claimA.Run, claimA.Owner, "2026-11-23T09:30:00Z"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
		wantClaim(t, mustPool(t, e), claimA)
	})
	t.Run("ForceTakesOver", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		if err := claimer(e).Claim(ctx, e.Ref, claimB, true); err != nil {
			t.Fatalf("forced claim: %v", err)
		}
		p := mustPool(t, e)
		wantClaim(t, p, claimB)
		if strings.Contains(p.Description, claimA.Run) {
			t.Errorf("description %q still carries the replaced claim", p.Description)
		}
	})
	t.Run("ReleaseLeavesLastRun", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		last := traffic.LastRun{Run: claimA.Run, Verdict: "promoted", Ended: since.Add(2 * time.Hour)}
		if err := claimer(e).Release(ctx, e.Ref, last); err != nil {
			t.Fatalf("Release: %v", err)
		}
		p := mustPool(t, e)
		if c, ok := p.Claim(); ok {
			t.Errorf("claim %+v still on the pool after Release", c)
		}
		wantLastRun(t, p, last)
		if !strings.HasPrefix(p.Description, description) {
			t.Errorf("description = %q, want the human text kept", p.Description)
		}
		// The next run claims over the note, which it replaces.
		if err := claimer(e).Claim(ctx, e.Ref, claimB, false); err != nil {
			t.Fatalf("claiming a released pool: %v", err)
		}
		wantClaim(t, mustPool(t, e), claimB)
	})
	t.Run("ReleaseOfUnclaimedPoolLeavesNote", func(t *testing.T) {
		e := setup(t)
		last := traffic.LastRun{Run: claimA.Run, Verdict: "rolled back", Ended: since}
		if err := claimer(e).Release(ctx, e.Ref, last); err != nil {
			t.Fatalf("Release of an unclaimed pool: %v", err)
		}
		wantLastRun(t, mustPool(t, e), last)
	})
	t.Run("ReleaseOfTakenOverPoolIsRefused", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		if err := claimer(e).Claim(ctx, e.Ref, claimB, true); err != nil {
			t.Fatal(err)
		}
		before := mustPool(t, e)
		err := claimer(e).Release(ctx, e.Ref, traffic.LastRun{Run: claimA.Run, Verdict: "promoted", Ended: since.Add(time.Hour)})
		var ce *traffic.ClaimedError
		if !errors.As(err, &ce) || ce.Claim.Run != claimB.Run {
			t.Fatalf("Release of a pool taken over by %s: err = %v, want *ClaimedError naming it", claimB.Run, err)
		}
		after := mustPool(t, e)
		if after.Description != before.Description {
			t.Errorf("refused Release changed the description: %q -> %q", before.Description, after.Description)
		}
		wantClaim(t, after, claimB)
	})
	t.Run("ClaimIsNotDrift", func(t *testing.T) {
		e := setup(t)
		if err := claimer(e).Claim(ctx, e.Ref, claimA, false); err != nil {
			t.Fatal(err)
		}
		if err := e.Steerer.SetWeights(ctx, e.Ref, traffic.Weights{"canary": 0.1}, traffic.Weights{"canary": 0}); err != nil {
			t.Fatalf("SetWeights on a claimed pool: %v", err)
		}
		p := mustPool(t, e)
		wantClaim(t, p, claimA)
		if o, _ := p.Origin("canary"); !traffic.SameWeight(o.Weight, 0.1) {
			t.Errorf("canary = %v, want 0.1", o.Weight)
		}
	})
}

func wantClaim(t *testing.T, p traffic.Pool, want traffic.Claim) {
	t.Helper()
	got, ok := p.Claim()
	if !ok || got.Run != want.Run || got.Owner != want.Owner || !got.Since.Equal(want.Since) {
		t.Errorf("pool claim = %+v (found %v), want %+v; description %q", got, ok, want, p.Description)
	}
}

func wantLastRun(t *testing.T, p traffic.Pool, want traffic.LastRun) {
	t.Helper()
	got, ok := p.LastRun()
	if !ok || got.Run != want.Run || got.Verdict != want.Verdict || !got.Ended.Equal(want.Ended) {
		t.Errorf("pool last run = %+v (found %v), want %+v; description %q", got, ok, want, p.Description)
	}
}

func mustPool(t *testing.T, e Env) traffic.Pool {
	t.Helper()
	p, err := e.Steerer.Pool(context.Background(), e.Ref)
	if err != nil {
		t.Fatalf("Pool(%s): %v", e.Ref, err)
	}
	return p
}

func testRead(t *testing.T, e Env) {
	p := mustPool(t, e)
	want := traffic.Weights{"eu-west": 0.5, "eu-central": 0.5, "canary": 0, "standby": 1}
	if got := p.Weights(); !sameWeights(got, want) {
		t.Errorf("weights = %v, want %v", got, want)
	}
	if p.Name != "checkout-pool" || p.MinimumOrigins != 1 || !p.Enabled || p.SteeringPolicy != "random" {
		t.Errorf("pool = %q enabled=%v min=%d policy=%q, want checkout-pool true 1 random", p.Name, p.Enabled, p.MinimumOrigins, p.SteeringPolicy)
	}
	if o, ok := p.Origin("standby"); !ok || o.Enabled || o.Address != "standby.example.net" {
		t.Errorf("standby = %+v, %v; want disabled at standby.example.net", o, ok)
	}
	if p.ModifiedOn.IsZero() {
		t.Errorf("modified_on not reported")
	}
}

func testSet(t *testing.T, e Env) {
	before := mustPool(t, e)
	want := traffic.Weights{"canary": 0.1, "eu-west": 0.45, "eu-central": 0.45}
	expect := traffic.Weights{"canary": 0, "eu-west": 0.5, "eu-central": 0.5}
	if err := e.Steerer.SetWeights(context.Background(), e.Ref, want, expect); err != nil {
		t.Fatalf("SetWeights: %v", err)
	}
	after := mustPool(t, e)
	wantAll := traffic.Weights{"canary": 0.1, "eu-west": 0.45, "eu-central": 0.45, "standby": 1}
	if got := after.Weights(); !sameWeights(got, wantAll) {
		t.Errorf("weights after write = %v, want %v", got, wantAll)
	}
	if len(after.Origins) != len(before.Origins) {
		t.Fatalf("origins after write = %d, want %d", len(after.Origins), len(before.Origins))
	}
	for i, o := range before.Origins {
		a := after.Origins[i]
		if a.Name != o.Name || a.Address != o.Address || a.Enabled != o.Enabled {
			t.Errorf("origin %d changed: before %+v after %+v", i, o, a)
		}
		if diff := fieldsDiff(o.Raw, a.Raw); diff != "" {
			t.Errorf("origin %q: a field other than weight changed: %s", o.Name, diff)
		}
	}
	if diff := poolFieldsDiff(before.Raw, after.Raw); diff != "" {
		t.Errorf("a pool field changed: %s", diff)
	}
	// Moving on from the written state, as the next experiment step would.
	if err := e.Steerer.SetWeights(context.Background(), e.Ref, traffic.Weights{"canary": 0.2, "eu-west": 0.4},
		traffic.Weights{"canary": 0.1, "eu-west": 0.45}); err != nil {
		t.Fatalf("second SetWeights: %v", err)
	}
	if got := mustPool(t, e).Weights(); !sameWeights(got, traffic.Weights{"canary": 0.2, "eu-west": 0.4, "eu-central": 0.45, "standby": 1}) {
		t.Errorf("weights after second write = %v", got)
	}
}

func testDrift(t *testing.T, e Env) {
	if err := e.SetExternally("eu-west", 0.3); err != nil {
		t.Fatalf("external change: %v", err)
	}
	err := e.Steerer.SetWeights(context.Background(), e.Ref,
		traffic.Weights{"canary": 0.1, "eu-west": 0.45}, traffic.Weights{"canary": 0, "eu-west": 0.5})
	var de *traffic.DriftError
	if !errors.As(err, &de) || !errors.Is(err, traffic.ErrDrift) {
		t.Fatalf("SetWeights after external change: err = %v, want *DriftError", err)
	}
	if de.Phase != "before write" || len(de.Origins) != 1 || de.Origins[0].Name != "eu-west" ||
		!traffic.SameWeight(de.Origins[0].Actual, 0.3) || !traffic.SameWeight(de.Origins[0].Expect, 0.5) {
		t.Errorf("drift = %+v, want eu-west expected 0.5 found 0.3 before write", de)
	}
	want := traffic.Weights{"eu-west": 0.3, "eu-central": 0.5, "canary": 0, "standby": 1}
	if got := mustPool(t, e).Weights(); !sameWeights(got, want) {
		t.Errorf("pool after refused write = %v, want untouched %v", got, want)
	}
}

func testInvalid(t *testing.T, e Env) {
	cases := map[string]struct{ want, expect traffic.Weights }{
		"unknown origin":            {traffic.Weights{"nope": 0.1}, traffic.Weights{"canary": 0}},
		"weight above 1":            {traffic.Weights{"canary": 1.5}, traffic.Weights{"canary": 0}},
		"weight below 0":            {traffic.Weights{"canary": -0.1}, traffic.Weights{"canary": 0}},
		"weight off the 0.01 grid":  {traffic.Weights{"canary": 0.125}, traffic.Weights{"canary": 0}},
		"no expected weight":        {traffic.Weights{"canary": 0.1}, nil},
		"nothing to set":            {traffic.Weights{}, traffic.Weights{}},
		"no traffic left anywhere":  {traffic.Weights{"eu-west": 0, "eu-central": 0}, traffic.Weights{"eu-west": 0.5, "eu-central": 0.5}},
		"expected origin not there": {traffic.Weights{"canary": 0.1}, traffic.Weights{"canary": 0, "ghost": 0.2}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := e.Steerer.SetWeights(context.Background(), e.Ref, c.want, c.expect)
			if err == nil {
				t.Fatalf("SetWeights(%v, %v) succeeded, want an error", c.want, c.expect)
			}
			// An expected origin that is gone is drift (someone removed it); everything
			// else is a bad request.
			if isDrift := errors.Is(err, traffic.ErrDrift); isDrift != (name == "expected origin not there") {
				t.Errorf("errors.Is(err, ErrDrift) = %v: %v", isDrift, err)
			}
		})
	}
	want := traffic.Weights{"eu-west": 0.5, "eu-central": 0.5, "canary": 0, "standby": 1}
	if got := mustPool(t, e).Weights(); !sameWeights(got, want) {
		t.Errorf("pool after refused writes = %v, want untouched %v", got, want)
	}
}

func testNoOp(t *testing.T, e Env) {
	before := mustPool(t, e)
	if err := e.Steerer.SetWeights(context.Background(), e.Ref, traffic.Weights{"canary": 0}, traffic.Weights{"canary": 0}); err != nil {
		t.Fatalf("no-op SetWeights: %v", err)
	}
	if got := mustPool(t, e).Weights(); !sameWeights(got, before.Weights()) {
		t.Errorf("no-op changed weights: %v -> %v", before.Weights(), got)
	}
}

func testConcurrent(t *testing.T, e Env) {
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				p, err := e.Steerer.Pool(ctx, e.Ref)
				if err != nil {
					errs <- err
					return
				}
				if len(p.Origins) != 4 {
					errs <- errors.New("reader saw a pool without all four origins")
					return
				}
			}
		})
	}
	cur := 0.0
	for _, next := range []float64{0.05, 0.1, 0.2} {
		if err := e.Steerer.SetWeights(ctx, e.Ref, traffic.Weights{"canary": next}, traffic.Weights{"canary": cur}); err != nil {
			t.Errorf("SetWeights canary %v -> %v: %v", cur, next, err)
			break
		}
		cur = next
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent reader: %v", err)
	}
	if o, _ := mustPool(t, e).Origin("canary"); !traffic.SameWeight(o.Weight, cur) {
		t.Errorf("canary weight = %v, want %v", o.Weight, cur)
	}
}

func sameWeights(a, b traffic.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !traffic.SameWeight(v, w) {
			return false
		}
	}
	return true
}

// fieldsDiff compares two origin objects ignoring weight and the read-only disabled_at;
// empty when equal or when the implementation keeps no raw JSON.
func fieldsDiff(a, b json.RawMessage) string {
	return objectDiff(a, b, "weight", "disabled_at")
}

func poolFieldsDiff(a, b json.RawMessage) string {
	return objectDiff(a, b, "origins", "modified_on")
}

func objectDiff(a, b json.RawMessage, ignore ...string) string {
	if len(a) == 0 || len(b) == 0 {
		return ""
	}
	var ma, mb map[string]any
	if err := decode(a, &ma); err != nil {
		return "before: " + err.Error()
	}
	if err := decode(b, &mb); err != nil {
		return "after: " + err.Error()
	}
	for _, k := range ignore {
		delete(ma, k)
		delete(mb, k)
	}
	if reflect.DeepEqual(ma, mb) {
		return ""
	}
	ja, _ := json.Marshal(ma)
	jb, _ := json.Marshal(mb)
	return "before " + string(ja) + ", after " + string(jb)
}

func decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}
