package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
)

// ErrNoData means a query returned nothing usable: no series, or only NaN. Callers branch
// on it: the engine stops the step clock instead of judging, `verdict check` reports it.
var ErrNoData = errors.New("no data")

// ErrUnreachable means Prometheus could not be reached at all (refused connection, unknown
// host, TLS failure, no answer). The CLI exits 1 on it; the engine stops the step clock.
var ErrUnreachable = errors.New("prometheus unreachable")

// ErrTimeout means Prometheus did not answer a query in time, on our side (Options.Timeout)
// or on its side (query timeout).
var ErrTimeout = errors.New("prometheus query timed out")

// ErrInvalidRequest marks a CheckRequest (or KPI, or expect string) that is wrong before any
// query is sent; the CLI exits 2 on it.
var ErrInvalidRequest = errors.New("invalid check request")

// ErrUnauthorized means Prometheus rejected the credentials (HTTP 401 or 403). Like
// ErrUnreachable it stops a check at once: every further query would fail the same way.
var ErrUnauthorized = errors.New("prometheus rejected the credentials")

// UnreachableError reports that Prometheus could not be reached. Its message is one line
// naming the address (credentials removed) and the root cause, not a chain of wrapped
// transport errors. It matches ErrUnreachable with errors.Is.
type UnreachableError struct {
	// Address is the Prometheus address with any credentials redacted.
	Address string
	// Cause is the innermost, human-readable reason ("connection refused").
	Cause string
	// Attempts is how many times the request was tried.
	Attempts int
	// Err is the transport error of the last attempt.
	Err error
}

// Error is one line: the address and the root cause, nothing of the wrapped chain.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach Prometheus at %s: %s", e.Address, e.Cause)
}

// Unwrap exposes the transport error for errors.As.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnreachable) true, and ErrTimeout when nothing answered in time.
func (e *UnreachableError) Is(target error) bool {
	if target == ErrUnreachable {
		return true
	}
	return target == ErrTimeout && isTimeout(e.Err)
}

// QueryError reports a query that Prometheus answered with an error, or whose answer Verdict
// could not use (malformed, series without the cluster label, duplicate series). It names the
// query so that the user can find it in the experiment file.
type QueryError struct {
	// Query is the PromQL as sent.
	Query string
	// Type is Prometheus's error type (bad_data, execution, timeout, …), "bad_response" for
	// an answer we could not decode, or "invalid_result" for one we could decode but not use.
	Type string
	// Msg says what went wrong.
	Msg string
	// Err is the underlying error, when there is one.
	Err error

	unauthorized bool
}

// Error types of QueryError beyond Prometheus's own.
const (
	// TypeInvalidResult: a well-formed answer that cannot be used (missing cluster label,
	// duplicate series, wrong result type).
	TypeInvalidResult = "invalid_result"
)

// Error names the query first, so that the user can find it in the experiment file.
func (e *QueryError) Error() string {
	return fmt.Sprintf("query %q: %s: %s", e.Query, e.Type, e.Msg)
}

// Unwrap exposes the underlying error.
func (e *QueryError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTimeout) true for Prometheus-side query timeouts, and
// errors.Is(err, ErrUnauthorized) for rejected credentials.
func (e *QueryError) Is(target error) bool {
	switch target {
	case ErrTimeout:
		return e.Type == string(v1.ErrTimeout)
	case ErrUnauthorized:
		return e.unauthorized
	}
	return false
}

// errorKind classifies one attempt's failure: whether to retry it and how to report it.
type errorKind int

const (
	kindPermanent   errorKind = iota // a query or response problem: report, don't retry
	kindTransient                    // a server-side hiccup (5xx, 429): retry
	kindUnreachable                  // nothing answered: retry, then UnreachableError
)

// classify is the one place deciding which failures are retried (like Alertmanager's
// notify.Retrier.Check).
func classify(err error) errorKind {
	var apiErr *v1.Error
	if errors.As(err, &apiErr) {
		switch apiErr.Type {
		case v1.ErrServer, v1.ErrTimeout:
			return kindTransient
		case v1.ErrClient:
			if strings.Contains(apiErr.Msg, "429") {
				return kindTransient
			}
		}
		return kindPermanent
	}
	return kindUnreachable
}

// toQueryError turns a client_golang API error into a QueryError with Prometheus's own
// error type and message where the body carries them (Prometheus answers timeouts with 503,
// which the client reports as a bare "server error: 503").
func toQueryError(query string, err error) *QueryError {
	var apiErr *v1.Error
	if !errors.As(err, &apiErr) {
		return &QueryError{Query: query, Type: "client_error", Msg: err.Error(), Err: err}
	}
	qe := &QueryError{Query: query, Type: string(apiErr.Type), Msg: apiErr.Msg, Err: err}
	if apiErr.Detail != "" {
		var body struct {
			Status    string `json:"status"`
			ErrorType string `json:"errorType"`
			Error     string `json:"error"`
		}
		if json.Unmarshal([]byte(apiErr.Detail), &body) == nil && body.Status == "error" && body.ErrorType != "" {
			qe.Type, qe.Msg = body.ErrorType, body.Error
		} else {
			qe.Msg += ": " + firstLine(apiErr.Detail, 200)
		}
	}
	switch {
	case strings.HasSuffix(apiErr.Msg, fmt.Sprint(http.StatusUnauthorized)):
		qe.Msg, qe.unauthorized = "Prometheus rejected the credentials (401 Unauthorized)", true
	case strings.HasSuffix(apiErr.Msg, fmt.Sprint(http.StatusForbidden)):
		qe.Msg, qe.unauthorized = "Prometheus refused access (403 Forbidden)", true
	}
	return qe
}

func firstLine(s string, max int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rootCause reduces a transport error chain (url.Error → net.OpError → os.SyscallError →
// errno) to its innermost message, so that "Post \"http://…\": dial tcp …: connect:
// connection refused" reads "connection refused".
func rootCause(err error, timeout time.Duration) string {
	if isTimeout(err) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed before a complete answer (EOF)"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return fmt.Sprintf("unknown host %q", dnsErr.Name)
		}
		return "DNS lookup failed: " + dnsErr.Err
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return err.Error()
}
