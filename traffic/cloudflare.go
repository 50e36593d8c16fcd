package traffic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/load_balancers"
	"github.com/cloudflare/cloudflare-go/v7/option"
)

// DefaultCloudflareBaseURL is Cloudflare's production API endpoint.
const DefaultCloudflareBaseURL = "https://api.cloudflare.com/client/v4/"

// Environment variables NewCloudflare's callers read through CloudflareOptionsFromEnv.
const (
	EnvCloudflareToken     = "CLOUDFLARE_API_TOKEN"
	EnvCloudflareTokenFile = "CLOUDFLARE_API_TOKEN_FILE"
	EnvCloudflareAccount   = "CLOUDFLARE_ACCOUNT_ID"
	EnvCloudflareBaseURL   = "CLOUDFLARE_BASE_URL"
)

// ErrNoCredentials reports that no Cloudflare API token is configured; callers that can
// work offline (verdict plan with a pool file) branch on it.
var ErrNoCredentials = errors.New("no Cloudflare API token: set " + EnvCloudflareToken + " or " + EnvCloudflareTokenFile)

// ErrUnauthorized matches every error caused by Cloudflare refusing the credentials (HTTP
// 401 or 403): retrying cannot help, so a run fails fast and says which token to fix.
var ErrUnauthorized = errors.New("Cloudflare refused the API token")

// ErrRateLimited matches every error caused by Cloudflare's rate limit (HTTP 429), so a
// caller such as the engine can back off for longer than one call is allowed to wait.
var ErrRateLimited = errors.New("rate limited by Cloudflare")

// CloudflareOptions configures a Cloudflare Steerer. Zero fields take the defaults noted
// on each; tests shrink the time bounds so retry paths run in milliseconds.
type CloudflareOptions struct {
	// Token is the API token. It is sent only in the Authorization header and scrubbed
	// from every error and log line.
	Token string
	// TokenFile is read when Token is empty (a mounted secret, for instance).
	TokenFile string
	// AccountID is used for a PoolRef without an account.
	AccountID string
	// BaseURL is the API endpoint, default DefaultCloudflareBaseURL; point it at the
	// emulator (http://127.0.0.1:8787/client/v4/) or a test server.
	BaseURL string
	// HTTPClient defaults to a client with no overall timeout (per-attempt deadlines come
	// from CallTimeout).
	HTTPClient *http.Client
	// Logger defaults to discarding.
	Logger *slog.Logger

	// CallTimeout bounds each HTTP attempt, default 30s.
	CallTimeout time.Duration
	// MaxAttempts bounds attempts of one call on 5xx and network errors, default 4.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff between those attempts:
	// attempt n waits a random time in [d/2, d] with d = min(BackoffBase·2ⁿ⁻¹, BackoffMax).
	// Defaults 500ms and 8s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// MaxRateLimitWait is the most one call spends waiting on 429 Retry-After in total,
	// default 60s. A Retry-After that would exceed it fails the call at once with an
	// error matching ErrRateLimited: Cloudflare blocks for five minutes once the limit is
	// hit, and an experiment step is better failed and retried later than stalled.
	MaxRateLimitWait time.Duration
	// SDKRetries is how often cloudflare-go itself retries, default 0: the SDK retries
	// 409/429/5xx on every method and sleeps any Retry-After unbounded, so Verdict owns
	// the policy instead.
	SDKRetries int
}

// CloudflareOptionsFromEnv fills options from the standard Cloudflare environment
// variables (CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE, CLOUDFLARE_ACCOUNT_ID,
// CLOUDFLARE_BASE_URL). lookup is os.LookupEnv in production; tests pass a map. It
// returns ErrNoCredentials when neither token variable is set.
func CloudflareOptionsFromEnv(lookup func(string) (string, bool)) (CloudflareOptions, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	o := CloudflareOptions{
		Token:     get(EnvCloudflareToken),
		TokenFile: get(EnvCloudflareTokenFile),
		AccountID: get(EnvCloudflareAccount),
		BaseURL:   get(EnvCloudflareBaseURL),
	}
	if o.Token == "" && o.TokenFile == "" {
		return o, ErrNoCredentials
	}
	return o, nil
}

