package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/internal/testworld"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/metrics/embedded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// dnsWorld is a fleet behind a Route 53 weighted record set in moto: three clusters whose
// traffic follows the record weights as clients see them (each answer cached for the
// record's TTL), scraped into an embedded Prometheus on virtual time.
type dnsWorld struct {
	t       *testing.T
	admin   *r53.Client
	steer   *route53.Steerer
	zone    string
	name    string // the weighted record set's name, "api.<zone>"
	prom    *embedded.Server
	src     *metrics.Source
	st      *store.SQLite
	ttl     time.Duration
	rng     *rand.Rand
	mu      sync.Mutex
	now     time.Time
	seen    []seenWeights // weights as read at each Advance, for the TTL-delayed split
	errP    map[string]float64
	cum     map[string]*counters
	events  []Event
	records map[string]types.ResourceRecordSet // the zone as seeded, for "untouched" checks
}

type seenWeights struct {
	at time.Time
	w  map[string]float64 // cluster -> share of the set's answers
}

type counters struct{ ok, errs, fast, slow, sum float64 }

var dnsClusters = map[string]string{"c1": "canary", "c2": "eu-west", "c3": "eu-central"}

func newDNSWorld(t *testing.T, motoURL string) *dnsWorld {
	t.Helper()
	ctx := context.Background()
	w := &dnsWorld{t: t, ttl: 60 * time.Second, rng: rand.New(rand.NewPCG(3, 5)), now: testworld.T0.Add(-40 * time.Minute),
		errP: map[string]float64{"c1": 0.01, "c2": 0.01, "c3": 0.01},
		cum:  map[string]*counters{"c1": {}, "c2": {}, "c3": {}}}
	w.admin = r53.New(r53.Options{Region: "us-east-1", BaseEndpoint: aws.String(motoURL), Credentials: motoserver.Credentials})
	zoneName := fmt.Sprintf("%s.verdict-engine.example.", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	out, err := w.admin.CreateHostedZone(ctx, &r53.CreateHostedZoneInput{Name: aws.String(zoneName), CallerReference: aws.String(zoneName)})
	if err != nil {
		t.Fatal(err)
	}
	w.zone = strings.TrimPrefix(aws.ToString(out.HostedZone.Id), "/hostedzone/")
	w.name = "api." + zoneName
	rec := func(name, id string, weight int64, value string) types.ResourceRecordSet {
		r := types.ResourceRecordSet{Name: aws.String(name), Type: types.RRTypeA, TTL: aws.Int64(int64(w.ttl / time.Second)),
			ResourceRecords: []types.ResourceRecord{{Value: aws.String(value)}}}
		if id != "" {
			r.SetIdentifier, r.Weight = aws.String(id), aws.Int64(weight)
		}
		return r
	}
	seed := []types.ResourceRecordSet{
		rec(w.name, "canary", 0, "10.0.1.1"),
		rec(w.name, "eu-west", 128, "10.0.2.1"),
		rec(w.name, "eu-central", 128, "10.0.3.1"),
		rec(w.name, "standby", 64, "10.0.9.1"), // in the set, outside the experiment
		rec("www."+zoneName, "", 0, "10.0.0.80"),
	}
	var changes []types.Change
	for i := range seed {
		changes = append(changes, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &seed[i]})
	}
	if _, err := w.admin.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: aws.String(w.zone), ChangeBatch: &types.ChangeBatch{Changes: changes}}); err != nil {
		t.Fatal(err)
	}
	w.records = w.zoneRecords()
	w.steer, err = route53.New(ctx, route53.Options{Endpoint: motoURL, Region: "us-east-1", Credentials: motoserver.Credentials,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, SyncPoll: 10 * time.Millisecond, SyncTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.prom, err = embedded.New(embedded.Options{Now: w.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.prom.Close() })
	w.src, err = metrics.New(metrics.Options{Address: w.prom.URL(), MaxAttempts: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.src.Close)
	w.st, err = store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.st.Close() })
	w.Advance(testworld.T0)
	return w
}

