package sim

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
)

var wantScenarios = []string{"good", "latency-only", "no-traffic-honour", "outage", "regression"}

// TestBuiltinScenarios checks every built-in scenario: it parses strictly, its rendered
// experiment is a valid experiment file about exactly the scenario's clusters and origins,
// with a weight plan the pool can represent, and the demo fits in about three minutes.
func TestBuiltinScenarios(t *testing.T) {
	if got := ScenarioNames(); !slices.Equal(got, wantScenarios) {
		t.Fatalf("ScenarioNames() = %v, want %v", got, wantScenarios)
	}
	for _, name := range wantScenarios {
		t.Run(name, func(t *testing.T) {
			sc, err := LoadScenario(name)
			if err != nil {
				t.Fatal(err)
			}
			if sc.Name != name || sc.Expect == "" || sc.Description == "" {
				t.Errorf("name %q, expect %q, description %q", sc.Name, sc.Expect, sc.Description)
			}
			const prom, pool, account = "http://127.0.0.1:9", "0123456789abcdef0123456789abcdef", "cfemu0000000000000000000000000001"
			text := sc.RenderExperiment(prom, pool, account)
			if strings.Contains(text, "@") {
				t.Errorf("placeholder left in the rendered experiment")
			}
			exps, err := experiments.Load(name+".yaml", []byte(text), experiments.LoadOptions{LookupEnv: func(string) (string, bool) { return "", false }})
			if err != nil {
				t.Fatalf("rendered experiment: %v", err)
			}
			if len(exps) != 1 {
				t.Fatalf("%d experiments, want 1", len(exps))
			}
			e := exps[0]
			cf := e.Spec.Traffic.Cloudflare
			if e.Spec.Prometheus.Address != prom || cf.PoolID != pool || cf.AccountID != account {
				t.Errorf("placeholders: address %q pool %q account %q", e.Spec.Prometheus.Address, cf.PoolID, cf.AccountID)
			}
			if e.Spec.Canary.Cluster != sc.Canary() {
				t.Errorf("experiment canary %q, scenario canary %q", e.Spec.Canary.Cluster, sc.Canary())
			}
			var origins []experiments.PoolOrigin
			for _, c := range sc.Clusters {
				if cf.Origins[c.Name] != c.Origin {
					t.Errorf("experiment origin of %s = %q, scenario %q", c.Name, cf.Origins[c.Name], c.Origin)
				}
				origins = append(origins, experiments.PoolOrigin{Name: c.Origin, Weight: c.Weight, Enabled: true})
			}
			if len(cf.Origins) != len(sc.Clusters) {
				t.Errorf("experiment has %d origins, scenario %d clusters", len(cf.Origins), len(sc.Clusters))
			}
			if _, err := experiments.WeightPlan(e, origins); err != nil {
				t.Errorf("weight plan: %v", err)
			}
			if h := e.Spec.TotalHold(); h < time.Minute || h > 3*time.Minute {
				t.Errorf("total hold %s, want a demo of about three minutes", h)
			}
			if sc.ScrapeInterval.D()*2 > e.Spec.Analysis.Interval.Std() {
				t.Errorf("scrape interval %s leaves fewer than two samples per %s interval", sc.ScrapeInterval.D(), e.Spec.Analysis.Interval.Std())
			}
		})
	}
}

// TestScenarioOverrides checks that a cluster's profile overrides only the fields it sets.
func TestScenarioOverrides(t *testing.T) {
	sc, err := LoadScenario("regression")
	if err != nil {
		t.Fatal(err)
	}
	squirtle, _ := sc.cluster("prod-use1-monday-squirtle")
	if squirtle.Profile.LatencyMedian.D() != 54*time.Millisecond || squirtle.Profile.ErrorRate != 0.02 {
		t.Errorf("squirtle profile = %+v", squirtle.Profile)
	}
	if sc.Variant.Effect != (Effect{Errors: 2, Latency: 1.3}) || sc.Variant.From != FromTrigger {
		t.Errorf("variant = %+v", sc.Variant)
	}
	out, _ := LoadScenario("outage")
	if len(out.Events) != 2 || out.Events[0].Prometheus != PrometheusDown || out.Events[0].From != FromTrigger || out.Events[1].At.D() != 3*time.Minute {
		t.Errorf("outage events = %+v", out.Events)
	}
}

