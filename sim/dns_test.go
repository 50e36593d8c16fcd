package sim

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
)

// TestDNSDataPlane: a fleet behind a Route 53 weighted record set splits its load by the
// record weights, follows a weight change only once clients' cached answers expire (one
// TTL), writes a Route 53 experiment, and points Env at the emulator.
func TestDNSDataPlane(t *testing.T) {
	moto := motoserver.Start(t)
	good, err := LoadScenario("good")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := DNSScenario(good)
	if err != nil {
		t.Fatal(err)
	}
	sc.Load.Amplitude = 0
	const ttl = 2 * time.Second
	f := startFleet(t, "", Options{Scenario: sc, Rate: 400, Fast: true, DNS: &DNSOptions{Endpoint: moto.URL, TTL: ttl}})

	exps, err := experiments.LoadFile(f.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr := exps[0].Spec.Traffic
	if tr.Provider() != experiments.ProviderRoute53 || tr.Route53 == nil || tr.Route53.HostedZoneID != f.HostedZoneID() ||
		len(tr.Route53.SetIdentifiers) != 3 || tr.Route53.SetIdentifiers["prod-use1-monday-staryu"] != "prod-use1-staryu-ambassador" {
		t.Fatalf("experiment's traffic: %+v", tr)
	}
	env := map[string]string{}
	for _, kv := range f.Env() {
		env[kv[0]] = kv[1]
	}
	if env["AWS_ENDPOINT_URL_ROUTE_53"] != moto.URL {
		t.Errorf("Env() = %v", env)
	}

	share := func(d time.Duration) map[string]float64 {
		before := f.Stats().ByCluster
		time.Sleep(d)
		after := f.Stats().ByCluster
		total := 0.0
		m := map[string]float64{}
		for c, n := range after {
			m[c] = float64(n - before[c])
			total += m[c]
		}
		for c := range m {
			m[c] /= total
		}
		return m
	}
	// Seeded 0.48/0.47/0.05 → 122/120/13 of 255: the canary's share of answers 13/255.
	time.Sleep(ttl)
	if got := share(3 * time.Second)["prod-use1-monday-staryu"]; got < 0.02 || got > 0.09 {
		t.Errorf("canary share %.3f at weight 13/255, want about 0.05", got)
	}

	// Give the canary half: the traffic follows within one TTL, not at once.
	admin := r53.New(r53.Options{Region: motoserver.Region, BaseEndpoint: aws.String(moto.URL), Credentials: motoserver.Credentials,
		HTTPClient: &http.Client{Transport: &http.Transport{}}})
	defer admin.Options().HTTPClient.(*http.Client).CloseIdleConnections()
	recs := motoserver.MustRecords(t, admin, f.HostedZoneID())
	r := recs[f.RecordName()+"/A/prod-use1-staryu-ambassador"]
	r.Weight = aws.Int64(255)
	motoserver.MustUpsert(t, admin, f.HostedZoneID(), r)
	changed := time.Now()
	early := share(ttl / 4)["prod-use1-monday-staryu"]
	time.Sleep(time.Until(changed.Add(ttl + 500*time.Millisecond)))
	late := share(3 * time.Second)["prod-use1-monday-staryu"]
	if late < 0.38 || late > 0.62 { // 255/(122+120+255)
		t.Errorf("canary share %.3f a TTL after weight 255 of 497, want about 0.51", late)
	}
	if early >= late {
		t.Errorf("canary share %.3f just after the change, %.3f a TTL later: clients did not cache their answers", early, late)
	}
	if _, ok := f.Triggered(); !ok {
		t.Error("the weight change did not trigger the experiment")
	}
	if !strings.Contains(f.RecordName(), ".verdict-test.example.") {
		t.Errorf("RecordName() = %q", f.RecordName())
	}
}
