package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

const (
	drainToken = "drain-test-token-6b1f0c9e"
	drainPool  = "9f1c1c8e2b0f4e6a8d5c3b2a1f0e9d8c"
)

const drainPoolJSON = `{"id": "` + drainPool + `", "name": "checkout-pool", "minimum_origins": 1, "origins": [
  {"name": "eu-west", "address": "10.0.1.10", "weight": 0.5, "header": {"Host": ["checkout.example.com"]}, "port": 8443},
  {"name": "eu-central", "address": "10.0.2.10", "weight": 0.3},
  {"name": "canary", "address": "10.0.3.10", "weight": 0.2},
  {"name": "standby", "address": "10.0.4.10", "weight": 1, "enabled": false}]}`

// drainEnv runs the emulator with pool and points the CLI at it through the environment.
func drainEnv(t *testing.T, pool string) (*cfemu.Server, string) {
	t.Helper()
	emu := cfemu.New(cfemu.Options{Token: drainToken})
	if _, err := emu.LoadPools([]byte(pool)); err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	t.Setenv(traffic.EnvCloudflareToken, drainToken)
	t.Setenv(traffic.EnvCloudflareTokenFile, "")
	t.Setenv(traffic.EnvCloudflareBaseURL, emu.APIURL())
	t.Setenv(traffic.EnvCloudflareAccount, emu.AccountID())
	return emu, t.TempDir()
}

// runVerdict runs the CLI in-process and checks the token never reaches its output.
func runVerdict(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	if strings.Contains(out.String()+errb.String(), drainToken) {
		t.Errorf("the API token appeared in the output of %v", args)
	}
	return code, out.String(), errb.String()
}

func weightsOf(t *testing.T, emu *cfemu.Server) traffic.Weights {
	t.Helper()
	raw, ok := emu.Pool(drainPool)
	if !ok {
		t.Fatal("pool gone")
	}
	p, err := traffic.DecodePool(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p.Weights()
}

func writes(emu *cfemu.Server) int {
	n := 0
	for _, c := range emu.Calls() {
		if c.Method != http.MethodGet {
			n++
		}
	}
	return n
}

func TestDrainDryRunChangesNothing(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "drain-dry-run.txt", out)
	if writes(emu) != 0 {
		t.Errorf("dry run wrote to the pool")
	}
	if _, err := os.Stat(filepath.Join(state, "drains")); !os.IsNotExist(err) {
		t.Errorf("dry run saved a drain record")
	}
}

func TestDrainAndRestore(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	before := weightsOf(t, emu)

	code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--yes")
	if code != 0 {
		t.Fatalf("drain: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "Drained \"eu-west\"") {
		t.Errorf("drain output:\n%s", out)
	}
	after := weightsOf(t, emu)
	want := traffic.Weights{"eu-west": 0, "eu-central": 0.3, "canary": 0.2, "standby": 1}
	for k, v := range want {
		if !traffic.SameWeight(after[k], v) {
			t.Errorf("after drain %s = %v, want %v", k, after[k], v)
		}
	}
	rec, ok, err := traffic.LoadDrainRecord(state, drainPool)
	if err != nil || !ok || rec.Origins["eu-west"].Weight != 0.5 {
		t.Fatalf("drain record = %+v, %v, %v; want eu-west 0.5", rec, ok, err)
	}
	raw, _ := emu.Pool(drainPool)
	if !strings.Contains(string(raw), `"checkout.example.com"`) || !strings.Contains(string(raw), `"port":8443`) {
		t.Errorf("drain lost origin fields: %s", raw)
	}

	// Draining again is a no-op, and keeps the saved weight.
	if code, out, _ := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--yes"); code != 0 || !strings.Contains(out, "already has weight 0") {
		t.Errorf("second drain: exit %d\n%s", code, out)
	}

	code, out, errOut = runVerdict(t, "restore", "--pool", drainPool, "--state", state, "-o", "json")
	if code != 0 {
		t.Fatalf("restore dry run: exit %d: %s", code, errOut)
	}
	var msg server.DrainResult
	if err := json.Unmarshal([]byte(out), &msg); err != nil {
		t.Fatalf("restore JSON: %v\n%s", err, out)
	}
	if msg.Kind != server.KindRestoreResult || msg.APIVersion != server.APIVersion || msg.Applied || len(msg.Origins) != 4 || msg.Origins[0].WeightAfter != 0.5 || msg.Origins[1].ShareBefore != 0.6 {
		t.Errorf("restore message = %+v", msg)
	}

	if code, _, errOut := runVerdict(t, "restore", "--pool", drainPool, "--state", state, "--yes"); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, errOut)
	}
	restored := weightsOf(t, emu)
	for k, v := range before {
		if !traffic.SameWeight(restored[k], v) {
			t.Errorf("after restore %s = %v, want %v", k, restored[k], v)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "drains", drainPool+".json")); !os.IsNotExist(err) {
		t.Errorf("drain record left after a full restore: %v", err)
	}
	if code, _, errOut := runVerdict(t, "restore", "--pool", drainPool, "--state", state, "--yes"); code != exitInvalid || !strings.Contains(errOut, "nothing to restore") {
		t.Errorf("restore with nothing saved: exit %d: %s", code, errOut)
	}
}

