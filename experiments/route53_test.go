package experiments

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/traffic"
)

// route53Base is testdata/valid.yaml steering a Route 53 weighted record set instead of a
// Cloudflare pool.
func route53Base(t testing.TB) string {
	t.Helper()
	const cf = "    cloudflare:\n      poolID: pool1\n      origins:\n        c1: o1\n        c2: o2\n        c3: o3\n"
	const r53 = "    route53:\n      hostedZoneID: Z0123456789ABC\n      record: API.example.com\n      setIdentifiers:\n        c1: canary\n        c2: eu-west\n        c3: eu-central\n"
	base := readBase(t)
	if !strings.Contains(base, cf) {
		t.Fatal("test bug: cloudflare block not in testdata/valid.yaml")
	}
	return strings.Replace(base, cf, r53, 1)
}

func TestRoute53Traffic(t *testing.T) {
	exps, err := Load("r53.yaml", []byte(route53Base(t)), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("valid Route 53 file rejected:\n%v", err)
	}
	tr := &exps[0].Spec.Traffic
	if tr.Provider() != ProviderRoute53 || tr.Cloudflare != nil {
		t.Fatalf("provider %q, cloudflare %v", tr.Provider(), tr.Cloudflare)
	}
	if tr.Route53.Type != "A" {
		t.Errorf("type defaults to %q, want A", tr.Route53.Type)
	}
	if got, want := tr.PoolRef(), (traffic.PoolRef{Account: "Z0123456789ABC", Pool: "api.example.com./A"}); got != want {
		t.Errorf("PoolRef = %+v, want %+v", got, want)
	}
	if got := tr.Origins(); got["c1"] != "canary" || got["c3"] != "eu-central" || len(got) != 3 {
		t.Errorf("Origins = %v", got)
	}
	// The stored spec round-trips and writes no empty cloudflare block.
	b, err := json.Marshal(exps[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"cloudflare"`) || !strings.Contains(string(b), `"setIdentifiers":{"c1":"canary"`) {
		t.Errorf("stored spec: %s", b)
	}
	var back Experiment
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Spec.Traffic.PoolRef() != tr.PoolRef() {
		t.Errorf("stored spec reads back as %+v", back.Spec.Traffic.PoolRef())
	}
}

// TestCloudflareStoredSpecUnchanged: runs stored before Route 53 existed hold
// "traffic":{"cloudflare":{…},"steps":…}; resuming compares the spec's JSON byte for byte,
// so a Cloudflare spec must still encode exactly that way.
func TestCloudflareStoredSpecUnchanged(t *testing.T) {
	exps, err := Load("cf.yaml", []byte(readBase(t)), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(exps[0].Spec.Traffic)
	want := `{"cloudflare":{"poolID":"pool1","origins":{"c1":"o1","c2":"o2","c3":"o3"}},"steps":[`
	if !strings.HasPrefix(string(b), want) || strings.Contains(string(b), "route53") {
		t.Errorf("traffic encodes as %s, want it to start %s", b, want)
	}
	var back Traffic
	if err := json.Unmarshal(b, &back); err != nil || back.Provider() != ProviderCloudflare || back.PoolRef() != (traffic.PoolRef{Pool: "pool1"}) {
		t.Errorf("stored traffic reads back as %+v (%v)", back, err)
	}
}

func TestRoute53BadInput(t *testing.T) {
	base := route53Base(t)
	replace := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("test bug: %q not in base", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	cases := []struct {
		name, src string
		line      int
		path, msg string
	}{
		{"both providers", replace("    route53:\n", "    cloudflare: {poolID: p, origins: {c1: o1, c2: o2, c3: o3}}\n    route53:\n"), 12, "spec.traffic.route53", "not both"},
		{"neither provider", replace("    route53:\n      hostedZoneID: Z0123456789ABC\n      record: API.example.com\n      setIdentifiers:\n        c1: canary\n        c2: eu-west\n        c3: eu-central\n", ""), 10, "spec.traffic", "spec.traffic.cloudflare (a Cloudflare load balancer pool) or spec.traffic.route53"},
		{"no zone", replace("      hostedZoneID: Z0123456789ABC\n", ""), 11, "spec.traffic.route53.hostedZoneID", "required"},
		{"bad zone", replace("hostedZoneID: Z0123456789ABC", "hostedZoneID: arn:aws:route53:::hostedzone/Z1"), 12, "spec.traffic.route53.hostedZoneID", "not a hosted zone ID"},
		{"no record", replace("      record: API.example.com\n", ""), 11, "spec.traffic.route53.record", "required"},
		{"bad record", replace("record: API.example.com", "record: api example.com"), 13, "spec.traffic.route53.record", "not a DNS name"},
		{"bad type", replace("      record: API.example.com\n", "      record: API.example.com\n      type: CNAM\n"), 14, "spec.traffic.route53.type", `did you mean "CNAME"`},
		{"missing set identifier", replace("        c3: eu-central\n", ""), 14, "spec.traffic.route53.setIdentifiers", `no SetIdentifier for cluster "c3"`},
		{"unknown cluster", replace("        c3: eu-central\n", "        c3: eu-central\n        c33: other\n"), 18, "spec.traffic.route53.setIdentifiers.c33", `neither the canary nor a baseline; did you mean "c3"?`},
		{"shared set identifier", replace("c3: eu-central", "c3: eu-west"), 17, "spec.traffic.route53.setIdentifiers.c3", `SetIdentifier "eu-west" is already the SetIdentifier of cluster "c2"`},
		{"typo in key", replace("setIdentifiers:", "setIdentifier:"), 14, "spec.traffic.route53.setIdentifier", `did you mean "setIdentifiers"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("exp.yaml", []byte(tc.src), LoadOptions{LookupEnv: noEnv})
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			for _, fe := range list {
				if fe.Path == tc.path && fe.Line == tc.line && strings.Contains(fe.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("want line %d, path %q, message containing %q; got:\n%v", tc.line, tc.path, tc.msg, err)
		})
	}
}

// TestMigrationSteps: a final step of 100% is a migration's cut-over, for either provider.
func TestMigrationSteps(t *testing.T) {
	const steps = "      - {weight: 5%, hold: 10m}\n      - {weight: 0.2, hold: 10m}\n"
	for name, base := range map[string]string{"cloudflare": readBase(t), "route53": route53Base(t)} {
		t.Run(name, func(t *testing.T) {
			src := strings.Replace(base, steps, "      - {weight: 5%, hold: 10m}\n      - {weight: 50%, hold: 10m}\n      - {weight: 100%}\n", 1)
			exps, err := Load("m.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
			if err != nil {
				t.Fatalf("migration rejected:\n%v", err)
			}
			tr := &exps[0].Spec.Traffic
			if !tr.Migration() || tr.JudgedSteps() != 2 || exps[0].Spec.TotalHold().Minutes() != 20 {
				t.Errorf("migration %v, judged steps %d, total hold %v", tr.Migration(), tr.JudgedSteps(), exps[0].Spec.TotalHold())
			}
			origins := tr.Origins()
			pool := []PoolOrigin{{origins["c1"], 0, true}, {origins["c2"], 1, true}, {origins["c3"], 1, true}}
			plan, err := WeightPlan(exps[0], pool)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range plan.Promote.Origins {
				want := 0.0
				if o.Cluster == "c1" {
					want = 1 // two origins at weight 1 scaled to a total of 1: nothing else carries traffic
				}
				if o.Weight != want {
					t.Errorf("after promotion %s (%s) has weight %v, want %v", o.Name, o.Cluster, o.Weight, want)
				}
			}

			for _, bad := range []struct{ src, path, msg string }{
				{strings.Replace(base, steps, "      - {weight: 100%}\n", 1), "spec.traffic.steps[0].weight", "add a step before it"},
				{strings.Replace(base, steps, "      - {weight: 5%, hold: 10m}\n      - {weight: 100%, hold: 10m}\n", 1), "spec.traffic.steps[1].hold", "cut-over"},
				{strings.Replace(base, steps, "    onPromote: restore\n      - {weight: 5%, hold: 10m}\n      - {weight: 100%}\n", 1), "spec.traffic.onPromote", "needs onPromote: keep"},
			} {
				bad.src = strings.Replace(bad.src, "    onPromote: restore\n      - {weight: 5%", "      - {weight: 5%", 1)
				if strings.Contains(bad.msg, "onPromote") {
					bad.src = strings.Replace(bad.src, "    steps:\n", "    onPromote: restore\n    steps:\n", 1)
				}
				_, err := Load("m.yaml", []byte(bad.src), LoadOptions{LookupEnv: noEnv})
				var list ErrorList
				found := false
				if errors.As(err, &list) {
					for _, fe := range list {
						found = found || (fe.Path == bad.path && strings.Contains(fe.Msg, bad.msg))
					}
				}
				if !found {
					t.Errorf("want %s: %q; got %v", bad.path, bad.msg, err)
				}
			}
		})
	}
}
