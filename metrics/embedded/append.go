package embedded

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Sample is one value of one series, for loading data without scraping (tests, simulations
// on virtual time, backfilling a pre-period).
type Sample struct {
	// Metric is the metric name (__name__).
	Metric string
	// Labels are the series' other labels, the cluster label among them.
	Labels map[string]string
	// Time is the sample's timestamp (stored with millisecond precision).
	Time  time.Time
	Value float64
}

// Append writes samples to the TSDB in one transaction. Samples of one series must be in
// time order and newer than what the series already holds, and, as in Prometheus's head
// block, no sample may be more than an hour older than the newest one appended so far: load
// history oldest first (LoadOpenMetrics sorts for you). Otherwise the whole call fails,
// naming the first rejected series.
func (s *Server) Append(samples ...Sample) error {
	app := s.db.Appender(context.Background())
	for _, smp := range samples {
		if smp.Metric == "" {
			_ = app.Rollback()
			return errors.New("embedded Prometheus: sample without a metric name")
		}
		b := labels.NewBuilder(labels.EmptyLabels())
		for k, v := range smp.Labels {
			b.Set(k, v)
		}
		b.Set(labels.MetricName, smp.Metric)
		l := b.Labels()
		if _, err := app.Append(0, l, smp.Time.UnixMilli(), smp.Value); err != nil {
			_ = app.Rollback()
			return fmt.Errorf("embedded Prometheus: append %s at %s: %w", seriesName(smp), smp.Time.UTC().Format(time.RFC3339Nano), err)
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("embedded Prometheus: commit samples: %w", err)
	}
	return nil
}

// LoadOpenMetrics appends every sample of an OpenMetrics text file — the input of
// `promtool tsdb create-blocks-from openmetrics` — so that the same file can be loaded into
// the embedded server and into a real Prometheus. Every sample must carry a timestamp
// (seconds). Metadata lines are skipped; histograms and summaries are stored as their flat
// series, as Prometheus stores a classic scrape. It returns the number of samples loaded.
func (s *Server) LoadOpenMetrics(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	var all []Sample
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "# EOF" {
			break
		}
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		smp, err := parseOpenMetricsLine(text)
		if err != nil {
			return 0, fmt.Errorf("embedded Prometheus: OpenMetrics line %d: %w", line, err)
		}
		all = append(all, smp)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("embedded Prometheus: read OpenMetrics: %w", err)
	}
	// The file is grouped by series; the head block wants time order across series.
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	n := 0
	for len(all) > 0 {
		batch := all[:min(len(all), 5000)]
		if err := s.Append(batch...); err != nil {
			return n, err
		}
		n += len(batch)
		all = all[len(batch):]
	}
	return n, nil
}

// seriesName formats a sample's series as Prometheus prints it: name{label="value",...}.
func seriesName(smp Sample) string {
	m := model.Metric{model.MetricNameLabel: model.LabelValue(smp.Metric)}
	for k, v := range smp.Labels {
		m[model.LabelName(k)] = model.LabelValue(v)
	}
	return m.String()
}

// parseOpenMetricsLine parses `name{a="b",...} value timestamp`.
func parseOpenMetricsLine(text string) (Sample, error) {
	var smp Sample
	i := strings.IndexAny(text, "{ ")
	if i <= 0 {
		return smp, fmt.Errorf("no metric name in %q", text)
	}
	smp.Metric = text[:i]
	if !model.UTF8Validation.IsValidMetricName(smp.Metric) {
		return smp, fmt.Errorf("invalid metric name %q", smp.Metric)
	}
	rest := text[i:]
	if rest[0] == '{' {
		lbls, after, err := parseLabels(rest[1:])
		if err != nil {
			return smp, err
		}
		smp.Labels, rest = lbls, after
	}
	fields := strings.Fields(rest)
	if len(fields) < 2 {
		return smp, fmt.Errorf("want a value and a timestamp in %q", text)
	}
	v, err := parseOMFloat(fields[0])
	if err != nil {
		return smp, fmt.Errorf("invalid value %q", fields[0])
	}
	ts, err := strconv.ParseFloat(fields[1], 64)
	if err != nil || math.IsNaN(ts) || math.IsInf(ts, 0) {
		return smp, fmt.Errorf("invalid timestamp %q", fields[1])
	}
	smp.Value = v
	smp.Time = time.UnixMilli(int64(math.Round(ts * 1000))).UTC()
	return smp, nil
}

func parseOMFloat(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// parseLabels parses `a="b",c="d"}` and returns what follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	out := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ")
		if strings.HasPrefix(s, "}") {
			return out, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, "", errors.New("malformed label set")
		}
		name := strings.TrimSpace(s[:eq])
		s = s[eq+1:]
		if !strings.HasPrefix(s, `"`) {
			return nil, "", fmt.Errorf("label %s: value not quoted", name)
		}
		var b strings.Builder
		j := 1
		for ; j < len(s); j++ {
			c := s[j]
			if c == '\\' && j+1 < len(s) {
				j++
				switch s[j] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[j])
				}
				continue
			}
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		if j >= len(s) {
			return nil, "", fmt.Errorf("label %s: unterminated value", name)
		}
		out[name] = b.String()
		s = strings.TrimLeft(s[j+1:], " ")
		if strings.HasPrefix(s, ",") {
			s = s[1:]
		}
	}
}
