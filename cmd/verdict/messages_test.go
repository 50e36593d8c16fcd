package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/store"
)

// goldenStore is a state directory with two runs at fixed times: one paused after drift
// (its pool elsewhere than it set), one rolled back with a decision.
func goldenStore(t *testing.T) string {
	t.Helper()
	state := t.TempDir()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	spec := json.RawMessage(`{"metadata":{"name":"karpenter"},"spec":{"canary":{"cluster":"snorlax"},"baselines":["squirtle"],"traffic":{"cloudflare":{"poolID":"p1","origins":{"snorlax":"o-snorlax","squirtle":"o-squirtle"}},"steps":[{"weight":0.1},{"weight":0.25}]}}}`)
	orig := store.Weights{"o-snorlax": 0.5, "o-squirtle": 0.5}
	ended := &store.Run{ID: "karpenter-1", Experiment: "karpenter", Pool: "acct/p1", State: store.StateRolledBack, Step: 1, Spec: spec, SpecFile: "/exp/karpenter.yaml",
		Current: orig, Original: orig, Verdict: "rolled_back", Reason: "error-rate: harm", EndedBy: "verdict", CreatedAt: t0, StartedAt: t0, EndedAt: t0.Add(20 * time.Minute)}
	if err := st.CreateRun(ctx, ended, store.Event{RunID: ended.ID, At: t0, Type: engine.EventRunStarted, Message: "run started"}); err != nil {
		t.Fatal(err)
	}
	dec := analysis.Decision{Action: analysis.Rollback, Reason: "error-rate: harm", KPIs: []analysis.KPIVerdict{{Name: "error-rate", Status: analysis.Harm,
		Interval:  analysis.Interval{Estimate: 0.5, Lower: 0.2, Upper: 0.9, LowerBounded: true, UpperBounded: false, Relative: true, Alpha: 0.05, Intervals: 12, Informative: 12, Ready: true},
		Tolerance: 0.1, Reason: "the canary's error rate is 20% to unbounded higher"}}}
	details, _ := json.Marshal(engine.DecisionData{Decision: engine.DecisionOf(dec), Step: 1, StepElapsed: "10m0s"})
	if err := st.AddDecision(ctx, &store.Decision{RunID: ended.ID, At: t0.Add(19 * time.Minute), Step: 1, Action: "rollback", Reason: dec.Reason, Details: details}); err != nil {
		t.Fatal(err)
	}
	paused := &store.Run{ID: "karpenter-2", Experiment: "karpenter", Pool: "acct/p1", State: store.StatePaused, Step: 1, Spec: spec, SpecFile: "/exp/karpenter.yaml",
		Current: store.Weights{"o-snorlax": 0.1, "o-squirtle": 0.9}, Original: orig, CreatedAt: t0.Add(time.Hour), StartedAt: t0.Add(time.Hour)}
	drift, _ := json.Marshal(engine.DriftData{During: "ramp", OnDrift: "pause", Actual: store.Weights{"o-snorlax": 0.5, "o-squirtle": 0.5}})
	confirmed, _ := json.Marshal(engine.WeightsData{Purpose: "step 1", Want: paused.Current, At: t0.Add(time.Hour)})
	if err := st.CreateRun(ctx, paused,
		store.Event{RunID: paused.ID, At: t0.Add(time.Hour), Type: engine.EventWeightsConfirmed, Message: "weights for step 1 confirmed by read-back", Data: confirmed},
		store.Event{RunID: paused.ID, At: t0.Add(time.Hour + 5*time.Minute), Type: engine.EventDrift, Message: "pool changed by someone else: pausing", Data: drift}); err != nil {
		t.Fatal(err)
	}
	return state
}

// updatedAt is the one time the store sets itself.
var updatedAt = regexp.MustCompile(`"updatedAt":"[^"]*"`)

// TestJSONMessagesGolden pins every JSON document kind the CLI prints: apiVersion and kind
// first, camelCase names, no zero times, no analysis field names.
func TestJSONMessagesGolden(t *testing.T) {
	state := goldenStore(t)
	t.Setenv("VERDICT_SERVER", "")
	_, drainState := drainEnv(t, drainPoolJSON)
	for _, tc := range []struct {
		golden string
		args   []string
		code   int
	}{
		{"json-run.golden", []string{"get", "karpenter-1", "--state", state}, 0},
		{"json-run-drift.golden", []string{"status", "karpenter-2", "--state", state}, 0},
		{"json-runlist.golden", []string{"list", "--all", "--state", state}, 0},
		{"json-action.golden", []string{"pause", "karpenter-2", "--state", state, "--who", "ops", "--reason", "look first"}, 0},
		{"json-validate.golden", []string{"validate", "../../examples/karpenter.yaml"}, 0},
		{"json-drain.golden", []string{"drain", "eu-west", "--pool", drainPool, "--state", drainState}, 0},
		{"json-version.golden", []string{"version"}, 0},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			code, out, errOut := runCLI(t, append(tc.args, "-o", "json")...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, out, errOut)
			}
			out = updatedAt.ReplaceAllString(out, `"updatedAt":"(set by the store)"`)
			for _, bad := range []string{"0001-01-01", "_bounded", `"version":1`, `"type":"run"`} {
				if strings.Contains(out, bad) {
					t.Errorf("%s in %s", bad, out)
				}
			}
			if !strings.HasPrefix(out, `{"apiVersion":"verdict.dev/v1","kind":"`) {
				t.Errorf("no envelope: %.100s", out)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, []byte(out), "", "  "); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, pretty.String())
		})
	}
}

