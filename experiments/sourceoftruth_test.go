package experiments

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/gitops"
)

// withSource is testdata/valid.yaml with sot inserted under spec.traffic.
func withSource(t *testing.T, sot string) string {
	t.Helper()
	const anchor = "    steps:\n"
	base := readBase(t)
	if !strings.Contains(base, anchor) {
		t.Fatal("test bug: steps not in testdata/valid.yaml")
	}
	return strings.Replace(base, anchor, sot+anchor, 1)
}

func TestSourceOfTruth(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "lb"), 0o755); err != nil {
		t.Fatal(err)
	}
	tf := "locals {\n  split = {\n    use1 = {\n      o1 = 0.2 # canary\n      short2 = 0.4\n      o3 = 0.4\n    }\n  }\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "lb", "use1.tf"), []byte(tf), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "exp.yaml")
	doc := withSource(t, "    sourceOfTruth:\n      terraform:\n        file: lb/use1.tf\n        expression: local.split.use1\n        keys: {c2: short2}\n")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	exps, err := LoadFile(file, LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("valid file rejected:\n%v", err)
	}
	tr := &exps[0].Spec.Traffic
	src, err := tr.Source()
	if err != nil {
		t.Fatal(err)
	}
	if src.Dir != dir || src.File != "lb/use1.tf" || src.Terraform.Expression != "local.split.use1" {
		t.Errorf("source = %+v", src)
	}
	if got := src.Keys; got["o1"] != "o1" || got["o2"] != "short2" || got["o3"] != "o3" || len(got) != 3 {
		t.Errorf("keys = %v, want origin names with c2's key short2", got)
	}
	// The stored spec keeps the directory, so a run's sync resolves the same file.
	b, _ := json.Marshal(exps[0])
	var back Experiment
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if s2, err := back.Spec.Traffic.Source(); err != nil || s2.Path() != src.Path() {
		t.Errorf("stored spec resolves to %s (%v), want %s", s2.Path(), err, src.Path())
	}
	// In place without git.
	if opts, err := tr.SyncOptions(gitops.RunInfo{}); err != nil || opts.Git != nil {
		t.Errorf("SyncOptions = %+v, %v", opts, err)
	}
}

func TestSourceOfTruthBad(t *testing.T) {
	for name, tc := range map[string]struct{ sot, want string }{
		"both":          {"    sourceOfTruth:\n      terraform: {file: a.tf, expression: local.x}\n      values: {file: v.yaml, path: a.b}\n", "sourceOfTruth.values: set either terraform or values, not both"},
		"neither":       {"    sourceOfTruth:\n      onMismatch: warn\n", "spec.traffic.sourceOfTruth: set terraform"},
		"unknown field": {"    sourceOfTruth:\n      terraform: {file: a.tf, expresion: local.x}\n", `unknown field "expresion"; did you mean "expression"?`},
		"no expression": {"    sourceOfTruth:\n      terraform: {file: a.tf}\n", "spec.traffic.sourceOfTruth.terraform.expression: required"},
		"bad ext":       {"    sourceOfTruth:\n      terraform: {file: a.yaml, expression: local.x}\n", "terraform.file: \"a.yaml\": a Terraform source is a .tf or .tfvars file"},
		"key cluster":   {"    sourceOfTruth:\n      values: {file: v.yaml, path: a.b, keys: {c4: x}}\n", `values.keys.c4: cluster "c4" is neither the canary nor a baseline`},
		"key typo":      {"    sourceOfTruth:\n      values: {file: v.yaml, path: a.b, keys: {cl: x}}\n", `did you mean "c1"?`},
		"format":        {"    sourceOfTruth:\n      values: {file: v.yaml, path: a.b, format: toml}\n", "values.format"},
		"onMismatch":    {"    sourceOfTruth:\n      onMismatch: ignore\n      values: {file: v.yaml, path: a.b}\n", "onMismatch: must be fail or warn"},
		"pr repo":       {"    sourceOfTruth:\n      values: {file: v.yaml, path: a.b}\n      git: {pullRequest: {github: {tokenEnv: GH}}}\n", "pullRequest.github.repo: required"},
		"pr token":      {"    sourceOfTruth:\n      values: {file: v.yaml, path: a.b}\n      git: {pullRequest: {github: {repo: a/b}}}\n", "pullRequest.github: required: tokenEnv or tokenFile"},
		"checkout":      {"    sourceOfTruth:\n      values: {file: ../v.yaml, path: a.b}\n      git: {checkout: sub}\n", "outside git.checkout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load("exp.yaml", []byte(withSource(t, tc.sot)), LoadOptions{LookupEnv: noEnv})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "exp.yaml:1") {
				t.Errorf("error has no file:line: %v", err)
			}
		})
	}
}
