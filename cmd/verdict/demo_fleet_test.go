package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// syncBuffer is a bytes.Buffer safe for the fleet's goroutine to write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDemoFleet runs `verdict demo --fleet-only` in-process until the returned stop is
// called, waiting for its first output.
func startDemoFleet(t *testing.T, args ...string) (out *syncBuffer, stop func() error) {
	t.Helper()
	out = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd(&streams{in: strings.NewReader(""), out: out, err: &syncBuffer{}})
	root.SetArgs(append([]string{"demo", "--fleet-only"}, args...))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("demo did not stop within 10s of its context ending")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "\n") {
		select {
		case err := <-done:
			t.Fatalf("demo exited early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no output within 10s")
		}
	}
	return out, stop
}

// TestDemoFleetOnlyJSON starts the fleet as the CLI does and checks that what it prints
// works: the environment reaches the emulated Cloudflare, the Prometheus address answers,
// and the experiment file loads and names the fleet's pool and Prometheus.
func TestDemoFleetOnlyJSON(t *testing.T) {
	out, stop := startDemoFleet(t, "--scenario", "outage", "-o", "json")
	line, _, _ := strings.Cut(out.String(), "\n")
	var started fleetStartedJSON
	if err := json.Unmarshal([]byte(line), &started); err != nil {
		t.Fatalf("first line is not fleet_started: %v\n%s", err, line)
	}
	if started.Type != "fleet_started" || started.Scenario != "outage" || len(started.Clusters) != 3 {
		t.Errorf("started = %+v", started)
	}
	for _, k := range []string{traffic.EnvCloudflareBaseURL, traffic.EnvCloudflareToken, traffic.EnvCloudflareAccount} {
		if started.Env[k] == "" {
			t.Errorf("env %s missing: %v", k, started.Env)
		}
	}

	// The printed environment is enough for Verdict's Cloudflare client.
	opts, err := traffic.CloudflareOptionsFromEnv(func(k string) (string, bool) { v, ok := started.Env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cf, err := traffic.NewCloudflare(opts)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cf.Pool(context.Background(), traffic.PoolRef{Pool: started.PoolID})
	if err != nil {
		t.Fatalf("read the pool with the printed environment: %v", err)
	}
	if len(pool.Origins) != 3 {
		t.Errorf("pool = %+v", pool)
	}

	res, err := http.Get(started.PrometheusURL + "/api/v1/status/buildinfo")
	if err != nil {
		t.Fatalf("Prometheus: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("Prometheus buildinfo: %s", res.Status)
	}

	exps, err := experiments.LoadFile(started.ExperimentFile, experiments.LoadOptions{})
	if err != nil {
		t.Fatalf("experiment file: %v", err)
	}
	e := exps[0]
	if e.Spec.Prometheus.Address != started.PrometheusURL || e.Spec.Traffic.Cloudflare.PoolID != started.PoolID {
		t.Errorf("experiment points at %s / %s, fleet at %s / %s", e.Spec.Prometheus.Address, e.Spec.Traffic.Cloudflare.PoolID, started.PrometheusURL, started.PoolID)
	}
	if _, err := os.Stat(started.PoolFile); err != nil {
		t.Errorf("pool file: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("demo returned %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var stopped fleetStoppedJSON
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &stopped); err != nil || stopped.Type != "fleet_stopped" {
		t.Errorf("last line is not fleet_stopped: %v\n%s", err, lines[len(lines)-1])
	}
	if _, err := os.Stat(started.ExperimentFile); !os.IsNotExist(err) {
		t.Errorf("experiment file left behind after exit: %v", err)
	}
	if _, err := http.Get(started.PrometheusURL); err == nil {
		t.Errorf("Prometheus still answers after exit")
	}
}

// TestDemoFleetOnlyText checks the human view prints the environment ready to copy, the
// Prometheus address and the experiment file.
func TestDemoFleetOnlyText(t *testing.T) {
	out, stop := startDemoFleet(t)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "Serving until interrupted") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("demo returned %v", err)
	}
	text := out.String()
	for _, want := range []string{
		"scenario regression", "variant        errors ×2, latency ×1.3 on prod-use1-monday-staryu, from the first weight change",
		"export CLOUDFLARE_BASE_URL=http://127.0.0.1:", "export CLOUDFLARE_API_TOKEN=cfemu-token",
		"export CLOUDFLARE_ACCOUNT_ID=cfemu", "Prometheus     http://127.0.0.1:", "/regression.yaml",
		"Stopped after",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestDemoUsage(t *testing.T) {
	for name, tc := range map[string]struct {
		args     []string
		code     int
		wantOut  string
		wantErrS string
	}{
		"unknown scenario, full demo": {[]string{"--state", t.TempDir(), "demo", "--scenario", "nope"}, exitInvalid, "", "no scenario \"nope\""},
		"unknown scenario":            {[]string{"demo", "--fleet-only", "--scenario", "nope"}, exitInvalid, "", "no scenario \"nope\""},
		"list":                        {[]string{"demo", "--list"}, exitOK, "no-traffic-honour  expect rollback", ""},
		"list json":                   {[]string{"demo", "--list", "-o", "json"}, exitOK, `"type":"scenario"`, ""},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errb.String(), tc.wantErrS) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", name, code, out.String(), errb.String(), tc.code, tc.wantOut, tc.wantErrS)
		}
	}
}

// TestDemoRegression runs the demo's first scenario end to end through the CLI: the fleet,
// the engine and the JSON event stream; the regression must be rolled back.
func TestDemoRegression(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an experiment for about a minute in real time; skipped with -short")
	}
	var out, errb bytes.Buffer
	code := run([]string{"--state", t.TempDir(), "demo", "--scenario", "regression", "--no-ui"}, strings.NewReader(""), &out, &errb)
	if code != exitOK {
		t.Fatalf("demo exit %d\nstderr: %s\nstdout tail: %s", code, errb.String(), tail(out.String(), 2000))
	}
	for _, want := range []string{`"type":"run_started"`, `"type":"weights_confirmed"`, `"type":"decision"`, `"verdict":"rolled_back"`, `"asExpected":true`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %s", want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestDemoDNS runs `verdict demo --scenario dns` end to end against a moto_server the
// test keeps: the regression behind Route 53 must be rolled back with the records' seeded
// weights restored, the good release promoted with the records at the run's final
// weights, and each fleet's record outside the set untouched.
func TestDemoDNS(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs two experiments for about five minutes in real time; skipped with -short, and under -race, where it would take most of the race run's 10m budget (the plain run covers it)")
	}
	moto := motoserver.Start(t)
	saved := startMoto
	startMoto = func(context.Context) (*motoserver.Server, func(), error) { return moto, func() {}, nil }
	t.Cleanup(func() { startMoto = saved })

	state := t.TempDir()
	var out, errb bytes.Buffer
	code := run([]string{"--state", state, "demo", "--scenario", "dns", "--no-ui"}, strings.NewReader(""), &out, &errb)
	if code != exitOK {
		t.Fatalf("demo exit %d\nstderr: %s\nstdout tail: %s", code, errb.String(), tail(out.String(), 3000))
	}
	if strings.Contains(out.String()+errb.String(), motoserver.SecretAccessKey) {
		t.Error("the AWS secret appeared in the demo's output")
	}
	results := map[string]demoOutcome{}
	for _, line := range strings.Split(out.String(), "\n") {
		var m struct {
			Type   string      `json:"type"`
			Result demoOutcome `json:"result"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.Type == "demo_result" {
			results[m.Result.Scenario] = m.Result
		}
	}
	if r := results["dns-regression"]; r.Verdict != "rolled_back" || !r.AsExpect {
		t.Errorf("dns-regression: %+v", r)
	}
	if r := results["dns-good"]; r.Verdict != "promoted" || !r.AsExpect {
		t.Errorf("dns-good: %+v", r)
	}

	st, err := store.OpenSQLite(context.Background(), filepath.Join(state, "demo"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	admin := moto.Route53()
	zones, err := admin.ListHostedZones(context.Background(), &r53.ListHostedZonesInput{})
	if err != nil {
		t.Fatal(err)
	}
	seeded := map[string]int64{"prod-use1-snorlax-ambassador": 122, "prod-use1-squirtle-ambassador": 120, "prod-use1-staryu-ambassador": 13}
	checked := 0
	for _, z := range zones.HostedZones {
		zname := aws.ToString(z.Name)
		scenario := ""
		for _, sc := range []string{"dns-regression", "dns-good"} {
			if strings.HasPrefix(zname, "sim-"+sc+"-") {
				scenario = sc
			}
		}
		if scenario == "" {
			continue
		}
		zone := strings.TrimPrefix(aws.ToString(z.Id), "/hostedzone/")
		recs := motoserver.MustRecords(t, admin, zone)
		units := map[string]int64{}
		for _, r := range recs {
			if aws.ToString(r.Name) == "api."+zname && r.SetIdentifier != nil {
				units[aws.ToString(r.SetIdentifier)] = aws.ToInt64(r.Weight)
			}
		}
		if r, ok := recs["www."+zname+"/A/"]; !ok || aws.ToString(r.ResourceRecords[0].Value) != "192.0.2.80" {
			t.Errorf("%s: the record outside the set changed: %+v", scenario, r)
		}
		rec, err := st.Run(context.Background(), results[scenario].Run)
		if err != nil {
			t.Fatal(err)
		}
		want := seeded
		if scenario == "dns-good" {
			want = map[string]int64{}
			for o, w := range rec.Current {
				want[o] = route53.Units(w)
			}
			if want["prod-use1-staryu-ambassador"] <= seeded["prod-use1-staryu-ambassador"] {
				t.Errorf("dns-good promoted at %v: the canary did not gain weight", rec.Current)
			}
		}
		for o, u := range want {
			if units[o] != u {
				t.Errorf("%s ended %s with record weights %v, want %v", scenario, rec.State, units, want)
				break
			}
		}
		t.Logf("%s: %s after %s, record weights %v: %s", scenario, rec.State, results[scenario].Decided.Round(time.Second), units, rec.Reason)
		checked++
	}
	if checked != 2 {
		t.Errorf("found %d demo hosted zones in moto, want 2", checked)
	}
}

// TestDemoDNSWithoutMoto: without moto_server the dns scenarios fail at once saying what
// to install, and --list shows them.
func TestDemoDNSWithoutMoto(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, args := range [][]string{
		{"--state", t.TempDir(), "demo", "--scenario", "dns"},
		{"demo", "--fleet-only", "--scenario", "dns-good"},
	} {
		var out, errb bytes.Buffer
		code := run(args, strings.NewReader(""), &out, &errb)
		if code != exitError || !strings.Contains(errb.String(), "moto_server") || !strings.Contains(errb.String(), "pip install 'moto[server]'") {
			t.Errorf("%v without moto_server: exit %d, stderr %q", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--list"}, strings.NewReader(""), &out, &errb); code != exitOK || !strings.Contains(out.String(), "dns  ") {
		t.Errorf("--list: exit %d:\n%s", code, out.String())
	}
	var errb2 bytes.Buffer
	if code := run([]string{"--state", t.TempDir(), "demo", "--scenario", "dns-nope"}, strings.NewReader(""), &out, &errb2); code != exitInvalid || !strings.Contains(errb2.String(), `"nope"`) {
		t.Errorf("dns-nope: exit %d: %s", code, errb2.String())
	}
}
