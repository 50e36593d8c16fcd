package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/store"
)

// maxBody bounds request bodies: actions carry a name and a sentence, nothing more.
const maxBody = 16 << 10

// Handler serves the API, the event streams, /metrics and the dashboard.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes = nil
	api := func(pattern string, h http.HandlerFunc) {
		s.routes = append(s.routes, pattern)
		mux.Handle(pattern, s.guard(h))
	}
	api("GET /api/v1/experiments", s.listExperiments)
	api("GET /api/v1/experiments/{name}", s.getExperiment)
	api("GET /api/v1/files", s.listFiles)
	api("GET /api/v1/runs", s.listRuns)
	api("GET /api/v1/runs/{id}", s.getRun)
	api("GET /api/v1/runs/{id}/decisions", s.getDecisions)
	api("GET /api/v1/runs/{id}/observations", s.getObservations)
	api("GET /api/v1/runs/{id}/events", s.getEvents)
	api("GET /api/v1/runs/{id}/stream", s.streamRun)
	api("GET /api/v1/runs/{id}/report", s.getReport)
	api("GET /api/v1/stream", s.streamAll)
	for _, a := range engine.Actions {
		api("POST /api/v1/runs/{id}/"+a, s.action(a))
	}
	api("POST /api/v1/runs/{id}/retry", s.retry)
	api("GET /metrics", s.tel.handler().ServeHTTP)
	s.routes = append(s.routes, "GET /healthz")
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Health{TypeMeta: Meta(KindHealth), Status: "ok"})
	})
	dash := dashboard()
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET /assets/", dash)
	return s.secure(mux)
}

// secure sets the headers every answer carries and refuses requests from other origins.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "SAMEORIGIN")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'self'")
		// A browser on another site may send requests here (the API has no CORS): refuse
		// them, and on loopback without a token also refuse foreign Host names (DNS
		// rebinding), since there the network position is the only credential.
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				apiError(w, http.StatusForbidden, "cross-origin request refused")
				return
			}
		}
		if !s.authRequired() && !isLoopbackHost(r.Host) {
			apiError(w, http.StatusForbidden, "host "+r.Host+" refused: without a token the server answers only loopback names")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	return isLoopback(net.JoinHostPort(host, "0"))
}

// authRequired says whether every API request must carry a bearer token.
func (s *Server) authRequired() bool { return s.opts.Token != "" || len(s.opts.Tokens) > 0 }

// principalKey is the request context key of the authenticated principal.
type principalKey struct{}

// principal is the name of the token that authenticated the request: a NamedToken's name,
// "" for Options.Token or without authentication.
func principal(r *http.Request) string {
	p, _ := r.Context().Value(principalKey{}).(string)
	return p
}

