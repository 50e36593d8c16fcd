package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
)

// TestPoolClaimAcrossStateDirectories: a second `verdict run` with another state directory
// (so another store, which cannot see the first run) is refused before it changes
// anything, `verdict drain` refuses the pool mid-experiment, and the first run still rolls
// back cleanly on SIGTERM, leaving a last-run note instead of its claim.
func TestPoolClaimAcrossStateDirectories(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("starts a fleet and child processes; skipped with -short and under -race")
	}
	w := newSafetyWorld(t)
	file := w.file(t)

	first := w.start(t, "run", file, "--no-ui")
	id := first.id()
	first.await("weights_confirmed", 60*time.Second)
	during := w.pool()

	other := filepath.Join(t.TempDir(), "other-state")
	code, out, errOut := w.verdict(t, "--state", other, "run", w.file(t), "--no-ui")
	if code != exitCheckFailed {
		t.Fatalf("second run from another state directory: exit %d, want %d (check failed)\n%s\n%s", code, exitCheckFailed, out, errOut)
	}
	if !strings.Contains(out+errOut, "is claimed by run "+id) {
		t.Errorf("the refusal does not name the run that owns the pool:\n%s\n%s", out, errOut)
	}
	if now := w.pool(); !samePool(now, during) {
		t.Errorf("the refused run changed the pool: %v, was %v", now, during)
	}

	canary := w.exp.Spec.Traffic.Origins()[w.exp.Spec.Canary.Cluster]
	code, out, errOut = w.verdict(t, "drain", canary, "--pool", w.fleet.PoolID(), "--yes")
	if code == exitOK || !strings.Contains(out+errOut, id) {
		t.Errorf("drain of a claimed pool: exit %d\n%s\n%s", code, out, errOut)
	}
	if now := w.pool(); !samePool(now, during) {
		t.Errorf("the refused drain changed the pool: %v, was %v", now, during)
	}

	first.signal(syscall.SIGTERM)
	if code := first.exit(120 * time.Second); code != exitAborted {
		t.Fatalf("first run after SIGTERM: exit %d, want %d\n%s", code, exitAborted, first.stderr.String())
	}
	w.assertOriginal(t, "after the first run rolled back")
	p, err := w.steer.Pool(t.Context(), traffic.PoolRef{Pool: w.fleet.PoolID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, claimed := p.Claim(); claimed {
		t.Errorf("the claim outlived the run: %q", p.Description)
	}
	if lr, ok := p.LastRun(); !ok || lr.Run != id {
		t.Errorf("no last-run note of %s on the pool: %q", id, p.Description)
	}
}

func samePool(a, b traffic.Weights) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !traffic.SameWeight(v, b[k]) {
			return false
		}
	}
	return true
}
