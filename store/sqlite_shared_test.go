package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/store/storetest"
)

// TestSQLiteShared runs the replica tests with several processes' worth of handles on one
// state directory: leases and fences work there too.
func TestSQLiteShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T, n int, o store.Options) []store.Store {
		dir := t.TempDir()
		var out []store.Store
		for range n {
			s, err := store.OpenSQLiteWith(context.Background(), dir, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			out = append(out, s)
		}
		return out
	})
}

// TestSQLiteProcessesUpgradingTogether: several processes opening an older state database
// at once (verdict serve and verdict status after an upgrade, say) migrate it once and each
// find the schema current.
func TestSQLiteProcessesUpgradingTogether(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Back to schema version 1, from before leases.
	db, err := sql.Open("sqlite", filepath.Join(dir, store.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DROP TABLE leases; DELETE FROM schema_migrations WHERE version > 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	const n = 6
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() {
			s, err := store.OpenSQLite(context.Background(), dir)
			if err == nil {
				s.Close()
			}
			errs[i] = err
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	s, err = store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Leases(context.Background()); err != nil {
		t.Errorf("after the upgrade: %v", err)
	}
}