func TestDrainRefusals(t *testing.T) {
	lastOne := `{"id": "` + drainPool + `", "name": "p", "origins": [
	  {"name": "active", "address": "10.0.0.1", "weight": 1}, {"name": "standby", "address": "10.0.0.2", "weight": 0},
	  {"name": "off", "address": "10.0.0.3", "weight": 1, "enabled": false}]}`
	minimum := `{"id": "` + drainPool + `", "name": "p", "minimum_origins": 3, "origins": [
	  {"name": "a", "address": "10.0.0.1", "weight": 0.4}, {"name": "b", "address": "10.0.0.2", "weight": 0.3},
	  {"name": "c", "address": "10.0.0.3", "weight": 0.3}]}`
	cases := []struct {
		name, pool string
		args       []string
		want       string
	}{
		{"last origin carrying traffic", lastOne, []string{"drain", "active", "--pool", drainPool, "--yes"}, "last origin"},
		{"below minimum_origins", minimum, []string{"drain", "a", "--pool", drainPool, "--yes"}, "below its minimum_origins 3"},
		{"unknown cluster", drainPoolJSON, []string{"drain", "nope", "--pool", drainPool, "--yes"}, `no origin "nope"`},
		{"no --pool", drainPoolJSON, []string{"drain", "eu-west", "--yes"}, "--pool is required"},
		{"bad pool ID", drainPoolJSON, []string{"drain", "eu-west", "--pool", "../etc", "--yes"}, "not a valid identifier"},
		{"unknown pool", drainPoolJSON, []string{"drain", "eu-west", "--pool", "ffffffffffffffffffffffffffffffff", "--yes"}, "not found"},
		{"no cluster", drainPoolJSON, []string{"drain", "--pool", drainPool}, "accepts 1 arg"},
		{"restore unknown origin", drainPoolJSON, []string{"restore", "canary", "--pool", drainPool}, "nothing to restore"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			emu, state := drainEnv(t, c.pool)
			code, _, errOut := runVerdict(t, append(c.args, "--state", state)...)
			if code != exitInvalid || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 mentioning %q", code, errOut, c.want)
			}
			if writes(emu) != 0 {
				t.Errorf("a refused command wrote to the pool")
			}
		})
	}
	t.Run("no credentials", func(t *testing.T) {
		_, state := drainEnv(t, drainPoolJSON)
		t.Setenv(traffic.EnvCloudflareToken, "")
		code, _, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state)
		if code != exitInvalid || !strings.Contains(errOut, "CLOUDFLARE_API_TOKEN") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		_, state := drainEnv(t, drainPoolJSON)
		t.Setenv(traffic.EnvCloudflareToken, "x"+drainToken)
		code, _, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--yes")
		if code != exitError || !strings.Contains(errOut, "9109") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
}

