package route53

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/traffictest"
)

// envConformanceChild marks the test binary re-run by TestConformance.
const envConformanceChild = "VERDICT_ROUTE53_CONFORMANCE_CHILD"

// conformanceRun selects the parts of traffictest.Run that a Route 53 record set can
// pass, as a -run pattern: every top-level test but ReadsEveryOrigin, and every subtest
// but InvalidRequestsAreRefused/no_traffic_left_anywhere (Go's regexp has no negative
// lookahead, hence the spelled-out "does not start with no_t"). Left out, because
// PoolJSON states things DNS has no field for:
//   - ReadsEveryOrigin: asserts the pool's name "checkout-pool" (a record set is named
//     by its DNS name), modified_on (Route 53 keeps no modification time), and a
//     disabled origin "standby" that keeps weight 1 (Route 53 has no per-record switch:
//     a record is in the set with some weight, or not in it).
//   - InvalidRequestsAreRefused/no_traffic_left_anywhere: with standby translated to
//     weight 255, draining the two baselines leaves standby carrying the set, a valid
//     request in Route 53 terms. (Translated to weight 0 instead, every test comparing
//     the whole weights map, with standby at 1, would fail.)
//
// Every other assertion runs, Claims included.
const conformanceRun = "^TestConformance$" +
	"/^(SetWeightsChangesOnlyNamedOrigins|DriftIsRefusedAndNothingWritten|InvalidRequestsAreRefused|NoOpWriteSucceeds|ConcurrentReadersDuringWrites|Claims)$" +
	"/^([^n]|n[^o]|no[^_]|no_[^t])"

// TestConformance runs the shared Steerer suite against moto_server. The suite cannot
// skip its own Cloudflare-only assertions, so the test re-runs this binary with -run
// conformanceRun and fails if any selected test fails. Running
// VERDICT_ROUTE53_CONFORMANCE_CHILD=all go test -run TestConformance ./traffic/route53
// runs the whole suite directly, to see what does not apply.
func TestConformance(t *testing.T) {
	if os.Getenv(envConformanceChild) != "" {
		traffictest.Run(t, conformanceSetup)
		return
	}
	requireMoto(t) // skip, or fail under VERDICT_REQUIRE_MOTO, here rather than in the child
	cmd := exec.Command(os.Args[0], "-test.run="+conformanceRun, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envConformanceChild+"=1")
	out, err := cmd.CombinedOutput()
	passed := regexp.MustCompile(`(?m)^\s*--- PASS: (TestConformance/\S+)`).FindAllStringSubmatch(string(out), -1)
	if err != nil || len(passed) == 0 || strings.Contains(string(out), "--- FAIL") || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("conformance suite (-run %s): %v\n%s", conformanceRun, err, out)
	}
	for _, m := range passed {
		t.Logf("passed %s", m[1])
	}
}

// conformanceSetup loads traffictest.PoolJSON as a weighted CNAME set in a fresh zone:
// each origin a record named by its origin name, its address the record value, weight
// Units(weight), TTL 60; the disabled standby at 255 (its weight 1), since DNS cannot
// disable a record and keep its weight. The description goes into the claim TXT record.
// Ports and headers have no DNS equivalent and are left out.
func conformanceSetup(t *testing.T) traffictest.Env {
	url := motoURL(t)
	admin := adminClient(t, url)
	zone, zname := newZone(t, admin)
	var p struct {
		Description string `json:"description"`
		Origins     []struct {
			Name    string  `json:"name"`
			Address string  `json:"address"`
			Weight  float64 `json:"weight"`
		} `json:"origins"`
	}
	if err := json.Unmarshal([]byte(traffictest.PoolJSON), &p); err != nil {
		t.Fatal(err)
	}
	name := "checkout." + zname
	var recs []types.ResourceRecordSet
	for _, o := range p.Origins {
		recs = append(recs, types.ResourceRecordSet{
			Name: aws.String(name), Type: types.RRTypeCname, SetIdentifier: aws.String(o.Name),
			Weight: aws.Int64(Units(o.Weight)), TTL: aws.Int64(60),
			ResourceRecords: []types.ResourceRecord{{Value: aws.String(o.Address)}},
		})
	}
	recs = append(recs, types.ResourceRecordSet{Name: aws.String("_verdict." + name), Type: types.RRTypeTxt, TTL: aws.Int64(ClaimTTL),
		ResourceRecords: []types.ResourceRecord{{Value: aws.String(txtValue(p.Description))}}})
	upsert(t, admin, zone, recs...)
	s, err := New(context.Background(), Options{
		Endpoint: url, Credentials: testCreds, HTTPClient: &http.Client{},
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, SyncPoll: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := Ref(zone, name, "CNAME")
	return traffictest.Env{
		Steerer: s,
		Ref:     ref,
		SetExternally: func(origin string, weight float64) error {
			r, ok := allRecords(t, admin, zone)[name+"/CNAME/"+origin]
			if !ok {
				t.Fatalf("no record %q", origin)
			}
			r.Weight = aws.Int64(Units(weight))
			upsert(t, admin, zone, r)
			return nil
		},
	}
}

var _ traffic.Steerer = (*Steerer)(nil)
