package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/traffic"
)

const cliDrillYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: cli-drill
spec:
  clusters: [prod-use1-monday-snorlax, prod-use1-monday-squirtle, prod-use1-monday-staryu]
  drain: prod-use1-monday-squirtle
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins:
        prod-use1-monday-snorlax: prod-use1-snorlax-ambassador
        prod-use1-monday-squirtle: prod-use1-squirtle-ambassador
        prod-use1-monday-staryu: prod-use1-staryu-ambassador
  hold: 30s
  interval: 3s
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5..", cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total{cluster=~"{{.Clusters}}"}[{{.Interval}}]))
      tolerance: 90%
      guardrail: {max: 50%, for: 3}
  blockingAlarms:
    - {name: never, query: 'sum(http_requests_total{cluster="nowhere"})'}
`

// TestDrillKilledAndResumed starts `verdict drill` as a child process against the
// simulated fleet, kills it with SIGKILL while the cluster is drained, and checks that the
// pool stays drained with nobody driving it until `verdict drill --resume` finishes the hold
// and restores every weight exactly, the origin outside the drill untouched.
func TestDrillKilledAndResumed(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("starts a fleet and kills a child process; skipped with -short and under -race")
	}
	bin := buildVerdict(t)
	fleet, err := sim.Start(sim.Options{Scenario: crashScenario(t), Rate: 400, Fast: true, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "drill.yaml")
	y := strings.NewReplacer("ACCOUNT", fleet.AccountID(), "POOL", fleet.PoolID(), "PROM", fleet.PrometheusURL()).Replace(cliDrillYAML)
	if err := os.WriteFile(file, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	env := os.Environ()
	for _, kv := range fleet.Env() {
		env = append(env, kv[0]+"="+kv[1])
	}
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: fleet.Token(), AccountID: fleet.AccountID(), BaseURL: fleet.CloudflareBaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	readPool := func() traffic.Weights {
		p, err := steer.Pool(context.Background(), traffic.PoolRef{Pool: fleet.PoolID()})
		if err != nil {
			t.Fatal(err)
		}
		return p.Weights()
	}
	start := readPool()
	state := filepath.Join(dir, "state")

	// The dry run changes nothing and says the drill could start... once the before window
	// has data: the fleet needs the hold's length of history first.
	time.Sleep(time.Until(fleet.Started().Add(36 * time.Second)))
	cmd := exec.Command(bin, "--state", state, "drill", file, "--dry-run")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the drill could start now") || !strings.Contains(string(out), "     0 (  0%)") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}

	cmd = exec.Command(bin, "--state", state, "drill", file, "--now", "-o", "json")
	cmd.Env = env
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	runID, drainedAt := "", time.Time{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var m struct {
			Type, Run, Message string
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		runID = m.Run
		if m.Type == "weights_confirmed" {
			drainedAt = time.Now()
			break
		}
	}
	if drainedAt.IsZero() {
		cmd.Wait()
		t.Fatalf("the drill never drained; stderr:\n%s", stderr.String())
	}
	time.Sleep(5 * time.Second) // mid-hold
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	left := readPool()
	if left["prod-use1-squirtle-ambassador"] != 0 {
		t.Fatalf("after the kill the pool is %v, want squirtle drained", left)
	}
	time.Sleep(2 * time.Second)
	if again := readPool(); again["prod-use1-squirtle-ambassador"] != 0 {
		t.Fatalf("someone restored the pool before the resume: %v", again)
	}

	resumed := time.Now()
	cmd = exec.Command(bin, "--state", state, "drill", file, "--resume", runID, "-o", "json")
	cmd.Env = env
	out, err = cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != exitOK {
		t.Fatalf("resumed drill exited %d (%v):\n%s", code, err, out)
	}
	var result struct {
		Type, Verdict, Reason string
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &result); err != nil || result.Type != "drill_result" || result.Verdict != "passed" {
		t.Fatalf("last line %q (%v)", lines[len(lines)-1], err)
	}
	end := readPool()
	for o, w := range start {
		if !traffic.SameWeight(end[o], w) {
			t.Errorf("after the resumed drill origin %s has weight %v, want %v", o, end[o], w)
		}
	}
	t.Logf("drained %s, killed 5s later, resumed %s after the drain; passed %s after the resume: %s",
		drainedAt.Format(time.TimeOnly), resumed.Sub(drainedAt).Truncate(time.Second), time.Since(resumed).Truncate(time.Second), result.Reason)

	code, outS, _ := runCLI(t, "--state", state, "report", runID, "--format", "md")
	if code != exitOK || !strings.Contains(outS, "passed") {
		t.Errorf("report exited %d:\n%s", code, outS)
	}
}

func TestDrillBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	valid := strings.NewReplacer("ACCOUNT", "acc", "POOL", "17b5962d775c646f3f9725cbc7a53df4", "PROM", "http://127.0.0.1:1").Replace(cliDrillYAML)
	y := strings.Replace(valid, "  hold: 30s", "  hodl: 30s", 1)
	if err := os.WriteFile(bad, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "--state", dir, "drill", bad, "--now")
	if code != exitInvalid || !strings.Contains(errOut, "bad.yaml:16:3: spec.hodl: unknown field \"hodl\"; did you mean \"hold\"?") {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, "--state", dir, "drill", good, "--drain", "prod-use1-monday-nobody")
	if code != exitInvalid || !strings.Contains(errOut, "--drain prod-use1-monday-nobody: not one of the drill's clusters") {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
}
