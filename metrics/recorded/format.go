// Package recorded reads and writes recorded KPI data — per interval, per cluster counts and
// values in a versioned JSON-lines file (docs/replay.md) — and serves it to the engine as
// Prometheus would: Source implements the engine's KPI source, so `verdict replay` feeds
// recorded data through the exact decision path of a live run.
//
// A file is a header line, then one line per interval, cluster and KPI:
//
//	{"verdictReplay": 1, "interval": "1m", "start": "2026-11-23T08:00:00Z", "weights": {"c1": 0.33, "c2": 0.33, "c3": 0.34}}
//	{"end": "2026-11-23T07:01:00Z", "cluster": "c1", "kpi": "error-rate", "events": 12, "total": 10000}
//	{"end": "2026-11-23T07:01:00Z", "cluster": "c1", "kpi": "latency", "count": 10000, "sum": 1234.5, "buckets": {"0.1": 8000, "0.5": 9500, "+Inf": 10000}}
//	{"end": "2026-11-23T07:01:00Z", "cluster": "c1", "kpi": "cpu", "value": 0.31}
//	{"instant": "pods-everywhere", "at": "2026-11-23T07:00:00Z", "value": 3}
//
// Every problem is reported with its line: FILE:LINE: field: problem.
package recorded

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Version is the version of the format this package reads and writes: the header's
// "verdictReplay" field.
const Version = 1

// maxErrors bounds how many problems Parse and New report before giving up.
const maxErrors = 20

// Header is a recorded file's first line.
type Header struct {
	// Version is the format version ("verdictReplay"); only Version is read.
	Version int
	// Interval is the length of every recorded interval: the experiment's analysis interval.
	Interval time.Duration
	// Start is when the replayed run starts; records ending at or before it are history.
	Start time.Time
	// Weights are the pool's origin weights before the run, by cluster.
	Weights map[string]float64
	// Description says where the data comes from; free text, optional.
	Description string
}

// Record is one KPI's values for one cluster and one interval: a line after the header.
// Which values are set depends on the KPI's kind: Events and Total for a ratio; Count with
// Buckets or Slow (and optionally Sum) for a latency; Value for a gauge or throughput.
// Pointers distinguish a value of zero from no value.
type Record struct {
	// Line is the record's line in its file (0 for a record not read from a file).
	Line int `json:"-"`
	// End is the end of the interval (End-interval, End], a multiple of the interval since
	// the Unix epoch, as in a Prometheus range query.
	End     time.Time `json:"end"`
	Cluster string    `json:"cluster"`
	KPI     string    `json:"kpi"`

	Events *float64 `json:"events,omitempty"`
	Total  *float64 `json:"total,omitempty"`

	Count *float64 `json:"count,omitempty"`
	Sum   *float64 `json:"sum,omitempty"`
	// Buckets maps a bucket's upper bound ("0.25", "+Inf") to the cumulative count of
	// requests at or below it, as the le label of a Prometheus histogram does.
	Buckets map[string]float64 `json:"buckets,omitempty"`
	// Slow is the number of requests slower than the KPI's slowerThan, instead of Buckets.
	Slow *float64 `json:"slow,omitempty"`

	Value *float64 `json:"value,omitempty"`
}

// Shape is which kind of KPI a record's values belong to.
type Shape string

// Record shapes.
const (
	ShapeRatio   Shape = "ratio"   // events and total
	ShapeLatency Shape = "latency" // count with buckets or slow, optional sum
	ShapeValue   Shape = "value"   // value: a gauge or a throughput
)

// Shape says which kind of KPI the record's values fit; empty when it has none.
func (r Record) Shape() Shape {
	switch {
	case r.Events != nil || r.Total != nil:
		return ShapeRatio
	case r.Count != nil || r.Buckets != nil || r.Slow != nil || r.Sum != nil:
		return ShapeLatency
	case r.Value != nil:
		return ShapeValue
	}
	return ""
}

// Instant is a recorded answer to an instant query (a precondition): from At until the
// next Instant with the same Name, the query returns Value (one sample per Cluster when
// several records share Name and At).
type Instant struct {
	// Line is the record's line in its file.
	Line int `json:"-"`
	// Name is the precondition's name, or the exact rendered query.
	Name    string    `json:"instant"`
	At      time.Time `json:"at"`
	Cluster string    `json:"cluster,omitempty"`
	Value   float64   `json:"value"`
}

// File is a parsed recorded file.
type File struct {
	// Name is the file's name in messages.
	Name       string
	Header     Header
	HeaderLine int
	Records    []Record
	Instants   []Instant
}

// LineError is a problem with one line of a recorded file: FILE:LINE: field: problem.
type LineError struct {
	File  string
	Line  int // 0 when the problem is with the file as a whole
	Field string
	Msg   string
}

