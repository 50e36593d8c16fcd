package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// safetyWorld is one fleet (emulated Cloudflare and an embedded Prometheus) and one state
// directory shared by the subtests of TestInterruptSafety, which run one after another.
type safetyWorld struct {
	t     *testing.T
	bin   string
	fleet *sim.Fleet
	state string
	env   []string
	steer *traffic.Cloudflare
	exp   *experiments.Experiment
	orig  traffic.Weights
}

func newSafetyWorld(t *testing.T) *safetyWorld {
	t.Helper()
	bin := buildVerdict(t)
	fleet, err := sim.Start(sim.Options{Scenario: crashScenario(t), Rate: 400, Fast: true, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fleet.Close() })
	env := os.Environ()
	for _, kv := range fleet.Env() {
		env = append(env, kv[0]+"="+kv[1])
	}
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: fleet.Token(), AccountID: fleet.AccountID(), BaseURL: fleet.CloudflareBaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	exps, err := experiments.LoadFile(fleet.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := &safetyWorld{t: t, bin: bin, fleet: fleet, state: t.TempDir(), env: env, steer: steer, exp: exps[0]}
	w.orig = w.pool()
	return w
}

func (w *safetyWorld) pool() traffic.Weights {
	w.t.Helper()
	p, err := w.steer.Pool(context.Background(), traffic.PoolRef{Pool: w.fleet.PoolID()})
	if err != nil {
		w.t.Fatal(err)
	}
	return p.Weights()
}

// shifted reports whether any origin of the experiment differs from its original weight.
func (w *safetyWorld) shifted() bool {
	now := w.pool()
	for _, c := range w.exp.Spec.Clusters() {
		o := w.exp.Spec.Traffic.Cloudflare.Origins[c]
		if !traffic.SameWeight(now[o], w.orig[o]) {
			return true
		}
	}
	return false
}

// assertOriginal fails unless every origin of the pool is back at its original weight.
func (w *safetyWorld) assertOriginal(t *testing.T, what string) {
	t.Helper()
	now := w.pool()
	for o, want := range w.orig {
		if !traffic.SameWeight(now[o], want) {
			t.Errorf("%s: origin %s has weight %v, want the original %v (pool %v)", what, o, now[o], want, now)
		}
	}
}

// file copies the experiment into its own file, which a subtest may edit or delete.
func (w *safetyWorld) file(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(w.fleet.ExperimentFile())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "experiment.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *safetyWorld) record(t *testing.T, id string) *store.Run {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), w.state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Run(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func (w *safetyWorld) leaseOwner(t *testing.T, id string) string {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), w.state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ls, err := st.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.RunID == id {
			return l.Owner
		}
	}
	return ""
}

// child is a verdict process with no terminal: its JSON events are read as they come.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	runID  chan string
	types  chan string
	done   chan struct{}
	code   int
}

func (w *safetyWorld) start(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{t: t, runID: make(chan string, 1), types: make(chan string, 1000), done: make(chan struct{})}
	c.cmd = exec.Command(w.bin, append([]string{"--state", w.state}, args...)...)
	c.cmd.Env = w.env
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			c.stdout.Write(append(sc.Bytes(), '\n'))
			var m struct{ Type, Run string }
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			if !sent && m.Run != "" {
				c.runID <- m.Run
				sent = true
			}
			select {
			case c.types <- m.Type:
			default:
			}
		}
		c.code = -1
		if err := c.cmd.Wait(); err == nil {
			c.code = 0
		} else if ee, ok := err.(*exec.ExitError); ok {
			c.code = ee.ExitCode()
		}
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// id is the child's run ID, from its first JSON line.
func (c *child) id() string {
	c.t.Helper()
	select {
	case id := <-c.runID:
		c.runID <- id
		return id
	case <-c.done:
		c.t.Fatalf("exited %d before printing a run ID:\n%s", c.code, c.stderr.String())
	case <-time.After(30 * time.Second):
		c.t.Fatalf("no run ID after 30s:\n%s", c.stderr.String())
	}
	return ""
}