func (w *dnsWorld) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

// zoneRecords lists the whole zone by name/type/SetIdentifier.
func (w *dnsWorld) zoneRecords() map[string]types.ResourceRecordSet {
	w.t.Helper()
	return motoserver.MustRecords(w.t, w.admin, w.zone)
}

// units is every record's integer weight in the experiment's set, by SetIdentifier.
func (w *dnsWorld) units() map[string]int64 {
	u := map[string]int64{}
	for _, r := range w.zoneRecords() {
		if r.SetIdentifier != nil && strings.EqualFold(aws.ToString(r.Name), w.name) {
			u[aws.ToString(r.SetIdentifier)] = aws.ToInt64(r.Weight)
		}
	}
	return u
}

// shares reads the set and returns each cluster's share of its answers.
func (w *dnsWorld) shares() map[string]float64 {
	u := w.units()
	total := 0.0
	for _, v := range u {
		total += float64(v)
	}
	out := map[string]float64{}
	for c, id := range dnsClusters {
		out[c] = float64(u[id]) / total
	}
	return out
}

// Advance writes 15-second samples up to to. Clients resolve the name through caches
// that keep an answer for the TTL, so the split at time t follows the weights of t−TTL.
func (w *dnsWorld) Advance(to time.Time) {
	w.t.Helper()
	const step = 15 * time.Second
	w.seen = append(w.seen, seenWeights{at: w.Now(), w: w.shares()})
	for w.Now().Before(to) {
		w.mu.Lock()
		w.now = w.now.Add(step)
		at := w.now
		w.mu.Unlock()
		share := w.seen[0].w
		for _, s := range w.seen {
			if !s.at.After(at.Add(-w.ttl)) {
				share = s.w
			}
		}
		var samples []embedded.Sample
		for _, c := range []string{"c1", "c2", "c3"} {
			n := testworld.Poisson(w.rng, 200*share[c]*step.Seconds())
			e := testworld.Poisson(w.rng, n*w.errP[c])
			slow := testworld.Poisson(w.rng, (n-e)*0.05)
			cc := w.cum[c]
			cc.ok += n - e
			cc.errs += e
			cc.slow += slow
			cc.fast += n - slow
			cc.sum += n * 0.12
			lbl := func(kv ...string) map[string]string {
				m := map[string]string{"cluster": c}
				for i := 0; i+1 < len(kv); i += 2 {
					m[kv[i]] = kv[i+1]
				}
				return m
			}
			samples = append(samples,
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "200"), Time: at, Value: cc.ok},
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "500"), Time: at, Value: cc.errs},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "0.5"), Time: at, Value: cc.fast},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "+Inf"), Time: at, Value: cc.fast + cc.slow},
			)
		}
		if err := w.prom.Append(samples...); err != nil {
			w.t.Fatal(err)
		}
	}
}

const dnsExperimentYAML = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata:
  name: dns-test
spec:
  canary: {cluster: c1}
  baselines: [c2, c3]
  traffic:
    route53:
      hostedZoneID: ZONE
      record: NAME
      setIdentifiers: {c1: canary, c2: eu-west, c3: eu-central}
    steps:
STEPS
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
    - name: latency
      type: latency
      buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket[{{.Interval}}]))
      slowerThan: 500ms
      tolerance: 20%
  analysis:
    interval: 1m
    alpha: 0.05
    history: 30m
    minIntervals: 5
    maxDuration: 2h
    noDataTimeout: 5m