// TestRestoreRefusesAfterExternalChange: the drained origin was given weight again by
// someone else; restore must not overwrite that and must keep the record.
func TestRestoreRefusesAfterExternalChange(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	if code, _, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--yes"); code != 0 {
		t.Fatalf("drain: %s", errOut)
	}
	if err := emu.SetWeight(drainPool, "eu-west", 0.1); err != nil {
		t.Fatal(err)
	}
	w := writes(emu)
	code, _, errOut := runVerdict(t, "restore", "--pool", drainPool, "--state", state, "--yes")
	if code != exitError || !strings.Contains(errOut, `origin "eu-west" expected weight 0, found 0.1`) || !strings.Contains(errOut, "changed since the drain") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if writes(emu) != w {
		t.Errorf("restore wrote despite drift")
	}
	if _, ok, _ := traffic.LoadDrainRecord(state, drainPool); !ok {
		t.Errorf("drain record removed after a refused restore")
	}
}

// TestYesOnlyFromCommandLine: VERDICT_YES must not make a drain live.
func TestYesOnlyFromCommandLine(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	t.Setenv("VERDICT_YES", "true")
	code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state)
	if code != 0 || !strings.Contains(out, "Dry run") || !strings.Contains(errOut, "ignoring --yes") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	if writes(emu) != 0 {
		t.Errorf("VERDICT_YES applied a drain")
	}
}

// TestDrainRefusesClaimedPool: a pool carrying a run's claim (in its description, so any
// Verdict sees it whatever its state directory) is not drained or restored unless
// --force; the refusal names the run, its owner and since when, and the preview shows it.
func TestDrainRefusesClaimedPool(t *testing.T) {
	claim := traffic.Claim{Run: "checkout-canary-7f3a", Owner: "verdict-run@ci-runner-12", Since: time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)}
	claimed := func(t *testing.T) (*cfemu.Server, string) {
		emu, state := drainEnv(t, drainPoolJSON)
		body, _ := json.Marshal(map[string]string{"description": traffic.WithClaim("checkout clusters", claim.String())})
		if err := emu.Patch(drainPool, body); err != nil {
			t.Fatal(err)
		}
		return emu, state
	}
	names := []string{claim.Run, claim.Owner, "2026-11-23T09:30:00Z"}

	for _, args := range [][]string{
		{"drain", "eu-west", "--pool", drainPool},
		{"drain", "eu-west", "--pool", drainPool, "--yes"},
	} {
		t.Run(strings.Join(args[3:], " ")+" refused", func(t *testing.T) {
			emu, state := claimed(t)
			code, out, errOut := runVerdict(t, append(args, "--state", state)...)
			if code == 0 {
				t.Fatalf("exit 0 on a claimed pool:\n%s", out)
			}
			for _, want := range append(names, "claimed by run", "--force") {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr does not mention %q:\n%s", want, errOut)
				}
			}
			if !strings.Contains(out, "Claimed by run "+claim.Run+" (driven by "+claim.Owner+" since 2026-11-23T09:30:00Z)") || !strings.Contains(out, "~ eu-west") {
				t.Errorf("the preview does not show the table and the claim:\n%s", out)
			}
			if writes(emu) != 0 {
				t.Errorf("a refused drain wrote to the pool")
			}
			if _, ok, _ := traffic.LoadDrainRecord(state, drainPool); ok {
				t.Errorf("a refused drain saved a drain record")
			}
		})
	}

	t.Run("--force drains and says so", func(t *testing.T) {
		emu, state := claimed(t)
		code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--yes", "--force")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if !strings.Contains(out, "Overrode the claim of run "+claim.Run+" (driven by "+claim.Owner+" since 2026-11-23T09:30:00Z) because of --force") ||
			!strings.Contains(out, `Drained "eu-west"`) {
			t.Errorf("output does not say the claim was overridden:\n%s", out)
		}
		if w := weightsOf(t, emu); !traffic.SameWeight(w["eu-west"], 0) {
			t.Errorf("eu-west = %v after a forced drain, want 0", w["eu-west"])
		}
		raw, _ := emu.Pool(drainPool)
		p, _ := traffic.DecodePool(raw)
		if c, ok := p.Claim(); !ok || c.Run != claim.Run {
			t.Errorf("the forced drain removed the run's claim: %q", p.Description)
		}

		// Restore refuses the claimed pool as well, and --force restores.
		code, _, errOut = runVerdict(t, "restore", "--pool", drainPool, "--state", state, "--yes")
		if code == 0 || !strings.Contains(errOut, claim.Run) {
			t.Errorf("restore of a claimed pool: exit %d: %s", code, errOut)
		}
		if w := weightsOf(t, emu); !traffic.SameWeight(w["eu-west"], 0) {
			t.Errorf("a refused restore changed eu-west to %v", w["eu-west"])
		}
		if code, out, errOut := runVerdict(t, "restore", "--pool", drainPool, "--state", state, "--yes", "--force"); code != 0 || !strings.Contains(out, "Overrode the claim") {
			t.Errorf("forced restore: exit %d\n%s\n%s", code, out, errOut)
		}
		if w := weightsOf(t, emu); !traffic.SameWeight(w["eu-west"], 0.5) {
			t.Errorf("eu-west = %v after the forced restore, want 0.5", w["eu-west"])
		}
	})

	t.Run("JSON preview carries the claim", func(t *testing.T) {
		emu, state := claimed(t)
		code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--force", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var msg server.DrainResult
		if err := json.Unmarshal([]byte(out), &msg); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if msg.Claim == nil || msg.Claim.Run != claim.Run || msg.Claim.Owner != claim.Owner || !msg.Claim.Since.Equal(claim.Since) || !msg.ClaimOverridden || msg.Applied {
			t.Errorf("message = %+v, claim %+v", msg, msg.Claim)
		}
		if writes(emu) != 0 {
			t.Errorf("a dry run wrote to the pool")
		}
	})
}