// Cloudflare is the Steerer for Cloudflare Load Balancing pools, on cloudflare-go v7.
// Writes use PATCH with only the origins field, so no other pool setting can be reset,
// and carry the whole origins list with every field as read, because the API has no
// per-origin endpoint. It is safe for concurrent use.
type Cloudflare struct {
	opts  CloudflareOptions
	token string
	pools *load_balancers.PoolService
	log   *slog.Logger
}

var _ Steerer = (*Cloudflare)(nil)

// NewCloudflare returns a Cloudflare Steerer. It fails if there is no token (ErrNoCredentials)
// or the token file cannot be read; it does not call the API.
func NewCloudflare(o CloudflareOptions) (*Cloudflare, error) {
	token := strings.TrimSpace(o.Token)
	if token == "" && o.TokenFile != "" {
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read Cloudflare API token file (%s=%q): %w", EnvCloudflareTokenFile, o.TokenFile, err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("Cloudflare API token file %q is empty", o.TokenFile)
		}
	}
	if token == "" {
		return nil, ErrNoCredentials
	}
	if o.BaseURL == "" {
		o.BaseURL = DefaultCloudflareBaseURL
	}
	if !strings.HasPrefix(o.BaseURL, "http://") && !strings.HasPrefix(o.BaseURL, "https://") {
		return nil, fmt.Errorf("Cloudflare base URL %q (%s) must start with http:// or https://", o.BaseURL, EnvCloudflareBaseURL)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 4
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 8 * time.Second
	}
	if o.MaxRateLimitWait <= 0 {
		o.MaxRateLimitWait = 60 * time.Second
	}
	if o.SDKRetries < 0 {
		o.SDKRetries = 0
	}
	o.Token = ""
	c := &Cloudflare{opts: o, token: token, log: o.Logger}
	c.pools = load_balancers.NewPoolService(
		option.WithHTTPClient(o.HTTPClient),
		option.WithBaseURL(o.BaseURL),
		option.WithAPIToken(token),
		option.WithMaxRetries(o.SDKRetries),
	)
	return c, nil
}

// idPattern is what Cloudflare account and pool IDs look like (32 hex digits in practice);
// the SDK pastes IDs into the URL path unescaped, so anything else is refused.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c *Cloudflare) resolve(ref PoolRef) (PoolRef, error) {
	if ref.Account == "" {
		ref.Account = c.opts.AccountID
	}
	if ref.Account == "" {
		return ref, fmt.Errorf("pool %q: no Cloudflare account ID: set --account, the experiment's account or %s", ref.Pool, EnvCloudflareAccount)
	}
	if !idPattern.MatchString(ref.Account) {
		return ref, fmt.Errorf("Cloudflare account ID %q is not a valid identifier", ref.Account)
	}
	if !idPattern.MatchString(ref.Pool) {
		return ref, fmt.Errorf("Cloudflare pool ID %q is not a valid identifier", ref.Pool)
	}
	return ref, nil
}

// Pool reads the pool with GET /accounts/{account}/load_balancers/pools/{pool}.
func (c *Cloudflare) Pool(ctx context.Context, ref PoolRef) (Pool, error) {
	ref, err := c.resolve(ref)
	if err != nil {
		return Pool{}, err
	}
	p, err := c.get(ctx, ref)
	if err != nil {
		return Pool{}, fmt.Errorf("read pool %s: %w", ref, err)
	}
	return p, nil
}