`

func (w *dnsWorld) experiment(steps string) *experiments.Experiment {
	w.t.Helper()
	y := strings.NewReplacer("ZONE", w.zone, "NAME", strings.TrimSuffix(w.name, "."), "PROM", w.prom.URL(), "STEPS", steps).Replace(dnsExperimentYAML)
	exps, err := experiments.Load("dns.yaml", []byte(y), experiments.LoadOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return exps[0]
}

func (w *dnsWorld) engine() *Engine {
	e, err := New(Options{Store: w.st, Steerer: w.steer, Metrics: w.src, Settle: 5 * time.Second, Who: "dns-test",
		Observer: ObserverFunc(func(e Event) { w.mu.Lock(); w.events = append(w.events, e); w.mu.Unlock() })})
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// drive steps the run every 30 virtual seconds until it ends or limit passes; during is
// called after every step.
func (w *dnsWorld) drive(r *Run, limit time.Duration, during func()) {
	w.t.Helper()
	end := w.Now().Add(limit)
	for !r.Done() && w.Now().Before(end) {
		w.Advance(w.Now().Add(30 * time.Second))
		if err := r.Step(context.Background(), w.Now()); err != nil {
			w.t.Fatalf("step at %s: %v", w.Now().Format(time.TimeOnly), err)
		}
		if during != nil {
			during()
		}
	}
}

// checkUntouched fails if any record but the experiment's three changed in any field, or
// if an experiment record changed in anything but its weight.
func (w *dnsWorld) checkUntouched() {
	w.t.Helper()
	now := w.zoneRecords()
	ours := map[string]bool{}
	for _, id := range dnsClusters {
		ours[w.name+"/A/"+id] = true
	}
	for k, before := range w.records {
		after, ok := now[k]
		if !ok {
			w.t.Errorf("record %s is gone", k)
			continue
		}
		if ours[k] {
			after.Weight = before.Weight
		}
		if b, a := mustJSON(before), mustJSON(after); string(b) != string(a) {
			w.t.Errorf("record %s changed:\n before %s\n after  %s", k, b, a)
		}
	}
	for k, r := range now {
		if _, ok := w.records[k]; !ok && !(strings.HasPrefix(k, "_verdict."+w.name+"/TXT/") && r.Type == types.RRTypeTxt) {
			w.t.Errorf("record %s was added", k)
		}
	}
}

// claimText is the claim TXT record's text, "" when there is none.
func (w *dnsWorld) claimText() string {
	r, ok := w.zoneRecords()["_verdict."+w.name+"/TXT/"]
	if !ok {
		return ""
	}
	var parts []string
	for _, v := range r.ResourceRecords {
		parts = append(parts, strings.Trim(aws.ToString(v.Value), `"`))
	}
	return strings.Join(parts, "")
}