// Error renders the problem as FILE:LINE: field: problem.
func (e *LineError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// problems collects LineErrors up to maxErrors.
type problems struct {
	file string
	errs []error
	more int
}

func (p *problems) add(line int, field, format string, a ...any) {
	if len(p.errs) >= maxErrors {
		p.more++
		return
	}
	p.errs = append(p.errs, &LineError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, a...)})
}

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	if p.more > 0 {
		p.errs = append(p.errs, fmt.Errorf("%s: %d more problem(s) not shown", p.file, p.more))
	}
	return errors.Join(p.errs...)
}

// ReadFile parses the recorded file at path.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read recorded file: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a recorded file. name is used in messages. Every problem found is reported at
// once (up to 20), each as a *LineError, joined.
func Parse(name string, r io.Reader) (*File, error) {
	f := &File{Name: name}
	p := &problems{file: name}
	br := bufio.NewReader(r)
	seen := map[string]int{} // record key → line
	seenInstant := map[string]int{}
	for line := 1; ; line++ {
		text, rerr := br.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return nil, fmt.Errorf("%s:%d: %w", name, line, rerr)
		}
		if t := bytes.TrimSpace(text); len(t) > 0 {
			parseLine(f, p, line, t, seen, seenInstant)
		}
		if rerr == io.EOF {
			break
		}
	}
	if f.HeaderLine == 0 && len(p.errs) == 0 {
		p.add(0, "", "empty file: the first line must be the header {\"verdictReplay\": %d, \"interval\": ..., \"start\": ..., \"weights\": {...}}", Version)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return f, nil
}

// fields is one line's JSON object, consumed field by field.
type fields struct {
	p    *problems
	line int
	m    map[string]json.RawMessage
	bad  bool
}

func (fs *fields) problem(field, format string, a ...any) {
	fs.p.add(fs.line, field, format, a...)
	fs.bad = true
}

func (fs *fields) has(key string) bool { _, ok := fs.m[key]; return ok }

func (fs *fields) str(key string, required bool) (string, bool) {
	raw, ok := fs.m[key]
	if !ok {
		if required {
			fs.problem(key, "missing")
		}
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		fs.problem(key, "must be a string, got %s", raw)
		return "", false
	}
	if required && s == "" {
		fs.problem(key, "must not be empty")
		return "", false
	}
	return s, true
}

func (fs *fields) time(key string, required bool) (time.Time, bool) {
	s, ok := fs.str(key, required)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		fs.problem(key, "%q is not an RFC 3339 time such as 2026-11-23T08:00:00Z", s)
		return time.Time{}, false
	}
	return t.UTC(), true
}

// num reads a finite number; count also requires it to be at least 0.
func (fs *fields) num(key string, count bool) *float64 {
	raw, ok := fs.m[key]
	if !ok {
		return nil
	}
	var x float64
	if err := json.Unmarshal(raw, &x); err != nil {
		fs.problem(key, "must be a number, got %s", raw)
		return nil
	}
	if count && x < 0 {
		fs.problem(key, "must not be negative, got %v", x)
		return nil
	}
	return &x
}

// unknown reports every field not in allowed.
func (fs *fields) unknown(what string, allowed ...string) {
	for _, k := range slices.Sorted(maps.Keys(fs.m)) {
		if !slices.Contains(allowed, k) {
			msg := fmt.Sprintf("unknown field in %s (fields: %s)", what, strings.Join(allowed, ", "))
			if s := suggest(k, allowed); s != "" {
				msg = fmt.Sprintf("unknown field in %s; did you mean %q?", what, s)
			}
			fs.problem(k, "%s", msg)
		}
	}
}

func parseLine(f *File, p *problems, line int, text []byte, seen, seenInstant map[string]int) {
	fs := &fields{p: p, line: line}
	if err := json.Unmarshal(text, &fs.m); err != nil || fs.m == nil {
		p.add(line, "", "not a JSON object: %s", jsonProblem(err))
		return
	}
	switch {
	case fs.has("verdictReplay"):
		switch {
		case f.HeaderLine > 0:
			fs.problem("verdictReplay", "a second header (the header is on line %d)", f.HeaderLine)
		case f.HeaderLine == 0:
			f.HeaderLine = line
			parseHeader(f, fs)
		}
		// HeaderLine < 0: the header came too late, which is already reported.
	case f.HeaderLine == 0:
		p.add(line, "verdictReplay", "the first line must be the header {\"verdictReplay\": %d, \"interval\": \"1m\", \"start\": ..., \"weights\": {...}}", Version)
		f.HeaderLine = -1 // said once
	case f.HeaderLine < 0:
		// The header is missing; the message above covers every line.
	case fs.has("instant"):
		parseInstant(f, fs, seenInstant)
	default:
		parseRecord(f, fs, seen)
	}
}

