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
	// tokenFrom says where the token came from, for the message of a refused token.
	tokenFrom string
	pools     *load_balancers.PoolService
	health    *load_balancers.PoolHealthService
	log       *slog.Logger
}

var (
	_ Steerer = (*Cloudflare)(nil)
	_ Claimer = (*Cloudflare)(nil)
)

// NewCloudflare returns a Cloudflare Steerer. It fails if there is no token (ErrNoCredentials)
// or the token file cannot be read; it does not call the API.
func NewCloudflare(o CloudflareOptions) (*Cloudflare, error) {
	token := strings.TrimSpace(o.Token)
	tokenFrom := EnvCloudflareToken
	if token == "" && o.TokenFile != "" {
		tokenFrom = fmt.Sprintf("the file %q (%s)", o.TokenFile, EnvCloudflareTokenFile)
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
	c := &Cloudflare{opts: o, token: token, tokenFrom: tokenFrom, log: o.Logger}
	sdkOpts := []option.RequestOption{
		option.WithHTTPClient(o.HTTPClient),
		option.WithBaseURL(o.BaseURL),
		option.WithAPIToken(token),
		option.WithMaxRetries(o.SDKRetries),
	}
	c.pools = load_balancers.NewPoolService(sdkOpts...)
	c.health = load_balancers.NewPoolHealthService(sdkOpts...)
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

// Health reads what the pool's monitors say about its origins with GET
// /accounts/{account}/load_balancers/pools/{pool}/health, after reading the pool to map
// the report's origin addresses back to origin names. A pool without a monitor reports no
// regions: PoolHealth.Monitored is false.
func (c *Cloudflare) Health(ctx context.Context, ref PoolRef) (PoolHealth, error) {
	ref, err := c.resolve(ref)
	if err != nil {
		return PoolHealth{}, err
	}
	p, err := c.get(ctx, ref)
	if err != nil {
		return PoolHealth{}, fmt.Errorf("read pool %s for its health: %w", ref, err)
	}
	var h PoolHealth
	err = c.do(ctx, "GET pool health "+ref.String(), func(ctx context.Context) error {
		var params load_balancers.PoolHealthGetParams
		params.AccountID.Value, params.AccountID.Present = ref.Account, true
		var raw []byte
		var resp *http.Response
		_, err := c.health.Get(ctx, ref.Pool, params, option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
		if err := c.apiError(http.MethodGet, resp, err); err != nil {
			return err
		}
		h, err = DecodePoolHealth(raw, p)
		if err != nil {
			return final(fmt.Errorf("decode Cloudflare response: %w", err))
		}
		return nil
	})
	if err != nil {
		return PoolHealth{}, fmt.Errorf("read health of pool %s: %w", ref, err)
	}
	h.Pool = ref
	return h, nil
}

func (c *Cloudflare) get(ctx context.Context, ref PoolRef) (Pool, error) {
	var p Pool
	err := c.do(ctx, "GET pool "+ref.String(), func(ctx context.Context) error {
		var err error
		p, err = c.getOnce(ctx, ref)
		return err
	})
	return p, err
}

// getOnce is one GET attempt, for callers that run it inside their own retried attempt.
// A response that cannot be decoded is permanent: asking again gives the same answer.
func (c *Cloudflare) getOnce(ctx context.Context, ref PoolRef) (Pool, error) {
	var params load_balancers.PoolGetParams
	params.AccountID.Value, params.AccountID.Present = ref.Account, true
	var raw []byte
	var resp *http.Response
	_, err := c.pools.Get(ctx, ref.Pool, params, option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
	if err := c.apiError(http.MethodGet, resp, err); err != nil {
		return Pool{}, err
	}
	p, err := DecodePool(raw)
	if err != nil {
		return Pool{}, final(fmt.Errorf("decode Cloudflare response: %w", err))
	}
	return p, nil
}

// patchOnce is one PATCH attempt sending body, which must name only the fields to change.
func (c *Cloudflare) patchOnce(ctx context.Context, ref PoolRef, body []byte) error {
	var params load_balancers.PoolEditParams
	params.AccountID.Value, params.AccountID.Present = ref.Account, true
	var raw []byte
	var resp *http.Response
	_, err := c.pools.Edit(ctx, ref.Pool, params,
		option.WithRequestBody("application/json", body),
		option.WithResponseBodyInto(&raw), option.WithResponseInto(&resp))
	return c.apiError(http.MethodPatch, resp, err)
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
// changed, then reads the pool back and returns a *DriftError (phase PhaseAfterWrite) if
// any origin's weight differs from what was intended.
//
// The PATCH must carry every origin with every field, so a retry that resent the list
// from the first read would revert whatever changed in the pool while it waited (up to
// MaxRateLimitWait on a 429). So every attempt after the first reads the pool again just
// before it writes, and any difference from the first read stops the write as drift
// (PhaseBetweenAttempts). What remains is the time between that read and the PATCH
// arriving, one round trip: Cloudflare has no conditional writes for pools to close it.
// A change landing in it is reverted and cannot be detected later either; the read-back
// catches only changes made after the PATCH.
func (c *Cloudflare) SetWeights(ctx context.Context, ref PoolRef, want, expect Weights) error {
	ref, err := c.resolve(ref)
	if err != nil {
		return err
	}
	first, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("set weights on pool %s: read current pool: %w", ref, err)
	}
	// Drift first: an origin the caller expected that is gone was removed by someone else,
	// which the caller must hear about as drift, not as a bad request.
	if err := CheckDrift(first, ref, PhaseBeforeWrite, expect); err != nil {
		return err
	}
	if err := CheckRequest(first, want, expect); err != nil {
		return fmt.Errorf("set weights on pool %s: %w", ref, err)
	}
	if !Changes(first, want) {
		c.log.Debug("weights already as wanted; nothing written", "pool", ref.String())
		return nil
	}
	// Validate the body once, from the first read; attempts rebuild it from their own.
	if _, err := weightsBody(first, want); err != nil {
		return fmt.Errorf("set weights on pool %s: %w", ref, err)
	}
	latest := first
	attempts := 0
	unsure := false // an earlier PATCH failed without saying whether it was applied
	written := false
	err = c.do(ctx, "PATCH pool "+ref.String(), func(ctx context.Context) error {
		attempts++
		if attempts > 1 {
			p, err := c.getOnce(ctx, ref)
			if err != nil {
				return err
			}
			latest = p
			switch landed, err := c.sinceFirstRead(ref, first, latest, want, unsure); {
			case err != nil:
				return final(err)
			case landed:
				// An earlier attempt answered 5xx but was applied: sending it again would
				// change nothing, and the read-back confirms it.
				c.log.Info("an earlier attempt was applied despite its error; not sending again", "pool", ref.String())
				return nil
			}
		}
		body, err := weightsBody(latest, want)
		if err != nil {
			return final(err)
		}
		err = c.patchOnce(ctx, ref, body)
		if err == nil {
			written = true
		} else if !refused(err) {
			unsure = true
		}
		return err
	})
	if err != nil {
		var de *DriftError
		if errors.As(err, &de) {
			return err
		}
		return fmt.Errorf("set weights on pool %s: write origins: %w", ref, err)
	}
	if written {
		c.log.Info("pool weights written", "pool", ref.String(), "weights", fmt.Sprint(want), "attempts", attempts)
	}
	back, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("set weights on pool %s: written, but reading back to verify failed: %w", ref, err)
	}
	return CheckDrift(back, ref, PhaseAfterWrite, Intended(latest, want))
}

// sinceFirstRead decides whether a retry may go ahead with latest, the pool as read just
// before it. Any difference from first is someone else's change and comes back as a
// *DriftError, except this call's own weights already in place (landed), which only an
// earlier attempt applied despite its error, or someone making the very same change,
// leaves. The phase is PhaseAfterWrite when an earlier attempt may have been applied and
// some of its weights are in the pool, so the caller does not take "nothing written"
// for granted.
func (c *Cloudflare) sinceFirstRead(ref PoolRef, first, latest Pool, want Weights, unsure bool) (landed bool, err error) {
	diff := DiffPools(first, latest)
	if len(diff) == 0 {
		return false, nil
	}
	ours, others := 0, 0
	for _, d := range diff {
		w, wanted := want[d.Name]
		switch {
		case wanted && !d.Missing && !d.Added && len(d.Fields) == 0 && SameWeight(d.Actual, w):
			ours++
		default:
			others++
		}
	}
	if others == 0 && !Changes(latest, want) {
		return true, nil
	}
	phase := PhaseBetweenAttempts
	if unsure && ours > 0 {
		phase = PhaseAfterWrite
	}
	c.log.Warn("pool changed while a write waited to be retried; not writing over it", "pool", ref.String(), "origins", len(diff))
	return false, &DriftError{Pool: ref, Phase: phase, Origins: diff}
}

// refused reports whether a failed write is known not to have been applied: Cloudflare
// answered 4xx (a 429 included, which the rate limiter sends before the request is
// handled). A 5xx, a timeout or a dropped connection may have come after the write was
// applied.
func refused(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500
}

// weightsBody is the PATCH body setting want on p: only "origins", with every origin and
// every field as read.
func weightsBody(p Pool, want Weights) ([]byte, error) {
	origins, err := ApplyWeights(p, want)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(map[string]any{"origins": origins})
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return body, nil
}

// Claim marks the pool as driven by cl.Run in its description, which every Verdict and
// the dashboard show. Each attempt reads the pool and decides from that read (a claim by
// another run that appeared while a retry waited is refused, not overwritten), then
// PATCHes only "description", so no origin can be reverted; the pool is read back to
// check the claim is ours. Without conditional writes two claimers can still both pass
// their read in the same round trip; the loser sees the winner's claim in its read-back
// or at its next renewal.
func (c *Cloudflare) Claim(ctx context.Context, ref PoolRef, cl Claim, force bool) error {
	ref, err := c.resolve(ref)
	if err != nil {
		return err
	}
	if cl.Run == "" {
		return fmt.Errorf("claim pool %s: no run ID", ref)
	}
	marker := cl.String()
	err = c.describe(ctx, ref, "claim", func(p Pool) (string, error) {
		if other, ok := p.Claim(); ok && other.Run != cl.Run && !force {
			return "", &ClaimedError{Pool: ref, Claim: other}
		} else if ok && other.Run != cl.Run {
			c.log.Warn("taking over another run's claim (forced)", "pool", ref.String(), "run", other.Run, "owner", other.Owner)
		}
		return WithClaim(p.Description, marker), nil
	})
	if err != nil {
		return err
	}
	back, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("claim pool %s: written, but reading back to verify failed: %w", ref, err)
	}
	got, ok := back.Claim()
	switch {
	case !ok:
		return fmt.Errorf("claim pool %s: the claim is not in the pool's description after writing it (description %q)", ref, back.Description)
	case got.Run != cl.Run || got.Owner != cl.Owner:
		return &ClaimedError{Pool: ref, Claim: got}
	}
	return nil
}

// Release replaces last.Run's claim with last's note, deciding from a fresh read at every
// attempt: a pool taken over by another run is left alone (*ClaimedError), a pool with no
// claim gets the note anyway.
func (c *Cloudflare) Release(ctx context.Context, ref PoolRef, last LastRun) error {
	ref, err := c.resolve(ref)
	if err != nil {
		return err
	}
	if last.Run == "" {
		return fmt.Errorf("release pool %s: no run ID", ref)
	}
	marker := last.String()
	err = c.describe(ctx, ref, "release", func(p Pool) (string, error) {
		if other, ok := p.Claim(); ok && other.Run != last.Run {
			return "", &ClaimedError{Pool: ref, Claim: other}
		}
		return WithClaim(p.Description, marker), nil
	})
	if err != nil {
		return err
	}
	back, err := c.get(ctx, ref)
	if err != nil {
		return fmt.Errorf("release pool %s: written, but reading back to verify failed: %w", ref, err)
	}
	// Another run claiming right after is fine; only our own claim surviving is not.
	if got, ok := back.Claim(); ok && got.Run == last.Run {
		return fmt.Errorf("release pool %s: run %s's claim is still on the pool after removing it (owner %s): is another process driving the run?", ref, got.Run, got.Owner)
	}
	return nil
}

// describe writes the description decide returns for the pool as just read, one read and
// one PATCH of only "description" per attempt, and nothing when it is already so.
func (c *Cloudflare) describe(ctx context.Context, ref PoolRef, op string, decide func(Pool) (string, error)) error {
	err := c.do(ctx, "PATCH description of pool "+ref.String(), func(ctx context.Context) error {
		p, err := c.getOnce(ctx, ref)
		if err != nil {
			return err
		}
		desc, err := decide(p)
		if err != nil {
			return final(err)
		}
		if desc == p.Description {
			return nil
		}
		body, err := json.Marshal(map[string]string{"description": desc})
		if err != nil {
			return final(err)
		}
		return c.patchOnce(ctx, ref, body)
	})
	var ce *ClaimedError
	if errors.As(err, &ce) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%s pool %s: %w", op, ref, err)
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
	// Fix tells the operator what to change, when Verdict knows (a refused token).
	Fix string
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
	if e.Fix != "" {
		b.WriteString("; " + e.Fix)
	}
	return b.String()
}

// Is lets callers test for ErrNotFound (HTTP 404), ErrRateLimited (HTTP 429) and
// ErrUnauthorized (HTTP 401 and 403).
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
		ae.Fix = c.fix(ae)
		return ae
	}
	if resp != nil && resp.StatusCode >= 400 {
		ae := &APIError{Method: method, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
		if resp.Request != nil && resp.Request.URL != nil {
			ae.Path = resp.Request.URL.Path
		}
		ae.Errors = []APIErrorDetail{{Message: "response is not a Cloudflare API envelope"}}
		ae.Fix = c.fix(ae)
		return ae
	}
	return &scrubbed{msg: c.redact(err.Error()), err: err}
}

// fix says what to change for a refused token: retrying cannot help, a person must act.
// It names where the token came from, never the token.
func (c *Cloudflare) fix(ae *APIError) string {
	if !errors.Is(ae, ErrUnauthorized) {
		return ""
	}
	return fmt.Sprintf("Cloudflare refused the API token from %s: check that it is the right token and not expired or revoked, "+
		"that it has the account permission \"Load Balancing: Monitors and Pools\" with Edit access, "+
		"and that it covers the account in the request (%s or --account)", c.tokenFrom, EnvCloudflareAccount)
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

// finalError marks an error found inside an attempt that retrying cannot cure (drift,
// an undecodable response); do returns what it wraps.
type finalError struct{ err error }

func (f *finalError) Error() string { return f.err.Error() }
func (f *finalError) Unwrap() error { return f.err }

func final(err error) error { return &finalError{err: err} }

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
	var f *finalError
	if errors.As(err, &f) {
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
			if f, ok := err.(*finalError); ok {
				return f.err
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

func (c *Cloudflare) backoff(n int) time.Duration {
	return Backoff(c.opts.BackoffBase, c.opts.BackoffMax, n)
}

// Backoff is the wait before retry n (1-based) of every provider's client: a uniformly
// random time in [d/2, d] with d = min(base·2ⁿ⁻¹, most). The jitter keeps many Verdict
// processes that failed together from retrying together.
func Backoff(base, most time.Duration, n int) time.Duration {
	d := base << min(max(n-1, 0), 30)
	if d <= 0 || d > most {
		d = most
	}
	return d/2 + rand.N(d/2+1)
}
