package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/traffic/route53"
)

const (
	route53Example     = "../../examples/route53-migration.yaml"
	route53ExamplePool = "../../examples/pools/route53-api.json"
)

// TestPlanRoute53PoolFile: plan reads a Route 53 experiment's record sets from the AWS
// CLI's JSON and shows fractions beside Route 53 units, the TTL advice and the migration.
func TestPlanRoute53PoolFile(t *testing.T) {
	code, out, errOut := runVerdict(t, "plan", route53Example, "--pool-file", route53ExamplePool)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	golden(t, "plan-route53-migration.txt", out)
	for _, want := range []string{
		"Route 53 weighted record set api.example.com. A in hosted zone Z0A1B2C3D4E5F6G7H8I9J",
		"0.50=127 (49.8%)",                     // now, as read
		"~ 0.02=5 (2%)",                        // step 1 in units of 255
		"STEP 5 (100%, cut-over on promotion)", // the migration's cut-over
		"Intervals shorter than the TTL delay evidence",
		"Migration: after promotion the legacy clusters carry no traffic and can be removed (legacy-use1-a: legacy-use1-a, legacy-use1-b: legacy-use1-b).",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = runVerdict(t, "plan", "-o", "json", route53Example, "--pool-file", route53ExamplePool)
	var got struct {
		Migration string `json:"migration"`
		Route53   struct {
			Record     string             `json:"record"`
			TTLSeconds float64            `json:"ttlSeconds"`
			Units      []map[string]int64 `json:"units"`
			Promote    map[string]int64   `json:"promoteUnits"`
		} `json:"route53"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if got.Route53.Record != "api.example.com." || got.Route53.TTLSeconds != 60 || len(got.Route53.Units) != 6 ||
		got.Route53.Units[1]["eks-use1-blue"] != 5 || got.Route53.Promote["legacy-use1-a"] != 0 || got.Route53.Promote["eks-use1-blue"] != 255 ||
		!strings.HasPrefix(got.Migration, "migration: after promotion") {
		t.Errorf("JSON plan: %+v", got)
	}

	// A file without the experiment's set says so.
	empty := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(empty, []byte(`{"ResourceRecordSets": [{"Name": "www.example.com.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "192.0.2.1"}]}]}`), 0o644)
	if code, _, errOut := runVerdict(t, "plan", route53Example, "--pool-file", empty); code != exitInvalid || !strings.Contains(errOut, "no A records named api.example.com. in the file") {
		t.Errorf("plan against a file without the set: exit %d: %s", code, errOut)
	}
}

// TestRoute53NeedsCredentials: with no AWS credentials anywhere, plan and check say what to
// set instead of failing on the first call.
func TestRoute53NeedsCredentials(t *testing.T) {
	noAWS(t)
	code, _, errOut := runVerdict(t, "plan", route53Example)
	if code != exitInvalid || !strings.Contains(errOut, "no AWS credentials for Route 53") || !strings.Contains(errOut, "--pool-file") {
		t.Errorf("plan without credentials: exit %d: %s", code, errOut)
	}
	exp, err := loadExperiment(route53Example, "")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := checkPool(context.Background(), &globals{log: slog.New(slog.DiscardHandler)}, exp, time.Now())
	if err != nil || pc.Checked || !strings.Contains(pc.Note, "not checked: no AWS credentials") {
		t.Errorf("check without credentials: %+v, %v", pc, err)
	}
}

// noAWS empties the AWS credential chain for the test.
func noAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
		"AWS_EC2_METADATA_DISABLED": "true", envRoute53Endpoint: "", envAWSEndpoint: "",
	} {
		t.Setenv(k, v)
	}
}

// TestRoute53LiveAgainstMoto: plan and check read a live record set through steererFor,
// pointed at moto_server by AWS_ENDPOINT_URL_ROUTE_53.
func TestRoute53LiveAgainstMoto(t *testing.T) {
	moto := motoserver.Start(t)
	url := moto.URL
	noAWS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", motoserver.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", motoserver.SecretAccessKey)
	t.Setenv(envRoute53Endpoint, url)

	ctx := context.Background()
	admin := moto.Route53()
	zone, err := admin.CreateHostedZone(ctx, &r53.CreateHostedZoneInput{Name: aws.String("example.com."), CallerReference: aws.String("plan-test")})
	if err != nil {
		t.Fatal(err)
	}
	zoneID := strings.TrimPrefix(aws.ToString(zone.HostedZone.Id), "/hostedzone/")
	rec := func(id string, w, ttl int64, v string) types.Change {
		return types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &types.ResourceRecordSet{
			Name: aws.String("api.example.com."), Type: types.RRTypeA, SetIdentifier: aws.String(id), Weight: aws.Int64(w), TTL: aws.Int64(ttl),
			ResourceRecords: []types.ResourceRecord{{Value: aws.String(v)}}}}
	}
	if _, err := admin.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: aws.String(zoneID), ChangeBatch: &types.ChangeBatch{Changes: []types.Change{
		rec("eks-use1-blue", 0, 30, "10.0.0.1"), rec("legacy-use1-a", 128, 300, "10.0.0.2"), rec("legacy-use1-b", 127, 60, "10.0.0.3"),
	}}}); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(route53Example)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "exp.yaml")
	if err := os.WriteFile(file, bytes.ReplaceAll(src, []byte("Z0A1B2C3D4E5F6G7H8I9J"), []byte(zoneID)), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runVerdict(t, "plan", file)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"(3 records, TTL 5m;", "0.50=127 (49.8%)", "~ 0.02=5 (2%)",
		"Warning: the TTL (5m) is longer than the analysis interval (2m)", "can be removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("live plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, "verdict-test-secret-do-not-log") {
		t.Error("the AWS secret appeared in the output")
	}

	exp, err := loadExperiment(file, "")
	if err != nil {
		t.Fatal(err)
	}
	if p := exp.Spec.Traffic.Provider(); p != experiments.ProviderRoute53 {
		t.Fatalf("provider %q", p)
	}
	g := &globals{log: slog.New(slog.DiscardHandler)}
	pc, err := checkPool(ctx, g, exp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printPoolCheck(&b, pc)
	if !pc.Checked || len(pc.Problems) != 0 || pc.TTLSeconds == nil || *pc.TTLSeconds != 300 || *pc.Origins[2].Units != 127 {
		t.Errorf("check: %+v\n%s", pc, b.String())
	}
	for _, want := range []string{"Route 53 record set " + zoneID + "/api.example.com./A", "SETIDENTIFIER", "legacy-use1-b  0.498", "127", "DNS TTL 5m"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, b.String())
		}
	}

	// A cluster whose record is missing is a problem that names the field.
	exp.Spec.Traffic.Route53.SetIdentifiers["legacy-use1-b"] = "legacy-use1-c"
	if pc, err = checkPool(ctx, g, exp, time.Now()); err != nil || len(pc.Problems) == 0 || !strings.Contains(pc.Problems[0], "spec.traffic.route53.setIdentifiers.legacy-use1-b") {
		t.Errorf("missing record: %+v, %v", pc, err)
	}
	st, err := steererFor(ctx, g, exp)
	if _, ok := st.(*route53.Steerer); err != nil || !ok {
		t.Errorf("steererFor a Route 53 experiment: %T, %v", st, err)
	}
}
