package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/metrics/embedded"
)

// openMetrics renders samples as an OpenMetrics file that promtool and the embedded loader
// both read: no TYPE lines (every sample is stored as a flat series either way), series of
// one metric together, each series in time order.
func openMetrics(samples []embedded.Sample) string {
	type series struct{ lines []string }
	byKey := map[string]*series{}
	var keys []string
	for _, s := range samples {
		names := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			names = append(names, k)
		}
		sort.Strings(names)
		var lbl []string
		for _, k := range names {
			lbl = append(lbl, fmt.Sprintf("%s=%q", k, s.Labels[k]))
		}
		key := s.Metric + "{" + strings.Join(lbl, ",") + "}"
		sr := byKey[key]
		if sr == nil {
			sr = &series{}
			byKey[key] = sr
			keys = append(keys, key)
		}
		sr.lines = append(sr.lines, fmt.Sprintf("%s %s %d", key, fmt.Sprint(s.Value), s.Time.Unix()))
	}
	sort.SliceStable(keys, func(i, j int) bool {
		return keys[i][:strings.IndexByte(keys[i], '{')] < keys[j][:strings.IndexByte(keys[j], '{')]
	})
	var b strings.Builder
	for _, k := range keys {
		for _, l := range byKey[k].lines {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRealPrometheus loads the OpenMetrics file into TSDB blocks with promtool and starts
// Debian's prometheus on them; it is skipped without the binaries unless CI=true.
func startRealPrometheus(t *testing.T, om string) string {
	t.Helper()
	bin, err1 := exec.LookPath("prometheus")
	promtool, err2 := exec.LookPath("promtool")
	if err1 != nil || err2 != nil {
		msg := "prometheus and promtool are not on PATH (apt-get install prometheus): skipping the real-Prometheus comparison"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	in := filepath.Join(dir, "input.om")
	if err := os.WriteFile(in, []byte(om), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", in, data).CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\nscrape_configs: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs logBuffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+data, "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	url := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := client.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60s\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameNumbers compares two decoded JSON values, numbers within a relative 1e-9.
func sameNumbers(path string, a, b any) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return []string{path + ": different objects"}
		}
		var out []string
		for k := range av {
			out = append(out, sameNumbers(path+"."+k, av[k], bv[k])...)
		}
		return out
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return []string{path + ": different arrays"}
		}
		var out []string
		for i := range av {
			out = append(out, sameNumbers(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i])...)
		}
		return out
	case float64:
		bv, ok := b.(float64)
		if !ok || math.Abs(av-bv) > 1e-9*math.Max(1, math.Abs(av)) {
			return []string{fmt.Sprintf("%s: %v vs %v", path, a, b)}
		}
		return nil
	default:
		if fmt.Sprint(a) != fmt.Sprint(b) {
			return []string{fmt.Sprintf("%s: %v vs %v", path, a, b)}
		}
		return nil
	}
}

// TestAnalyzeRealPrometheus runs analyze on the same known series in Debian's Prometheus
// and in the embedded one: the evidence must agree, and match the known statistics.
// Samples sit 7 s past the interval boundaries, where Prometheus 2 and 3 agree.
func TestAnalyzeRealPrometheus(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Minute).Add(-2*time.Hour - time.Minute)
	samples := analyzeSamples(start, 7*time.Second)
	om := openMetrics(samples)
	realURL := startRealPrometheus(t, om)
	emb, err := embedded.New(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	if _, err := emb.LoadOpenMetrics(strings.NewReader(om)); err != nil {
		t.Fatal(err)
	}
	kpiFile := filepath.Join(t.TempDir(), "kpis.yaml")
	if err := os.WriteFile(kpiFile, []byte(analyzeKPIs), 0o644); err != nil {
		t.Fatal(err)
	}
	rfc := func(t time.Time) string { return t.Format(time.RFC3339) }
	results := map[string]map[string]any{}
	for name, url := range map[string]string{"real": realURL, "embedded": emb.URL()} {
		code, out, stderr := runCLI(t, "analyze", "--kpi", kpiFile, "--prometheus", url, "--canary", "c1", "--baseline", "c2,c3",
			"--from", rfc(start.Add(time.Hour)), "--to", rfc(start.Add(2*time.Hour)), "--pre-from", rfc(start), "--pre-to", rfc(start.Add(time.Hour)), "--format", "json")
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", name, code, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		results[name] = m
	}
	if diffs := sameNumbers("kpis", results["real"]["kpis"], results["embedded"]["kpis"]); len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = diffs[:10]
		}
		t.Errorf("real and embedded Prometheus disagree:\n%s", strings.Join(diffs, "\n"))
	}
	var r analyzeJSON
	b, _ := json.Marshal(results["real"])
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.KPIs) != 4 || !near(r.KPIs[0].Canary.Rate, 0.02, 1e-9) || !near(r.KPIs[0].Baseline.Rate, 0.01, 1e-9) || r.KPIs[0].Canary.N != 60 ||
		!near(r.KPIs[2].Canary.Mean, 0.15, 1e-9) || !near(r.KPIs[3].Canary.Mean, 1.2, 1e-9) || r.Verdict != "harm" {
		t.Errorf("real Prometheus: %s", b)
	}
}