func (c *Cloudflare) get(ctx context.Context, ref PoolRef) (Pool, error) {
	var raw []byte
	err := c.do(ctx, "GET pool "+ref.String(), func(ctx context.Context) error {
		var params load_balancers.PoolGetParams
		params.AccountID.Value, params.AccountID.Present = ref.Account, true
		raw = nil
		var resp *http.Response
		_, err := c.pools.Get(ctx, ref.Pool, params, option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
		return c.apiError(http.MethodGet, resp, err)
	})
	if err != nil {
		return Pool{}, err
	}
	p, err := DecodePool(raw)
	if err != nil {
		return Pool{}, fmt.Errorf("decode Cloudflare response: %w", err)
	}
	return p, nil
}

// ListPools reads every pool of an account (empty: the default account) in one call, with
// GET /accounts/{account}/load_balancers/pools. PoolCache uses it to serve many runs' pool
// reads with one API call.
func (c *Cloudflare) ListPools(ctx context.Context, account string) ([]Pool, error) {
	ref, err := c.resolve(PoolRef{Account: account, Pool: strings.Repeat("0", 32)})
	if err != nil {
		return nil, err
	}
	var raw []byte
	err = c.do(ctx, "GET pools of account "+ref.Account, func(ctx context.Context) error {
		var params load_balancers.PoolListParams
		params.AccountID.Value, params.AccountID.Present = ref.Account, true
		raw = nil
		var resp *http.Response
		_, err := c.pools.List(ctx, params, option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
		return c.apiError(http.MethodGet, resp, err)
	})
	if err != nil {
		return nil, fmt.Errorf("list pools of account %s: %w", ref.Account, err)
	}
	var env struct {
		Result []json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("decode Cloudflare response: %w", err)
	}
	pools := make([]Pool, 0, len(env.Result))
	for _, r := range env.Result {
		// A pool this package cannot read is left out rather than failing the list: it is
		// someone else's, or a direct read of it reports the problem.
		if p, err := DecodePool(r); err == nil {
			pools = append(pools, p)
		}
	}
	return pools, nil
}

// SetWeights reads the pool, refuses with a *DriftError if the origins in expect do not
// have those weights, PATCHes the full origins list with only the weights in want
// changed, then reads the pool back and returns a *DriftError (phase "after write") if
// any origin's weight differs from what was intended.
func (c *Cloudflare) SetWeights(ctx context.Context, ref PoolRef, want, expect Weights) error {
	ref, err := c.resolve(ref)
	if err != nil {
		return err
	}
	p, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("set weights on pool %s: read current pool: %w", ref, err)
	}
	// Drift first: an origin the caller expected that is gone was removed by someone else,
	// which the caller must hear about as drift, not as a bad request.
	if err := CheckDrift(p, ref, "before write", expect); err != nil {
		return err
	}
	if err := CheckRequest(p, want, expect); err != nil {
		return fmt.Errorf("set weights on pool %s: %w", ref, err)
	}
	if !Changes(p, want) {
		c.log.Debug("weights already as wanted; nothing written", "pool", ref.String())
		return nil
	}
	origins, err := ApplyWeights(p, want)
	if err != nil {
		return fmt.Errorf("set weights on pool %s: %w", ref, err)
	}
	body, err := json.Marshal(map[string]any{"origins": origins})
	if err != nil {
		return fmt.Errorf("set weights on pool %s: encode request: %w", ref, err)
	}
	err = c.do(ctx, "PATCH pool "+ref.String(), func(ctx context.Context) error {
		var params load_balancers.PoolEditParams
		params.AccountID.Value, params.AccountID.Present = ref.Account, true
		var raw []byte
		var resp *http.Response
		_, err := c.pools.Edit(ctx, ref.Pool, params,
			option.WithRequestBody("application/json", body),
			option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
		return c.apiError(http.MethodPatch, resp, err)
	})
	if err != nil {
		return fmt.Errorf("set weights on pool %s: write origins: %w", ref, err)
	}
	c.log.Info("pool weights written", "pool", ref.String(), "weights", fmt.Sprint(want))
	back, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("set weights on pool %s: written, but reading back to verify failed: %w", ref, err)
	}
	if err := CheckDrift(back, ref, "after write", Intended(p, want)); err != nil {
		return err
	}
	return nil
}

// APIError is an error response from the Cloudflare API, with Cloudflare's own error
// codes and messages so an operator can look them up.
type APIError struct {
	Method string
	Path   string
	Status int
	Errors []APIErrorDetail
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

// APIErrorDetail is one entry of the envelope's "errors" list.
type APIErrorDetail struct {
	Code    int64
	Message string
}

// Error reads like "cloudflare API: PATCH /client/v4/accounts/a/load_balancers/pools/p:
// HTTP 400: 1002 origins[0].weight ...".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloudflare API: %s %s: HTTP %d", e.Method, e.Path, e.Status)
	if t := http.StatusText(e.Status); t != "" {
		b.WriteString(" " + t)
	}
	for i, d := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d %s", d.Code, d.Message)
	}
	return b.String()
}

