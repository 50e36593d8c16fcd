package route53

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/traffic"
)

// fixture is a hosted zone with one weighted set, api.<zone> A, holding the experiment's
// three records (eu-west 128, eu-central 127, canary 0 as an alias) and one record outside
// it (legacy 64, TTL 300), plus www.<zone> A, a different weighted set reusing the
// SetIdentifier "eu-west", which no call may touch.
type fixture struct {
	s      *Steerer
	admin  *r53.Client
	faults *faults
	zone   string
	name   string // api.<zone>
	ref    traffic.PoolRef
	logs   *bytes.Buffer
	// onRetry, when set, runs inside the Steerer's log call announcing a retry, that is
	// at the start of the backoff, before the set is read again.
	onRetry func()
}

// hookHandler calls f.onRetry on the "retrying" log record.
type hookHandler struct {
	slog.Handler
	f *fixture
}

func (h hookHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retrying") && h.f.onRetry != nil {
		h.f.onRetry()
	}
	return h.Handler.Handle(ctx, r)
}

const healthCheckID = "2f1c9c1e-5b8a-4f51-9d3c-0a5e7b1f4d21"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	url := motoURL(t)
	admin := adminClient(t, url)
	zone, zname := newZone(t, admin)
	f := &fixture{admin: admin, zone: zone, name: "api." + zname, faults: &faults{next: http.DefaultTransport}, logs: &bytes.Buffer{}}
	upsert(t, admin, zone,
		weighted(f.name, "eu-west", 128, 60, "10.0.1.10"),
		withHealthCheck(weighted(f.name, "eu-central", 127, 60, "10.0.2.10", "10.0.2.11")),
		types.ResourceRecordSet{
			Name: aws.String(f.name), Type: types.RRTypeA, SetIdentifier: aws.String("canary"), Weight: aws.Int64(0),
			AliasTarget: &types.AliasTarget{DNSName: aws.String("canary-lb-1234.eu-west-1.elb.amazonaws.com."),
				HostedZoneId: aws.String("Z32O12XQLNTSW2"), EvaluateTargetHealth: true},
		},
		weighted(f.name, "legacy", 64, 300, "192.0.2.1"),
		weighted("www."+zname, "eu-west", 10, 60, "10.9.9.9"),
	)
	f.ref = Ref(zone, f.name, "A")
	s, err := New(context.Background(), Options{
		Endpoint:    url,
		Region:      "us-east-1",
		Credentials: testCreds,
		HTTPClient:  &http.Client{Transport: f.faults},
		Logger:      slog.New(hookHandler{Handler: slog.NewTextHandler(&syncWriter{w: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}), f: f}),
		BackoffBase: time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		MaxWait:     time.Second,
		SyncPoll:    time.Millisecond,
		SyncTimeout: 2 * time.Second,
		CallTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	t.Cleanup(func() {
		if strings.Contains(f.logs.String(), "verdict-test-secret-do-not-log") || strings.Contains(f.logs.String(), "AKIAVERDICTTEST") {
			t.Errorf("credentials appear in the logs:\n%s", f.logs)
		}
	})
	return f
}

func weighted(name, id string, w, ttl int64, values ...string) types.ResourceRecordSet {
	r := types.ResourceRecordSet{Name: aws.String(name), Type: types.RRTypeA, SetIdentifier: aws.String(id), Weight: aws.Int64(w), TTL: aws.Int64(ttl)}
	for _, v := range values {
		r.ResourceRecords = append(r.ResourceRecords, types.ResourceRecord{Value: aws.String(v)})
	}
	return r
}

func withHealthCheck(r types.ResourceRecordSet) types.ResourceRecordSet {
	r.HealthCheckId = aws.String(healthCheckID)
	return r
}

// units reads every record's integer weight in the set, straight from the API.
func (f *fixture) units(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for k, r := range allRecords(t, f.admin, f.zone) {
		if strings.HasPrefix(k, f.name+"/A/") {
			out[aws.ToString(r.SetIdentifier)] = aws.ToInt64(r.Weight)
		}
	}
	return out
}

func (f *fixture) setExternally(t *testing.T, id string, mutate func(*types.ResourceRecordSet)) {
	t.Helper()
	r, ok := allRecords(t, f.admin, f.zone)[f.name+"/A/"+id]
	if !ok {
		t.Fatalf("no record %q", id)
	}
	mutate(&r)
	upsert(t, f.admin, f.zone, r)
}

var initial = map[string]int64{"eu-west": 128, "eu-central": 127, "canary": 0, "legacy": 64}

// expectAll is what an engine that read the set would expect, on Verdict's 0.01 grid.
var expectAll = traffic.Weights{"eu-west": 0.5, "eu-central": 0.5, "canary": 0, "legacy": 0.25}

func TestUnitsRoundTripEveryGridWeight(t *testing.T) {
	seen := map[int64]float64{}
	for i := 0; i <= 100; i++ {
		w := float64(i) / 100
		u := Units(w)
		if u < 0 || u > MaxWeight {
			t.Fatalf("Units(%v) = %d outside 0..255", w, u)
		}
		if prev, dup := seen[u]; dup {
			t.Errorf("Units(%v) = Units(%v) = %d: two grid weights share an integer", w, prev, u)
		}
		seen[u] = w
		if back := Fraction(u); !traffic.SameWeight(back, w) || traffic.RoundWeight(back) != traffic.RoundWeight(w) {
			t.Errorf("weight %v -> %d -> %v does not read back as the same weight", w, u, back)
		}
	}
	if Units(1) != 255 || Units(0) != 0 || Units(0.01) != 3 || Units(0.5) != 128 {
		t.Errorf("Units(1, 0, 0.01, 0.5) = %d %d %d %d", Units(1), Units(0), Units(0.01), Units(0.5))
	}
}

func TestRef(t *testing.T) {
	cases := map[string]struct {
		ref                    traffic.PoolRef
		zone, name, typ, wantE string
	}{
		"canonical":         {ref: traffic.PoolRef{Account: "Z1", Pool: "api.example.com./A"}, zone: "Z1", name: "api.example.com.", typ: "A"},
		"no dot, lowercase": {ref: traffic.PoolRef{Account: "/hostedzone/Z1", Pool: "API.Example.com/aaaa"}, zone: "Z1", name: "api.example.com.", typ: "AAAA"},
		"no zone":           {ref: traffic.PoolRef{Pool: "api.example.com./CNAME"}, name: "api.example.com.", typ: "CNAME"},
		"no type":           {ref: traffic.PoolRef{Pool: "api.example.com."}, wantE: "want"},
		"empty type":        {ref: traffic.PoolRef{Pool: "api.example.com./"}, wantE: "want"},
		"unknown type":      {ref: traffic.PoolRef{Pool: "api.example.com./QQ"}, wantE: "unknown record type"},
		"space in name":     {ref: traffic.PoolRef{Pool: "api example.com./A"}, wantE: "not a DNS name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			zone, n, typ, err := ParseRef(c.ref)
			if c.wantE != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantE) {
					t.Fatalf("err = %v, want %q", err, c.wantE)
				}
				return
			}
			if err != nil || zone != c.zone || n != c.name || typ != c.typ {
				t.Fatalf("ParseRef = %q %q %q %v", zone, n, typ, err)
			}
			if got := Ref(c.zone, c.name, c.typ); got != (traffic.PoolRef{Account: c.zone, Pool: c.name + "/" + c.typ}) {
				t.Errorf("Ref = %+v", got)
			}
		})
	}
}

