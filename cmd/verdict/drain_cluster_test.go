package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/server"
)

// drainExperiment is examples/karpenter.yaml steering the drain tests' pool: cluster
// prod-use1-monday-snorlax is origin eu-west there.
func drainExperiment(t *testing.T, account string) string {
	t.Helper()
	raw, err := os.ReadFile("../../examples/karpenter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("17b5962d775c646f3f9725cbc7a53df4", drainPool,
		"${CLOUDFLARE_ACCOUNT_ID:-023e105f4ecef8ad9ca31a8372d0c353}", account,
		"prod-use1-snorlax-ambassador", "eu-west", "prod-use1-squirtle-ambassador", "eu-central",
		"prod-use1-staryu-ambassador", "canary").Replace(string(raw))
	p := filepath.Join(t.TempDir(), "karpenter.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDrainByClusterName: with --experiment, drain takes a cluster name, resolves it through
// the origins map (the pool comes from the file too) and says so; an origin name still
// works, and a cluster name without --experiment is refused with the way to name it.
func TestDrainByClusterName(t *testing.T) {
	emu, state := drainEnv(t, drainPoolJSON)
	exp := drainExperiment(t, emu.AccountID())

	code, out, errOut := runVerdict(t, "drain", "prod-use1-monday-snorlax", "--experiment", exp, "--state", state)
	if code != 0 || !strings.Contains(out, "Drain: cluster prod-use1-monday-snorlax, origin eu-west (from the origins map of "+exp+")") ||
		!strings.Contains(out, "~ eu-west") {
		t.Fatalf("drain CLUSTER --experiment: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runVerdict(t, "drain", "prod-use1-monday-snorlax", "--experiment", exp, "--state", state, "-o", "json")
	var msg server.DrainResult
	if code != 0 || json.Unmarshal([]byte(out), &msg) != nil || msg.Kind != server.KindDrainResult || msg.Origin != "eu-west" ||
		msg.Cluster != "prod-use1-monday-snorlax" || msg.Pool != drainPool || !strings.Contains(out, `"poolName":"checkout-pool"`) || strings.Contains(out, `"weight_`) {
		t.Fatalf("drain -o json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runVerdict(t, "drain", "eu-west", "--experiment", exp, "--state", state)
	if code != 0 || !strings.Contains(out, "Drain: origin eu-west (not a cluster in "+exp+": taken as an origin name)") {
		t.Errorf("drain ORIGIN --experiment: exit %d\n%s", code, out)
	}
	code, _, errOut = runVerdict(t, "drain", "prod-use1-monday-snorlax", "--pool", drainPool, "--state", state)
	if code != exitInvalid || !strings.Contains(errOut, "--experiment FILE") {
		t.Errorf("drain CLUSTER without --experiment: exit %d, %s", code, errOut)
	}
	if code, _, errOut = runVerdict(t, "drain", "prod-use1-monday-snorlax", "--experiment", exp, "--state", state, "--yes"); code != 0 {
		t.Fatalf("drain --yes: exit %d: %s", code, errOut)
	}
	if w := weightsOf(t, emu); w["eu-west"] != 0 {
		t.Fatalf("eu-west not drained: %v", w)
	}
	code, out, errOut = runVerdict(t, "restore", "prod-use1-monday-snorlax", "--experiment", exp, "--state", state, "--yes")
	if code != 0 || !strings.Contains(out, "Restore: cluster prod-use1-monday-snorlax, origin eu-west") {
		t.Fatalf("restore CLUSTER: exit %d\n%s%s", code, out, errOut)
	}
	if w := weightsOf(t, emu); w["eu-west"] != 0.5 {
		t.Errorf("eu-west not restored: %v", w)
	}
}
