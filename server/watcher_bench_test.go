package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// nopSteerer is a Steerer for servers that never steer (the watcher benchmarks).
type nopSteerer struct{}

func (nopSteerer) Pool(context.Context, traffic.PoolRef) (traffic.Pool, error) {
	return traffic.Pool{}, fmt.Errorf("nopSteerer has no pools")
}

func (nopSteerer) SetWeights(context.Context, traffic.PoolRef, traffic.Weights, traffic.Weights) error {
	return fmt.Errorf("nopSteerer does not steer")
}

// largeInvalidYAML is size bytes of well-formed YAML that is not an experiment: the parser
// reads all of it before the validation rejects it.
func largeInvalidYAML(size int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: verdict.dev/v1alpha1\nkind: Experiment\nmetadata: {name: big}\nspec:\n  description: |\n")
	line := "    " + strings.Repeat("x", 75) + "\n"
	for b.Len()+len(line) < size {
		b.WriteString(line)
	}
	b.WriteString("  nonsense: [1, 2\n") // a syntax error at the very end
	return []byte(b.String())
}

// BenchmarkScanLargeInvalidFiles scans a directory of large invalid files, unchanged between
// scans: 4 files just under the 4 MiB limit and 2 of 10 MiB (22 MB in all, as in issue 16).
// Each op is one scan after the first (which reads what it must); compare B/op and allocs/op.
func BenchmarkScanLargeInvalidFiles(b *testing.B) {
	dir := b.TempDir()
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("under-%d.yaml", i)), largeInvalidYAML(4<<20-4096), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 2 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("over-%d.yaml", i)), largeInvalidYAML(10<<20), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour) // unchanged for a while, as a checkout is between pulls
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Chtimes(filepath.Join(dir, e.Name()), old, old)
	}
	st, err := store.OpenSQLite(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := New(Options{Store: st, Steerer: nopSteerer{}, Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.watch.scan(ctx); err != nil { // the first scan reads and parses every file
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.watch.scan(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for _, f := range s.watch.status() {
		if f.Status != "invalid" {
			b.Fatalf("%s: %s, want invalid", f.Path, f.Status)
		}
	}
}