func TestPoolReadsWeightedSet(t *testing.T) {
	f := newFixture(t)
	p, err := f.s.Pool(context.Background(), f.ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Origins) != 4 {
		t.Fatalf("origins = %+v, want 4 (www's eu-west is another set)", p.Origins)
	}
	for id, u := range initial {
		o, ok := p.Origin(id)
		if !ok || o.Weight != Fraction(u) || !o.Enabled {
			t.Errorf("origin %q = %+v, want weight %d/255 enabled", id, o, u)
		}
	}
	if o, _ := p.Origin("eu-central"); o.Address != "10.0.2.10,10.0.2.11" ||
		!strings.Contains(string(o.Raw), `"HealthCheckId":"`+healthCheckID+`"`) || !strings.Contains(string(o.Raw), `"TTL":60`) ||
		!strings.Contains(string(o.Raw), `"weight":127`) || strings.Contains(string(o.Raw), `"Weight"`) {
		t.Errorf("eu-central = %q %s", o.Address, o.Raw)
	}
	if o, _ := p.Origin("canary"); o.Address != "canary-lb-1234.eu-west-1.elb.amazonaws.com." || !strings.Contains(string(o.Raw), `"EvaluateTargetHealth":true`) {
		t.Errorf("canary (alias) = %q %s", o.Address, o.Raw)
	}
	if p.ID != strings.TrimPrefix(f.ref.Pool, "") || p.Name != f.name || p.SteeringPolicy != "weighted" || !p.Enabled {
		t.Errorf("pool = %q %q %q %v", p.ID, p.Name, p.SteeringPolicy, p.Enabled)
	}
	ttl, err := f.s.TTL(context.Background(), f.ref)
	if err != nil || ttl != 300*time.Second {
		t.Errorf("TTL = %v, %v; want 5m0s (legacy's)", ttl, err)
	}
	// The steerer's own paths work with any spelling of the same reference.
	if _, err := f.s.Pool(context.Background(), traffic.PoolRef{Account: "/hostedzone/" + f.zone, Pool: strings.ToUpper(strings.TrimSuffix(f.name, ".")) + "/a"}); err != nil {
		t.Errorf("Pool with another spelling: %v", err)
	}
}

