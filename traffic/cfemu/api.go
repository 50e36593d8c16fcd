package cfemu

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Cloudflare error codes the emulator returns. The auth, routing and rate-limit codes are
// the ones Cloudflare's API is seen to return; 1002 is the load-balancing "validation
// failed" code; the not-found and server-error codes are the emulator's choice.
const (
	CodeAuthentication   = 10000 // missing credentials
	CodeInvalidToken     = 9109  // wrong token, or an account the token cannot see
	CodeInvalidHeaders   = 6003  // malformed Authorization header
	CodeInvalidAuthFmt   = 6111  // ... its error_chain entry
	CodeValidation       = 1002  // a pool failed validation
	CodePoolNotFound     = 1003
	CodeRoute            = 7003 // no such route
	CodeMethodNotAllowed = 10405
	CodeRateLimited      = 971
	CodeInternal         = 10001
)

const apiPrefix = "/client/v4/"

type apiError struct {
	Code       int        `json:"code"`
	Message    string     `json:"message"`
	ErrorChain []apiError `json:"error_chain,omitempty"`
}

type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
}

type envelope struct {
	Result     any         `json:"result"`
	ResultInfo *resultInfo `json:"result_info,omitempty"`
	Success    bool        `json:"success"`
	Errors     []apiError  `json:"errors"`
	Messages   []any       `json:"messages"`
}

// Handler is the API, for mounting on a server of the caller's own (httptest, for one).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveAPI)
}

type recorder struct {
	http.ResponseWriter
	status  int
	dropped bool
}

// WriteHeader remembers the status for Calls.
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// AdminPrefix is where the emulator's own endpoints live, next to the API but not part of
// Cloudflare's: they need the API token, and skip faults, the rate limit and Calls.
const AdminPrefix = "/cfemu/admin/"

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AdminPrefix) {
		if s.authenticate(w, r) {
			s.admin(w, r)
		}
		return
	}
	rec := &recorder{ResponseWriter: w}
	s.handle(rec, r)
	if rec.status == 0 && !rec.dropped {
		rec.status = http.StatusOK
	}
	s.mu.Lock()
	s.calls = append(s.calls, Call{Method: r.Method, Path: r.URL.Path, Status: rec.status})
	s.mu.Unlock()
	s.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "status", rec.status)
	if s.opts.AfterRequest != nil {
		s.opts.AfterRequest(r, rec.status)
	}
}

func writeEnvelope(w http.ResponseWriter, status int, env envelope) {
	if env.Errors == nil {
		env.Errors = []apiError{}
	}
	if env.Messages == nil {
		env.Messages = []any{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(env)
}

func writeError(w http.ResponseWriter, status int, errs ...apiError) {
	writeEnvelope(w, status, envelope{Success: false, Errors: errs})
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f := s.fault
	failing := f.Fail > 0
	if failing {
		s.fault.Fail--
	}
	s.mu.Unlock()

	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if failing {
		if f.Applied && s.authenticate(discard{}, r) && s.admit(discard{}) {
			s.route(discard{}, r)
		}
		s.fail(w, f)
		return
	}
	if !s.authenticate(w, r) {
		return
	}
	if !s.admit(w) {
		return
	}
	s.route(w, r)
}

func (s *Server) fail(w http.ResponseWriter, f Fault) {
	if f.Drop {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			if rec, ok := w.(*recorder); ok {
				rec.dropped = true
			}
			conn.Close()
			return
		}
		panic(http.ErrAbortHandler)
	}
	if f.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
		writeError(w, f.Status, apiError{Code: CodeRateLimited, Message: "Please wait and consider throttling your request speed"})
		return
	}
	if f.HTML {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, "<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1></center><hr><center>cloudflare</center></body></html>\n",
			f.Status, http.StatusText(f.Status), f.Status, http.StatusText(f.Status))
		return
	}
	writeError(w, f.Status, apiError{Code: CodeInternal, Message: "Internal Server Error (injected fault)"})
}

// discard swallows the answer of a call carried out behind a Fault.Applied failure.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// Unwrap lets the fault path reach the connection to drop it.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		writeError(w, http.StatusForbidden, apiError{Code: CodeAuthentication, Message: "Authentication error"})
		return false
	}
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" || strings.ContainsAny(token, " \t") {
		writeError(w, http.StatusBadRequest, apiError{Code: CodeInvalidHeaders, Message: "Invalid request headers",
			ErrorChain: []apiError{{Code: CodeInvalidAuthFmt, Message: "Invalid format for Authorization header"}}})
		return false
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.Token)) != 1 {
		writeError(w, http.StatusForbidden, apiError{Code: CodeInvalidToken, Message: "Invalid access token"})
		return false
	}
	return true
}

