package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// Error types, as Prometheus names them in the "errorType" field of an error response.
const (
	errorBadData  = "bad_data"
	errorExec     = "execution"
	errorTimeout  = "timeout"
	errorCanceled = "canceled"
	errorInternal = "internal"
	errorNotFound = "not_found"
)

// Prometheus answers a query cancelled by its client with this non-standard status.
const statusClientClosedConnection = 499

// maxPoints is Prometheus's limit on points per series in a range query.
const maxPoints = 11000

type apiError struct {
	typ string
	err error
}

// Error gives the error type and message, as Prometheus logs them.
func (e *apiError) Error() string { return e.typ + ": " + e.err.Error() }

type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

func (s *Server) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if s.ready.Load() {
			w.WriteHeader(http.StatusOK)
			fmt.Fprintln(w, "Prometheus Server is Ready.")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "Service Unavailable")
	})
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Prometheus Server is Healthy.")
	})
	api := func(f func(*http.Request) (any, []string, []string, *apiError)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !s.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "Service Unavailable")
				return
			}
			if err := r.ParseForm(); err != nil {
				writeError(w, &apiError{errorBadData, fmt.Errorf("error parsing form values: %w", err)})
				return
			}
			data, warnings, infos, aerr := f(r)
			if aerr != nil {
				writeError(w, aerr)
				return
			}
			writeJSON(w, http.StatusOK, response{Status: "success", Data: data, Warnings: warnings, Infos: infos})
		}
	}
	mux.Handle("GET /api/v1/query", api(s.query))
	mux.Handle("POST /api/v1/query", api(s.query))
	mux.Handle("GET /api/v1/query_range", api(s.queryRange))
	mux.Handle("POST /api/v1/query_range", api(s.queryRange))
	mux.Handle("GET /api/v1/series", api(s.series))
	mux.Handle("POST /api/v1/series", api(s.series))
	mux.Handle("GET /api/v1/labels", api(s.labelNames))
	mux.Handle("POST /api/v1/labels", api(s.labelNames))
	mux.Handle("GET /api/v1/label/{name}/values", api(s.labelValues))
	mux.Handle("GET /api/v1/status/buildinfo", api(func(*http.Request) (any, []string, []string, *apiError) {
		return buildInfo(), nil, nil, nil
	}))
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{errorNotFound, fmt.Errorf("endpoint %s is not served by the embedded Prometheus", r.URL.Path)})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(response{Status: "error", ErrorType: errorInternal, Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError answers with Prometheus's error envelope and the status code Prometheus uses
// for each error type (web/api/v1 respondError).
func writeError(w http.ResponseWriter, e *apiError) {
	code := http.StatusInternalServerError
	switch e.typ {
	case errorBadData:
		code = http.StatusBadRequest
	case errorExec:
		code = http.StatusUnprocessableEntity
	case errorCanceled:
		code = statusClientClosedConnection
	case errorTimeout:
		code = http.StatusServiceUnavailable
	case errorNotFound:
		code = http.StatusNotFound
	}
	writeJSON(w, code, response{Status: "error", ErrorType: e.typ, Error: e.err.Error()})
}

func invalidParam(name string, err error) *apiError {
	return &apiError{errorBadData, fmt.Errorf("invalid parameter %q: %w", name, err)}
}

var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// parseTime accepts what Prometheus accepts: Unix seconds with an optional fraction, or
// RFC 3339.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.Form.Get(name)
	if v == "" {
		return def, nil
	}
	return parseTime(v)
}

// parseDuration accepts seconds with an optional fraction or a Prometheus duration ("1m").
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ts := f * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func (s *Server) queryContext(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	ctx := r.Context()
	if to := r.Form.Get("timeout"); to != "" {
		d, err := parseDuration(to)
		if err != nil {
			return nil, nil, invalidParam("timeout", err)
		}
		c, cancel := context.WithTimeout(ctx, d)
		return c, cancel, nil
	}
	return ctx, func() {}, nil
}

func (s *Server) queryOpts() promql.QueryOpts {
	return promql.NewPrometheusQueryOpts(false, s.opts.LookbackDelta, nil)
}

func (s *Server) query(r *http.Request) (any, []string, []string, *apiError) {
	ts, err := parseTimeParam(r, "time", s.opts.Now())
	if err != nil {
		return nil, nil, nil, invalidParam("time", err)
	}
	ctx, cancel, aerr := s.queryContext(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	defer cancel()
	qs := r.Form.Get("query")
	q, err := s.engine.NewInstantQuery(ctx, s.db, s.queryOpts(), qs, ts)
	if err != nil {
		return nil, nil, nil, invalidParam("query", err)
	}
	return s.exec(ctx, q, qs)
}

func (s *Server) queryRange(r *http.Request) (any, []string, []string, *apiError) {
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return nil, nil, nil, invalidParam("start", err)
	}
	end, err := parseTime(r.Form.Get("end"))
	if err != nil {
		return nil, nil, nil, invalidParam("end", err)
	}
	if end.Before(start) {
		return nil, nil, nil, invalidParam("end", errors.New("end timestamp must not be before start time"))
	}
	step, err := parseDuration(r.Form.Get("step"))
	if err != nil {
		return nil, nil, nil, invalidParam("step", err)
	}
	if step <= 0 {
		return nil, nil, nil, invalidParam("step", errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"))
	}
	if end.Sub(start)/step > maxPoints {
		return nil, nil, nil, &apiError{errorBadData, errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")}
	}
	ctx, cancel, aerr := s.queryContext(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	defer cancel()
	qs := r.Form.Get("query")
	q, err := s.engine.NewRangeQuery(ctx, s.db, s.queryOpts(), qs, start, end, step)
	if err != nil {
		return nil, nil, nil, invalidParam("query", err)
	}
	return s.exec(ctx, q, qs)
}

type queryData struct {
	ResultType parser.ValueType `json:"resultType"`
	Result     any              `json:"result"`
}

func (s *Server) exec(ctx context.Context, q promql.Query, qs string) (any, []string, []string, *apiError) {
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, nil, nil, execError(res.Err)
	}
	warnings, infos := res.Warnings.AsStrings(qs, 10, 10)
	if len(warnings) == 0 {
		warnings = nil
	}
	if len(infos) == 0 {
		infos = nil
	}
	return queryData{ResultType: res.Value.Type(), Result: encodeValue(res.Value)}, warnings, infos, nil
}

// execError maps an engine error to Prometheus's error type (web/api/v1 returnAPIError).
func execError(err error) *apiError {
	var (
		eqc promql.ErrQueryCanceled
		eqt promql.ErrQueryTimeout
		es  promql.ErrStorage
	)
	switch {
	case errors.As(err, &eqc):
		return &apiError{errorCanceled, err}
	case errors.As(err, &eqt):
		return &apiError{errorTimeout, err}
	case errors.As(err, &es):
		return &apiError{errorInternal, err}
	case errors.Is(err, context.Canceled):
		return &apiError{errorCanceled, err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{errorTimeout, err}
	}
	return &apiError{errorExec, err}
}

// point is one [timestamp, "value"] pair in Prometheus's JSON encoding.
type point struct {
	T        int64
	V        float64
	S        string
	IsString bool
}

// MarshalJSON writes [seconds, "value"], Prometheus's encoding of a sample: the value is a
// string so that NaN and ±Inf survive JSON.
func (p point) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	b = appendTimestamp(b, p.T)
	b = append(b, ',', '"')
	if p.IsString {
		// Strings are rare (a string literal query); let encoding/json escape them.
		enc, _ := json.Marshal(p.S)
		b = append(b[:len(b)-1], enc...)
		return append(b, ']'), nil
	}
	b = appendFloat(b, p.V)
	return append(b, '"', ']'), nil
}

// appendTimestamp writes milliseconds as seconds with up to three decimals, as Prometheus
// does (util/jsonutil.MarshalTimestamp).
func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		s := fmt.Sprintf("%03d", frac)
		b = append(b, strings.TrimRight(s, "0")...)
	}
	return b
}

// appendFloat formats a sample value as Prometheus does (util/jsonutil.MarshalFloat).
func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  point             `json:"value"`
}