func TestPoolErrors(t *testing.T) {
	f := newFixture(t)
	upsert(t, f.admin, f.zone, types.ResourceRecordSet{Name: aws.String("simple." + strings.TrimPrefix(f.name, "api.")), Type: types.RRTypeA,
		TTL: aws.Int64(60), ResourceRecords: []types.ResourceRecord{{Value: aws.String("10.1.1.1")}}})
	ctx := context.Background()
	cases := map[string]struct {
		ref  traffic.PoolRef
		want error
	}{
		"no such zone":     {ref: Ref("ZNOSUCHZONE", f.name, "A"), want: traffic.ErrNotFound},
		"no such record":   {ref: Ref(f.zone, "nope."+strings.TrimPrefix(f.name, "api."), "A"), want: traffic.ErrNotFound},
		"no such type":     {ref: Ref(f.zone, f.name, "AAAA"), want: traffic.ErrNotFound},
		"not weighted":     {ref: Ref(f.zone, "simple."+strings.TrimPrefix(f.name, "api."), "A"), want: ErrNotWeighted},
		"zone unspecified": {ref: traffic.PoolRef{Pool: f.name + "/A"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := f.s.Pool(ctx, c.ref)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestSetWeightsChangesOnlyNamedRecords(t *testing.T) {
	f := newFixture(t)
	before := allRecords(t, f.admin, f.zone)
	want := traffic.Weights{"canary": 0.1, "eu-west": 0.45, "eu-central": 0.5}
	start := time.Now()
	if err := f.s.SetWeights(context.Background(), f.ref, want, expectAll); err != nil {
		t.Fatalf("SetWeights: %v", err)
	}
	t.Logf("SetWeights against moto_server (read, change, INSYNC, read back): %v", time.Since(start))
	if got, w := f.units(t), map[string]int64{"canary": 26, "eu-west": 115, "eu-central": 127, "legacy": 64}; !reflect.DeepEqual(got, w) {
		t.Errorf("weights = %v, want %v", got, w)
	}
	if n := f.faults.count("change"); n != 1 {
		t.Fatalf("ChangeResourceRecordSets calls = %d, want 1 batch", n)
	}
	// One batch with exactly the two records whose weight changes: eu-central, asked for
	// 0.5, holds 127/255, which is 0.5 within SameWeight, so it is not rewritten.
	body := f.faults.bodies[0]
	if got := strings.Count(body, "<Change>"); got != 2 {
		t.Errorf("batch has %d changes, want 2 (canary, eu-west): %s", got, body)
	}
	if strings.Contains(body, "legacy") || strings.Contains(body, "eu-central") || strings.Contains(body, "www.") || strings.Count(body, "<Action>UPSERT</Action>") != 2 {
		t.Errorf("batch touches records outside the request or is not all UPSERTs: %s", body)
	}
	after := allRecords(t, f.admin, f.zone)
	if len(after) != len(before) {
		t.Fatalf("zone has %d records after, %d before", len(after), len(before))
	}
	for k, b := range before {
		a := after[k]
		b.Weight, a.Weight = nil, nil
		if !reflect.DeepEqual(recordJSONOrDie(t, b), recordJSONOrDie(t, a)) {
			t.Errorf("record %s changed beyond its weight:\nbefore %s\nafter  %s", k, recordJSONOrDie(t, b), recordJSONOrDie(t, a))
		}
	}
	if got := after["www."+strings.TrimPrefix(f.name, "api.")+"/A/eu-west"]; aws.ToInt64(got.Weight) != 10 {
		t.Errorf("www's eu-west weight = %d, want 10 untouched", aws.ToInt64(got.Weight))
	}
	// The next step starts from what was written, expecting grid weights.
	if err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.2, "eu-west": 0.35},
		traffic.Weights{"canary": 0.1, "eu-west": 0.45}); err != nil {
		t.Fatalf("second SetWeights: %v", err)
	}
	if got := f.units(t); got["canary"] != 51 || got["eu-west"] != 89 || got["legacy"] != 64 || got["eu-central"] != 127 {
		t.Errorf("after second step: %v", got)
	}
}

func recordJSONOrDie(t *testing.T, r types.ResourceRecordSet) string {
	t.Helper()
	b, err := recordJSON(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNoOpWritesNothing(t *testing.T) {
	f := newFixture(t)
	cases := map[string]traffic.Weights{
		"canary stays 0":               {"canary": 0},
		"0.5 is already 128":           {"eu-west": 0.5},
		"127 already reads as 0.5":     {"eu-central": 0.5},
		"all as they are (0.25 is 64)": {"eu-west": 0.5, "eu-central": 0.5, "canary": 0, "legacy": 0.25},
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			f.faults.set(nil, nil)
			if err := f.s.SetWeights(context.Background(), f.ref, want, expectAll); err != nil {
				t.Fatal(err)
			}
			if n := f.faults.count("change"); n != 0 {
				t.Errorf("no-op wrote %d batches", n)
			}
		})
	}
	if got := f.units(t); !reflect.DeepEqual(got, initial) {
		t.Errorf("weights = %v, want %v", got, initial)
	}
}

func TestZeroWeights(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.s.SetWeights(ctx, f.ref, traffic.Weights{"eu-west": 0, "canary": 0.5}, expectAll); err != nil {
		t.Fatalf("drain eu-west: %v", err)
	}
	if got := f.units(t); got["eu-west"] != 0 || got["canary"] != 128 {
		t.Errorf("weights = %v", got)
	}
	// Every record at 0 would make Route 53 answer with all of them equally.
	err := f.s.SetWeights(ctx, f.ref, traffic.Weights{"eu-central": 0, "canary": 0, "legacy": 0},
		traffic.Weights{"eu-central": 0.5, "canary": 0.5, "legacy": 0.25})
	if err == nil || errors.Is(err, traffic.ErrDrift) || !strings.Contains(err.Error(), "answers with every record equally") {
		t.Fatalf("all-zero set: err = %v, want a refused request", err)
	}
	if got := f.units(t); got["eu-central"] != 127 || got["canary"] != 128 || got["legacy"] != 64 {
		t.Errorf("refused all-zero request changed weights: %v", got)
	}
}

func TestInvalidRequestsWriteNothing(t *testing.T) {
	f := newFixture(t)
	cases := map[string]struct{ want, expect traffic.Weights }{
		"unknown SetIdentifier": {traffic.Weights{"ap-south": 0.1}, traffic.Weights{"canary": 0}},
		"weight above 1":        {traffic.Weights{"canary": 1.5}, traffic.Weights{"canary": 0}},
		"weight below 0":        {traffic.Weights{"canary": -0.1}, traffic.Weights{"canary": 0}},
		"off the 0.01 grid":     {traffic.Weights{"canary": 0.125}, traffic.Weights{"canary": 0}},
		"no expected weight":    {traffic.Weights{"canary": 0.1}, nil},
		"nothing to set":        {traffic.Weights{}, traffic.Weights{}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := f.s.SetWeights(context.Background(), f.ref, c.want, c.expect)
			if err == nil || errors.Is(err, traffic.ErrDrift) {
				t.Fatalf("err = %v, want a refused request", err)
			}
		})
	}
	if n := f.faults.count("change"); n != 0 {
		t.Errorf("invalid requests sent %d batches", n)
	}
	if got := f.units(t); !reflect.DeepEqual(got, initial) {
		t.Errorf("weights = %v, want %v", got, initial)
	}
}

func TestDriftIsRefusedAndNothingWritten(t *testing.T) {
	f := newFixture(t)
	f.setExternally(t, "eu-west", func(r *types.ResourceRecordSet) { r.Weight = aws.Int64(77) })
	err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1, "eu-west": 0.45}, traffic.Weights{"canary": 0, "eu-west": 0.5})
	var de *traffic.DriftError
	if !errors.As(err, &de) || de.Phase != traffic.PhaseBeforeWrite || len(de.Origins) != 1 || de.Origins[0].Name != "eu-west" ||
		de.Origins[0].Actual != Fraction(77) {
		t.Fatalf("err = %v, want drift of eu-west before write", err)
	}
	if n := f.faults.count("change"); n != 0 {
		t.Errorf("drift still sent %d batches", n)
	}
	if got := f.units(t); got["eu-west"] != 77 || got["canary"] != 0 {
		t.Errorf("weights = %v, want the external change kept", got)
	}
	// An expected record that is gone is drift too.
	r := allRecords(t, f.admin, f.zone)[f.name+"/A/legacy"]
	deleteRecord(t, f.admin, f.zone, r)
	err = f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, traffic.Weights{"canary": 0, "legacy": 0.25})
	if !errors.As(err, &de) || !de.Origins[0].Missing {
		t.Errorf("expected record gone: err = %v, want drift with Missing", err)
	}
}

