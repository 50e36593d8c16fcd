package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// acceptHeader asks for the text exposition format, which expfmt decodes.
const acceptHeader = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

// maxScrapeBytes bounds one scrape body.
const maxScrapeBytes = 64 << 20

type target struct {
	url    string
	labels labels.Labels // target labels: the caller's plus job and instance
	// last holds the series of the last successful scrape, to write staleness markers for
	// the ones that disappear, as Prometheus does.
	last    map[string]labels.Labels
	stop    context.CancelFunc
	done    chan struct{}
	running bool
	lastTS  int64
	// mu serialises scrapes of one target: the loop and Scrape may overlap.
	mu sync.Mutex
}

// AddTarget scrapes rawURL (a full URL; a missing path means /metrics) every ScrapeInterval
// and adds lbls to every scraped series. lbls must set the cluster label
// (Options.ClusterLabel); "job" defaults to "verdict" and "instance" to the URL's host:port.
// Scraping starts at Start, or at once if the server has started.
func (s *Server) AddTarget(rawURL string, lbls map[string]string) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("embedded Prometheus: target %q is not an http(s) URL", rawURL)
	}
	if u.Path == "" {
		u.Path = "/metrics"
	}
	if lbls[s.opts.ClusterLabel] == "" {
		return fmt.Errorf("embedded Prometheus: target %s has no %q label", u.Redacted(), s.opts.ClusterLabel)
	}
	b := labels.NewBuilder(labels.EmptyLabels())
	b.Set("job", "verdict")
	b.Set("instance", u.Host)
	for k, v := range lbls {
		b.Set(k, v)
	}
	key := u.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("embedded Prometheus: AddTarget after Close")
	}
	if _, ok := s.targets[key]; ok {
		return fmt.Errorf("embedded Prometheus: target %s already added", u.Redacted())
	}
	t := &target{url: key, labels: b.Labels(), last: map[string]labels.Labels{}}
	s.targets[key] = t
	if s.started {
		s.startLoop(t)
	}
	return nil
}

// RemoveTarget stops scraping rawURL and marks its series stale, so queries see the cluster
// stop reporting at once instead of after the lookback delta.
func (s *Server) RemoveTarget(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("embedded Prometheus: target %q: %w", rawURL, err)
	}
	if u.Path == "" {
		u.Path = "/metrics"
	}
	s.mu.Lock()
	t, ok := s.targets[u.String()]
	if ok {
		delete(s.targets, u.String())
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("embedded Prometheus: no target %s", u.Redacted())
	}
	if t.running {
		t.stop()
		<-t.done
	}
	return s.markStale(t, s.opts.Now())
}

// Scrape scrapes every target once, now, and returns the joined scrape errors. It lets tests
// and simulations drive scrapes without waiting for the interval; the periodic loop keeps
// running alongside.
func (s *Server) Scrape(ctx context.Context) error {
	s.mu.Lock()
	ts := make([]*target, 0, len(s.targets))
	for _, t := range s.targets {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, s.scrapeOnce(ctx, t))
	}
	return errors.Join(errs...)
}

// startLoop must be called with s.mu held.
func (s *Server) startLoop(t *target) {
	ctx, cancel := context.WithCancel(s.loopCtx)
	t.stop, t.done, t.running = cancel, make(chan struct{}), true
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		defer close(t.done)
		tick := time.NewTicker(s.opts.ScrapeInterval)
		defer tick.Stop()
		// Like Prometheus, the first scrape waits (Prometheus waits a random offset; we wait
		// the interval, which keeps explicit Scrape calls in tests deterministic).
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := s.scrapeOnce(ctx, t); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("scrape failed", "target", redact(t.url), "err", err)
			}
		}
	}()
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

func (s *Server) scrapeOnce(ctx context.Context, t *target) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	start := s.opts.Now()
	ts := start.UnixMilli()
	if ts <= t.lastTS {
		ts = t.lastTS + 1 // two scrapes in one millisecond: keep timestamps increasing
	}
	t.lastTS = ts
	samples, err := s.fetch(ctx, t, start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	dur := s.opts.Now().Sub(start).Seconds()
	app := s.db.Appender(context.Background())
	up := 1.0
	if err != nil {
		up = 0
	}
	meta := func(name string, v float64) error {
		b := labels.NewBuilder(t.labels)
		b.Set(labels.MetricName, name)
		_, aerr := app.Append(0, b.Labels(), ts, v)
		return aerr
	}
	if aerr := errors.Join(meta("up", up), meta("scrape_duration_seconds", dur)); aerr != nil {
		_ = app.Rollback()
		return fmt.Errorf("append scrape metadata: %w", aerr)
	}
	seen := make(map[string]labels.Labels, len(samples))
	var appendErrs int
	for _, smp := range samples {
		k := smp.l.String()
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = smp.l
		t := ts
		if smp.t != 0 {
			t = smp.t
		}
		if _, aerr := app.Append(0, smp.l, t, smp.v); aerr != nil {
			appendErrs++
		}
	}
	if cerr := app.Commit(); cerr != nil {
		return fmt.Errorf("commit scrape of %s: %w", redact(t.url), cerr)
	}
	if err != nil {
		seen = nil
	}
	if serr := s.markStaleExcept(t, time.UnixMilli(ts), seen); serr != nil {
		return serr
	}
	if err != nil {
		return fmt.Errorf("scrape %s: %w", redact(t.url), err)
	}
	if appendErrs > 0 {
		s.opts.Logger.Debug("samples rejected by the TSDB", "target", redact(t.url), "count", appendErrs)
	}
	return nil
}

