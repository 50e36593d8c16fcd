package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics/embedded"
)

// analyzeKPIs is the KPI block shared by the experiment file and the --kpi file.
const analyzeKPIs = `kpis:
  - name: errors
    type: ratio
    events: sum by (cluster) (increase(http_requests_total{code="500"}[{{.Interval}}]))
    total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
  - name: latency
    type: latency
    buckets: sum by (cluster, le) (increase(http_request_duration_seconds_bucket[{{.Interval}}]))
    sum: sum by (cluster) (increase(http_request_duration_seconds_sum[{{.Interval}}]))
    count: sum by (cluster) (increase(http_request_duration_seconds_count[{{.Interval}}]))
    slowerThan: 500ms
  - name: cpu
    type: gauge
    query: avg by (cluster) (avg_over_time(cpu_per_request[{{.Interval}}]))
analysis: {interval: 1m, minIntervals: 5}
`

// analyzeExperiment holds for as long as the analysed window (1h): the plan's total hold is
// where gauge sequences are tightest, and a --kpi file's plan is the window, so that the two
// give the same evidence.
const analyzeExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata: {name: analyze-me}
spec:
  canary: {cluster: c1, variant: {kernel: "6.6"}}
  baselines: [c2, c3]
  traffic:
    cloudflare: {poolID: p1, origins: {c1: o1, c2: o2, c3: o3}}
    steps: [{weight: 10%, hold: 60m}]
  prometheus: {address: PROM}