// admit applies the rate limit: RateLimit requests per RateWindow; the request that goes
// over blocks every call for a whole RateWindow, as Cloudflare's global API limit does.
// Every answer carries the Ratelimit and Ratelimit-Policy headers; a 429 adds
// Retry-After.
func (s *Server) admit(w http.ResponseWriter) bool {
	if s.opts.RateLimit < 0 {
		return true
	}
	now := s.opts.Now()
	win := s.opts.RateWindow
	s.mu.Lock()
	defer s.mu.Unlock()
	policy := fmt.Sprintf(`"default";q=%d;w=%d`, s.opts.RateLimit, int(math.Ceil(win.Seconds())))
	w.Header().Set("Ratelimit-Policy", policy)
	if now.Before(s.blockedTill) {
		s.reject(w, s.blockedTill.Sub(now))
		return false
	}
	cut := 0
	for cut < len(s.window) && !s.window[cut].After(now.Add(-win)) {
		cut++
	}
	s.window = s.window[cut:]
	if len(s.window) >= s.opts.RateLimit {
		s.blockedTill = now.Add(win)
		s.window = s.window[:0]
		s.reject(w, win)
		return false
	}
	s.window = append(s.window, now)
	reset := win
	if len(s.window) > 0 {
		reset = s.window[0].Add(win).Sub(now)
	}
	w.Header().Set("Ratelimit", fmt.Sprintf(`"default";r=%d;t=%d`, s.opts.RateLimit-len(s.window), int(math.Ceil(reset.Seconds()))))
	return true
}

func (s *Server) reject(w http.ResponseWriter, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Ratelimit", fmt.Sprintf(`"default";r=0;t=%d`, secs))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, apiError{Code: CodeRateLimited, Message: "Please wait and consider throttling your request speed"})
}

func routeError(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, apiError{Code: CodeRoute,
		Message: fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", r.URL.Path)})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, apiError{Code: CodeMethodNotAllowed,
		Message: fmt.Sprintf("%s method not allowed for %s", r.Method, r.URL.Path)})
}

// route dispatches /client/v4/accounts/{account}/load_balancers/pools[/{id}[/health]].
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix)
	if !ok {
		routeError(w, r)
		return
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) < 4 || parts[0] != "accounts" || parts[2] != "load_balancers" || parts[3] != "pools" || len(parts) > 6 {
		routeError(w, r)
		return
	}
	if parts[1] != s.opts.AccountID {
		writeError(w, http.StatusForbidden, apiError{Code: CodeInvalidToken, Message: "Unauthorized to access requested resource"})
		return
	}
	switch {
	case len(parts) == 4:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		s.list(w)
	case len(parts) == 5:
		switch r.Method {
		case http.MethodGet:
			s.get(w, r, parts[4])
		case http.MethodPut, http.MethodPatch:
			s.write(w, r, parts[4])
		default:
			methodNotAllowed(w, r, "GET, PUT, PATCH")
		}
	case parts[5] == "health":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		s.health(w, r, parts[4])
	default:
		routeError(w, r)
	}
}

func (s *Server) list(w http.ResponseWriter) {
	s.mu.Lock()
	list := make([]json.RawMessage, 0, len(s.order))
	for _, id := range s.order {
		list = append(list, s.pools[id].marshal())
	}
	s.mu.Unlock()
	writeEnvelope(w, http.StatusOK, envelope{Success: true, Result: list,
		ResultInfo: &resultInfo{Page: 1, PerPage: len(list), Count: len(list), TotalCount: len(list)}})
}

func poolNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, apiError{Code: CodePoolNotFound, Message: fmt.Sprintf("pool %q not found", id)})
}

func (s *Server) get(w http.ResponseWriter, _ *http.Request, id string) {
	s.mu.Lock()
	p, ok := s.pools[id]
	var body json.RawMessage
	if ok {
		body = p.marshal()
	}
	s.mu.Unlock()
	if !ok {
		poolNotFound(w, id)
		return
	}
	writeEnvelope(w, http.StatusOK, envelope{Success: true, Result: body})
}