// markStaleExcept writes a staleness marker for every series of t's last scrape that is not
// in keep, then remembers keep as the last scrape.
func (s *Server) markStaleExcept(t *target, at time.Time, keep map[string]labels.Labels) error {
	app := s.db.Appender(context.Background())
	stale := math.Float64frombits(value.StaleNaN)
	for k, l := range t.last {
		if _, ok := keep[k]; !ok {
			_, _ = app.Append(0, l, at.UnixMilli(), stale)
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("write staleness markers: %w", err)
	}
	if keep == nil {
		keep = map[string]labels.Labels{}
	}
	t.last = keep
	return nil
}

// markStale marks every series of t stale, including its up series (target removed).
func (s *Server) markStale(t *target, at time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ms := at.UnixMilli(); ms <= t.lastTS {
		at = time.UnixMilli(t.lastTS + 1)
	}
	for _, name := range []string{"up", "scrape_duration_seconds"} {
		b := labels.NewBuilder(t.labels)
		b.Set(labels.MetricName, name)
		l := b.Labels()
		t.last[l.String()] = l
	}
	return s.markStaleExcept(t, at, nil)
}

type sample struct {
	l labels.Labels
	t int64
	v float64
}

func (s *Server) fetch(ctx context.Context, t *target, at time.Time) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(s.opts.ScrapeTimeout.Seconds(), 'f', -1, 64))
	req.Header.Set("User-Agent", "verdict-embedded-prometheus/"+Version)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("server returned HTTP status %s", resp.Status)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() == expfmt.TypeUnknown {
		// Prometheus falls back to the text format for a missing or unknown content type.
		format = expfmt.NewFormat(expfmt.TypeTextPlain)
	}
	dec := expfmt.NewDecoder(io.LimitReader(resp.Body, maxScrapeBytes), format)
	var out []sample
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("parse exposition: %w", err)
		}
		out = appendFamily(out, &mf, t.labels)
	}
	return out, nil
}

// appendFamily flattens a metric family into series the way Prometheus stores a classic
// scrape: histograms as _bucket{le}, _sum, _count; summaries as {quantile}, _sum, _count.
// A scraped label that clashes with a target label is kept as exported_<name>
// (honor_labels: false).
func appendFamily(out []sample, mf *dto.MetricFamily, target labels.Labels) []sample {
	name := mf.GetName()
	for _, m := range mf.GetMetric() {
		base := labels.NewBuilder(labels.EmptyLabels())
		for _, lp := range m.GetLabel() {
			n := lp.GetName()
			if target.Has(n) {
				n = "exported_" + n
			}
			base.Set(n, lp.GetValue())
		}
		target.Range(func(l labels.Label) { base.Set(l.Name, l.Value) })
		ts := m.GetTimestampMs()
		add := func(metric string, v float64, extra ...string) {
			b := labels.NewBuilder(base.Labels())
			b.Set(labels.MetricName, metric)
			for i := 0; i+1 < len(extra); i += 2 {
				b.Set(extra[i], extra[i+1])
			}
			out = append(out, sample{l: b.Labels(), t: ts, v: v})
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			add(name, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			add(name, m.GetGauge().GetValue())
		case dto.MetricType_UNTYPED:
			add(name, m.GetUntyped().GetValue())
		case dto.MetricType_SUMMARY:
			sm := m.GetSummary()
			for _, q := range sm.GetQuantile() {
				add(name, q.GetValue(), "quantile", formatFloatLabel(q.GetQuantile()))
			}
			add(name+"_sum", sm.GetSampleSum())
			add(name+"_count", float64(sm.GetSampleCount()))
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.GetHistogram()
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			sawInf := false
			for _, bk := range h.GetBucket() {
				c := float64(bk.GetCumulativeCount())
				if bk.CumulativeCountFloat != nil {
					c = bk.GetCumulativeCountFloat()
				}
				if math.IsInf(bk.GetUpperBound(), 1) {
					sawInf = true
				}
				add(name+"_bucket", c, "le", formatFloatLabel(bk.GetUpperBound()))
			}
			if !sawInf {
				add(name+"_bucket", count, "le", "+Inf")
			}
			add(name+"_sum", h.GetSampleSum())
			add(name+"_count", count)
		}
	}
	return out
}

// formatFloatLabel formats le and quantile values as Prometheus 3 normalises them
// ("1" becomes "1.0"), so queries matching le="1.0" work on both.
func formatFloatLabel(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}
