package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/verdict-dev/verdict/store"
)

// promQuery runs an instant query against the world's embedded Prometheus.
func (w *world) promQuery(q string) []struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
} {
	w.t.Helper()
	resp, err := http.Get(w.prom.URL() + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		w.t.Fatal(err)
	}
	return out.Data.Result
}

// TestMetricsScrapedByPrometheus: the embedded Prometheus scrapes /metrics and sees the
// experiment's phase go from Ramping to Promoted, with the counters that go with it.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	w := newWorld(t)
	// A notification target that fails, with a secret in its URL that must never show.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
	defer hook.Close()
	var logs syncBuffer
	s := w.server(func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.LookupEnv = func(k string) (string, bool) {
			if k == "HOOK_URL" {
				return hook.URL + "/hook?token=SECRET-XYZ", true
			}
			return "", false
		}
	})
	if err := w.prom.AddTarget(s.URL()+"/metrics", map[string]string{"cluster": "verdict"}); err != nil {
		t.Fatal(err)
	}
	w.write("good.yaml", w.experiment("good", "a", "3m")+"  notify:\n    - webhook: {url: \"${HOOK_URL}\"}\n")
	s.Rescan()
	c := &client{t: t, base: s.URL()}
	id := c.waitRun("good")
	phase := func(p string) bool {
		return len(w.promQuery(`verdict_experiment_phase{experiment="good",phase="`+p+`"} == 1`)) == 1 &&
			len(w.promQuery(`verdict_experiment_info{experiment="good",run="`+id+`"}`)) == 1
	}
	eventually(t, "Ramping scraped", func() bool { return phase("Ramping") })
	eventually(t, "run promoted", func() bool { return c.run(id).State == store.StatePromoted })
	eventually(t, "Promoted scraped", func() bool { return phase("Promoted") })
	if len(w.promQuery(`verdict_promotions_total{experiment="good"} == 1`)) != 1 {
		t.Errorf("promotions counter not scraped")
	}
	if len(w.promQuery(`verdict_decisions_total{experiment="good",action="advance"} >= 2`)) != 1 {
		t.Errorf("decision counter not scraped")
	}
	if len(w.promQuery(`verdict_experiment_canary_weight{experiment="good"} > 0.3`)) != 1 {
		t.Errorf("canary weight not scraped")
	}
	if len(w.promQuery(`verdict_cloudflare_requests_total{code="200"} > 0`)) == 0 {
		t.Errorf("cloudflare requests not scraped")
	}

	if len(w.promQuery(`verdict_prometheus_query_duration_seconds_count{experiment="good"} > 0`)) == 0 {
		t.Errorf("query latency not scraped")
	}
	resp, err := http.Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, _ = bufioCopy(buf, resp)
	eventually(t, "notification failures counted", func() bool {
		return len(w.promQuery(`verdict_notification_failures_total{experiment="good"} > 0`)) == 1
	})
	var run struct{ Spec json.RawMessage }
	c.do("GET", "/api/v1/runs/"+id, nil, &run)
	for what, text := range map[string]string{"logs": logs.String(), "metrics": buf.String(), "run": string(run.Spec)} {
		if strings.Contains(text, "SECRET-XYZ") {
			t.Errorf("the webhook's secret shows in the %s", what)
		}
	}
	if !strings.Contains(logs.String(), `"run":"`+id+`"`) {
		t.Errorf("log lines do not carry the run id")
	}
	// Every metric the example Grafana dashboard queries exists.
	dash, err := os.ReadFile("../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`verdict_[a-z_]+`).FindAllString(string(dash), -1) {
		if name == "verdict_overview" {
			continue
		}
		if !strings.Contains(buf.String(), "\n"+strings.TrimSuffix(name, "_bucket")) && !strings.Contains(buf.String(), "# TYPE "+strings.TrimSuffix(name, "_bucket")) {
			t.Errorf("the Grafana dashboard queries %s, which /metrics lacks", name)
		}
	}
	for _, name := range []string{"verdict_experiment_info", "verdict_kpi_effect", "verdict_kpi_status", "verdict_notification_failures_total", "verdict_prometheus_query_errors_total"} {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Running the experiment again replaces its series instead of adding a set per run.
	w.write("good.yaml", strings.Replace(w.experiment("good", "a", "3m"), "test experiment good", "test experiment good, again", 1)+"  notify:\n    - webhook: {url: \"${HOOK_URL}\"}\n")
	s.Rescan()
	var id2 string
	eventually(t, "the second run", func() bool { id2 = c.waitRun("good"); return id2 != id })
	eventually(t, "the second run scraped", func() bool {
		return len(w.promQuery(`verdict_experiment_info{experiment="good",run="`+id2+`"}`)) == 1
	})
	if n := len(w.promQuery(`verdict_experiment_info{experiment="good"}`)); n != 1 {
		t.Errorf("%d info series for experiment good after a second run, want 1", n)
	}
	if n := len(w.promQuery(`verdict_experiment_phase{experiment="good"}`)); n != len(states) {
		t.Errorf("%d phase series for experiment good after a second run, want %d", n, len(states))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bufioCopy(b *strings.Builder, resp *http.Response) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		n += int64(k)
		if err != nil {
			return n, nil
		}
	}
}