type matrixSeries struct {
	Metric map[string]string `json:"metric"`
	Values []point           `json:"values"`
}

func labelMap(l labels.Labels) map[string]string {
	m := make(map[string]string, l.Len())
	l.Range(func(lb labels.Label) { m[lb.Name] = lb.Value })
	return m
}

func encodeValue(v parser.Value) any {
	switch v := v.(type) {
	case promql.Vector:
		out := make([]vectorSample, 0, len(v))
		for _, s := range v {
			out = append(out, vectorSample{Metric: labelMap(s.Metric), Value: point{T: s.T, V: s.F}})
		}
		return out
	case promql.Matrix:
		out := make([]matrixSeries, 0, len(v))
		for _, s := range v {
			ps := make([]point, 0, len(s.Floats))
			for _, f := range s.Floats {
				ps = append(ps, point{T: f.T, V: f.F})
			}
			out = append(out, matrixSeries{Metric: labelMap(s.Metric), Values: ps})
		}
		return out
	case promql.Scalar:
		return point{T: v.T, V: v.V}
	case promql.String:
		return point{T: v.T, S: v.V, IsString: true}
	}
	return nil
}

func parseMatchers(r *http.Request) ([][]*labels.Matcher, *apiError) {
	var sets [][]*labels.Matcher
	for _, m := range r.Form["match[]"] {
		ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(m)
		if err != nil {
			return nil, invalidParam("match[]", err)
		}
		sets = append(sets, ms)
	}
	return sets, nil
}

