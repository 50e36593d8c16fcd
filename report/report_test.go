package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/store"
)

var (
	update = flag.Bool("update", false, "rewrite the golden files in testdata/ and the samples in docs/examples/")
	record = flag.Bool("record", false, "re-record the runs in testdata/runs/ with the engine (then -update the goldens)")
)

// fixture is a recorded run as the store holds it. Golden reports are built from these
// files, not from a fresh engine run, so they change only when the report changes; the
// live recording is checked separately (TestLiveRunReports).
type fixture struct {
	Run          store.Run           `json:"run"`
	Events       []store.Event       `json:"events"`
	Decisions    []store.Decision    `json:"decisions"`
	Observations []store.Observation `json:"observations"`
}

func fixturePath(scenario string) string { return filepath.Join("testdata", "runs", scenario+".json") }

// recordFixture runs the scenario with the engine and writes it to testdata/runs/.
func recordFixture(t *testing.T, scenario string) {
	t.Helper()
	st, id := recordRun(t, scenario)
	ctx := context.Background()
	run, err := st.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{Run: *run}
	if f.Events, err = st.Events(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if f.Decisions, err = st.Decisions(ctx, id); err != nil {
		t.Fatal(err)
	}
	if f.Observations, err = st.Observations(ctx, id); err != nil {
		t.Fatal(err)
	}
	// One record per line: compact, and a re-recording diffs line by line.
	var buf bytes.Buffer
	line := func(v any, sep string) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteString(sep)
	}
	buf.WriteString("{\"run\": ")
	line(f.Run, ",\n")
	for _, part := range []struct {
		name string
		n    int
		at   func(int) any
	}{
		{"events", len(f.Events), func(i int) any { return f.Events[i] }},
		{"decisions", len(f.Decisions), func(i int) any { return f.Decisions[i] }},
		{"observations", len(f.Observations), func(i int) any { return f.Observations[i] }},
	} {
		fmt.Fprintf(&buf, "%q: [\n", part.name)
		for i := 0; i < part.n; i++ {
			sep := ",\n"
			if i == part.n-1 {
				sep = "\n"
			}
			line(part.at(i), sep)
		}
		if part.name == "observations" {
			buf.WriteString("]}")
		} else {
			buf.WriteString("],\n")
		}
	}
	b := bytes.ReplaceAll(buf.Bytes(), []byte(id), []byte(goldenRunID))
	if err := os.MkdirAll(filepath.Dir(fixturePath(scenario)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixturePath(scenario), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadFixture loads a recorded run into a fresh SQLite store.
func loadFixture(t *testing.T, scenario string) (*store.SQLite, string) {
	t.Helper()
	if *record {
		recordFixture(t, scenario)
	}
	b, err := os.ReadFile(fixturePath(scenario))
	if err != nil {
		t.Fatalf("%v (go test ./report -run %s -record records it)", err, t.Name())
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateRun(ctx, &f.Run, f.Events...); err != nil {
		t.Fatal(err)
	}
	for i := range f.Decisions {
		if err := st.AddDecision(ctx, &f.Decisions[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddObservations(ctx, f.Observations); err != nil {
		t.Fatal(err)
	}
	return st, f.Run.ID
}

// extraKPIs adds a gauge and a throughput KPI to the world's experiment, so the recorded
// runs exercise every KPI type a report handles.
var extraKPIs = []string{"      tolerance: 15%\n", `      tolerance: 15%
    - name: mean-latency
      type: gauge
      query: sum by (cluster) (increase(http_request_duration_seconds_sum[{{.Interval}}])) / sum by (cluster) (increase(http_request_duration_seconds_count[{{.Interval}}]))
      tolerance: 10%
      guardrail: {max: 800ms}
    - name: requests
      type: throughput
      query: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
`, "  canary: {cluster: c1, variant: {cni: cilium}}\n", "  description: Cilium instead of kube-proxy on c1\n  canary: {cluster: c1, variant: {cni: cilium, kernel: '6.1'}}\n"}

// goldenRunID replaces the run's random ID in golden files.
const goldenRunID = "world-test-20261123t080000-golden"

// recordRun runs a scenario on virtual time with the real engine and returns the store and
// the run's ID. "promoted": a healthy variant, paused and resumed by hand on step 2;
// "rolled_back": the variant breaks 2.5× more requests.
func recordRun(t *testing.T, scenario string) (*store.SQLite, string) {
	t.Helper()
	w := newWorld(t)
	w.Rate = 1000
	if scenario == "rolled_back" {
		w.ErrP["c1"] = 0.025
	}
	e := w.engine()
	r, err := e.Start(context.Background(), w.Experiment(extraKPIs...), "world.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	var pausedAt time.Time
	posted := false
	w.Drive(r, 3*time.Hour, func(now time.Time) {
		if scenario != "promoted" {
			return
		}
		rec := r.Record()
		switch {
		case !posted && rec.Step == 2 && rec.Intent == nil && rec.State == store.StateRamping:
			posted = true
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: engine.ActionPause, Who: "alice", Reason: "checking the node dashboards"}); err != nil {
				t.Fatal(err)
			}
		case rec.State == store.StatePaused && pausedAt.IsZero():
			pausedAt = now
		case rec.State == store.StatePaused && now.Sub(pausedAt) >= 3*time.Minute:
			if err := w.St.PostCommand(context.Background(), &store.Command{RunID: r.ID(), Action: engine.ActionResume, Who: "alice", Reason: "nodes look fine"}); err != nil {
				t.Fatal(err)
			}
			pausedAt = now.Add(time.Hour) // once
		}
	})
	if !r.Done() {
		t.Fatalf("%s run did not end: %s", scenario, r.Record().State)
	}
	if got := r.Record().Verdict; got != scenario {
		t.Fatalf("run ended %s (%s), want %s", got, r.Record().Reason, scenario)
	}
	return w.St, r.ID()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./report -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got: %s\nwant: %s\n(go test ./report -update rewrites it)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s differs in length: got %d lines, want %d (go test ./report -update rewrites it)", path, len(gl), len(wl))
	}
}

func render(t *testing.T, r *Report, id string) (js, md, htm []byte, charts map[string][]byte) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	js = []byte(strings.ReplaceAll(b.String(), id, goldenRunID))
	b.Reset()
	dir := t.TempDir()
	if err := WriteMarkdown(&b, r, MarkdownOptions{ChartDir: dir, ChartPrefix: "report"}); err != nil {
		t.Fatal(err)
	}
	md = []byte(strings.ReplaceAll(b.String(), id, goldenRunID))
	b.Reset()
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	htm = []byte(strings.ReplaceAll(b.String(), id, goldenRunID))
	charts = map[string][]byte{}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		charts[f.Name()] = data
	}
	return js, md, htm, charts
}

func TestGoldenReports(t *testing.T) {
	for _, scenario := range []string{"promoted", "rolled_back"} {
		t.Run(scenario, func(t *testing.T) {
			st, id := loadFixture(t, scenario)
			r, err := FromStore(context.Background(), st, id)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, r, scenario)
			js, md, htm, charts := render(t, r, id)
			golden(t, scenario+".json", js)
			golden(t, scenario+".md", md)
			// Every chart the Markdown links was written.
			for _, line := range strings.Split(string(md), "\n") {
				if i := strings.Index(line, "](report-"); i >= 0 && strings.HasPrefix(line, "![") {
					name := strings.TrimSuffix(line[i+2:], ")")
					if _, ok := charts[name]; !ok {
						t.Errorf("markdown links %s, which was not written", name)
					}
				}
			}
			checkHTML(t, htm, r)
			if *update {
				writeExamples(t, scenario, js, md, htm, charts)
			}
			// Building twice gives the same bytes: reports are reproducible.
			r2, err := FromStore(context.Background(), st, id)
			if err != nil {
				t.Fatal(err)
			}
			js2, _, htm2, _ := render(t, r2, id)
			if !bytes.Equal(js, js2) || !bytes.Equal(htm, htm2) {
				t.Error("two reports of the same run differ")
			}
		})
	}
}

// TestLiveRunReports records both scenarios with today's engine and checks the reports'
// invariants, so a change of the engine that breaks reports shows up even though the
// golden files are built from recorded runs.
func TestLiveRunReports(t *testing.T) {
	for _, scenario := range []string{"promoted", "rolled_back"} {
		t.Run(scenario, func(t *testing.T) {
			st, id := recordRun(t, scenario)
			r, err := FromStore(context.Background(), st, id)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, r, scenario)
			js, _, htm, _ := render(t, r, id)
			if bytes.Contains(js, []byte("NaN")) {
				t.Error("NaN in the JSON report")
			}
			checkHTML(t, htm, r)
		})
	}
}

// writeExamples refreshes the committed sample reports under docs/examples/.
func writeExamples(t *testing.T, scenario string, js, md, htm []byte, charts map[string][]byte) {
	t.Helper()
	dir := filepath.Join("..", "docs", "examples")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := "report-" + strings.ReplaceAll(scenario, "_", "-")
	mdOut := strings.ReplaceAll(string(md), "](report-", "]("+base+"-")
	files := map[string][]byte{base + ".json": js, base + ".md": []byte(mdOut), base + ".html": htm}
	for name, data := range charts {
		files[base+strings.TrimPrefix(name, "report")] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkReport asserts what the golden files could hide behind an -update.
func checkReport(t *testing.T, r *Report, scenario string) {
	t.Helper()
	if r.Verdict != scenario || r.Reason == "" || r.Experiment.EndedBy == "" {
		t.Errorf("verdict %q reason %q endedBy %q", r.Verdict, r.Reason, r.Experiment.EndedBy)
	}
	if r.Clusters.Canary != "c1" || strings.Join(r.Clusters.Baselines, ",") != "c2,c3" {
		t.Errorf("clusters %+v", r.Clusters)
	}
	names := []string{}
	for _, k := range r.KPIs {
		names = append(names, k.Name)
	}
	if got := strings.Join(names, "|"); got != "error-rate|latency (slower than 500ms)|latency (mean)|mean-latency|requests" {
		t.Errorf("KPIs %s", got)
	}
	if r.PrePeriod == nil || r.PrePeriod.Intervals < 50 {
		t.Errorf("pre-period %+v", r.PrePeriod)
	}
	if !r.Traffic.Checked || len(r.Traffic.Steps) == 0 {
		t.Errorf("share check %+v", r.Traffic)
	}
	if len(r.Preconditions) != 1 || r.Preconditions[0].Checks == 0 || r.Preconditions[0].Failures != 0 {
		t.Errorf("preconditions %+v", r.Preconditions)
	}
	for _, k := range r.KPIs {
		if k.Canary.N == 0 || k.Baseline.N == 0 || len(k.Series) == 0 {
			t.Errorf("%s has no data: %+v", k.Name, k.Canary)
		}
		if k.Status == StatusNotJudged {
			continue
		}
		if len(k.Sequence) == 0 || k.Effect.Estimate == nil || k.Kayenta == nil {
			t.Errorf("%s lacks evidence", k.Name)
		}
		methods := []string{}
		for _, ts := range k.Tests {
			methods = append(methods, ts.Method)
			if ts.PAdjusted < ts.PValue || ts.PAdjusted > 1 {
				t.Errorf("%s %s: p %v adjusted to %v", k.Name, ts.Method, ts.PValue, ts.PAdjusted)
			}
		}
		want := "welch-t,mann-whitney"
		if k.Measure == measureRate {
			want = "binomial-rate," + want
		}
		if strings.Join(methods, ",") != want {
			t.Errorf("%s tests %v, want %s", k.Name, methods, want)
		}
		// The replayed final sequence matches what the engine last decided on.
		last := k.Sequence[len(k.Sequence)-1]
		if k.Effect.Estimate == nil || round(last.Estimate, 0) != *k.Effect.Estimate {
			t.Errorf("%s: replayed estimate %v, engine's %v", k.Name, last.Estimate, k.Effect.Estimate)
		}
	}
	switch scenario {
	case "rolled_back":
		if r.KPIs[0].Status != "harm" {
			t.Errorf("error-rate status %s: %s", r.KPIs[0].Status, r.KPIs[0].StatusReason)
		}
		if p := r.KPIs[0].Tests[0]; p.Method != MethodBinomialRate || p.PValue > 1e-6 || *p.Estimate < 1.5 {
			t.Errorf("rate test does not see the 2.5× regression: %+v", p)
		}
	case "promoted":
		actions := 0
		for _, e := range r.Timeline {
			if e.Type == engine.EventAction && strings.Contains(e.Message, "alice") {
				actions++
			}
		}
		if actions != 2 {
			t.Errorf("want alice's pause and resume in the timeline, got %d", actions)
		}
		if len(r.Steps) != 3 || r.Steps[2].Weight != 0.34 {
			t.Errorf("steps %+v", r.Steps)
		}
		for _, k := range r.KPIs {
			if k.Status != "non-inferior" && k.Status != StatusNotJudged {
				t.Errorf("%s is %s in a promoted run", k.Name, k.Status)
			}
		}
	}
}

// checkHTML checks the page is self-contained and has every KPI's charts.
func checkHTML(t *testing.T, htm []byte, r *Report) {
	t.Helper()
	s := string(htm)
	for _, bad := range []string{"<script", "<link", "src=\"http", "href=\"http", "url(http", "@import"} {
		if strings.Contains(s, bad) {
			t.Errorf("HTML is not self-contained: contains %q", bad)
		}
	}
	for _, k := range r.KPIs {
		if !strings.Contains(s, `class="chart chart-values" data-kpi="`+escAttr(k.Name)+`"`) {
			t.Errorf("no value chart for %s", k.Name)
		}
	}
}

func escAttr(s string) string { return esc(s) }

func TestUnknownRun(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = FromStore(context.Background(), st, "nope")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want store.ErrNotFound", err)
	}
}

func TestJSONHasDocumentedTopLevel(t *testing.T) {
	var b bytes.Buffer
	r := &Report{SchemaVersion: SchemaVersion, Kind: KindAnalysis}
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"verdict", "experiment", "window", "clusters", "kpis"} {
		if _, ok := m[k]; !ok {
			t.Errorf("top-level %q missing", k)
		}
	}
}
