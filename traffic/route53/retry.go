package route53

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/verdict-dev/verdict/traffic"
)

// ErrThrottled matches every error caused by Route 53 throttling (Throttling,
// PriorRequestNotComplete) that outlasted the retry bounds, so a caller such as the
// engine can back off for longer than one call is allowed to wait.
var ErrThrottled = errors.New("throttled by Route 53")

// ErrAccessDenied matches every error caused by AWS refusing the credentials or their
// permissions: retrying cannot help, a person must fix the IAM policy.
var ErrAccessDenied = errors.New("Route 53 refused the request's credentials or permissions")

// APIError is an error response from the Route 53 API, with AWS's error code and message
// so an operator can look them up. It never carries credentials: AWS does not echo them.
type APIError struct {
	Op      string // "ListResourceRecordSets", "ChangeResourceRecordSets", "GetChange"
	Status  int    // HTTP status, 0 if unknown
	Code    string // "Throttling", "InvalidChangeBatch", "NoSuchHostedZone", ...
	Message string
	// Fix tells the operator what to change, when Verdict knows (a missing permission).
	Fix string
}

// Error reads like "route53 ChangeResourceRecordSets: HTTP 400 Throttling: Rate exceeded".
func (e *APIError) Error() string {
	s := fmt.Sprintf("route53 %s: HTTP %d %s: %s", e.Op, e.Status, e.Code, e.Message)
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

// Is lets callers test for traffic.ErrNotFound (no such hosted zone), ErrThrottled and
// ErrAccessDenied.
func (e *APIError) Is(target error) bool {
	switch target {
	case traffic.ErrNotFound:
		return e.Code == "NoSuchHostedZone"
	case ErrThrottled:
		return throttleCode(e.Code)
	case ErrAccessDenied, traffic.ErrUnauthorized:
		// traffic.ErrUnauthorized too, so the engine fails or pauses at once, as for a
		// refused Cloudflare token, instead of retrying until noDataTimeout.
		return accessCode(e.Code) || e.Status == 401 || e.Status == 403
	}
	return false
}

func throttleCode(c string) bool {
	return c == "Throttling" || c == "ThrottlingException" || c == "PriorRequestNotComplete" || c == "RequestLimitExceeded"
}

func accessCode(c string) bool {
	switch c {
	case "AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
		"UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException", "MissingAuthenticationToken":
		return true
	}
	return false
}

// apiError turns what the SDK returned into *APIError for API responses; other errors
// (network, credential resolution, context) pass through.
func (s *Steerer) apiError(op string, err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return err
	}
	e := &APIError{Op: op, Code: ae.ErrorCode(), Message: firstLine(ae.ErrorMessage())}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		e.Status = re.HTTPStatusCode()
	}
	if errors.Is(e, ErrAccessDenied) {
		e.Fix = "the AWS credentials need route53:ListResourceRecordSets, route53:ChangeResourceRecordSets and route53:GetChange " +
			"on the hosted zone (see docs/route53.md); check which identity the AWS credential chain picked (AWS_PROFILE, environment, instance role)"
	}
	return e
}

// refused reports whether a failed write is known not to have been applied: Route 53
// answered 4xx (throttling included, which is decided before the batch is looked at). A
// 5xx, a timeout or a dropped connection may have come after the batch was applied.
func refused(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500
}

// finalError marks an error found inside an attempt that retrying cannot cure (drift,
// an unusable record set); do returns what it wraps.
type finalError struct{ err error }

func (f *finalError) Error() string { return f.err.Error() }
func (f *finalError) Unwrap() error { return f.err }

func final(err error) error { return &finalError{err: err} }

type retryClass int

const (
	permanent retryClass = iota
	transient            // 5xx, network errors, per-attempt timeouts
	throttled            // Throttling, PriorRequestNotComplete
)

// classify decides how one failed attempt is retried: the single place where Verdict's
// retry policy for Route 53 lives.
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
		case throttleCode(ae.Code):
			return throttled
		case ae.Status >= 500 || ae.Code == "InternalError" || ae.Code == "ServiceUnavailable":
			return transient
		}
		return permanent
	}
	if errors.Is(err, context.Canceled) {
		return permanent
	}
	// Transport errors: connection refused or reset, EOF, a per-attempt deadline. Errors
	// resolving credentials are not API errors either, but retrying them is harmless and
	// bounded.
	return transient
}

// ThrottledError reports that a call gave up while Route 53 kept throttling it.
type ThrottledError struct {
	Attempts int
	Waited   time.Duration
	Last     error
}

// Error says how long Verdict waited.
func (e *ThrottledError) Error() string {
	return fmt.Sprintf("throttled by Route 53: gave up after %d attempts and %s of waiting; try again later: %v",
		e.Attempts, e.Waited.Round(time.Millisecond), e.Last)
}

// Unwrap returns the last throttling response.
func (e *ThrottledError) Unwrap() error { return e.Last }

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// do runs call with Verdict's retry policy: each attempt under CallTimeout; throttling,
// 5xx and network errors retried with exponential backoff and jitter, at most
// MaxAttempts attempts and MaxWait of waiting in total.
func (s *Steerer) do(ctx context.Context, op string, call func(context.Context) error) error {
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
		err := call(actx)
		cancel()
		if err == nil {
			return nil
		}
		class := classify(ctx, err)
		if class == permanent {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (after %d attempts; last: %v)", ctx.Err(), attempt, err)
			}
			if f, ok := err.(*finalError); ok {
				return f.err
			}
			return err
		}
		wait := s.backoff(attempt)
		if attempt >= s.opts.MaxAttempts || waited+wait > s.opts.MaxWait {
			if class == throttled {
				return &ThrottledError{Attempts: attempt, Waited: waited, Last: err}
			}
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		waited += wait
		s.log.Warn("Route 53 call failed; retrying", "op", op, "attempt", attempt, "wait", wait, "err", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry; last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (s *Steerer) backoff(n int) time.Duration {
	return traffic.Backoff(s.opts.BackoffBase, s.opts.BackoffMax, n)
}

// firstLine keeps the summary of an AWS error message. A SignatureDoesNotMatch message
// goes on with the canonical request AWS computed, whose headers can include
// X-Amz-Security-Token, a credential; nothing after the first line is needed.
func firstLine(msg string) string {
	msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
	return strings.TrimSpace(msg)
}