func throttleFirst(n int, code string, during func()) func(string, int, *http.Request) (*http.Response, error) {
	return func(op string, i int, req *http.Request) (*http.Response, error) {
		if op == "change" && i <= n {
			if during != nil && i == 1 {
				during()
			}
			return awsError(req, http.StatusBadRequest, code, "Rate exceeded"), nil
		}
		return nil, nil
	}
}

func TestThrottlingIsRetried(t *testing.T) {
	for _, code := range []string{"Throttling", "PriorRequestNotComplete"} {
		t.Run(code, func(t *testing.T) {
			f := newFixture(t)
			f.faults.set(throttleFirst(2, code, nil), nil)
			if err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll); err != nil {
				t.Fatalf("SetWeights: %v", err)
			}
			if n := f.faults.count("change"); n != 3 {
				t.Errorf("change calls = %d, want 3 (two throttled)", n)
			}
			if got := f.units(t); got["canary"] != 26 {
				t.Errorf("canary = %d, want 26", got["canary"])
			}
		})
	}
	t.Run("gives up within bounds", func(t *testing.T) {
		f := newFixture(t)
		f.faults.set(throttleFirst(1000, "Throttling", nil), nil)
		err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll)
		var te *ThrottledError
		if !errors.As(err, &te) || !errors.Is(err, ErrThrottled) || errors.Is(err, traffic.ErrDrift) {
			t.Fatalf("err = %v, want *ThrottledError", err)
		}
		if n := f.faults.count("change"); n != f.s.opts.MaxAttempts {
			t.Errorf("change calls = %d, want MaxAttempts %d", n, f.s.opts.MaxAttempts)
		}
		if got := f.units(t); !reflect.DeepEqual(got, initial) {
			t.Errorf("weights = %v, want untouched", got)
		}
	})
}

