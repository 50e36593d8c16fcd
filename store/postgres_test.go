package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/store/storetest"
)

func openPostgres(t *testing.T, dsn string, o store.Options) *store.Postgres {
	t.Helper()
	s, err := store.OpenPostgres(context.Background(), dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.PostgresDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openPostgres(t, storetest.PostgresSchema(t), store.Options{})
	})
}

func TestPostgresShared(t *testing.T) {
	storetest.PostgresDSN(t)
	storetest.RunShared(t, func(t *testing.T, n int, o store.Options) []store.Store {
		dsn := storetest.PostgresSchema(t)
		var out []store.Store
		for range n {
			out = append(out, openPostgres(t, dsn, o))
		}
		return out
	})
}

// syncBuffer is a log destination for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPostgresReplicasStartingTogetherMigrateOnce(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	u, _ := url.Parse(dsn)
	password, _ := u.User.Password()
	var logs syncBuffer
	o := store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.OpenPostgres(context.Background(), dsn, o)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("replicas starting together: %v", err)
	}
	if c := strings.Count(logs.String(), "applied store migrations"); c != 1 {
		t.Errorf("migrations applied %d times, want once:\n%s", c, logs.String())
	}
	if password != "" && strings.Contains(logs.String(), password) {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "xxxxx") && password != "" {
		t.Errorf("the log does not name the (redacted) store:\n%s", logs.String())
	}

	s := openPostgres(t, dsn, store.Options{})
	ctx := context.Background()
	if err := s.CreateRun(ctx, &store.Run{ID: "r1", Experiment: "e", Pool: "p", State: store.StateRamping, Step: 2}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openPostgres(t, dsn, store.Options{})
	got, err := s.Run(ctx, "r1")
	if err != nil || got.Step != 2 || got.State != store.StateRamping {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
}

func TestPostgresRefusesANewerSchema(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	ctx := context.Background()
	s := openPostgres(t, dsn, store.Options{})
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := store.OpenPostgres(ctx, dsn, store.Options{}); err == nil || !strings.Contains(err.Error(), "upgrade verdict") {
		t.Fatalf("want a clear error, got %v", err)
	}
}

func TestOpenChoosesTheStore(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*store.SQLite); !ok {
		t.Errorf("a directory opened %T", s)
	}
	s.Close()
	for _, spec := range []string{"", "  ", "mysql://root:pw@host/db", "postgres://u:pw@127.0.0.1:1/db?sslmode=disable"} {
		s, err := store.Open(ctx, spec)
		if err == nil {
			t.Errorf("Open(%q) succeeded", spec)
		} else if strings.Contains(err.Error(), ":pw@") {
			t.Errorf("Open(%q): the error shows the password: %v", spec, err)
		}
		if s != nil {
			t.Errorf("Open(%q) failed but returned a non-nil Store %#v", store.RedactDSN(spec), s)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if s, err := store.Open(ctx, filepath.Join(f, "state")); err == nil || s != nil {
		t.Errorf("Open(unwritable dir) = %#v, %v; want nil and an error", s, err)
	}
	if os.Getenv("VERDICT_TEST_POSTGRES") == "" && os.Getenv("CI") != "true" {
		return
	}
	dsn := storetest.PostgresSchema(t)
	for _, spec := range []string{dsn, "postgresql://" + strings.TrimPrefix(dsn, "postgres://")} {
		s, err := store.Open(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.(*store.Postgres); !ok {
			t.Errorf("%s opened %T", store.RedactDSN(spec), s)
		}
		if _, ok := s.(store.Leaser); !ok {
			t.Errorf("%T is not a Leaser", s)
		}
		s.Close()
	}
}

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://verdict:s3cret@db:5432/verdict?sslmode=require", "postgres://verdict:xxxxx@db:5432/verdict?sslmode=require"},
		{"postgresql://verdict:p%40ss@db/verdict", "postgresql://verdict:xxxxx@db/verdict"},
		{"postgres://verdict@db/verdict", "postgres://verdict@db/verdict"},
		{"postgres://db/verdict?user=v&password=s3cret&sslmode=disable", "postgres://db/verdict?user=v&password=xxxxx&sslmode=disable"},
		{"host=db user=verdict password=s3cret dbname=verdict", "host=db user=verdict password=xxxxx dbname=verdict"},
		{"host=db password='s3 cret' dbname=verdict", "host=db password=xxxxx dbname=verdict"},
		{"/var/lib/verdict", "/var/lib/verdict"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := store.RedactDSN(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPostgresErrorsHideThePassword: errors from opening a store end up in logs and on
// terminals; none may carry the password, however the connection fails.
func TestPostgresErrorsHideThePassword(t *testing.T) {
	const secret = "hunter2-S3cret"
	ctx := context.Background()
	cases := map[string]string{
		"refused":     "postgres://verdict:" + secret + "@127.0.0.1:1/verdict?sslmode=disable&connect_timeout=5",
		"bad port":    "postgres://verdict:" + secret + "@127.0.0.1:notaport/verdict",
		"bad param":   "postgres://verdict:" + secret + "@127.0.0.1:1/verdict?sslmode=sometimes",
		"query param": "postgres://127.0.0.1:1/verdict?user=verdict&password=" + secret + "&sslmode=disable",
		"key=value":   "host=127.0.0.1 port=1 user=verdict password=" + secret + " sslmode=disable connect_timeout=5",
		"escaped":     "postgres://verdict:" + url.QueryEscape(secret+"/@") + "@127.0.0.1:notaport/verdict",
	}
	if dsn := os.Getenv("VERDICT_TEST_POSTGRES"); dsn != "" {
		u, err := url.Parse(dsn)
		if err == nil {
			u.User = url.UserPassword(u.User.Username(), secret)
			cases["wrong password"] = u.String()
		}
	}
	for name, dsn := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := store.OpenPostgres(ctx, dsn, store.Options{})
			if err == nil {
				t.Fatal("opened")
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url.QueryEscape(secret)) {
				t.Fatalf("the error shows the password: %v", err)
			}
			t.Log(err)
		})
	}
}

// TestPostgresEventsNotify: a replica listening hears of events another replica commits.
func TestPostgresEventsNotify(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	a, b := openPostgres(t, dsn, store.Options{}), openPostgres(t, dsn, store.Options{})
	// The timeout only keeps a broken LISTEN from hanging the test run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ready := make(chan struct{})
	heard := make(chan int64, 16)
	done := make(chan error, 1)
	go func() {
		done <- b.ListenEvents(ctx, ready, func(seq int64) { heard <- seq })
		close(heard)
	}()
	<-ready
	r := &store.Run{ID: "r1", Experiment: "e", Pool: "p", State: store.StatePending}
	if err := a.CreateRun(ctx, r, store.Event{Type: "run_started", Message: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveRun(ctx, r, store.Event{Type: "tick", Message: "1"}, store.Event{Type: "tick", Message: "2"}); err != nil {
		t.Fatal(err)
	}
	evs, err := a.Events(ctx, "", 0)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events %v %v", evs, err)
	}
	want := evs[2].Seq
	found := false
	for seq := range heard {
		if seq > want {
			t.Fatalf("heard seq %d, past the last event %d", seq, want)
		}
		if found = seq == want; found {
			break
		}
	}
	if !found {
		t.Fatalf("never heard of seq %d: %v", want, <-done)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenEvents after cancel: %v", err)
	}
}
