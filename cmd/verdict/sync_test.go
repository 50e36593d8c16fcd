package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// syncTF is the monday.com-style layout: the weights in a locals map feeding the pool.
const syncTF = `locals {
  traffic_split = {
    use1 = {
      o1 = 0.33 # canary
      o2 = 0.33
      o3 = 0.34
    }
  }
}
`

const syncExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata: {name: sync-me}
spec:
  canary: {cluster: c1}
  baselines: [c2, c3]
  traffic:
    cloudflare: {poolID: p1, origins: {c1: o1, c2: o2, c3: o3}}
    steps: [{weight: 10%, hold: 10m}]
    sourceOfTruth:
      terraform: {file: lb/use1.tf, expression: EXPRESSION}
GIT
  prometheus: {address: "http://127.0.0.1:9"}
  kpis:
    - name: errors
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code="500"}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
  analysis: {interval: 1m, minIntervals: 5}
`

// gitCmd runs git for a test, with its own HOME and no system config.
func gitCmd(t *testing.T, home, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// syncWorld is a bare remote and a checkout holding lb/use1.tf and the experiment.
func syncWorld(t *testing.T, git string) (home, bare, work, exp string) {
	return syncWorldTF(t, git, syncTF, "local.traffic_split.use1")
}

// syncV5TF is the Cloudflare provider v5 form: origins as a list attribute of the pool.
const syncV5TF = `resource "cloudflare_load_balancer_pool" "use1" {
  account_id = var.account_id
  name       = "use1"
  origins = [
    {
      name    = "o1"
      address = "o1.example.com"
      weight  = 0.33 # canary
    },
    {
      name    = "o2"
      address = "o2.example.com"
      weight  = 0.33
    },
    {
      name    = "o3"
      address = "o3.example.com"
      weight  = 0.34
    },
  ]
}
`

func syncWorldTF(t *testing.T, git, tf, expression string) (home, bare, work, exp string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	home, bare, work = filepath.Join(root, "home"), filepath.Join(root, "remote.git"), filepath.Join(root, "work")
	if err := os.MkdirAll(filepath.Join(home), 0o755); err != nil {
		t.Fatal(err)
	}
	gitCmd(t, home, root, "init", "--quiet", "--bare", "-b", "main", bare)
	gitCmd(t, home, root, "clone", "--quiet", bare, work)
	if err := os.MkdirAll(filepath.Join(work, "lb"), 0o755); err != nil {
		t.Fatal(err)
	}
	exp = filepath.Join(work, "exp.yaml")
	for p, body := range map[string]string{filepath.Join(work, "lb", "use1.tf"): tf, exp: strings.NewReplacer("GIT\n", git, "EXPRESSION", expression).Replace(syncExperiment)} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitCmd(t, home, work, "add", "-A")
	gitCmd(t, home, work, "commit", "--quiet", "-m", "initial")
	gitCmd(t, home, work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
	t.Setenv("HOME", home)
	return home, bare, work, exp
}

// TestSyncRoundTrip: sync --check fails while the file disagrees with the pool, sync
// publishes a branch that changes exactly the weights, and after it is merged sync --check
// passes.
func TestSyncRoundTrip(t *testing.T) {
	for name, tc := range map[string]struct{ tf, expression string }{
		"locals map":      {syncTF, "local.traffic_split.use1"},
		"v5 origins list": {syncV5TF, "cloudflare_load_balancer_pool.use1.origins"},
	} {
		t.Run(name, func(t *testing.T) { testSyncRoundTrip(t, tc.tf, tc.expression) })
	}
}

func testSyncRoundTrip(t *testing.T, tf, expression string) {
	drainEnv(t, checkPoolJSON("")) // o1 0.5, o2 0.25, o3 0.25
	home, bare, work, exp := syncWorldTF(t, "      git: {remote: origin, base: main}\n", tf, expression)

	code, out, errOut := runVerdict(t, "sync", "--check", exp)
	if code != exitCheckFailed {
		t.Fatalf("--check on a stale file: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{expression + " in lb/use1.tf disagrees with the live pool", "~ o1: 0.50 -> 0.33", "# lb/use1.tf:", "Plan: 3 to change, 0 unchanged."} {
		if !strings.Contains(out, want) {
			t.Errorf("--check output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = runVerdict(t, "sync", "-o", "json", exp)
	if code != exitOK {
		t.Fatalf("sync: exit %d\n%s%s", code, out, errOut)
	}
	var res syncJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Type != "sync_result" || res.Result == nil || res.Result.Published == nil || !res.Result.Published.Pushed {
		t.Fatalf("sync result: %s", out)
	}
	branch := res.Result.Published.Branch
	if !strings.HasPrefix(branch, "verdict/sync-me-sync-") {
		t.Errorf("branch %q", branch)
	}
	// The branch's diff changes exactly the three weight literals; comments stay.
	diff := gitCmd(t, home, bare, "diff", "-U0", "main", branch, "--", "lb/use1.tf")
	var minus, plus []string
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "---"), strings.HasPrefix(l, "+++"):
		case strings.HasPrefix(l, "-"):
			minus = append(minus, l)
		case strings.HasPrefix(l, "+"):
			plus = append(plus, l)
		}
	}
	if len(minus) != 3 || len(plus) != 3 {
		t.Fatalf("diff changes %d/%d lines, want the 3 weights:\n%s", len(minus), len(plus), diff)
	}
	for i, want := range []string{"0.5", "0.25", "0.25"} {
		old, new := minus[i][1:], plus[i][1:]
		idx := strings.LastIndex(old, "0.3")
		if idx < 0 || !strings.Contains(new, want) || !strings.HasPrefix(new, old[:idx]) {
			t.Errorf("line %d: %q -> %q, want only the weight changed to %s", i, old, new, want)
		}
		if strings.Contains(old, "# canary") != strings.Contains(new, "# canary") {
			t.Errorf("comment lost: %q -> %q", old, new)
		}
	}
	// The checkout is untouched; the branch is merged like a pull request would be.
	if b, _ := os.ReadFile(filepath.Join(work, "lb", "use1.tf")); string(b) != tf {
		t.Errorf("sync changed the checkout:\n%s", b)
	}
	gitCmd(t, home, work, "fetch", "--quiet", "origin", branch)
	gitCmd(t, home, work, "merge", "--quiet", "--ff-only", "FETCH_HEAD")
	gitCmd(t, home, work, "push", "--quiet", "origin", "HEAD:refs/heads/main")

	code, out, _ = runVerdict(t, "sync", "--check", exp)
	if code != exitOK || !strings.Contains(out, "matches the live pool (3 origins)") {
		t.Errorf("--check after the merge: exit %d\n%s", code, out)
	}
	// Repeating the sync writes nothing.
	code, out, _ = runVerdict(t, "sync", exp)
	if code != exitOK || !strings.Contains(out, "already matches the live pool") {
		t.Errorf("repeated sync: exit %d\n%s", code, out)
	}
}

// TestSyncInPlace: without git settings the file is rewritten in place.
func TestSyncInPlace(t *testing.T) {
	drainEnv(t, checkPoolJSON(""))
	_, _, work, exp := syncWorld(t, "")
	code, out, errOut := runVerdict(t, "sync", exp)
	if code != exitOK || !strings.Contains(out, "Wrote the live weights into lb/use1.tf") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(work, "lb", "use1.tf"))
	if !strings.Contains(string(b), "o1 = 0.5 # canary") {
		t.Errorf("file after sync:\n%s", b)
	}
}

// TestPlanShowsSourceDrift: plan shows the declared weights' drift like terraform plan,
// with the lifecycle hint.
func TestPlanShowsSourceDrift(t *testing.T) {
	_, _, work, exp := syncWorld(t, "")
	pool := filepath.Join(work, "pool.json")
	if err := os.WriteFile(pool, []byte(checkPoolJSON("")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runVerdict(t, "plan", exp, "--pool-file", pool)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"Source of truth lb/use1.tf local.traffic_split.use1", "~ o1: 0.50 -> 0.33", "ERROR: a run would end check_failed", "ignore_changes = [origins]"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runVerdict(t, "plan", "-o", "json", exp, "--pool-file", pool)
	var pj struct {
		SourceOfTruth *sourceDrift `json:"sourceOfTruth"`
	}
	if err := json.Unmarshal([]byte(out), &pj); err != nil || code != exitOK || pj.SourceOfTruth == nil || pj.SourceOfTruth.InSync || len(pj.SourceOfTruth.Plan.Changes) != 3 {
		t.Errorf("plan JSON: exit %d, %v: %s", code, err, out)
	}
}

// TestCheckFailsOnSourceDrift: check fails on a source of truth that disagrees with the
// pool, shows the plan and the hint, and --accept-drift accepts it.
func TestCheckFailsOnSourceDrift(t *testing.T) {
	prom := checkProm(t)
	drainEnv(t, checkPoolJSON(""))
	exp := writeCheckExperiment(t, prom.URL(), "c3")
	b, _ := os.ReadFile(exp)
	body := strings.Replace(string(b), "    steps: [{weight: 10%, hold: 10m}]\n", "    steps: [{weight: 10%, hold: 10m}]\n    sourceOfTruth:\n      terraform: {file: use1.tf, expression: local.traffic_split.use1}\n", 1)
	if body == string(b) {
		t.Fatal("test bug: steps line not found")
	}
	if err := os.WriteFile(exp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(exp), "use1.tf"), []byte(syncTF), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runVerdict(t, "check", "--history", "0", exp)
	for _, want := range []string{"Source of truth use1.tf local.traffic_split.use1", "~ o1: 0.50 -> 0.33", "ERROR: source of truth use1.tf local.traffic_split.use1 disagrees", "ignore_changes = [origins]", "FAILED"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if code != exitCheckFailed {
		t.Errorf("exit %d, want %d", code, exitCheckFailed)
	}
	code, out, _ = runVerdict(t, "check", "--history", "0", "--accept-drift", exp)
	if code != exitOK || !strings.Contains(out, "WARNING: accepted") {
		t.Errorf("--accept-drift: exit %d\n%s", code, out)
	}
}

// TestSyncStoredRun: sync RUN-ID takes the experiment from the stored run (its directory
// kept with it) and names the run and its verdict in the commit.
func TestSyncStoredRun(t *testing.T) {
	drainEnv(t, checkPoolJSON(""))
	home, bare, _, expFile := syncWorld(t, "      git: {remote: origin, base: main, branchPrefix: weights/}\n")
	exps, err := experiments.LoadFile(expFile, experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(exps[0])
	state := t.TempDir()
	st, err := store.OpenSQLite(t.Context(), state)
	if err != nil {
		t.Fatal(err)
	}
	const id = "sync-me-20261205t093000-abcd"
	rec := &store.Run{ID: id, Experiment: "sync-me", Spec: spec, Pool: "p1", State: store.StatePromoted, Verdict: "promoted", CreatedAt: time.Now(), EndedAt: time.Now()}
	if err := st.CreateRun(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, errOut := runVerdict(t, "sync", "--state", state, id)
	if code != exitOK || !strings.Contains(out, "Pushed branch weights/"+id) {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	msg := gitCmd(t, home, bare, "log", "-1", "--format=%B", "weights/"+id)
	for _, want := range []string{"after run " + id + " (promoted)", "ending promote (keep)", "Verdict-Report: verdict report " + id} {
		if !strings.Contains(msg, want) {
			t.Errorf("commit message lacks %q:\n%s", want, msg)
		}
	}
	code, _, errOut = runVerdict(t, "sync", "--state", state, "no-such-run")
	if code != exitInvalid || !strings.Contains(errOut, "neither an experiment file nor a run") {
		t.Errorf("unknown run: exit %d %s", code, errOut)
	}
}