func parseRange(r *http.Request) (int64, int64, *apiError) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return 0, 0, invalidParam("start", err)
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return 0, 0, invalidParam("end", err)
	}
	return start.UnixMilli(), end.UnixMilli(), nil
}

func (s *Server) series(r *http.Request) (any, []string, []string, *apiError) {
	sets, aerr := parseMatchers(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	if len(sets) == 0 {
		return nil, nil, nil, &apiError{errorBadData, errors.New("no match[] parameter provided")}
	}
	mint, maxt, aerr := parseRange(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	q, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, nil, nil, &apiError{errorExec, err}
	}
	defer q.Close()
	hints := &storage.SelectHints{Start: mint, End: maxt, Func: "series"}
	seen := map[string]bool{}
	var out []labels.Labels
	for _, ms := range sets {
		ss := q.Select(r.Context(), false, hints, ms...)
		for ss.Next() {
			l := ss.At().Labels()
			if k := l.String(); !seen[k] {
				seen[k] = true
				out = append(out, l)
			}
		}
		if err := ss.Err(); err != nil {
			return nil, nil, nil, &apiError{errorExec, err}
		}
	}
	slices.SortFunc(out, labels.Compare)
	res := make([]map[string]string, 0, len(out))
	for _, l := range out {
		res = append(res, labelMap(l))
	}
	return res, nil, nil, nil
}

func (s *Server) labelNames(r *http.Request) (any, []string, []string, *apiError) {
	return s.labelQuery(r, func(ctx context.Context, q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		names, _, err := q.LabelNames(ctx, nil, ms...)
		return names, err
	})
}

func (s *Server) labelValues(r *http.Request) (any, []string, []string, *apiError) {
	name := r.PathValue("name")
	if !model.UTF8Validation.IsValidLabelName(name) {
		return nil, nil, nil, &apiError{errorBadData, fmt.Errorf("invalid label name: %q", name)}
	}
	return s.labelQuery(r, func(ctx context.Context, q storage.Querier, ms []*labels.Matcher) ([]string, error) {
		vals, _, err := q.LabelValues(ctx, name, nil, ms...)
		return vals, err
	})
}

func (s *Server) labelQuery(r *http.Request, f func(context.Context, storage.Querier, []*labels.Matcher) ([]string, error)) (any, []string, []string, *apiError) {
	sets, aerr := parseMatchers(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	mint, maxt, aerr := parseRange(r)
	if aerr != nil {
		return nil, nil, nil, aerr
	}
	q, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, nil, nil, &apiError{errorExec, err}
	}
	defer q.Close()
	seen := map[string]bool{}
	out := []string{}
	for _, ms := range sets {
		vals, err := f(r.Context(), q, ms)
		if err != nil {
			return nil, nil, nil, &apiError{errorExec, err}
		}
		for _, v := range vals {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out, nil, nil, nil
}