// TestRoute53EndToEnd drives Route 53 experiments through the engine against moto_server,
// with KPIs from an embedded Prometheus fed by a fleet whose traffic follows the record
// weights through TTL-caching clients: a migration that promotes (legacy records left at
// 0) and a harmful canary that rolls back (weights restored).
func TestRoute53EndToEnd(t *testing.T) {
	url := motoserver.Start(t).URL

	t.Run("migration promoted", func(t *testing.T) {
		w := newDNSWorld(t, url)
		exp := w.experiment("      - {weight: 10%, hold: 10m}\n      - {weight: 50%, hold: 10m}\n      - {weight: 100%}")
		r, err := w.engine().Start(context.Background(), exp, "dns.yaml", w.Now())
		if err != nil {
			t.Fatal(err)
		}
		if want := route53.Ref(w.zone, w.name, "A"); r.ref != want {
			t.Fatalf("run steers %+v, want %+v", r.ref, want)
		}
		claimed := false
		w.drive(r, 90*time.Minute, func() {
			if !r.Done() && strings.Contains(w.claimText(), "[verdict: run="+r.ID()) {
				claimed = true
			}
		})
		rec := r.Record()
		if rec.State != store.StatePromoted {
			t.Fatalf("ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
		}
		if !strings.Contains(rec.Reason, "migration: after promotion the legacy clusters carry no traffic and can be removed (c2: eu-west, c3: eu-central)") {
			t.Errorf("promotion reason does not say the legacy clusters can go: %s", rec.Reason)
		}
		if got, want := w.units(), map[string]int64{"canary": 255, "eu-west": 0, "eu-central": 0, "standby": 64}; !sameUnits(got, want) {
			t.Errorf("record weights after the migration %v, want %v", got, want)
		}
		w.checkTTL(r)
		w.checkUntouched()
		if !claimed {
			t.Error("the claim TXT record never named the run while it ran")
		}
		if txt := w.claimText(); !strings.Contains(txt, "[verdict-last: run="+r.ID()+" verdict=promoted") || strings.Contains(txt, "[verdict: run=") {
			t.Errorf("claim record after the run: %q", txt)
		}
		t.Logf("promoted after %s: %s", rec.EndedAt.Sub(rec.StartedAt), rec.Reason)
	})

	t.Run("harmful canary rolled back", func(t *testing.T) {
		w := newDNSWorld(t, url)
		w.errP["c1"] = 0.08
		exp := w.experiment("      - {weight: 10%, hold: 10m}\n      - {weight: 25%, hold: 10m}\n      - {weight: 50%, hold: 10m}")
		r, err := w.engine().Start(context.Background(), exp, "dns.yaml", w.Now())
		if err != nil {
			t.Fatal(err)
		}
		w.drive(r, 90*time.Minute, nil)
		rec := r.Record()
		if rec.State != store.StateRolledBack || rec.Verdict != VerdictRolledBack || !strings.Contains(rec.Reason, "error-rate") {
			t.Fatalf("ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
		}
		if strings.Contains(rec.Reason, "migration") {
			t.Errorf("a rollback mentions a migration: %s", rec.Reason)
		}
		if got, want := w.units(), map[string]int64{"canary": 0, "eu-west": 128, "eu-central": 128, "standby": 64}; !sameUnits(got, want) {
			t.Errorf("record weights after the rollback %v, want %v", got, want)
		}
		w.checkTTL(r)
		w.checkUntouched()
		if txt := w.claimText(); !strings.Contains(txt, "[verdict-last: run="+r.ID()+" verdict=rolled_back") {
			t.Errorf("claim record after the run: %q", txt)
		}
		t.Logf("rolled back after %s: %s", rec.EndedAt.Sub(rec.StartedAt), rec.Reason)
	})
}

func sameUnits(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkTTL: the run read the record TTL, shows it, and no interval counted before one
// TTL after the weights it was served under were confirmed.
func (w *dnsWorld) checkTTL(r *Run) {
	w.t.Helper()
	if got := r.Snapshot().TTL; got != w.ttl {
		w.t.Errorf("Snapshot().TTL = %s, want %s", got, w.ttl)
	}
	ctx := context.Background()
	evs, err := w.st.Events(ctx, r.ID(), 0)
	if err != nil {
		w.t.Fatal(err)
	}
	confirmed := map[int]time.Time{}
	warned := false
	for _, e := range evs {
		if e.Type == EventWarning && strings.Contains(e.Message, "DNS TTL") {
			warned = true
		}
		if e.Type == EventWeightsConfirmed {
			var in store.Intent
			if json.Unmarshal(e.Data, &in) == nil && strings.HasPrefix(in.Purpose, "step:") {
				var n int
				fmt.Sscanf(in.Purpose, "step:%d", &n)
				confirmed[n] = e.At
			}
		}
	}
	if !warned {
		w.t.Error("no warning stated the DNS TTL")
	}
	obs, err := w.st.Observations(ctx, r.ID())
	if err != nil {
		w.t.Fatal(err)
	}
	counted := 0
	for _, o := range obs {
		if o.Phase != PhaseRun {
			continue
		}
		counted++
		if at, ok := confirmed[o.Step]; !ok || o.Start.Before(at.Add(w.ttl)) {
			w.t.Errorf("step %d interval from %s counted, but its weights were confirmed at %s and the TTL is %s", o.Step, o.Start.Format(time.TimeOnly), at.Format(time.TimeOnly), w.ttl)
		}
	}
	if counted == 0 {
		w.t.Error("no interval counted")
	}
}