// A change made while a throttled write waits must stop the retry, not be reverted.
func TestConcurrentChangeBetweenAttemptsIsNotReverted(t *testing.T) {
	cases := map[string]struct {
		change func(t *testing.T, f *fixture)
		origin string
		check  func(t *testing.T, f *fixture)
	}{
		"weight of a record outside the request": {
			change: func(t *testing.T, f *fixture) {
				f.setExternally(t, "legacy", func(r *types.ResourceRecordSet) { r.Weight = aws.Int64(200) })
			},
			origin: "legacy",
			check: func(t *testing.T, f *fixture) {
				if got := f.units(t); got["legacy"] != 200 {
					t.Errorf("legacy = %d, want the concurrent 200 kept", got["legacy"])
				}
			},
		},
		"one unit on a requested record": {
			change: func(t *testing.T, f *fixture) {
				f.setExternally(t, "eu-west", func(r *types.ResourceRecordSet) { r.Weight = aws.Int64(127) })
			},
			origin: "eu-west",
		},
		"TTL of a requested record": {
			change: func(t *testing.T, f *fixture) {
				f.setExternally(t, "eu-west", func(r *types.ResourceRecordSet) { r.TTL = aws.Int64(30) })
			},
			origin: "eu-west",
			check: func(t *testing.T, f *fixture) {
				if r := allRecords(t, f.admin, f.zone)[f.name+"/A/eu-west"]; aws.ToInt64(r.TTL) != 30 {
					t.Errorf("eu-west TTL = %d, want the concurrent 30 kept", aws.ToInt64(r.TTL))
				}
			},
		},
		"record added": {
			change: func(t *testing.T, f *fixture) {
				upsert(t, f.admin, f.zone, weighted(f.name, "us-east", 50, 60, "10.0.4.10"))
			},
			origin: "us-east",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.faults.set(throttleFirst(1, "Throttling", nil), nil)
			f.onRetry = func() { c.change(t, f) } // during the backoff
			err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1, "eu-west": 0.45}, expectAll)
			var de *traffic.DriftError
			if !errors.As(err, &de) || de.Phase != traffic.PhaseBetweenAttempts {
				t.Fatalf("err = %v, want drift between attempts", err)
			}
			if len(de.Origins) != 1 || de.Origins[0].Name != c.origin {
				t.Errorf("drift names %+v, want %q", de.Origins, c.origin)
			}
			if n := f.faults.count("change"); n != 1 {
				t.Errorf("change calls = %d, want only the throttled one", n)
			}
			if got := f.units(t); got["canary"] != 0 {
				t.Errorf("canary = %d: the write went ahead", got["canary"])
			}
			if c.check != nil {
				c.check(t, f)
			}
		})
	}
}

