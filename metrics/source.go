// Package metrics reads an experiment's KPIs from Prometheus.
//
// Verdict's statistics need counts over non-overlapping intervals, per cluster (see
// docs/statistics.md §1–2), and a Prometheus query that silently returns nothing, or the
// wrong thing, poisons every verdict after it. So this package queries each KPI as one range
// query per role (events, total, buckets, …) evaluated with step = interval over interval-
// aligned boundaries, checks that every series carries the cluster label exactly once,
// separates "no data" from zero, and reports NaN, warnings and counter resets instead of
// hiding them. Check runs all of that for `verdict check` before an experiment starts.
//
// The package takes already-templated PromQL and plain options; it knows nothing of the
// experiment spec.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Options say how to reach Prometheus. Zero fields take the documented defaults.
type Options struct {
	// Address is Prometheus's base URL, e.g. http://prometheus.monitoring:9090. Required.
	Address string
	// ClusterLabel is the label naming a cluster in query results. Default "cluster".
	ClusterLabel string
	// BearerTokenFile holds a bearer token, re-read on every request.
	BearerTokenFile string
	// BasicAuth, when set, authenticates with a username and password.
	BasicAuth *BasicAuth
	// Headers are added to every request (e.g. X-Scope-OrgID for Mimir). Their values are
	// never logged.
	Headers map[string]string
	// TLSCAFile is a PEM file with the CA that signed Prometheus's certificate.
	TLSCAFile string
	// Timeout bounds one attempt of one request, and is sent to Prometheus as the query
	// timeout. Default 30s.
	Timeout time.Duration
	// MaxAttempts is how many times a request is tried when Prometheus is unreachable or
	// answers with a transient error (5xx, 429, timeout). Default 3.
	MaxAttempts int
	// RetryBackoff is the wait before the second attempt, doubled for each later one.
	// Default 500ms.
	RetryBackoff time.Duration
	// Logger receives debug messages about retries. Default: discard.
	Logger *slog.Logger
	// Transport replaces the base HTTP transport (TLSCAFile is then ignored). For tests and
	// for embedding in a process with its own transport.
	Transport http.RoundTripper
}

func (o *Options) fill() {
	if o.ClusterLabel == "" {
		o.ClusterLabel = "cluster"
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Source queries one Prometheus for KPI values. It is safe for concurrent use. Close it to
// release idle connections.
type Source struct {
	opts   Options
	addr   string // redacted
	client *http.Client
	api    v1.API
}

// New checks the options and builds a Source. It does not contact Prometheus; Version or any
// query does.
func New(opts Options) (*Source, error) {
	opts.fill()
	if opts.Address == "" {
		return nil, errors.New("prometheus address is empty")
	}
	u, err := url.Parse(opts.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus address %q is not an http(s) URL", redactAddress(opts.Address))
	}
	if opts.BasicAuth != nil && opts.BasicAuth.Password != "" && opts.BasicAuth.PasswordFile != "" {
		return nil, errors.New("prometheus basic auth: set password or passwordFile, not both")
	}
	base := opts.Transport
	if base == nil {
		t, err := newTransport(opts.TLSCAFile)
		if err != nil {
			return nil, err
		}
		base = t
	}
	rt := &authTransport{base: base, bearerTokenFile: opts.BearerTokenFile, basic: opts.BasicAuth, headers: opts.Headers}
	client := &http.Client{Transport: rt}
	c, err := api.NewClient(api.Config{Address: opts.Address, Client: client})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", u.Redacted(), err)
	}
	return &Source{opts: opts, addr: u.Redacted(), client: client, api: v1.NewAPI(c)}, nil
}

// Close releases idle connections.
func (s *Source) Close() { s.client.CloseIdleConnections() }

// Address is the Prometheus address with credentials redacted, for reports and logs.
func (s *Source) Address() string { return s.addr }

// ClusterLabel is the label that names a cluster in results.
func (s *Source) ClusterLabel() string { return s.opts.ClusterLabel }

// Version asks Prometheus for its version (/api/v1/status/buildinfo). It doubles as a
// reachability check.
func (s *Source) Version(ctx context.Context) (string, error) {
	var info v1.BuildinfoResult
	err := s.retry(ctx, "buildinfo", func(ctx context.Context) error {
		var err error
		info, err = s.api.Buildinfo(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	return info.Version, nil
}

// Instant runs an instant query at t and returns the result with Prometheus's warnings
// (and, from Prometheus 3, its infos, prefixed "info: ").
func (s *Source) Instant(ctx context.Context, query string, t time.Time) (model.Value, []string, error) {
	var (
		val      model.Value
		warnings []string
	)
	err := s.retry(ctx, query, func(ctx context.Context) error {
		v, w, i, err := s.api.Query(ctx, query, t, v1.WithTimeout(s.opts.Timeout))
		val, warnings = v, withInfos(w, i)
		return err
	})
	return val, warnings, err
}

// Range runs a range query over r (start = first interval end, step = interval) and returns
// the matrix with Prometheus's warnings.
func (s *Source) Range(ctx context.Context, query string, r Range) (model.Matrix, []string, error) {
	if err := r.validate(); err != nil {
		return nil, nil, err
	}
	var (
		val      model.Value
		warnings []string
	)
	err := s.retry(ctx, query, func(ctx context.Context) error {
		v, w, i, err := s.api.QueryRange(ctx, query, v1.Range{Start: r.First(), End: r.End, Step: r.Interval}, v1.WithTimeout(s.opts.Timeout))
		val, warnings = v, withInfos(w, i)
		return err
	})
	if err != nil {
		return nil, warnings, err
	}
	m, ok := val.(model.Matrix)
	if !ok {
		return nil, warnings, &QueryError{Query: query, Type: TypeInvalidResult, Msg: fmt.Sprintf("range query returned a %s, want a matrix", typeName(val))}
	}
	return m, warnings, nil
}

// withInfos appends Prometheus 3's infos ("metric might not be a counter") to the warnings:
// they are exactly the hints `verdict check` should show.
func withInfos(w v1.Warnings, infos v1.Infos) []string {
	out := []string(w)
	for _, i := range infos {
		out = append(out, "info: "+i)
	}
	return out
}

func typeName(v model.Value) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().String()
}

// retry runs one request with a per-attempt timeout, retrying transient failures with
// exponential backoff. It turns the last failure into a single clear error.
func (s *Source) retry(ctx context.Context, query string, f func(context.Context) error) error {
	backoff := s.opts.RetryBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("query %q against %s: %w", query, s.addr, ctx.Err())
		}
		var ce *credentialsError
		if errors.As(err, &ce) {
			return &QueryError{Query: query, Type: "client_error", Msg: ce.msg}
		}
		kind := classify(err)
		if kind == kindPermanent || attempt >= s.opts.MaxAttempts {
			if kind == kindUnreachable {
				return &UnreachableError{Address: s.addr, Cause: rootCause(err, s.opts.Timeout), Attempts: attempt, Err: err}
			}
			return toQueryError(query, err)
		}
		s.opts.Logger.Debug("prometheus request failed, retrying", "address", s.addr, "attempt", attempt, "cause", rootCause(err, s.opts.Timeout))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("query %q against %s: %w", query, s.addr, ctx.Err())
		case <-t.C:
		}
		backoff *= 2
	}
}

// redactAddress removes a password from an address that may not parse as a URL.
func redactAddress(addr string) string {
	if u, err := url.Parse(addr); err == nil {
		return u.Redacted()
	}
	return "(unparseable address)"
}