const minimalScenario = `
name: mini
clusters:
  - {name: a, weight: 0.5}
  - {name: b, weight: 0.5, canary: true}
experiment: x
`

func TestParseScenarioErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml    string
		wantErr string
	}{
		"minimal":         {minimalScenario, ""},
		"unknown field":   {minimalScenario + "colour: blue\n", "field colour not found"},
		"profile typo":    {minimalScenario + "profile: {errorRat: 0.1}\n", "field errorRat not found"},
		"bad duration":    {minimalScenario + "profile: {latencyMedian: fast}\n", "not a duration"},
		"two canaries":    {strings.Replace(minimalScenario, "weight: 0.5}", "weight: 0.5, canary: true}", 1), "exactly one must be the canary"},
		"weight step":     {strings.Replace(minimalScenario, "0.5}", "0.505}", 1), "hundredths"},
		"bad event":       {minimalScenario + "events: [{at: 1s, prometheus: sideways}]\n", "up, down or errors"},
		"two actions":     {minimalScenario + "events: [{at: 1s, prometheus: down, rate: 5}]\n", "exactly one"},
		"unknown cluster": {minimalScenario + "events: [{at: 1s, cluster: zz, effect: {errors: 2}}]\n", `"zz" is not a cluster`},
		"bad from":        {minimalScenario + "variant: {from: lunch}\n", "variant.from"},
		"no experiment":   {strings.Replace(minimalScenario, "experiment: x", "", 1), "experiment: required"},
		"affinity":        {minimalScenario + "affinity: 2\n", "affinity"},
	} {
		_, err := ParseScenario(name+".yaml", []byte(tc.yaml))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.wantErr)
		}
	}
}

func TestLoadScenarioUnknown(t *testing.T) {
	_, err := LoadScenario("nope")
	if err == nil || !strings.Contains(err.Error(), "regression") {
		t.Errorf("LoadScenario(nope) = %v, want an error listing the built-in scenarios", err)
	}
}

// TestStartWithGoScenario starts a fleet from a Scenario built in Go rather than parsed:
// the fields a Go caller leaves empty take their defaults, and the caller's value is not
// changed.
func TestStartWithGoScenario(t *testing.T) {
	reg, err := LoadScenario("regression")
	if err != nil {
		t.Fatal(err)
	}
	sc := &Scenario{
		Name: "go",
		Clusters: []ClusterSpec{
			{Name: "prod-use1-monday-snorlax", Origin: "prod-use1-snorlax-ambassador", Weight: 0.5, Profile: DefaultProfile()},
			{Name: "prod-use1-monday-squirtle", Origin: "prod-use1-squirtle-ambassador", Weight: 0.45, Profile: DefaultProfile()},
			{Name: "prod-use1-monday-staryu", Origin: "prod-use1-staryu-ambassador", Weight: 0.05, Canary: true, Profile: DefaultProfile()},
		},
		Events:     []Event{{At: Duration(time.Hour), Rate: 10}},
		Experiment: reg.Experiment,
	}
	f := startFleet(t, "", Options{Scenario: sc, NoLoad: true})
	got := f.Scenario()
	if got.Load.Rate != 200 || got.ScrapeInterval.D() != time.Second || got.Variant.From != FromStart || got.Events[0].From != FromStart || got.PoolName != "prod-use1" {
		t.Errorf("defaults not applied: %+v", got)
	}
	if sc.Variant.From != "" || sc.Events[0].From != "" {
		t.Errorf("Start changed the caller's scenario")
	}
	if err := f.SetRate(5); err == nil {
		t.Errorf("SetRate without a load generator succeeded")
	}
}