// A write that fails without an answer (5xx after Route 53 applied it) is recognised on
// the retry's re-read and not sent again.
func TestAppliedDespiteErrorIsNotResent(t *testing.T) {
	f := newFixture(t)
	f.faults.set(func(op string, n int, req *http.Request) (*http.Response, error) {
		if op == "change" && n == 1 {
			resp, err := f.faults.next.RoundTrip(req)
			if err != nil {
				return nil, err
			}
			resp.Body.Close()
			return awsError(req, http.StatusInternalServerError, "InternalError", "We encountered an internal error"), nil
		}
		return nil, nil
	}, nil)
	if err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll); err != nil {
		t.Fatalf("SetWeights: %v", err)
	}
	if n := f.faults.count("change"); n != 1 {
		t.Errorf("change calls = %d, want 1 (the applied one not resent)", n)
	}
	if got := f.units(t); got["canary"] != 26 {
		t.Errorf("canary = %d", got["canary"])
	}
}

func TestReadBackCatchesChangeAfterWrite(t *testing.T) {
	f := newFixture(t)
	f.faults.set(nil, func(op string, n int, body []byte) []byte {
		if op == "change" && n == 1 {
			f.setExternally(t, "legacy", func(r *types.ResourceRecordSet) { r.Weight = aws.Int64(1) })
		}
		return body
	})
	err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll)
	var de *traffic.DriftError
	if !errors.As(err, &de) || de.Phase != traffic.PhaseAfterWrite || len(de.Origins) != 1 || de.Origins[0].Name != "legacy" {
		t.Fatalf("err = %v, want drift of legacy after write", err)
	}
}