func parseHeader(f *File, fs *fields) {
	fs.unknown("the header", "verdictReplay", "interval", "start", "weights", "description")
	h := &f.Header
	var v float64
	if err := json.Unmarshal(fs.m["verdictReplay"], &v); err != nil || v != math.Trunc(v) {
		fs.problem("verdictReplay", "must be the format version, a whole number (%d), got %s", Version, fs.m["verdictReplay"])
	} else if h.Version = int(v); h.Version != Version {
		fs.problem("verdictReplay", "version %d is not supported: this verdict reads version %d", h.Version, Version)
	}
	if s, ok := fs.str("interval", true); ok {
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			fs.problem("interval", "%q is not a duration such as 1m or 30s", s)
		case d < time.Second || d%time.Millisecond != 0:
			fs.problem("interval", "%s must be at least 1s, in whole milliseconds", s)
		default:
			h.Interval = d
		}
	}
	if t, ok := fs.time("start", true); ok {
		h.Start = t
	}
	h.Description, _ = fs.str("description", false)
	raw, ok := fs.m["weights"]
	if !ok {
		fs.problem("weights", "missing: the pool's origin weights before the run, by cluster, e.g. {\"c1\": 0.33, \"c2\": 0.33, \"c3\": 0.34}")
		return
	}
	var w map[string]json.RawMessage
	if err := json.Unmarshal(raw, &w); err != nil || w == nil {
		fs.problem("weights", "must be an object of cluster: weight, got %s", raw)
		return
	}
	h.Weights = map[string]float64{}
	for _, c := range slices.Sorted(maps.Keys(w)) {
		var x float64
		if err := json.Unmarshal(w[c], &x); err != nil || x < 0 || x > 1 {
			fs.problem("weights."+c, "must be a weight between 0 and 1, got %s", w[c])
			continue
		}
		h.Weights[c] = x
	}
}

func parseInstant(f *File, fs *fields, seen map[string]int) {
	fs.unknown("an instant record", "instant", "at", "cluster", "value")
	in := Instant{Line: fs.line}
	in.Name, _ = fs.str("instant", true)
	in.At, _ = fs.time("at", true)
	in.Cluster, _ = fs.str("cluster", false)
	if v := fs.num("value", false); v != nil {
		in.Value = *v
	} else if !fs.has("value") {
		fs.problem("value", "missing: the value the query returns from at on")
	}
	if fs.bad {
		return
	}
	key := in.Name + "\xff" + in.Cluster + "\xff" + in.At.String()
	if prev, dup := seen[key]; dup {
		fs.problem("instant", "%q at %s is already recorded on line %d", in.Name, in.At.Format(time.RFC3339), prev)
		return
	}
	seen[key] = fs.line
	f.Instants = append(f.Instants, in)
}

func parseRecord(f *File, fs *fields, seen map[string]int) {
	fs.unknown("a KPI record", "end", "cluster", "kpi", "events", "total", "count", "sum", "buckets", "slow", "value")
	r := Record{Line: fs.line}
	r.End, _ = fs.time("end", true)
	r.Cluster, _ = fs.str("cluster", true)
	r.KPI, _ = fs.str("kpi", true)
	r.Events, r.Total = fs.num("events", true), fs.num("total", true)
	r.Count, r.Sum, r.Slow = fs.num("count", true), fs.num("sum", true), fs.num("slow", true)
	r.Value = fs.num("value", false)
	if raw, ok := fs.m["buckets"]; ok {
		r.Buckets = parseBuckets(fs, raw)
	}
	if fs.bad {
		return
	}
	if iv := f.Header.Interval; iv > 0 && r.End.UnixMilli()%iv.Milliseconds() != 0 {
		fs.problem("end", "%s is not an interval end: ends are multiples of the interval (%s) since the Unix epoch, e.g. %s",
			r.End.Format(time.RFC3339), formatDuration(iv), r.End.Truncate(iv).Format(time.RFC3339))
		return
	}
	ratio := fs.has("events") || fs.has("total")
	latency := fs.has("count") || fs.has("buckets") || fs.has("slow") || fs.has("sum")
	value := fs.has("value")
	switch n := btoi(ratio) + btoi(latency) + btoi(value); {
	case n == 0:
		fs.problem("kpi", "no values: give events and total (ratio), count with buckets or slow (latency), or value (gauge, throughput)")
	case n > 1:
		fs.problem(firstOf(fs, "value", "count", "buckets", "slow", "sum"), "a record holds one kind of KPI: events and total (ratio), count with buckets or slow (latency), or value (gauge, throughput); this one mixes them")
	case ratio:
		checkRatio(fs, r)
	case latency:
		checkLatency(fs, &r)
	}
	if fs.bad {
		return
	}
	key := r.KPI + "\xff" + r.Cluster + "\xff" + r.End.String()
	if prev, dup := seen[key]; dup {
		fs.problem("end", "KPI %s, cluster %s, interval ending %s is already recorded on line %d", r.KPI, r.Cluster, r.End.Format(time.RFC3339), prev)
		return
	}
	seen[key] = fs.line
	f.Records = append(f.Records, r)
}

