package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// scanServer is a server on dir that is never started: the test calls its watcher's scan.
func scanServer(t *testing.T, dir string) (*Server, *store.SQLite) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Options{Store: st, Steerer: nopSteerer{}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// plainExperiment is a valid experiment that needs no world (its Prometheus and pool exist
// nowhere).
func plainExperiment(name string) string {
	return strings.NewReplacer("NAME", name, "DESCRIPTION", "plain", "LETTER", "a", "ACCOUNT", "0123456789abcdef0123456789abcdef",
		"POOL", pools["a"], "PROM", "http://127.0.0.1:1", "HOLD", "1h").Replace(experimentYAML)
}

// TestServeRefusesWhatValidateRejects: a file over experiments.MaxFileSize (a valid
// experiment padded with comments) is invalid with the message validate gives, and nothing
// in it runs; an unchanged invalid file is parsed once however many scans see it; a touched
// file with the same content is read again but not parsed; a changed one is parsed again.
func TestServeRefusesWhatValidateRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := experiments.Load("plain.yaml", []byte(plainExperiment("big")), experiments.LoadOptions{}); err != nil {
		t.Fatalf("the experiment must be valid but for its size: %v", err)
	}
	pad := "# " + strings.Repeat("padding ", 9) + "\n"
	big := plainExperiment("big") + strings.Repeat(pad, experiments.MaxFileSize/len(pad)+1)
	bigPath := filepath.Join(dir, "big.yaml")
	badPath := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bigPath, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(plainExperiment("bad"), "tolerance: 20%", "tolerance: lots", 1)
	if err := os.WriteFile(badPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	s, st := scanServer(t, dir)
	ctx := context.Background()
	for range 5 {
		if err := s.watch.scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, verr := experiments.LoadFile(bigPath, experiments.LoadOptions{}) // what verdict validate says
	files := map[string]FileStatus{}
	for _, f := range s.watch.status() {
		files[filepath.Base(f.Path)] = f
	}
	if f := files["big.yaml"]; f.Status != "invalid" || !slices.Equal(f.Errors, errorLines(verr)) || len(f.Experiments) != 0 {
		t.Errorf("big.yaml: %+v\nwant invalid with %q", f, errorLines(verr))
	}
	if !strings.Contains(verr.Error(), "larger than 4 MiB") {
		t.Errorf("validate's message: %v", verr)
	}
	if runs, err := st.ListRuns(ctx, store.ListOptions{}); err != nil || len(runs) != 0 {
		t.Errorf("runs after scanning an oversized file: %d (%v), want none", len(runs), err)
	}
	if f := files["bad.yaml"]; f.Status != "invalid" || len(f.Errors) == 0 {
		t.Errorf("bad.yaml: %+v", f)
	}
	if n := s.watch.parses.Load(); n != 1 {
		t.Errorf("5 scans of an unchanged invalid file and an oversized one parsed %d times, want 1 (bad.yaml once)", n)
	}

	// Touched, same content: read again (the time changed), not parsed again.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(badPath, later, later); err != nil {
		t.Fatal(err)
	}
	s.watch.scan(ctx)
	s.watch.scan(ctx)
	if n := s.watch.parses.Load(); n != 1 {
		t.Errorf("after touching bad.yaml: %d parses, want 1", n)
	}
	// Changed: parsed again, once.
	if err := os.WriteFile(badPath, []byte(strings.Replace(bad, "lots", "heaps", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(badPath, later.Add(time.Minute), later.Add(time.Minute))
	s.watch.scan(ctx)
	s.watch.scan(ctx)
	if n := s.watch.parses.Load(); n != 2 {
		t.Errorf("after changing bad.yaml: %d parses, want 2", n)
	}
	// Changed again to the same size within one tick of the file system's clock (the same
	// modification time): still seen, since it was read too soon after its time to trust it.
	if err := os.WriteFile(badPath, []byte(strings.Replace(bad, "lots", "alot", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(badPath, later.Add(time.Minute), later.Add(time.Minute))
	s.watch.scan(ctx)
	if n := s.watch.parses.Load(); n != 3 {
		t.Errorf("after a same-size change with the same time: %d parses, want 3", n)
	}
}