// GetChange is polled until INSYNC; real Route 53 answers PENDING first, moto never does,
// so the transport rewrites the first answers.
func TestWaitsForInSync(t *testing.T) {
	pending := func(n int) func(string, int, []byte) []byte {
		return func(op string, i int, body []byte) []byte {
			if op == "change" || (op == "getchange" && i <= n) {
				return bytes.ReplaceAll(body, []byte("INSYNC"), []byte("PENDING"))
			}
			return body
		}
	}
	t.Run("pending twice", func(t *testing.T) {
		f := newFixture(t)
		f.faults.set(nil, pending(2))
		if err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll); err != nil {
			t.Fatal(err)
		}
		if n := f.faults.count("getchange"); n != 3 {
			t.Errorf("GetChange calls = %d, want 3", n)
		}
	})
	t.Run("never in sync", func(t *testing.T) {
		f := newFixture(t)
		f.s.opts.SyncTimeout = 50 * time.Millisecond
		f.faults.set(nil, pending(1<<30))
		err := f.s.SetWeights(context.Background(), f.ref, traffic.Weights{"canary": 0.1}, expectAll)
		if !errors.Is(err, ErrNotInSync) || !strings.Contains(err.Error(), "written") {
			t.Fatalf("err = %v, want ErrNotInSync saying the weights are written", err)
		}
	})
}

// A SetWeights cancelled at any point of its change leaves all the old weights or all the
// new ones: the batch is one atomic ChangeResourceRecordSets.
func TestCancelMidChangeIsAllOrNothing(t *testing.T) {
	want := traffic.Weights{"canary": 0.1, "eu-west": 0.45, "eu-central": 0.45}
	newUnits := map[string]int64{"canary": 26, "eu-west": 115, "eu-central": 115, "legacy": 64}
	cases := map[string]struct {
		forward bool // the batch reaches moto before the cancel
		after   string
		want    map[string]int64
	}{
		"cancelled before the batch arrives": {forward: false, want: initial},
		"cancelled after it was applied":     {forward: true, want: newUnits},
		"cancelled while waiting for INSYNC": {forward: true, after: "getchange", want: newUnits},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			f.faults.set(func(op string, n int, req *http.Request) (*http.Response, error) {
				if c.after == "" && op == "change" {
					if c.forward {
						resp, err := f.faults.next.RoundTrip(req.WithContext(context.Background()))
						if err == nil {
							resp.Body.Close()
						}
					}
					cancel()
					return nil, context.Canceled
				}
				if op == c.after {
					once.Do(cancel)
					return nil, context.Canceled
				}
				return nil, nil
			}, func(op string, n int, body []byte) []byte {
				if op == "change" {
					return bytes.ReplaceAll(body, []byte("INSYNC"), []byte("PENDING"))
				}
				return body
			})
			err := f.s.SetWeights(ctx, f.ref, want, expectAll)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if got := f.units(t); !reflect.DeepEqual(got, c.want) {
				t.Errorf("weights = %v, want %v (never a mix)", got, c.want)
			}
			// The next attempt (a resumed engine) sees either state and finishes the step.
			cur, _ := f.s.Pool(context.Background(), f.ref)
			expect := traffic.Weights{"canary": cur.Weights()["canary"], "eu-west": cur.Weights()["eu-west"], "eu-central": cur.Weights()["eu-central"]}
			f.faults.set(nil, nil)
			if err := f.s.SetWeights(context.Background(), f.ref, want, expect); err != nil {
				t.Fatalf("resume: %v", err)
			}
			if got := f.units(t); !reflect.DeepEqual(got, newUnits) {
				t.Errorf("after resume: %v", got)
			}
		})
	}
}