func checkRatio(fs *fields, r Record) {
	if r.Events == nil {
		fs.problem("events", "missing: a ratio record needs events and total (0 events is \"events\": 0)")
	}
	if r.Total == nil {
		fs.problem("total", "missing: a ratio record needs events and total")
	}
}

func checkLatency(fs *fields, r *Record) {
	if r.Count == nil {
		fs.problem("count", "missing: a latency record needs count, and buckets or slow")
		return
	}
	switch {
	case r.Buckets == nil && r.Slow == nil:
		fs.problem("buckets", "missing: a latency record needs buckets (cumulative counts by upper bound) or slow (requests slower than the KPI's slowerThan)")
	case r.Buckets != nil && r.Slow != nil:
		fs.problem("slow", "give buckets or slow, not both")
	case r.Slow != nil && *r.Slow > *r.Count:
		fs.problem("slow", "%v slow requests out of a count of %v", *r.Slow, *r.Count)
	case r.Buckets != nil:
		// Cumulative counts, ending at +Inf = count (added when absent).
		type b struct {
			le    string
			ub, n float64
		}
		var bs []b
		for le, n := range r.Buckets {
			ub, _ := strconv.ParseFloat(le, 64)
			bs = append(bs, b{le, ub, n})
		}
		sort.Slice(bs, func(i, j int) bool { return bs[i].ub < bs[j].ub })
		for i := 1; i < len(bs); i++ {
			if bs[i].n < bs[i-1].n*(1-1e-9) {
				fs.problem("buckets."+bs[i].le, "%v is less than %v at le %s: bucket counts are cumulative (requests at or below le)", bs[i].n, bs[i-1].n, bs[i-1].le)
				return
			}
		}
		last := bs[len(bs)-1]
		switch {
		case math.IsInf(last.ub, 1) && !near(last.n, *r.Count):
			fs.problem("buckets.+Inf", "%v differs from count %v: the +Inf bucket counts every request", last.n, *r.Count)
		case !math.IsInf(last.ub, 1) && last.n > *r.Count*(1+1e-9):
			fs.problem("buckets."+last.le, "%v is more than count %v", last.n, *r.Count)
		}
	}
}

func parseBuckets(fs *fields, raw json.RawMessage) map[string]float64 {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || len(m) == 0 {
		fs.problem("buckets", "must be an object of upper bound: cumulative count, e.g. {\"0.1\": 8000, \"0.5\": 9500, \"+Inf\": 10000}, got %s", raw)
		return nil
	}
	out := map[string]float64{}
	seen := map[float64]string{}
	for _, le := range slices.Sorted(maps.Keys(m)) {
		ub, err := strconv.ParseFloat(le, 64)
		if err != nil || math.IsNaN(ub) || math.IsInf(ub, -1) {
			fs.problem("buckets."+le, "%q is not an upper bound: a number or \"+Inf\"", le)
			continue
		}
		if prev, dup := seen[ub]; dup {
			fs.problem("buckets."+le, "the same bound as %q", prev)
			continue
		}
		seen[ub] = le
		var n float64
		if err := json.Unmarshal(m[le], &n); err != nil || n < 0 {
			fs.problem("buckets."+le, "must be a count (a number ≥ 0), got %s", m[le])
			continue
		}
		out[le] = n
	}
	return out
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func firstOf(fs *fields, keys ...string) string {
	for _, k := range keys {
		if fs.has(k) {
			return k
		}
	}
	return ""
}

func jsonProblem(err error) string {
	if err == nil {
		return "null"
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	return err.Error()
}

// suggest returns the allowed name closest to k when it is a likely typo.
func suggest(k string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(k), strings.ToLower(a)); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// formatDuration renders d as the header writes it: 1m, 30s, 1h30m.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Span reports the first and last interval end recorded after the header's start (run) or
// at or before it (history); both zero when there is none.
func (f *File) Span(history bool) (first, last time.Time) {
	for _, r := range f.Records {
		if r.End.After(f.Header.Start) == history {
			continue
		}
		if first.IsZero() || r.End.Before(first) {
			first = r.End
		}
		if r.End.After(last) {
			last = r.End
		}
	}
	return first, last
}
