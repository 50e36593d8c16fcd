package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestMain runs the package as with -short under the race detector (make test's race pass):
// the real-time fleet tests (the demo regression, serve and crash processes) take minutes
// there and the detector's slowdown distorts their timing; they run in the plain pass.
// TestLiveViewRace, which is what the race pass is for, runs either way.
// VERDICT_RACE_FULL=1 runs everything under -race.
func TestMain(m *testing.M) {
	// The text views print local times; the goldens are in UTC. Set here, before any test
	// starts a goroutine: a test that swapped time.Local raced with servers left by others.
	time.Local = time.UTC
	flag.Parse()
	if raceEnabled && os.Getenv("VERDICT_RACE_FULL") == "" {
		flag.Set("test.short", "true")
	}
	os.Exit(m.Run())
}

// runCLI runs the command in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	code, out, errOut := runCLI(t, append([]string{"validate"}, files...)...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if got := strings.Count(out, " is valid "); got < 8 {
		t.Errorf("want every experiment reported valid, got %d lines:\n%s", got, out)
	}
}

func TestValidateBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base, err := os.ReadFile("../../experiments/testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file string
		want       string
	}{
		{"typo", write("typo.yaml", strings.Replace(string(base), "    cluster: c1", "    clustr: c1", 1)), "typo.yaml:7:5: spec.canary.clustr: unknown field \"clustr\"; did you mean \"cluster\"?"},
		{"empty", write("empty.yaml", ""), "empty.yaml:1:1: no experiment in file"},
		{"garbage", write("garbage.bin", "\x00\x01\x02\xff"), "garbage.bin:1:1: not a text file"},
		{"missing", filepath.Join(dir, "nope.yaml"), "nope.yaml: cannot read experiment file: no such file or directory"},
		{"tolerance", write("tol.yaml", strings.Replace(string(base), "tolerance: 10%", "tolerance: 150%", 1)), "tol.yaml:27:7: spec.kpis[0].tolerance: must be between 0% and 100%, got 150%"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, "validate", tc.file)
			if code != exitInvalid {
				t.Errorf("exit %d, want %d", code, exitInvalid)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, errOut)
			}
			if strings.Contains(errOut, "goroutine") || strings.Contains(errOut, "panic") {
				t.Errorf("stack trace in output:\n%s", errOut)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("apiVersion: verdict.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec: {canary: {clusterr: a}}\n"), 0o644)
	code, out, _ := runCLI(t, "validate", "--output", "json", p, "../../examples/karpenter.yaml")
	if code != exitInvalid {
		t.Fatalf("exit %d", code)
	}
	var msg struct {
		Kind  string `json:"kind"`
		Valid bool   `json:"valid"`
		Files []struct {
			File   string `json:"file"`
			Valid  bool   `json:"valid"`
			Errors []struct {
				Line int    `json:"line"`
				Path string `json:"path"`
			} `json:"errors"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(out), &msg); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if msg.Kind != "ValidateResult" || msg.Valid || len(msg.Files) != 2 || msg.Files[0].Valid || !msg.Files[1].Valid {
		t.Fatalf("unexpected: %+v", msg)
	}
	found := false
	for _, e := range msg.Files[0].Errors {
		found = found || (e.Line == 4 && e.Path == "spec.canary.clusterr")
	}
	if !found {
		t.Errorf("no error for the misspelt field at line 4: %+v", msg.Files[0].Errors)
	}
}

func TestPlanGolden(t *testing.T) {
	code, out, errOut := runCLI(t, "plan", "../../examples/karpenter.yaml", "--pool-file", "../../examples/pools/use1.json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "plan-karpenter.txt", out)

	code, out, errOut = runCLI(t, "plan", "-o", "json", "../../examples/karpenter.yaml", "--pool-file", "../../examples/pools/use1.json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "plan-karpenter.json", out)
	var plan struct {
		Experiment string `json:"experiment"`
		Steps      []struct {
			Step        int     `json:"step"`
			CanaryShare float64 `json:"canaryShare"`
			Origins     []struct {
				Name, Cluster string
				Weight, Share float64
			} `json:"origins"`
			Replicas map[string]struct{ Min, Max int } `json:"replicas"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if plan.Experiment != "karpenter-on-snorlax" || len(plan.Steps) != 4 || plan.Steps[0].Step != 0 || plan.Steps[1].CanaryShare != 0.05 {
		t.Fatalf("unexpected plan: %+v", plan)
	}
	if r := plan.Steps[1].Replicas["prod-use1-monday-snorlax"]; r.Min != 3 || r.Max != 30 {
		t.Errorf("replicas at 5%%: %+v", r)
	}
}

func TestPlanErrors(t *testing.T) {
	dir := t.TempDir()
	tiny := filepath.Join(dir, "tiny.json")
	os.WriteFile(tiny, []byte(`{"id":"17b5962d775c646f3f9725cbc7a53df4","origins":[
	{"name":"prod-use1-snorlax-ambassador","weight":0.01},{"name":"prod-use1-squirtle-ambassador","weight":0.01},
	{"name":"prod-use1-staryu-ambassador","weight":0.01},{"name":"elsewhere","weight":1}]}`), 0o644)
	notJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(notJSON, []byte("{"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unrepresentable step", []string{"plan", "../../examples/karpenter.yaml", "--pool-file", tiny}, "karpenter.yaml:36:10: spec.traffic.steps[0].weight: 5%: 5% of the experiment's total weight 0.03 is below Cloudflare's smallest weight step of 0.01"},
		{"pool not JSON", []string{"plan", "../../examples/karpenter.yaml", "--pool-file", notJSON}, "bad.json: pool is not valid JSON"},
		{"wrong pool", []string{"plan", "../../examples/karpenter.yaml", "--pool-file", "../../examples/pools/euw1.json"}, "is not the experiment's pool"},
		{"no pool", []string{"plan", "../../examples/karpenter.yaml"}, "--pool-file"},
		{"no such experiment", []string{"plan", "../../examples/cni.yaml", "--experiment", "nope", "--pool-file", "../../examples/pools/use1.json"}, `no experiment named "nope"`},
		{"unknown flag", []string{"plan", "--pool", "x"}, "unknown flag: --pool"},
		{"unknown command", []string{"plna"}, "unknown command"},
		{"bad output", []string{"-o", "yaml", "version"}, "--output must be text or json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != exitInvalid {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, errOut)
			}
		})
	}
}

func TestEnvironmentConfig(t *testing.T) {
	t.Setenv("VERDICT_OUTPUT", "json")
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, `{"apiVersion":"verdict.dev/v1","kind":"Version"`) {
		t.Errorf("VERDICT_OUTPUT=json not honoured: %d %s", code, out)
	}
	code, out, _ = runCLI(t, "version", "-o", "text")
	if code != 0 || !strings.HasPrefix(out, "verdict ") {
		t.Errorf("a flag must beat the environment: %s", out)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("output: json\n"), 0o644)
	t.Setenv("VERDICT_OUTPUT", "")
	code, out, _ = runCLI(t, "--config", cfg, "version")
	if code != 0 || !strings.HasPrefix(out, `{"apiVersion":"verdict.dev/v1","kind":"Version"`) {
		t.Errorf("config file not honoured: %s", out)
	}
}