// Is lets callers test for ErrNotFound (HTTP 404) and ErrRateLimited (HTTP 429).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	}
	return false
}

// HasCode reports whether Cloudflare returned the given error code.
func (e *APIError) HasCode(code int64) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// RateLimitError reports that a call gave up on Cloudflare's rate limit: the next
// Retry-After would have taken the total wait past CloudflareOptions.MaxRateLimitWait.
type RateLimitError struct {
	Waited     time.Duration // time already spent waiting on 429s
	RetryAfter time.Duration // what the server asked for last (0 if it did not say)
	Limit      time.Duration
	Last       *APIError
}

// Error says how long Verdict waited and how long Cloudflare asked for.
func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limited by Cloudflare: waited %s, server asks for %s more, which exceeds the %s bound; try again later: %v",
		e.Waited.Round(time.Millisecond), e.RetryAfter, e.Limit, e.Last)
}

// Unwrap returns the last 429 response.
func (e *RateLimitError) Unwrap() error { return e.Last }

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// apiError turns what the SDK returned into our error types: *APIError for HTTP errors
// (also when the body is not a Cloudflare envelope, such as a proxy's HTML 502), and the
// transport error otherwise, with the token scrubbed from every message.
func (c *Cloudflare) apiError(method string, resp *http.Response, err error) error {
	if err == nil {
		return nil
	}
	var sdk *load_balancers.Error
	if errors.As(err, &sdk) {
		ae := &APIError{Method: method, Status: sdk.StatusCode}
		if sdk.Request != nil && sdk.Request.URL != nil {
			ae.Method, ae.Path = sdk.Request.Method, sdk.Request.URL.Path
		}
		// Decode the body ourselves: the SDK's error type drops error_chain, which is where
		// Cloudflare says which header was malformed.
		var body struct {
			Errors []struct {
				Code       int64  `json:"code"`
				Message    string `json:"message"`
				ErrorChain []struct {
					Code    int64  `json:"code"`
					Message string `json:"message"`
				} `json:"error_chain"`
			} `json:"errors"`
		}
		if json.Unmarshal([]byte(sdk.JSON.RawJSON()), &body) == nil && len(body.Errors) > 0 {
			for _, d := range body.Errors {
				msg := d.Message
				for _, ch := range d.ErrorChain {
					msg += fmt.Sprintf(" (%d %s)", ch.Code, ch.Message)
				}
				ae.Errors = append(ae.Errors, APIErrorDetail{Code: d.Code, Message: c.redact(msg)})
			}
		} else {
			for _, d := range sdk.Errors {
				ae.Errors = append(ae.Errors, APIErrorDetail{Code: d.Code, Message: c.redact(d.Message)})
			}
		}
		if sdk.Response != nil {
			ae.RetryAfter = parseRetryAfter(sdk.Response.Header.Get("Retry-After"))
		}
		return ae
	}
	if resp != nil && resp.StatusCode >= 400 {
		ae := &APIError{Method: method, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
		if resp.Request != nil && resp.Request.URL != nil {
			ae.Path = resp.Request.URL.Path
		}
		ae.Errors = []APIErrorDetail{{Message: "response is not a Cloudflare API envelope"}}
		return ae
	}
	return &scrubbed{msg: c.redact(err.Error()), err: err}
}

// parseRetryAfter reads delta-seconds (Cloudflare's form) or an HTTP date; -1 if absent or
// unreadable.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return -1
}