// write handles PUT (replace every writable field; name and origins required) and PATCH
// (replace the fields given; "origins", when given, replaces the whole list).
func (s *Server) write(w http.ResponseWriter, r *http.Request, id string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: CodeValidation, Message: "could not read request body: validation failed"})
		return
	}
	obj, err := decodeObject(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: CodeValidation, Message: "request body is not a JSON object: validation failed"})
		return
	}
	fields, origins, hasOrigins, err := splitPool(obj)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: CodeValidation, Message: err.Error() + ": validation failed"})
		return
	}
	s.mu.Lock()
	p, ok := s.pools[id]
	if !ok {
		s.mu.Unlock()
		poolNotFound(w, id)
		return
	}
	if r.Method == http.MethodPatch {
		fields, origins = p.patched(fields, origins, hasOrigins)
	} else {
		if !hasOrigins {
			origins = nil
		}
		// PUT keeps only the server-computed fields of the old pool.
		for _, k := range readOnlyPool {
			if v, ok := p.fields[k]; ok {
				if _, sent := fields[k]; !sent {
					fields[k] = v
				}
			}
		}
	}
	if err := validate(fields, origins); err != nil {
		s.mu.Unlock()
		var errs []apiError
		for _, msg := range err.(*validationError).problems {
			errs = append(errs, apiError{Code: CodeValidation, Message: msg})
		}
		writeError(w, http.StatusBadRequest, errs...)
		return
	}
	p.store(fields, origins, s.opts.Now())
	out := p.marshal()
	s.mu.Unlock()
	writeEnvelope(w, http.StatusOK, envelope{Success: true, Result: out})
}

type originHealth struct {
	Healthy       bool   `json:"healthy"`
	RTT           string `json:"rtt"`
	FailureReason string `json:"failure_reason"`
	ResponseCode  int    `json:"response_code"`
}

type popHealth struct {
	Healthy bool                      `json:"healthy"`
	Origins []map[string]originHealth `json:"origins"`
}

// health answers GET .../pools/{id}/health in Cloudflare's shape, from one pseudo data
// centre, with origin health as declared through SetOriginHealth and enabled flags.
func (s *Server) health(w http.ResponseWriter, _ *http.Request, id string) {
	s.mu.Lock()
	p, ok := s.pools[id]
	var v view
	if ok {
		v = p.view()
	}
	s.mu.Unlock()
	if !ok {
		poolNotFound(w, id)
		return
	}
	ph := popHealth{}
	healthy := 0
	for _, o := range v.Origins {
		h := originHealth{Healthy: o.Healthy, RTT: "0ms", FailureReason: "No failures", ResponseCode: 200}
		if !o.Healthy {
			h.FailureReason, h.ResponseCode = "marked unhealthy", 0
			if !o.Enabled {
				h.FailureReason = "origin disabled"
			}
		} else {
			healthy++
		}
		ph.Origins = append(ph.Origins, map[string]originHealth{o.Address: h})
	}
	ph.Healthy = v.Enabled && healthy >= v.MinimumOrigins
	writeEnvelope(w, http.StatusOK, envelope{Success: true, Result: map[string]any{
		"pool_id":    id,
		"pop_health": map[string]popHealth{"Emulator, loopback": ph},
	}})
}

// admin serves PUT /cfemu/admin/pools/{id}/origins/{name}/health with {"healthy": bool}:
// SetOriginHealth over HTTP, so a person rehearsing with `verdict emulate cloudflare` can
// take an origin down as a failing monitor would.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, AdminPrefix), "/")
	if len(parts) != 5 || parts[0] != "pools" || parts[2] != "origins" || parts[4] != "health" {
		routeError(w, r)
		return
	}
	if r.Method != http.MethodPut {
		methodNotAllowed(w, r, "PUT")
		return
	}
	var body struct {
		Healthy *bool `json:"healthy"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil || body.Healthy == nil {
		writeError(w, http.StatusBadRequest, apiError{Code: CodeValidation, Message: `body must be {"healthy": true|false}: validation failed`})
		return
	}
	if err := s.SetOriginHealth(parts[1], parts[3], *body.Healthy); err != nil {
		writeError(w, http.StatusNotFound, apiError{Code: CodePoolNotFound, Message: err.Error()})
		return
	}
	writeEnvelope(w, http.StatusOK, envelope{Success: true, Result: map[string]any{"pool_id": parts[1], "origin": parts[3], "healthy": *body.Healthy}})
}
