package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Options tunes a store. The zero value is what production uses.
type Options struct {
	// Clock is the time leases are granted and checked against. Nil means the database's
	// clock for PostgreSQL (one clock for every replica, whatever theirs say) and the
	// machine's for SQLite. Tests and simulations set a virtual one.
	Clock func() time.Time
	// Logger receives the store's few messages (migrations applied); nil discards them.
	// Connection strings are logged with their password redacted.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Logger
}

// Open opens the store a --store flag or VERDICT_STORE names:
//
//   - postgres://user:password@host:5432/db?sslmode=require (or postgresql://): PostgreSQL,
//     shared by several replicas; any libpq URL parameter pgx understands is accepted.
//   - anything else without "://": a state directory holding a SQLite database, for one
//     process (created if missing).
//
// Any other scheme is an error. Errors never contain the password.
func Open(ctx context.Context, spec string) (Store, error) {
	return OpenWith(ctx, spec, Options{})
}

// OpenWith is Open with Options. The store returned also implements Leaser.
func OpenWith(ctx context.Context, spec string, o Options) (Store, error) {
	kind, err := storeKind(spec)
	if err != nil {
		return nil, err
	}
	// Typed nils must not escape as non-nil Stores.
	if kind == "postgres" {
		p, err := OpenPostgres(ctx, spec, o)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	s, err := OpenSQLiteWith(ctx, spec, o)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func storeKind(spec string) (string, error) {
	if strings.TrimSpace(spec) == "" {
		return "", errors.New("no store given: pass --store DIR or --store postgres://... (or set VERDICT_STORE)")
	}
	scheme, _, ok := strings.Cut(spec, "://")
	if !ok {
		return "sqlite", nil
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return "postgres", nil
	}
	return "", fmt.Errorf("store %q: unknown scheme %q: use a directory for SQLite or postgres://... for PostgreSQL", RedactDSN(spec), scheme)
}

var (
	urlPassword = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^@/?#]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
	qsPassword  = regexp.MustCompile(`(?i)([?&]password=)[^&#]*`)
)

// RedactDSN returns a connection string fit to log or show: the password, whether in the
// URL's user info, a password= query parameter or a key=value string, is replaced by xxxxx.
func RedactDSN(dsn string) string {
	if !strings.Contains(dsn, "://") {
		return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
	}
	out := urlPassword.ReplaceAllString(dsn, "${1}:xxxxx@")
	return qsPassword.ReplaceAllString(out, "${1}xxxxx")
}

// dsnSecrets returns the literal passwords a connection string carries, as they may appear
// in an error message (raw and unescaped).
func dsnSecrets(dsn string) []string {
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s)
			if u, err := url.PathUnescape(s); err == nil && u != s {
				out = append(out, u)
			}
			if u, err := url.QueryUnescape(s); err == nil && u != s {
				out = append(out, u)
			}
		}
	}
	if m := urlPassword.FindStringSubmatch(dsn); m != nil {
		userinfo := strings.TrimSuffix(m[0], "@")
		add(userinfo[strings.LastIndex(userinfo, ":")+1:])
	}
	for _, m := range qsPassword.FindAllString(dsn, -1) {
		add(m[strings.Index(m, "=")+1:])
	}
	if !strings.Contains(dsn, "://") {
		for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
			add(strings.Trim(m[2], "'"))
		}
	}
	return out
}

// redactedError hides a connection string's password from an error's message while keeping
// the error itself for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// scrub returns err with every password of dsn removed from its message.
func scrub(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range dsnSecrets(dsn) {
		if strings.Contains(msg, s) {
			msg, changed = strings.ReplaceAll(msg, s, "xxxxx"), true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