// scrubbed carries an error whose message had the token removed, keeping the chain for
// errors.Is (context.DeadlineExceeded and the like).
type scrubbed struct {
	msg string
	err error
}

// Error is the scrubbed message.
func (s *scrubbed) Error() string { return s.msg }

// Unwrap keeps the original error for errors.Is and errors.As.
func (s *scrubbed) Unwrap() error { return s.err }

func (c *Cloudflare) redact(s string) string {
	if c.token == "" {
		return s
	}
	return strings.ReplaceAll(s, c.token, "[REDACTED]")
}

type retryClass int

const (
	permanent retryClass = iota
	transient            // 5xx, network errors, per-attempt timeouts
	rateLimited
)

// classify decides how one failed attempt is retried: the single place where Verdict's
// retry policy for Cloudflare lives.
func classify(parent context.Context, err error) retryClass {
	if parent.Err() != nil {
		return permanent
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusTooManyRequests:
			return rateLimited
		case ae.Status >= 500:
			return transient
		}
		return permanent
	}
	// Transport errors: connection refused or reset, EOF, a per-attempt deadline.
	if errors.Is(err, context.Canceled) {
		return permanent
	}
	return transient
}

// do runs call with Verdict's retry policy: each attempt under CallTimeout; 5xx and
// network errors retried with exponential backoff and jitter up to MaxAttempts; 429
// waits Retry-After while the total stays within MaxRateLimitWait, then fails with a
// *RateLimitError.
func (c *Cloudflare) do(ctx context.Context, op string, call func(context.Context) error) error {
	var waited time.Duration
	transientAttempts := 0
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
		err := call(actx)
		cancel()
		if err == nil {
			return nil
		}
		var wait time.Duration
		switch classify(ctx, err) {
		case permanent:
			if ctx.Err() != nil {
				return fmt.Errorf("%w (after %d attempts; last: %v)", ctx.Err(), attempt, err)
			}
			return err
		case transient:
			transientAttempts++
			if transientAttempts >= c.opts.MaxAttempts {
				return fmt.Errorf("giving up after %d attempts: %w", transientAttempts, err)
			}
			wait = c.backoff(transientAttempts)
		case rateLimited:
			var ae *APIError
			errors.As(err, &ae) // classify found one
			wait = ae.RetryAfter
			if wait < 0 {
				wait = c.backoff(attempt)
			}
			// Never hot-loop on "Retry-After: 0".
			wait = max(wait, c.opts.BackoffBase)
			if waited+wait > c.opts.MaxRateLimitWait {
				return &RateLimitError{Waited: waited, RetryAfter: max(ae.RetryAfter, 0), Limit: c.opts.MaxRateLimitWait, Last: ae}
			}
			waited += wait
		}
		c.log.Warn("Cloudflare call failed; retrying", "op", op, "attempt", attempt, "wait", wait, "err", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry; last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// backoff is the wait before retry n (1-based): a uniformly random time in [d/2, d] with
// d = min(BackoffBase·2ⁿ⁻¹, BackoffMax). The jitter keeps many Verdict processes that
// failed together from retrying together.
func (c *Cloudflare) backoff(n int) time.Duration {
	d := c.opts.BackoffBase << min(n-1, 30)
	if d <= 0 || d > c.opts.BackoffMax {
		d = c.opts.BackoffMax
	}
	return d/2 + rand.N(d/2+1)
}