// TestDrainPreviewCountsUnhealthyOrigins is issue 20's case: with eu-central unhealthy at
// the load balancer, draining eu-west leaves canary carrying everything, and the preview
// must say so instead of 60/40 by weight.
func TestDrainPreviewCountsUnhealthyOrigins(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	if err := emu.SetOriginHealth(drainPool, "eu-central", false); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "drain-dry-run-unhealthy.txt", out)

	code, out, errOut = runVerdict(t, "drain", "eu-west", "--pool", drainPool, "--state", state, "--output", "json")
	if code != 0 {
		t.Fatalf("json: exit %d: %s", code, errOut)
	}
	var msg server.DrainResult
	if err := json.Unmarshal([]byte(out), &msg); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := map[string][2]float64{"eu-west": {0.5 / 0.7, 0}, "eu-central": {0, 0}, "canary": {0.2 / 0.7, 1}, "standby": {0, 0}}
	for _, o := range msg.Origins {
		w := want[o.Name]
		if !nearShare(o.ShareBefore, w[0]) || !nearShare(o.ShareAfter, w[1]) {
			t.Errorf("%s shares %v → %v, want %v → %v", o.Name, o.ShareBefore, o.ShareAfter, w[0], w[1])
		}
		if o.Name == "eu-central" && (o.Healthy == nil || *o.Healthy) {
			t.Errorf("eu-central healthy = %v, want false", o.Healthy)
		}
	}

	// Draining canary too would leave no healthy origin with traffic: refused, nothing written.
	if err := emu.SetWeight(drainPool, "eu-west", 0); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runVerdict(t, "drain", "canary", "--pool", drainPool, "--state", state, "--yes")
	if code != exitInvalid || !strings.Contains(out, "UNHEALTHY") {
		t.Errorf("drain of the last healthy origin: exit %d, want %d; output:\n%s", code, exitInvalid, out)
	}
	if writes(emu) != 0 {
		t.Errorf("refused drain wrote to the pool")
	}
}

func nearShare(a, b float64) bool { return a-b < 1e-3 && b-a < 1e-3 }