// await waits for an event of type typ.
func (c *child) await(typ string, within time.Duration) {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case got := <-c.types:
			if got == typ {
				return
			}
		case <-c.done:
			c.t.Fatalf("exited %d before a %s event:\n%s\n%s", c.code, typ, c.stdout.String(), c.stderr.String())
		case <-deadline:
			c.t.Fatalf("no %s event within %s:\n%s", typ, within, c.stderr.String())
		}
	}
}

func (c *child) signal(s os.Signal) {
	if err := c.cmd.Process.Signal(s); err != nil {
		c.t.Fatal(err)
	}
}

// exit waits for the child to end and returns its exit status.
func (c *child) exit(within time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(within):
		c.cmd.Process.Kill()
		<-c.done
		c.t.Fatalf("still running after %s:\n%s", within, c.stderr.String())
	}
	return 0
}

// verdict runs a short verdict command to its end.
func (w *safetyWorld) verdict(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	c := w.start(t, args...)
	code := c.exit(90 * time.Second)
	return code, c.stdout.String(), c.stderr.String()
}

// TestInterruptSafety drives `verdict run` processes without a terminal against the
// emulated Cloudflare pool and a real (embedded) Prometheus, and interrupts, kills and
// races them: no pool is ever left shifted without a driver by accident.
func TestInterruptSafety(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("starts a fleet and signals child processes; skipped with -short and under -race")
	}
	w := newSafetyWorld(t)
	trials := 3
	if v, err := strconv.Atoi(os.Getenv("VERDICT_SIGTERM_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))

	// SIGTERM (a cancelled CI job) or SIGINT without a terminal, at a random moment after step
	// 1 is confirmed: the run is aborted and rolled back before the process exits 4.
	signals := 0
	for i := range trials + 1 {
		sig, name, mode := os.Signal(syscall.SIGTERM), "SIGTERM", "rollback"
		if i == trials {
			// ask without a terminal rolls back, and says so.
			sig, name, mode = os.Interrupt, "SIGINT", "ask"
		}
		t.Run(fmt.Sprintf("%s-%d", name, i), func(t *testing.T) {
			c := w.start(t, "run", w.file(t), "-o", "json", "--tick", "1s", "--on-interrupt", mode)
			id := c.id()
			c.await("weights_confirmed", 60*time.Second)
			if !w.shifted() {
				t.Fatal("step 1 confirmed but the pool is not shifted")
			}
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
			c.signal(sig)
			signals++
			code := c.exit(60 * time.Second)
			rec := w.record(t, id)
			if code != exitAborted || rec.State != store.StateAborted {
				t.Fatalf("after %s: exit %d, run %s (%s), want exit %d and Aborted\n%s", name, code, rec.State, rec.Reason, exitAborted, c.stderr.String())
			}
			if !strings.Contains(rec.Reason, "interrupted by "+name) || !strings.Contains(c.stderr.String(), "Rolling back") {
				t.Errorf("reason %q, stderr:\n%s", rec.Reason, c.stderr.String())
			}
			if mode == "ask" && !strings.Contains(c.stderr.String(), "--on-interrupt ask needs a terminal to ask on; rolling back") {
				t.Errorf("ask without a terminal did not say it rolls back:\n%s", c.stderr.String())
			}
			w.assertOriginal(t, name)
		})
	}

	// A second signal while rolling back leaves the run, saying how to finish it.
	t.Run("second-signal-leaves", func(t *testing.T) {
		c := w.start(t, "run", w.file(t), "-o", "json", "--tick", "1s")
		id := c.id()
		c.await("weights_confirmed", 60*time.Second)
		c.signal(syscall.SIGTERM)
		time.Sleep(30 * time.Millisecond)
		c.signal(syscall.SIGTERM)
		code := c.exit(60 * time.Second)
		if code == exitAborted {
			t.Log("the rollback ended before the second signal arrived")
			w.assertOriginal(t, "rolled back")
			return
		}
		if code != exitError || !strings.Contains(c.stderr.String(), "SIGTERM again: leaving the run") || !strings.Contains(c.stderr.String(), "abort "+id) {
			t.Fatalf("second SIGTERM: exit %d\n%s", code, c.stderr.String())
		}
		if code, out, errOut := w.verdict(t, "abort", id); code != exitAborted {
			t.Fatalf("abort after leaving: exit %d\n%s%s", code, out, errOut)
		}
		w.assertOriginal(t, "abort after a second signal")
	})
	if signals > 0 {
		t.Logf("%d interrupts (SIGTERM/SIGINT) after step 1: every run aborted, exit 4, pool back at its original weights", signals)
	}

	t.Run("bad-on-interrupt", func(t *testing.T) {
		code, _, errOut := w.verdict(t, "run", w.file(t), "--on-interrupt", "later")
		if code != exitInvalid || !strings.Contains(errOut, "--on-interrupt must be rollback, leave or ask") {
			t.Errorf("exit %d, stderr:\n%s", code, errOut)
		}
	})

	// Leaving on purpose says how to finish; abort then does it with the file gone.
	t.Run("leave-then-abort-without-file", func(t *testing.T) {
		file := w.file(t)
		c := w.start(t, "run", file, "-o", "json", "--tick", "1s", "--on-interrupt", "leave")
		id := c.id()
		c.await("weights_confirmed", 60*time.Second)
		c.signal(syscall.SIGTERM)
		if code := c.exit(30 * time.Second); code != exitError {
			t.Fatalf("--on-interrupt leave: exit %d, want %d\n%s", code, exitError, c.stderr.String())
		}
		for _, want := range []string{"Left run " + id, "verdict --state " + w.state + " abort " + id, "verdict --state " + w.state + " run " + file + " --resume " + id} {
			if !strings.Contains(c.stderr.String(), want) {
				t.Errorf("the hint lacks %q:\n%s", want, c.stderr.String())
			}
		}
		if !w.shifted() {
			t.Fatal("left on purpose, yet the pool is not shifted")
		}
		if rec := w.record(t, id); rec.State.Terminal() {
			t.Fatalf("left on purpose, yet the run is %s", rec.State)
		}
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := w.verdict(t, "abort", id, "--reason", "left by the test")
		rec := w.record(t, id)
		if code != exitAborted || rec.State != store.StateAborted {
			t.Fatalf("verdict abort of an undriven run: exit %d, run %s\n%s\n%s", code, rec.State, out, errOut)
		}
		if !strings.Contains(out, "No live process drives run") {
			t.Errorf("abort did not say it drives the run itself:\n%s", out)
		}
		w.assertOriginal(t, "abort without a driver")
		t.Logf("left with --on-interrupt leave:\n%s\nverdict abort with the file deleted (exit %d):\n%s", c.stderr.String(), code, out)
	})

	// kill -9, then the experiment file is edited: abort still rolls the pool back, from the
	// stored spec, taking the dead process's lease at once.
	t.Run("kill9-edit-then-abort", func(t *testing.T) {
		file := w.file(t)
		c := w.start(t, "run", file, "-o", "json", "--tick", "1s", "--lease-ttl", "2m")
		id := c.id()
		c.await("weights_confirmed", 60*time.Second)
		c.signal(syscall.SIGKILL)
		c.exit(10 * time.Second)
		if !w.shifted() {
			t.Fatal("the pool is not shifted after the kill")
		}
		b, _ := os.ReadFile(file)
		edited := strings.Replace(string(b), "maxDuration: 60s", "maxDuration: 90s", 1)
		if edited == string(b) {
			t.Fatal("could not edit the experiment")
		}
		os.WriteFile(file, []byte(edited), 0o644)
		started := time.Now()
		code, out, errOut := w.verdict(t, "abort", id)
		rec := w.record(t, id)
		if code != exitAborted || rec.State != store.StateAborted {
			t.Fatalf("verdict abort after kill -9: exit %d, run %s\n%s\n%s", code, rec.State, out, errOut)
		}
		if took := time.Since(started); took > time.Minute {
			t.Errorf("abort took %s: it waited out the dead process's 2m lease", took)
		}
		w.assertOriginal(t, "abort after kill -9 and an edited file")
	})

	// A driver on another machine that stopped renewing its lease: abort waits up to the
	// lease's remaining TTL, saying so, then carries the abort out itself.
	t.Run("abort-waits-out-a-silent-lease", func(t *testing.T) {
		c := w.start(t, "run", w.file(t), "-o", "json", "--tick", "1s")
		id := c.id()
		c.await("weights_confirmed", 60*time.Second)
		c.signal(syscall.SIGKILL)
		c.exit(10 * time.Second)
		st, err := store.OpenSQLite(context.Background(), w.state)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		dead, err := st.Acquire(ctx, id, w.leaseOwner(t, id), time.Second)
		if err == nil {
			err = st.Release(ctx, dead)
		}
		if err == nil {
			_, err = st.Acquire(ctx, id, "verdict-run@elsewhere/1", 4*time.Second)
		}
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		code, out, errOut := w.verdict(t, "abort", id, "--wait", "500ms")
		took := time.Since(started)
		if code != exitAborted || !strings.Contains(out, "verdict-run@elsewhere/1 holds the run's lease but has not applied the abort within 500ms; waiting up to") || !strings.Contains(out, "No live process drives run") {
			t.Fatalf("abort with a silent lease: exit %d after %s\n%s%s", code, took, out, errOut)
		}
		if took < 2*time.Second {
			t.Errorf("abort took the run after %s, before the 4s lease ran out", took)
		}
		w.assertOriginal(t, "abort after waiting out a silent lease")
		t.Logf("abort waited out a silent 4s lease and rolled back in %s", took.Round(time.Millisecond))
	})

	// A second driver of a live run is refused; --resume right after a kill -9 takes the run
	// back at once; abort with a live driver leaves the work to it.
	t.Run("one-driver", func(t *testing.T) {
		file := w.file(t)
		a := w.start(t, "run", file, "-o", "json", "--tick", "1s", "--lease-ttl", "2m")
		id := a.id()
		a.await("weights_confirmed", 60*time.Second)
		wantOwner := fmt.Sprintf("verdict-run@%s/%d", hostname(), a.cmd.Process.Pid)
		if o := w.leaseOwner(t, id); o != wantOwner {
			t.Fatalf("lease owner %q, want %q", o, wantOwner)
		}
		code, _, errOut := w.verdict(t, "run", file, "-o", "json", "--resume", id)
		if code != exitError || !strings.Contains(errOut, "one process drives a run at a time") {
			t.Fatalf("second driver: exit %d\n%s", code, errOut)
		}
		if o := w.leaseOwner(t, id); o != wantOwner {
			t.Fatalf("after the refused second driver the lease is %q's, want %q", o, wantOwner)
		}
		select {
		case <-a.done:
			t.Fatalf("the first driver exited %d:\n%s", a.code, a.stderr.String())
		default:
		}
		a.signal(syscall.SIGKILL)
		a.exit(10 * time.Second)
		resumed := time.Now()
		b := w.start(t, "run", file, "-o", "json", "--tick", "1s", "--resume", id)
		for w.leaseOwner(t, id) != fmt.Sprintf("verdict-run@%s/%d", hostname(), b.cmd.Process.Pid) {
			if time.Since(resumed) > 20*time.Second {
				t.Fatalf("--resume after kill -9 did not take the run back at once (the lease is %q's):\n%s", w.leaseOwner(t, id), b.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(resumed)
		code, out, errOut := w.verdict(t, "abort", id, "--reason", "one driver test")
		if code != exitOK && code != exitAborted {
			t.Fatalf("abort with a live driver: exit %d\n%s\n%s", code, out, errOut)
		}
		if strings.Contains(out, "No live process drives") {
			t.Errorf("abort drove a run that had a live driver:\n%s", out)
		}
		if code := b.exit(60 * time.Second); code != exitAborted {
			t.Fatalf("driver after abort: exit %d\n%s", code, b.stderr.String())
		}
		w.assertOriginal(t, "abort applied by the live driver")
		t.Logf("second driver refused; --resume after kill -9 took the run back in %s; abort applied by the live driver (%q)", took.Round(time.Millisecond), strings.TrimSpace(out))
	})
}