// guard requires a bearer token when one is configured, and names the request's principal
// after the named token that matched.
func (s *Server) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authRequired() {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Every token is compared, matching or not, so the time taken says nothing.
			match, name := 0, ""
			if s.opts.Token != "" {
				match |= subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token))
			}
			for _, t := range s.opts.Tokens {
				if subtle.ConstantTimeCompare([]byte(got), []byte(t.Secret)) == 1 {
					match, name = 1, t.Name
				}
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="verdict"`)
				apiError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
			if name != "" {
				r = r.WithContext(context.WithValue(r.Context(), principalKey{}, name))
			}
		}
		h(w, r)
	})
}

// decodeBody decodes a JSON request body of at most maxBody bytes into v, refusing unknown
// fields and anything after the JSON value (a second object, garbage): a body means one
// thing. An empty body leaves v as it is. On failure it has answered and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return true
	}
	if err == nil {
		var extra json.RawMessage
		if e := dec.Decode(&extra); !errors.Is(e, io.EOF) {
			err = errors.New("trailing data after the JSON object: the body must be exactly one JSON object")
			var tooBig *http.MaxBytesError
			if errors.As(e, &tooBig) {
				err = e
			}
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		apiError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody))
		return false
	}
	apiError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// apiError answers with the API's error document.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorDoc{TypeMeta: Meta(KindError), Error: msg, Status: code})
}

func (s *Server) storeError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		apiError(w, http.StatusNotFound, "no "+what)
		return
	}
	s.opts.Logger.Error("store", "what", what, "err", err)
	apiError(w, http.StatusInternalServerError, "reading the state failed: "+err.Error())
}

func (s *Server) summarize(ctx context.Context, rec *store.Run) RunSummary {
	sum := s.summary(rec)
	if sum.State.Terminal() {
		s.forgetDrift(rec.ID)
	} else {
		sum.ActualWeights = s.actualWeights(ctx, rec.ID)
	}
	return sum
}

// driftState is what a run's events so far say of drift: Actual is set while the latest
// drift (with weights) is newer than the latest confirmed weights.
type driftState struct {
	seq    int64
	actual store.Weights
}

// actualWeights reads the run's events after those already seen and returns the pool's
// weights from its latest drift, when no weights were confirmed after it.
func (s *Server) actualWeights(ctx context.Context, id string) store.Weights {
	s.driftMu.Lock()
	st := s.drift[id]
	s.driftMu.Unlock()
	evs, err := s.opts.Store.Events(ctx, id, st.seq)
	if err != nil {
		return st.actual // the summary goes on without the newest events
	}
	st = st.fold(evs)
	s.driftMu.Lock()
	if s.drift == nil {
		s.drift = map[string]driftState{}
	}
	if st.seq >= s.drift[id].seq {
		s.drift[id] = st
	}
	s.driftMu.Unlock()
	return st.actual
}

// fold moves st on over a run's next events, in order.
func (st driftState) fold(evs []store.Event) driftState {
	for _, e := range evs {
		switch e.Type {
		case engine.EventDrift:
			var d engine.DriftData
			if json.Unmarshal(e.Data, &d) == nil && len(d.Actual) > 0 {
				st.actual = d.Actual
			}
		case engine.EventWeightsConfirmed:
			st.actual = nil
		}
		st.seq = max(st.seq, e.Seq)
	}
	return st
}

// States are the run states, in the order a run goes through them.
var States = []store.State{store.StatePending, store.StatePreflight, store.StateRamping, store.StatePaused, store.StatePromoting,
	store.StatePromoted, store.StateRollingBack, store.StateRolledBack, store.StateAborted, store.StateFailed}

// ParseStates reads a comma-separated list of run states, in any case ("ramping,paused").
func ParseStates(list string) ([]store.State, error) {
	var out []store.State
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := slices.IndexFunc(States, func(s store.State) bool { return strings.EqualFold(string(s), f) })
		if i < 0 {
			names := make([]string, len(States))
			for j, s := range States {
				names[j] = string(s)
			}
			return nil, fmt.Errorf("unknown state %q: want one of %s", f, strings.Join(names, ", "))
		}
		out = append(out, States[i])
	}
	return out, nil
}

// RetryOf is the run rec retries, if any: from its own retry_of event (evs are its events),
// else from a retried event of one of the experiment's earlier runs (a retry a server
// started, which cannot write to the new run while its engine does).
func RetryOf(ctx context.Context, st store.Store, rec *store.Run, evs []store.Event) string {
	for _, e := range evs {
		var d RetryData
		if e.Type == EventRetryOf && json.Unmarshal(e.Data, &d) == nil && d.Run != "" {
			return d.Run
		}
	}
	earlier, err := st.ListRuns(ctx, store.ListOptions{Experiment: rec.Experiment, Limit: 20})
	if err != nil {
		return ""
	}
	for _, o := range earlier {
		if o.ID == rec.ID || !o.State.Terminal() || o.CreatedAt.After(rec.CreatedAt) {
			continue
		}
		oevs, err := st.Events(ctx, o.ID, 0)
		if err != nil {
			continue
		}
		for _, e := range oevs {
			var d RetryData
			if e.Type == EventRetried && json.Unmarshal(e.Data, &d) == nil && d.Run == rec.ID {
				return o.ID
			}
		}
	}
	return ""
}

// ActualWeights are the pool's weights from a run's latest drift when no weights were
// confirmed after it, from the run's events in order; nil otherwise.
func ActualWeights(evs []store.Event) store.Weights { return driftState{}.fold(evs).actual }

func (s *Server) forgetDrift(id string) {
	s.driftMu.Lock()
	delete(s.drift, id)
	s.driftMu.Unlock()
}

// fillDrivenBy names the holder of each unfinished run's lease, "nobody" when none; it
// leaves them empty when the store has no leases or cannot say.
func (s *Server) fillDrivenBy(ctx context.Context, runs []*RunSummary) {
	if s.leaser == nil {
		return
	}
	ls, err := s.leaser.Leases(ctx)
	if err != nil {
		return
	}
	owner := map[string]string{}
	for _, l := range ls {
		owner[l.RunID] = l.Owner
	}
	for _, r := range runs {
		if r.State.Terminal() {
			continue
		}
		r.DrivenBy = owner[r.ID]
		if r.DrivenBy == "" {
			r.DrivenBy = "nobody"
		}
	}
}

// summary is a run's summary from its record and, when this server drives it, its
// engine's snapshot.
func (s *Server) summary(rec *store.Run) RunSummary {
	sum := SummaryOf(rec)
	sum.ReportURL = s.reportURL(rec.ID)
	if s.watch != nil && !rec.State.Terminal() {
		sum.Orphan = s.watch.orphan(rec.ID)
	}
	if r, ok := s.sup.get(rec.ID); ok {
		snap := r.snapshot()
		if snap.Run.Version >= rec.Version {
			sum.State, sum.Step, sum.Verdict, sum.Reason, sum.EndedBy = snap.Run.State, snap.Run.Step, snap.Run.Verdict, snap.Run.Reason, snap.Run.EndedBy
			sum.Weights, sum.Original, sum.UpdatedAt, sum.EndedAt = snap.Run.Current, snap.Run.Original, snap.Run.UpdatedAt, snap.Run.EndedAt
		}
		sum.Supervised = !r.isDone()
		if p := r.stalled.Load(); p != nil {
			sum.Stalled = *p
		}
		sum.Decision, sum.Steps = DecisionOf(snap.Decision), snap.Steps
		if sum.State == store.StatePaused {
			sum.PauseNote = snap.PauseNote
		}
		sum.Canary, sum.Baselines = r.exp.Spec.Canary.Cluster, r.exp.Spec.Baselines
		sum.CanaryShare = nil
		if v, ok := canaryShare(r, store.Run{Current: sum.Weights, Original: sum.Original}); ok {
			sum.CanaryShare = &v
		}
	}
	return sum
}

// SummaryOf is a run's summary from its stored record alone: what a process that does not
// drive the run can say of it (the CLI on a state directory, a server of a run another
// process drives).
func SummaryOf(rec *store.Run) RunSummary {
	sum := RunSummary{ID: rec.ID, Experiment: rec.Experiment, Pool: rec.Pool, File: rec.SpecFile, State: rec.State, Step: rec.Step,
		Verdict: rec.Verdict, Reason: rec.Reason, EndedBy: rec.EndedBy, Weights: rec.Current, Original: rec.Original,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, StartedAt: rec.StartedAt, EndedAt: rec.EndedAt}
	var spec struct {
		Spec struct {
			Canary struct {
				Cluster string `json:"cluster"`
			} `json:"canary"`
			Baselines []string `json:"baselines"`
			Traffic   struct {
				Steps      []json.RawMessage `json:"steps"`
				Cloudflare *struct {
					Origins map[string]string `json:"origins"`
				} `json:"cloudflare"`
				Route53 *struct {
					SetIdentifiers map[string]string `json:"setIdentifiers"`
				} `json:"route53"`
			} `json:"traffic"`
		} `json:"spec"`
	}
	if json.Unmarshal(rec.Spec, &spec) == nil {
		sum.Canary, sum.Baselines, sum.Steps = spec.Spec.Canary.Cluster, spec.Spec.Baselines, len(spec.Spec.Traffic.Steps)
		w := sum.Weights
		if len(w) == 0 {
			w = sum.Original
		}
		total := 0.0
		// The same choice as experiments.Traffic.Origins, on this partial decoding.
		var origins map[string]string
		if t := spec.Spec.Traffic; t.Cloudflare != nil {
			origins = t.Cloudflare.Origins
		} else if t.Route53 != nil {
			origins = t.Route53.SetIdentifiers
		}
		for _, c := range append([]string{sum.Canary}, sum.Baselines...) {
			total += w[origins[c]]
		}
		if total > 0 {
			v := w[origins[sum.Canary]] / total
			sum.CanaryShare = &v
		}
	}
	sum.Resume = ResumeArgs(rec)
	return sum
}

// ResumeArgs is the command line (without global flags) that drives rec again, or nil
// for an ended run.
func ResumeArgs(rec *store.Run) []string {
	if rec.State.Terminal() {
		return nil
	}
	file := rec.SpecFile
	if file == "" {
		file = "FILE"
	}
	var exp experiments.Experiment
	if err := json.Unmarshal(rec.Spec, &exp); err != nil {
		return []string{"run", file, "--resume", rec.ID}
	}
	return experiments.DriveArgs(&exp, file, rec.ID)
}

func (r *runner) isDone() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (s *Server) reportURL(id string) string {
	if s.opts.ReportURL != nil {
		return s.opts.ReportURL(id)
	}
	return "/api/v1/runs/" + url.PathEscape(id) + "/report"
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	all := q.Get("all") == "true" || q.Get("all") == "1"
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 200
	}
	states, err := ParseStates(q.Get("state"))
	if err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(states) > 0 {
		all = true // a state filter names the states wanted, finished ones included
	}
	runs, err := s.opts.Store.ListRuns(r.Context(), store.ListOptions{Experiment: q.Get("experiment"), Unfinished: !all, Limit: limit})
	if err != nil {
		s.storeError(w, "runs", err)
		return
	}
	out := []RunSummary{}
	for _, rec := range runs {
		sum := s.summarize(r.Context(), rec)
		if len(states) == 0 || slices.Contains(states, sum.State) {
			out = append(out, sum)
		}
	}
	ptrs := make([]*RunSummary, len(out))
	for i := range out {
		ptrs[i] = &out[i]
	}
	s.fillDrivenBy(r.Context(), ptrs)
	orphans := []Orphan{}
	if s.watch != nil {
		orphans = s.watch.orphansNow()
	}
	writeJSON(w, http.StatusOK, RunList{TypeMeta: Meta(KindRunList), Runs: out, Orphans: orphans, Cursor: s.broker.cursor()})
}

func (s *Server) experimentViews(r *http.Request, only string) ([]ExperimentView, error) {
	byName := map[string]*ExperimentView{}
	get := func(name string) *ExperimentView {
		v := byName[name]
		if v == nil {
			v = &ExperimentView{Name: name, Runs: []RunSummary{}}
			byName[name] = v
		}
		return v
	}
	if s.watch != nil {
		for _, f := range s.watch.status() {
			if f.Status == "removed" {
				continue
			}
			for _, name := range f.Experiments {
				if only != "" && name != only {
					continue
				}
				v := get(name)
				if v.File == "" {
					v.File, v.Note = f.Path, f.Notes[name]
				}
			}
		}
	}
	runs, err := s.opts.Store.ListRuns(r.Context(), store.ListOptions{Experiment: only, Limit: 500})
	if err != nil {
		return nil, err
	}
	for _, rec := range runs {
		v := get(rec.Experiment)
		if len(v.Runs) < 20 {
			v.Runs = append(v.Runs, s.summarize(r.Context(), rec))
		}
	}
	out := make([]ExperimentView, 0, len(byName))
	for _, v := range byName {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Server) listExperiments(w http.ResponseWriter, r *http.Request) {
	views, err := s.experimentViews(r, "")
	if err != nil {
		s.storeError(w, "runs", err)
		return
	}
	writeJSON(w, http.StatusOK, ExperimentList{TypeMeta: Meta(KindExperimentList), Experiments: views, Cursor: s.broker.cursor()})
}

func (s *Server) getExperiment(w http.ResponseWriter, r *http.Request) {
	views, err := s.experimentViews(r, r.PathValue("name"))
	if err != nil {
		s.storeError(w, "runs", err)
		return
	}
	if len(views) == 0 {
		apiError(w, http.StatusNotFound, "no experiment "+r.PathValue("name"))
		return
	}
	writeJSON(w, http.StatusOK, ExperimentDetail{TypeMeta: Meta(KindExperiment), Experiment: views[0]})
}

func (s *Server) listFiles(w http.ResponseWriter, _ *http.Request) {
	files := []FileStatus{}
	if s.watch != nil {
		files = s.watch.status()
	}
	writeJSON(w, http.StatusOK, FileList{TypeMeta: Meta(KindFileList), Dir: s.opts.Dir, Files: files})
}

// run finds a run by ID or by experiment name (its latest run).
func (s *Server) run(w http.ResponseWriter, r *http.Request) (*store.Run, bool) {
	rec, err := s.opts.Store.Run(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, "run or experiment "+r.PathValue("id"), err)
		return nil, false
	}
	return rec, true
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	out := RunDetail{TypeMeta: Meta(KindRun), Run: s.summarize(r.Context(), rec), Spec: rec.Spec, Intent: rec.Intent,
		Messages: s.broker.recent(rec.ID, 50), Cursor: s.broker.cursor()}
	if out.Messages == nil {
		out.Messages = []Message{}
	}
	if evs, err := s.opts.Store.Events(r.Context(), rec.ID, 0); err == nil {
		out.Run.RetryOf = RetryOf(r.Context(), s.opts.Store, rec, evs)
	}
	if out.Run.Decision == nil {
		if ds, err := s.opts.Store.Decisions(r.Context(), rec.ID); err == nil && len(ds) > 0 {
			out.Run.Decision = StoredDecisionOf(ds[len(ds)-1])
		}
	}
	s.fillDrivenBy(r.Context(), []*RunSummary{&out.Run})
	if rr, ok := s.sup.get(rec.ID); ok {
		snap := rr.snapshot()
		out.Values, out.Hold, out.StepElapsed = snap.Values, snap.Hold.String(), snap.Run.StepElapsed.String()
		out.Share = &Share{Mismatch: snap.Share.Mismatch, Checked: snap.Share.Checked, Intervals: snap.Share.Intervals, Expected: snap.Share.Expected, Observed: snap.Share.Observed, Reason: snap.Share.Reason}
		out.RampStart, out.MaxDuration = snap.RampStart, snap.MaxDuration.String()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDecisions(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	ds, err := s.opts.Store.Decisions(r.Context(), rec.ID)
	if err != nil {
		s.storeError(w, "decisions", err)
		return
	}
	if ds == nil {
		ds = []store.Decision{}
	}
	writeJSON(w, http.StatusOK, DecisionList{TypeMeta: Meta(KindDecisionList), Run: rec.ID, Decisions: ds})
}

func (s *Server) getObservations(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	obs, err := s.opts.Store.Observations(r.Context(), rec.ID)
	if err != nil {
		s.storeError(w, "observations", err)
		return
	}
	if obs == nil {
		obs = []store.Observation{}
	}
	writeJSON(w, http.StatusOK, ObservationList{TypeMeta: Meta(KindObservationList), Run: rec.ID, Observations: obs})
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	evs, err := s.opts.Store.Events(r.Context(), rec.ID, after)
	if err != nil {
		s.storeError(w, "events", err)
		return
	}
	if evs == nil {
		evs = []store.Event{}
	}
	writeJSON(w, http.StatusOK, EventList{TypeMeta: Meta(KindEventList), Run: rec.ID, Events: evs})
}

func (s *Server) action(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, onBehalfOf, ok := s.actor(w, r)
		if !ok {
			return
		}
		rec, ok := s.run(w, r)
		if !ok {
			return
		}
		if rec.State.Terminal() {
			apiError(w, http.StatusConflict, fmt.Sprintf("run %s has already ended (%s)", rec.ID, rec.State))
			return
		}
		previous := s.summarize(r.Context(), rec).State
		c := &store.Command{RunID: rec.ID, Action: action, Who: req.Who, Reason: req.Reason, CreatedAt: s.opts.Clock.Now()}
		applied, err := s.sup.act(r.Context(), c, s.opts.ActionWait)
		if err != nil {
			s.storeError(w, "command", err)
			return
		}
		s.opts.Logger.Info("action requested", "run", rec.ID, "action", action, "who", req.Who, "reason", req.Reason, "applied", applied)
		if now, err := s.opts.Store.Run(r.Context(), rec.ID); err == nil {
			rec = now
		}
		sum := s.summarize(r.Context(), rec)
		res := ActionResult{TypeMeta: Meta(KindActionResult), Run: rec.ID, Action: action, Command: c.ID, Who: req.Who, OnBehalfOf: onBehalfOf, Reason: req.Reason, Applied: applied, State: sum.State, Previous: previous, Summary: &sum, Weights: sum.Weights}
		code := http.StatusOK
		if !applied {
			code = http.StatusAccepted
		}
		writeJSON(w, code, res)
	}
}

// actor reads an action's body and settles who asks: the named token's name when one
// authenticated the request (what the client said becomes a note in the reason), else the
// client's who, else api@ADDRESS. On failure it has answered and returns false.
func (s *Server) actor(w http.ResponseWriter, r *http.Request) (req ActionRequest, onBehalfOf string, ok bool) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		apiError(w, http.StatusUnsupportedMediaType, "actions take a JSON body (Content-Type: application/json) with who and reason")
		return req, "", false
	}
	if !decodeBody(w, r, &req) {
		return req, "", false
	}
	req.Who, req.Reason = strings.TrimSpace(req.Who), strings.TrimSpace(req.Reason)
	if len(req.Who) > 200 || len(req.Reason) > 2000 {
		apiError(w, http.StatusBadRequest, "who is limited to 200 bytes and reason to 2000")
		return req, "", false
	}
	// Stored escaped: every later printing (status, reports, logs) shows the text as typed.
	req.Who, req.Reason = Printable(req.Who), Printable(req.Reason)
	if p := principal(r); p != "" {
		// A named token is the principal: what the client says is only a note.
		if req.Who != "" && req.Who != p {
			onBehalfOf = req.Who
			note := "on behalf of " + req.Who + " (as the client said)"
			if req.Reason == "" {
				req.Reason = note
			} else {
				req.Reason += " — " + note
			}
		}
		req.Who = p
	}
	if req.Who == "" {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		req.Who = "api@" + host
	}
	return req, onBehalfOf, true
}

// retry starts a new run of an ended run's stored experiment, and records on the ended
// run that it was retried. The stored experiment has no secrets: the new run sends no
// notifications to targets that needed them.
func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	req, _, ok := s.actor(w, r)
	if !ok {
		return
	}
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	if !rec.State.Terminal() {
		apiError(w, http.StatusConflict, fmt.Sprintf("run %s has not ended (%s): only an ended run can be retried", rec.ID, rec.State))
		return
	}
	exp := &experiments.Experiment{}
	if err := json.Unmarshal(rec.Spec, exp); err != nil {
		apiError(w, http.StatusInternalServerError, fmt.Sprintf("run %s: stored experiment: %v", rec.ID, err))
		return
	}
	nr, err := s.sup.start(r.Context(), exp, rec.SpecFile)
	var busy *store.PoolBusyError
	switch {
	case errors.As(err, &busy):
		apiError(w, http.StatusConflict, fmt.Sprintf("pool %s is owned by run %s: retry when it ends", busy.Pool, busy.RunID))
		return
	case err != nil:
		apiError(w, http.StatusInternalServerError, "start the retry: "+err.Error())
		return
	}
	data, _ := json.Marshal(RetryData{Run: nr.id, Who: req.Who})
	ev := store.Event{RunID: rec.ID, At: s.opts.Clock.Now(), Type: EventRetried, Message: fmt.Sprintf("retried as run %s (by %s)", nr.id, req.Who), Data: data}
	if old, err := s.opts.Store.Run(r.Context(), rec.ID); err == nil {
		if err := s.opts.Store.SaveRun(r.Context(), old, ev); err != nil {
			s.opts.Logger.Warn("record the retry on the ended run", "run", rec.ID, "retry", nr.id, "err", err)
		}
	}
	s.opts.Logger.Info("run retried", "run", rec.ID, "retry", nr.id, "who", req.Who)
	writeJSON(w, http.StatusCreated, RetryResult{TypeMeta: Meta(KindRetryResult), Run: nr.id, RetryOf: rec.ID, Who: req.Who})
}

func (s *Server) getReport(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	rep, err := report.FromStore(r.Context(), s.opts.Store, rec.ID)
	if err != nil {
		s.storeError(w, "report of "+rec.ID, err)
		return
	}
	var buf bytes.Buffer
	switch f := r.URL.Query().Get("format"); f {
	case "json":
		if err := report.WriteJSON(&buf, rep); err != nil {
			apiError(w, http.StatusInternalServerError, "render the report: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(buf.Bytes())
		return
	case "md", "markdown":
		// Without a directory for chart files, Markdown carries the tables only.
		if err := report.WriteMarkdown(&buf, rep, report.MarkdownOptions{}); err != nil {
			apiError(w, http.StatusInternalServerError, "render the report: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		w.Write(buf.Bytes())
		return
	case "", "html":
	default:
		apiError(w, http.StatusBadRequest, "format must be html, md or json, not "+strconv.Quote(f))
		return
	}
	if err := report.WriteHTML(&buf, rep); err != nil {
		apiError(w, http.StatusInternalServerError, "render the report: "+err.Error())
		return
	}
	// The report is one self-contained page: inline styles and SVG, no script.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// ---- event streams ----------------------------------------------------------------------

func (s *Server) streamAll(w http.ResponseWriter, r *http.Request) { s.stream(w, r, "") }

func (s *Server) streamRun(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.run(w, r)
	if !ok {
		return
	}
	s.stream(w, r, rec.ID)
}

// stream serves server-sent events: the messages after Last-Event-ID (or ?after=), then
// live ones, with a comment every 15s to keep proxies from closing the connection. A
// position that cannot be resumed exactly (the server restarted, or the client fell too
// far behind) gets a "reset" event: re-read the state, then carry on from its ID.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, run string) {
	// A stream outlives the server's read and write timeouts (a read deadline passing would
	// cancel the request), so it lifts both for itself.
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	rc.SetReadDeadline(time.Time{})
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("after")
	}
	backlog, sub, cursor, ok := s.broker.subscribe(run, last, 512)
	defer s.broker.unsubscribe(sub)
	s.tel.sseClients.Inc()
	defer s.tel.sseClients.Dec()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	if !ok {
		fmt.Fprintf(w, "id: %s\nevent: reset\ndata: %s\n\n", cursor, mustJSON(map[string]string{"reason": "position " + last + " is gone (server restarted or client too far behind): re-read the state", "cursor": cursor}))
	}
	for _, m := range backlog {
		writeEvent(w, m)
	}
	if err := rc.Flush(); err != nil {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case m, open := <-sub.ch:
			if !open {
				return
			}
			writeEvent(w, m)
			// Send what else is already queued in the same write.
			for more := true; more; {
				select {
				case m, open := <-sub.ch:
					if !open {
						rc.Flush()
						return
					}
					writeEvent(w, m)
				default:
					more = false
				}
			}
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func writeEvent(w io.Writer, m Message) {
	fmt.Fprintf(w, "id: %s\ndata: %s\n\n", m.ID, mustJSON(m))
}