`

// Known series, 05:00–07:00 on 2026-11-23, one sample every 15 s. Per minute k (the
// interval ending at minute k): every cluster serves 1000 requests; c2 and c3 fail
// 10 ± 2 (alternating by minute), c1 fails the same before 06:00 and 20 ± 4 after;
// latency means are 100 ms (150 ms on c1 after 06:00) with 5% (10%) slower than 500 ms;
// cpu per request is 1.0·(1 + 0.02·((k mod 5) − 2)), ×1.2 on c1 after 06:00.
var (
	analyzeStart  = time.Date(2026, 11, 23, 5, 0, 0, 0, time.UTC)
	analyzeSwitch = analyzeStart.Add(time.Hour)
	analyzeEnd    = analyzeStart.Add(2 * time.Hour)
)

func analyzeProm(t *testing.T) *embedded.Server {
	t.Helper()
	s, err := embedded.New(embedded.Options{Now: func() time.Time { return analyzeEnd }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Append(analyzeSamples(analyzeStart, 0)...); err != nil {
		t.Fatal(err)
	}
	return s
}

// analyzeSamples renders the known series for the two hours from start (the switch at
// start+1h), one sample every 15 s starting offset past each minute.
func analyzeSamples(start time.Time, offset time.Duration) []embedded.Sample {
	switchAt, end := start.Add(time.Hour), start.Add(2*time.Hour)
	type cum struct{ ok, errs, fast, all, sum float64 }
	state := map[string]*cum{"c1": {}, "c2": {}, "c3": {}}
	var samples []embedded.Sample
	for at := start.Add(-5*time.Minute + offset); !at.After(end); at = at.Add(15 * time.Second) {
		// the interval (end−1m, end] this sample belongs to
		k := int(math.Ceil(at.Sub(start).Minutes()))
		after := at.After(switchAt)
		for _, c := range []string{"c1", "c2", "c3"} {
			st := state[c]
			sign := 1.0
			if k%2 != 0 {
				sign = -1
			}
			errs, mean, slow, cpu := 10+2*sign, 0.100, 0.05, 1.0
			if c == "c1" && after {
				errs, mean, slow, cpu = 20+4*sign, 0.150, 0.10, 1.2
			}
			if c != "c1" {
				errs = 10 - 2*sign
			}
			n := 1000.0 / 4
			st.errs += errs / 4
			st.ok += n - errs/4
			st.all += n
			st.fast += n * (1 - slow)
			st.sum += n * mean
			cpu *= 1 + 0.02*float64(((k%5)+5)%5-2)
			lbl := func(kv ...string) map[string]string {
				m := map[string]string{"cluster": c}
				for i := 0; i+1 < len(kv); i += 2 {
					m[kv[i]] = kv[i+1]
				}
				return m
			}
			samples = append(samples,
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "200"), Time: at, Value: st.ok},
				embedded.Sample{Metric: "http_requests_total", Labels: lbl("code", "500"), Time: at, Value: st.errs},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "0.5"), Time: at, Value: st.fast},
				embedded.Sample{Metric: "http_request_duration_seconds_bucket", Labels: lbl("le", "+Inf"), Time: at, Value: st.all},
				embedded.Sample{Metric: "http_request_duration_seconds_sum", Labels: lbl(), Time: at, Value: st.sum},
				embedded.Sample{Metric: "http_request_duration_seconds_count", Labels: lbl(), Time: at, Value: st.all},
				embedded.Sample{Metric: "cpu_per_request", Labels: lbl(), Time: at, Value: cpu},
			)
		}
	}
	return samples
}

type analyzeJSON struct {
	Kind    string `json:"kind"`
	Verdict string `json:"verdict"`
	Window  struct {
		From time.Time `json:"from"`
		To   time.Time `json:"to"`
		Step string    `json:"step"`
	} `json:"window"`
	KPIs []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Canary struct {
			N    int      `json:"n"`
			Mean *float64 `json:"mean"`
			SD   *float64 `json:"sd"`
			Rate *float64 `json:"rate"`
		} `json:"canary"`
		Baseline struct {
			Mean *float64 `json:"mean"`
			SD   *float64 `json:"sd"`
			Rate *float64 `json:"rate"`
		} `json:"baseline"`
		Effect struct {
			Estimate    *float64 `json:"estimate"`
			PreAdjusted bool     `json:"preAdjusted"`
		} `json:"effect"`
		Tests []struct {
			Method    string   `json:"method"`
			Statistic *float64 `json:"statistic"`
			PValue    float64  `json:"pValue"`
			PAdjusted float64  `json:"pAdjusted"`
			Estimate  *float64 `json:"estimate"`
		} `json:"tests"`
		Kayenta struct {
			Classification string `json:"classification"`
		} `json:"kayenta"`
		Noise *struct {
			HistoryIntervals int      `json:"historyIntervals"`
			ClusterSD        *float64 `json:"clusterSD"`
			Offset           *float64 `json:"offset"`
			OffsetIgnored    bool     `json:"offsetIgnored"`
			Fallback         string   `json:"fallback"`
		} `json:"noise"`
	} `json:"kpis"`
	PrePeriod *struct {
		From      time.Time `json:"from"`
		To        time.Time `json:"to"`
		Intervals int       `json:"intervals"`
	} `json:"prePeriod"`
}

func near(a *float64, want, tol float64) bool { return a != nil && math.Abs(*a-want) <= tol }

func TestAnalyzeEmbedded(t *testing.T) {
	prom := analyzeProm(t)
	dir := t.TempDir()
	expFile := filepath.Join(dir, "exp.yaml")
	body := strings.Replace(analyzeExperiment, "PROM", prom.URL(), 1) + "  " + strings.ReplaceAll(strings.TrimRight(analyzeKPIs, "\n"), "\n", "\n  ") + "\n"
	if err := os.WriteFile(expFile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	kpiFile := filepath.Join(dir, "kpis.yaml")
	if err := os.WriteFile(kpiFile, []byte(analyzeKPIs), 0o644); err != nil {
		t.Fatal(err)
	}
	from, to := analyzeSwitch.Format(time.RFC3339), analyzeEnd.Format(time.RFC3339)
	preFrom, preTo := analyzeStart.Format(time.RFC3339), analyzeSwitch.Format(time.RFC3339)

	code, byExp, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--pre-from", preFrom, "--pre-to", preTo, "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r analyzeJSON
	if err := json.Unmarshal([]byte(byExp), &r); err != nil {
		t.Fatalf("%v\n%s", err, byExp)
	}
	if r.Kind != "analysis" || r.Verdict != "harm" || r.Window.Step != "1m" || !r.Window.From.Equal(analyzeSwitch) || !r.Window.To.Equal(analyzeEnd) {
		t.Errorf("analysis %s/%s window %+v", r.Kind, r.Verdict, r.Window)
	}
	if len(r.KPIs) != 4 {
		t.Fatalf("want errors, latency slow share, latency mean, cpu; got %d KPIs", len(r.KPIs))
	}
	errs, slow, mean, cpu := r.KPIs[0], r.KPIs[1], r.KPIs[2], r.KPIs[3]
	// Counts: exactly 2% against 1% over 60 intervals of 1000 requests per cluster.
	if errs.Canary.N != 60 || !near(errs.Canary.Rate, 0.02, 1e-9) || !near(errs.Baseline.Rate, 0.01, 1e-9) {
		t.Errorf("error rates: n %d canary %v baseline %v", errs.Canary.N, errs.Canary.Rate, errs.Baseline.Rate)
	}
	if rt := errs.Tests[0]; rt.Method != "binomial-rate" || !near(rt.Estimate, 2, 1e-9) || rt.PValue > 1e-12 {
		t.Errorf("rate test %+v", rt)
	}
	// Welch on per-interval rates: canary 0.02 ± 0.004, baselines 0.01 ± 0.002 alternating.
	sd := func(a float64) float64 { return a * math.Sqrt(60.0/59) }
	wantT := 0.01 / math.Sqrt(sd(0.004)*sd(0.004)/60+sd(0.002)*sd(0.002)/60)
	if w := errs.Tests[1]; w.Method != "welch-t" || !near(w.Statistic, wantT, 1e-6) || !near(errs.Canary.SD, sd(0.004), 1e-9) {
		t.Errorf("welch %+v (want t %.6f), canary sd %v", w, wantT, errs.Canary.SD)
	}
	if errs.Status != "harm" || !errs.Effect.PreAdjusted || !near(errs.Effect.Estimate, 1, 0.02) || errs.Kayenta.Classification != "High" {
		t.Errorf("errors: status %s effect %v pre %v kayenta %s", errs.Status, errs.Effect.Estimate, errs.Effect.PreAdjusted, errs.Kayenta.Classification)
	}
	if !near(slow.Canary.Rate, 0.10, 1e-9) || !near(slow.Baseline.Rate, 0.05, 1e-9) {
		t.Errorf("slow share %v / %v", slow.Canary.Rate, slow.Baseline.Rate)
	}
	if !near(mean.Canary.Mean, 0.150, 1e-9) || !near(mean.Baseline.Mean, 0.100, 1e-9) || !near(mean.Effect.Estimate, 0.5, 1e-6) {
		t.Errorf("latency mean %v / %v, effect %v", mean.Canary.Mean, mean.Baseline.Mean, mean.Effect.Estimate)
	}
	if !near(cpu.Canary.Mean, 1.2, 1e-9) || !near(cpu.Baseline.Mean, 1.0, 1e-9) || cpu.Status != "harm" {
		t.Errorf("cpu %v / %v %s", cpu.Canary.Mean, cpu.Baseline.Mean, cpu.Status)
	}
	// The explicit history window is where each KPI learned its noise and offset from, and
	// it is declared to be before the change: the offset is subtracted.
	if r.PrePeriod == nil || r.PrePeriod.Intervals != 60 || !r.PrePeriod.To.Equal(analyzeSwitch) {
		t.Errorf("history window %+v", r.PrePeriod)
	}
	for _, k := range r.KPIs {
		if k.Noise == nil || k.Noise.HistoryIntervals != 60 || k.Noise.ClusterSD == nil || k.Noise.OffsetIgnored {
			t.Errorf("%s: noise %+v", k.Name, k.Noise)
		}
	}
	for _, k := range r.KPIs {
		for _, ts := range k.Tests {
			if ts.PAdjusted < ts.PValue {
				t.Errorf("%s %s: Holm-adjusted p %v below p %v", k.Name, ts.Method, ts.PAdjusted, ts.PValue)
			}
		}
	}

	// The same KPIs from a --kpi file give the same evidence.
	code, byKPI, stderr := runCLI(t, "analyze", "--kpi", kpiFile, "--prometheus", prom.URL(), "--canary", "c1", "--baseline", "c2,c3",
		"--from", from, "--to", to, "--pre-from", preFrom, "--pre-to", preTo, "--format", "json")
	if code != exitOK {
		t.Fatalf("--kpi: exit %d: %s", code, stderr)
	}
	var r2 map[string]json.RawMessage
	var r1 map[string]json.RawMessage
	_ = json.Unmarshal([]byte(byExp), &r1)
	_ = json.Unmarshal([]byte(byKPI), &r2)
	if string(r1["kpis"]) != string(r2["kpis"]) {
		t.Error("--experiment and --kpi give different KPI evidence")
	}

	if *update {
		writeAnalyzeExamples(t, prom.URL(), expFile, from, to, preFrom, preTo)
	}

	// A 2-minute step renders the queries with [2m]: half as many intervals, the same rates
	// (up to increase()'s extrapolation over the alternating error counts).
	code, by2m, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--step", "2m", "--format", "json")
	if code != exitOK {
		t.Fatalf("--step 2m: exit %d: %s", code, stderr)
	}
	var r2m analyzeJSON
	if err := json.Unmarshal([]byte(by2m), &r2m); err != nil {
		t.Fatal(err)
	}
	if r2m.Window.Step != "2m" || r2m.KPIs[0].Canary.N != 30 || !near(r2m.KPIs[0].Canary.Rate, 0.02, 1e-3) || !near(r2m.KPIs[0].Baseline.Rate, 0.01, 5e-4) {
		t.Errorf("--step 2m: step %s, n %d, rates %v / %v", r2m.Window.Step, r2m.KPIs[0].Canary.N, *r2m.KPIs[0].Canary.Rate, *r2m.KPIs[0].Baseline.Rate)
	}

	// By default the history is the experiment's analysis.history (6h) before --from, read
	// as a run reads it (here the hour or so of data there is); the arrival of the variant is not
	// declared, so the offset is shown but not subtracted. --history 0 reads none.
	code, byDefault, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--format", "json")
	var rd analyzeJSON
	if code != exitOK || json.Unmarshal([]byte(byDefault), &rd) != nil {
		t.Fatalf("default history: exit %d: %s", code, stderr)
	}
	if rd.PrePeriod == nil || rd.PrePeriod.Intervals < 60 || !rd.PrePeriod.To.Equal(analyzeSwitch) || rd.KPIs[0].Effect.PreAdjusted ||
		rd.KPIs[0].Noise == nil || !rd.KPIs[0].Noise.OffsetIgnored || rd.KPIs[0].Noise.HistoryIntervals < 60 {
		t.Errorf("default history: %+v, errors effect %+v noise %+v", rd.PrePeriod, rd.KPIs[0].Effect, rd.KPIs[0].Noise)
	}
	code, byNone, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--history", "0", "--format", "json")
	var rn analyzeJSON
	if code != exitOK || json.Unmarshal([]byte(byNone), &rn) != nil {
		t.Fatalf("--history 0: exit %d: %s", code, stderr)
	}
	if rn.PrePeriod != nil || rn.KPIs[0].Noise == nil || rn.KPIs[0].Noise.Fallback == "" || rn.KPIs[0].Status != "harm" {
		t.Errorf("--history 0: history %+v, errors %s noise %+v", rn.PrePeriod, rn.KPIs[0].Status, rn.KPIs[0].Noise)
	}

	// Without a pre-period, as HTML and Markdown.
	out := filepath.Join(dir, "a.html")
	if code, _, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "-o", out); code != exitOK {
		t.Fatalf("html: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "Verdict analysis: analyze-me") || strings.Count(string(b), `class="chart chart-values"`) != 4 {
		t.Errorf("html analysis:\n%.300s", b)
	}
	code, md, _ := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--baseline", "c2")
	if code != exitOK || !strings.Contains(md, "# Verdict analysis: analyze-me — HARM") || !strings.Contains(md, "| Baselines | c2 |") {
		t.Errorf("markdown analysis:\n%.500s", md)
	}
}

func TestAnalyzeBadInput(t *testing.T) {
	prom := analyzeProm(t)
	dir := t.TempDir()
	kpiFile := filepath.Join(dir, "kpis.yaml")
	if err := os.WriteFile(kpiFile, []byte(analyzeKPIs), 0o644); err != nil {
		t.Fatal(err)
	}
	badKPI := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badKPI, []byte(strings.Replace(analyzeKPIs, "type: gauge", "type: gauje", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"analyze", "--kpi", kpiFile, "--prometheus", prom.URL(), "--canary", "c1", "--baseline", "c2,c3"}
	from, to := analyzeSwitch.Format(time.RFC3339), analyzeEnd.Format(time.RFC3339)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"from after to", append(base, "--from", to, "--to", from), exitInvalid, "--from 2026-11-23T07:00:00Z is not before --to 2026-11-23T06:00:00Z"},
		{"bad time", append(base, "--from", "yesterday", "--to", to), exitInvalid, `--from "yesterday": not an RFC 3339 time`},
		{"no from", append(base, "--to", to), exitInvalid, "--from is required"},
		{"window with no data", append(base, "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-20T01:00:00Z"), exitInvalid,
			"no data for canary c1 and baselines c2, c3 between 2026-11-20T00:00:00Z and 2026-11-20T01:00:00Z"},
		{"unknown cluster", []string{"analyze", "--kpi", kpiFile, "--prometheus", prom.URL(), "--canary", "c9", "--baseline", "c2", "--from", from, "--to", to}, exitInvalid, "no data for canary c9"},
		{"window shorter than a step", append(base, "--from", from, "--to", analyzeSwitch.Add(30*time.Second).Format(time.RFC3339)), exitInvalid, "holds no whole 1m interval"},
		{"pre-period overlaps", append(base, "--from", from, "--to", to, "--pre-from", analyzeStart.Format(time.RFC3339), "--pre-to", to), exitInvalid, "must end before the window starts"},
		{"history and pre-period", append(base, "--from", from, "--to", to, "--history", "1h", "--pre-from", analyzeStart.Format(time.RFC3339), "--pre-to", from), exitInvalid, "give --history or --pre-from/--pre-to, not both"},
		{"negative history", append(base, "--from", from, "--to", to, "--history", "-1h"), exitInvalid, "--history must not be negative"},
		{"pre-from alone", append(base, "--from", from, "--to", to, "--pre-from", analyzeStart.Format(time.RFC3339)), exitInvalid, "--pre-from and --pre-to go together"},
		{"no KPIs", []string{"analyze", "--from", from, "--to", to}, exitInvalid, "--experiment FILE or --kpi FILE"},
		{"kpi without clusters", []string{"analyze", "--kpi", kpiFile, "--prometheus", prom.URL(), "--from", from, "--to", to}, exitInvalid, "--kpi needs --canary and --baseline"},
		{"bad kpi file", []string{"analyze", "--kpi", badKPI, "--prometheus", prom.URL(), "--canary", "c1", "--baseline", "c2", "--from", from, "--to", to}, exitInvalid, "bad.yaml:13:5: kpis[2].type"},
		{"bad format", append(base, "--from", from, "--to", to, "--format", "pdf"), exitInvalid, "--format must be md, html or json"},
		{"unreachable", []string{"analyze", "--kpi", kpiFile, "--prometheus", "http://127.0.0.1:1", "--canary", "c1", "--baseline", "c2", "--from", from, "--to", to}, exitError, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q, want %q", code, tc.code, stderr, tc.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                       now,
		"-2h":                       now.Add(-2 * time.Hour),
		"-90m":                      now.Add(-90 * time.Minute),
		"-1d":                       now.Add(-24 * time.Hour),
		"+5m":                       now.Add(5 * time.Minute),
		"2026-11-23T08:00:00Z":      time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC),
		"2026-11-23T09:30:00+01:00": time.Date(2026, 11, 23, 8, 30, 0, 0, time.UTC),
	} {
		got, err := parseTime("from", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-2x", "tomorrow", "2026-11-23 08:00"} {
		if _, err := parseTime("from", bad, now); err == nil {
			t.Errorf("parseTime(%q) accepted", bad)
		}
	}
}

// writeAnalyzeExamples refreshes docs/examples/analyze.{md,html,json} (go test -update).
func writeAnalyzeExamples(t *testing.T, promURL, expFile, from, to, preFrom, preTo string) {
	t.Helper()
	dir := filepath.Join("..", "..", "docs", "examples")
	for _, name := range []string{"analyze.md", "analyze.html", "analyze.json"} {
		file := filepath.Join(dir, name)
		if code, _, stderr := runCLI(t, "analyze", "--experiment", expFile, "--from", from, "--to", to, "--pre-from", preFrom, "--pre-to", preTo, "-o", file); code != exitOK {
			t.Fatalf("%s: exit %d: %s", name, code, stderr)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "analyze*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(strings.ReplaceAll(string(b), promURL, "http://prometheus.monitoring:9090")), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
