package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/verdict-dev/verdict/store"
)

// PostgresDSN is the database the PostgreSQL tests use, VERDICT_TEST_POSTGRES. They skip
// without one, except in CI, which must run them.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("VERDICT_TEST_POSTGRES")
	if dsn == "" {
		msg := `VERDICT_TEST_POSTGRES is not set: run eval "$(scripts/ci-postgres.sh)" to start a throwaway PostgreSQL on 127.0.0.1 and point the tests at it`
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI must run the PostgreSQL tests)")
		}
		t.Skip(msg)
	}
	return dsn
}

// PostgresSchema creates an empty schema, dropped after the test, and returns PostgresDSN
// with search_path set to it: each test gets a database of its own without CREATE DATABASE.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	dsn := PostgresDSN(t)
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "verdict_test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to VERDICT_TEST_POSTGRES: %v", store.RedactDSN(err.Error()))
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(store.RedactDSN(err.Error()))
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("VERDICT_TEST_POSTGRES must be a postgres:// URL: %v", store.RedactDSN(err.Error()))
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