// TestRunViewsGolden pins the text views of get and list: weights with the actual ones
// after drift, the KPI table, the hints with the flags that reach the same store.
func TestRunViewsGolden(t *testing.T) {
	state := goldenStore(t)
	g := &globals{state: "/var/lib/verdict"}
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ id, golden, srv string }{
		{"karpenter-1", "get-rolled-back.golden", ""},
		{"karpenter-2", "get-paused-drift.golden", "http://127.0.0.1:8080"},
	} {
		d, err := localRunDetail(ctx, st, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		renderRunDetail(&b, hintFlags(g, tc.srv), d.Run, d.Messages, d.Intent, now)
		golden(t, tc.golden, b.String())
	}
	code, out, errOut := runCLI(t, "list", "--all", "--state", state)
	if code != 0 {
		t.Fatalf("list: exit %d %s", code, errOut)
	}
	out = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n`).ReplaceAllString(out, "(updated)\n")
	golden(t, "list-all.golden", out)
}

// TestOutFlag: --out FILE takes what a command prints, written whole, on success and on a
// failure that still prints a document.
func TestOutFlag(t *testing.T) {
	state := goldenStore(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "runs.json")
	code, out, errOut := runCLI(t, "list", "--all", "--state", state, "-o", "json", "--out", file)
	b, err := os.ReadFile(file)
	if code != 0 || out != "" || err != nil || !strings.Contains(string(b), `"kind":"RunList"`) {
		t.Fatalf("list --out: exit %d, stdout %q, stderr %q, file %v %.80s", code, out, errOut, err, b)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: verdict.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec: {canary: {clustr: a}}\n"), 0o644)
	file = filepath.Join(dir, "validate.json")
	code, _, _ = runCLI(t, "validate", bad, "-o", "json", "--out", file)
	b, err = os.ReadFile(file)
	if code != exitInvalid || err != nil || !strings.Contains(string(b), `"kind":"ValidateResult"`) || !strings.Contains(string(b), "clustr") {
		t.Errorf("validate --out with problems: exit %d, file %v %s", code, err, b)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	if code, _, errOut := runCLI(t, "list", "--state", state, "--out", filepath.Join(dir, "missing", "x")); code != exitError || !strings.Contains(errOut, "--out") {
		t.Errorf("--out into a missing directory: exit %d, %s", code, errOut)
	}
	t.Setenv("VERDICT_OUT", filepath.Join(dir, "from-env"))
	if code, out, _ := runCLI(t, "list", "--all", "--state", state); code != 0 || !strings.Contains(out, "karpenter-1") {
		t.Errorf("VERDICT_OUT must not redirect output: exit %d %q", code, out)
	}
}

// TestJSONErrors: under -o json a failure is an Error document on stderr with the exit code
// the command returns, and nothing else there; without it, the usual "verdict: …" line.
func TestJSONErrors(t *testing.T) {
	state := goldenStore(t)
	t.Setenv("VERDICT_SERVER", "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"get", "no-such-run", "--state", state, "-o", "json"}, exitInvalid, `no run or experiment \"no-such-run\"`},
		{[]string{"-o", "json", "get", "--no-such-flag"}, exitInvalid, "unknown flag: --no-such-flag"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != tc.code {
			t.Fatalf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out, errOut)
		}
		var doc struct {
			APIVersion, Kind, Error string
			ExitCode                int
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if len(lines) != 1 {
			t.Fatalf("%v: stderr is %d lines, want one JSON document:\n%s", tc.args, len(lines), errOut)
		}
		if err := json.Unmarshal([]byte(lines[0]), &doc); err != nil {
			t.Fatalf("%v: stderr is not JSON: %v\n%s", tc.args, err, errOut)
		}
		if doc.APIVersion != "verdict.dev/v1" || doc.Kind != "Error" || doc.ExitCode != tc.code || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%v: error document %s, want kind Error, exitCode %d, %q", tc.args, lines[0], tc.code, tc.want)
		}
	}
	code, _, errOut := runCLI(t, "get", "no-such-run", "--state", state)
	if code != exitInvalid || !strings.HasPrefix(errOut, "verdict: no run or experiment") {
		t.Errorf("text error: exit %d, stderr %q", code, errOut)
	}
}

// TestStreamMessagesTyped: the events and the result that run, watch, drill and replay
// stream are the typed messages, with their field names.
func TestStreamMessagesTyped(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	writeJSON(&b, newEventJSON(engine.Event{Type: engine.EventDecision, RunID: "r-1", At: at, Message: "continue", Data: json.RawMessage(`{"step":1}`)}))
	rec := store.Run{ID: "r-1", State: store.StateRolledBack, Verdict: "rolled_back", Reason: "harm", Current: store.Weights{"o1": 0.5, "o2": 0.5}}
	writeJSON(&b, newResultJSON("run_result", rec, exitRolledBack))
	want := `{"type":"decision","version":1,"run":"r-1","at":"2026-03-01T12:00:00Z","message":"continue","data":{"step":1}}
{"type":"run_result","version":1,"run":"r-1","state":"RolledBack","verdict":"rolled_back","reason":"harm","exitCode":3,"weights":{"o1":0.5,"o2":0.5}}
`
	if b.String() != want {
		t.Errorf("stream messages:\n%s\nwant\n%s", b.String(), want)
	}
}
