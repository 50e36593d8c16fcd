package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// ownPostgres starts a PostgreSQL cluster of the test's own with scripts/ci-postgres.sh,
// for a test that restarts the database: the shared VERDICT_TEST_POSTGRES serves other
// packages' tests at the same time. It returns the DSN and a function running pg_ctl on the
// cluster. Without PostgreSQL installed the test skips, except in CI.
func ownPostgres(t *testing.T) (dsn string, pgctl func(args ...string) error) {
	t.Helper()
	skip := func(msg string) {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI must run the PostgreSQL tests)")
		}
		t.Skip(msg)
	}
	if bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(bins) == 0 {
		skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): scripts/ci-postgres.sh installs it")
	}
	script, err := filepath.Abs("../scripts/ci-postgres.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script)
	// Away from the shared cluster's ports (55432 and up).
	cmd.Env = append(os.Environ(), "VERDICT_PG_PORT=56432")
	// Files, not pipes: the server the script starts inherits them and outlives it, and
	// reading a pipe would wait for the server to exit.
	outF, err := os.CreateTemp(t.TempDir(), "pg-out")
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.CreateTemp(t.TempDir(), "pg-err")
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	cmd.Stdout, cmd.Stderr = outF, errF
	err = cmd.Run()
	out, _ := os.ReadFile(outF.Name())
	stderr, _ := os.ReadFile(errF.Name())
	if err != nil {
		skip(fmt.Sprintf("could not start a PostgreSQL cluster: %v\n%s", err, stderr))
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	dsn, dir := vars["VERDICT_TEST_POSTGRES"], vars["VERDICT_TEST_POSTGRES_DATA"]
	if dsn == "" || dir == "" {
		t.Fatalf("scripts/ci-postgres.sh printed no DSN:\n%s\n%s", out, stderr)
	}
	t.Cleanup(func() {
		stop := exec.Command(script, "stop")
		stop.Env = append(os.Environ(), "VERDICT_TEST_POSTGRES_DATA="+dir)
		if out, err := stop.CombinedOutput(); err != nil {
			t.Errorf("stop PostgreSQL: %v\n%s", err, out)
		}
	})
	path, err := os.ReadFile(filepath.Join(dir, "pg_ctl_path"))
	if err != nil {
		t.Fatal(err)
	}
	pgctl = func(args ...string) error {
		argv := append([]string{strings.TrimSpace(string(path)), "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "server.log")}, args...)
		if os.Geteuid() == 0 { // the script runs the server as the postgres user then
			argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
		}
		// A file, not a pipe, for the output: a server pg_ctl starts inherits it.
		f, err := os.CreateTemp(t.TempDir(), "pg_ctl")
		if err != nil {
			return err
		}
		defer f.Close()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(f.Name())
			return fmt.Errorf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	return dsn, pgctl
}

// TestReplicasRecoverFromAPostgresRestart runs three `verdict serve` processes on a
// PostgreSQL of the test's own and restarts the database twice while they drive an
// experiment: once quickly (down for less than the lease TTL, as `pg_ctl restart` or a
// managed database's failover is), and once down for longer than the TTL, so that every
// lease runs out. No replica may write weights while it cannot reach the store past its
// lease; the replicas must survive both outages, one of them must carry the run on within
// TTL + a step of the database's return, and the run must end promoted with its three steps
// written once each (plus at most one reconciling write per outage) and no interval decided
// twice.
func TestReplicasRecoverFromAPostgresRestart(t *testing.T) {
	skipProcessTest(t)
	dsn, pgctl := ownPostgres(t)
	p := newProcWorld(t, dsn)
	w, mon := p.world, p.mon
	const ttl = 2 * time.Second
	const hold = 12 * time.Second // per step
	const interval = 2 * time.Second

	ctx := context.Background()
	rs := startReplicas(t, p, ttl, 3)
	w.write("ha-restart.yaml", p.experiment("ha-restart", hold))
	var id string
	eventually(t, "the run to be started", func() bool {
		if rec, err := mon.Run(ctx, "ha-restart"); err == nil {
			id = rec.ID
		}
		return id != ""
	})
	eventually(t, "an owner", func() bool { return ownerOf(mon, id) != "" })

	outages := []struct {
		name     string
		after    time.Duration // after the previous outage's recovery
		down     time.Duration
		restarts func() error
	}{
		{"quick restart", 5 * time.Second, 0, func() error { return pgctl("-m", "fast", "-w", "-t", "60", "restart") }},
		{"down for longer than the TTL", 6 * time.Second, ttl + 2*time.Second, nil},
	}
	for _, o := range outages {
		time.Sleep(o.after)
		if endedRun(mon, id) {
			t.Fatalf("run ended before the %s", o.name)
		}
		before, step := ownerOf(mon, id), stepOf(t, mon, id)
		writesBefore := poolWrites(w, "b")
		var back time.Time
		if o.restarts != nil {
			if err := o.restarts(); err != nil {
				t.Fatal(err)
			}
			back = time.Now()
		} else {
			if err := pgctl("-m", "fast", "-w", "-t", "60", "stop"); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			time.Sleep(o.down)
			// Once every lease has run out, nobody may touch the pool: the owner cannot
			// renew, so it stopped acting when its lease ran out locally.
			if n := poolWrites(w, "b"); n != writesBefore {
				t.Errorf("%d weight writes while PostgreSQL was down (%s), want none", n-writesBefore, time.Since(stopped).Round(time.Millisecond))
			}
			if err := pgctl("-w", "-t", "60", "start"); err != nil {
				t.Fatal(err)
			}
			back = time.Now()
		}
		var after string
		// The step clock stood still while nobody owned the run; the new owner reconciles
		// and carries on.
		deadline := back.Add(ttl + 3*time.Second)
		for {
			after = ownerOf(mon, id)
			if after != "" || endedRun(mon, id) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no replica owns the run %s after PostgreSQL came back", o.name, time.Since(back).Round(time.Millisecond))
			}
			time.Sleep(20 * time.Millisecond)
		}
		owned := time.Since(back)
		// And the run goes on: a new interval is decided within the TTL and two intervals.
		for decisionsAfter(mon, id, back) == 0 && !endedRun(mon, id) {
			if time.Since(back) > ttl+2*interval+2*time.Second {
				t.Fatalf("%s: no decision %s after PostgreSQL came back", o.name, time.Since(back).Round(time.Millisecond))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s at step %d: owner %s before, %s %s after PostgreSQL came back; next decision after %s",
			o.name, step, before, after, owned.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
		if gone := rs.exited(); len(gone) > 0 {
			t.Fatalf("%s: replicas %v exited; they must wait for the database", o.name, gone)
		}
	}

	rec, n, ds := promotedOnce(t, mon, w, id, 4*hold+30*time.Second, len(outages))
	if gone := rs.exited(); len(gone) > 0 {
		t.Errorf("replicas %v exited", gone)
	}
	// An outage is a few log lines per replica, not one per poll.
	for _, name := range []string{"proc-1", "proc-2", "proc-3"} {
		b, err := os.ReadFile(rs.get(name).log)
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(b, []byte(`"msg":"take over runs"`)); n > 6 {
			t.Errorf("%s logged %d lines \"take over runs\" over two outages, want a few", name, n)
		}
	}
	t.Logf("ended %s with %d weight writes and %d decisions", rec.State, n, len(ds))
}

// decisionsAfter counts run id's decisions recorded after at.
func decisionsAfter(mon store.Store, id string, at time.Time) int {
	ds, err := mon.Decisions(context.Background(), id)
	if err != nil {
		return 0
	}
	n := 0
	for _, d := range ds {
		if d.At.After(at) {
			n++
		}
	}
	return n
}

// TestVerdictRunRidesOutAPostgresRestart: a `verdict run --store postgres://...` whose
// database goes away for longer than its lease keeps quiet while it cannot write, takes its
// lease back when the database returns (nobody else took the run) and finishes the run.
func TestVerdictRunRidesOutAPostgresRestart(t *testing.T) {
	skipProcessTest(t)
	dsn, pgctl := ownPostgres(t)
	p := newProcWorld(t, dsn)
	w, mon := p.world, p.mon
	const ttl = 2 * time.Second
	// Outside the world's watched directory: no serve replica is involved.
	file := filepath.Join(t.TempDir(), "run-restart.yaml")
	if err := os.WriteFile(file, []byte(p.experiment("run-restart", 8*time.Second)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run := p.startVerdictRun(t, file, "--lease-ttl", ttl.String())
	var id string
	eventually(t, "the run to reach step 1", func() bool {
		if rec, err := mon.Run(ctx, "run-restart"); err == nil {
			id = rec.ID
			return rec.Step >= 1
		}
		return false
	})
	time.Sleep(2 * time.Second)
	writesBefore := poolWrites(w, "b")
	if err := pgctl("-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 2*time.Second)
	if n := poolWrites(w, "b"); n != writesBefore {
		t.Errorf("%d weight writes while PostgreSQL was down, want none", n-writesBefore)
	}
	if err := pgctl("-w", "-t", "60", "start"); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	select {
	case <-run.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("verdict run did not finish after PostgreSQL came back")
	}
	if code := run.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("verdict run exited %d after the outage, want 0 (promoted)", code)
	}
	rec, n, ds := promotedOnce(t, mon, w, id, time.Second, 1)
	b, _ := os.ReadFile(run.log)
	if !strings.Contains(string(b), "lost the run's lease") {
		t.Errorf("the outage outlasted the lease, yet verdict run never said it lost it:\n%s", b)
	}
	t.Logf("verdict run finished %s %s after PostgreSQL came back: %d weight writes, %d decisions", rec.State, time.Since(back).Round(time.Millisecond), n, len(ds))
}
