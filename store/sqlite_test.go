package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/store/storetest"
)

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenSQLite(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSQLiteSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &store.Run{ID: "r1", Experiment: "e", Pool: "p", State: store.StateRamping, Step: 2}
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.OpenSQLite(ctx, dir) // migrations must be idempotent
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Run(ctx, "r1")
	if err != nil || got.Step != 2 || got.State != store.StateRamping {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
}

func TestSQLiteReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores permission bits; a path under a file is unwritable for everyone.
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		_, err := store.OpenSQLite(context.Background(), filepath.Join(f, "state"))
		if err == nil || !strings.Contains(err.Error(), "state directory") {
			t.Fatalf("want a clear error, got %v", err)
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	_, err := store.OpenSQLite(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("want a clear error, got %v", err)
	}
}