func TestAccessDeniedNamesPermissionsNotCredentials(t *testing.T) {
	f := newFixture(t)
	f.faults.set(func(op string, n int, req *http.Request) (*http.Response, error) {
		return awsError(req, http.StatusForbidden, "AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: route53:ListResourceRecordSets"), nil
	}, nil)
	_, err := f.s.Pool(context.Background(), f.ref)
	if !errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "route53:ChangeResourceRecordSets") {
		t.Fatalf("err = %v, want ErrAccessDenied naming the permissions", err)
	}
	if n := f.faults.count("list"); n != 1 {
		t.Errorf("access denied retried: %d list calls", n)
	}
	for _, secret := range []string{"verdict-test-secret-do-not-log", "AKIAVERDICTTEST"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error carries credentials: %v", err)
		}
	}
}

func TestSignatureErrorKeepsOnlyItsSummary(t *testing.T) {
	f := newFixture(t)
	const token = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
	f.faults.set(func(op string, n int, req *http.Request) (*http.Response, error) {
		return awsError(req, http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided.\n\nThe Canonical String for this request should have been\n'GET\n/2013-04-01/hostedzone/Z/rrset\n\nhost:route53.amazonaws.com\nx-amz-security-token:"+token+"'"), nil
	}, nil)
	_, err := f.s.Pool(context.Background(), f.ref)
	if !errors.Is(err, ErrAccessDenied) || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want the summary without the canonical request", err)
	}
	if strings.Contains(f.logs.String(), token) {
		t.Errorf("token in logs: %s", f.logs)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`\052.example.com.`: "*.example.com.",
		"api.example.com.":  "api.example.com.",
		`a\100b.example.`:   "a@b.example.",
		`trailing\05`:       `trailing\05`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClaimWritesOnlyItsTXTRecord(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	before := allRecords(t, f.admin, f.zone)
	cl := traffic.Claim{Run: "api-canary-1", Owner: "verdict-run@ci", Since: time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC)}
	if err := f.s.Claim(ctx, f.ref, cl, false); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Release(ctx, f.ref, traffic.LastRun{Run: cl.Run, Verdict: "promoted", Ended: cl.Since.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, b := range f.faults.bodies {
		if strings.Count(b, "<Change>") != 1 || !strings.Contains(b, "<Name>_verdict."+f.name+"</Name>") || !strings.Contains(b, "<Type>TXT</Type>") {
			t.Errorf("claim batch touches more than its TXT record: %s", b)
		}
	}
	after := allRecords(t, f.admin, f.zone)
	for k, b := range before {
		if recordJSONOrDie(t, b) != recordJSONOrDie(t, after[k]) {
			t.Errorf("record %s changed by claiming", k)
		}
	}
	p, err := f.s.Pool(ctx, f.ref)
	if err != nil {
		t.Fatal(err)
	}
	if last, ok := p.LastRun(); !ok || last.Verdict != "promoted" {
		t.Errorf("description %q, want the last-run note", p.Description)
	}
}
