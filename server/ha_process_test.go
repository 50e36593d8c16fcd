package server

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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/store/storetest"
)

// buildVerdict builds the verdict binary for child-process tests.
func buildVerdict(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "verdict")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/verdict-dev/verdict/cmd/verdict").CombinedOutput()
	if err != nil {
		t.Fatalf("build verdict: %v\n%s", err, out)
	}
	return bin
}

// child is one `verdict serve` replica process.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// skipProcessTest skips a test of verdict processes in -short mode and under the race
// detector: the processes are not built with it, and the plain pass runs the test.
func skipProcessTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs verdict processes for half a minute or more")
	}
	if raceEnabled {
		t.Skip("the processes under test are not built with the race detector; the plain pass runs this")
	}
}

// procWorld is the setting of the process tests: the verdict binary, a fleet on real time
// (the emulator and the embedded Prometheus), and the test's own connection to the store.
type procWorld struct {
	*world
	bin string
	dsn string
	mon *store.Postgres
}

func newProcWorld(t *testing.T, dsn string) *procWorld {
	t.Helper()
	now := time.Now()
	p := &procWorld{world: newWorldAt(t, &fastClock{base: now, start: now, speed: 1}, 500*time.Millisecond, 100000), bin: buildVerdict(t), dsn: dsn}
	mon, err := store.OpenPostgres(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	p.mon = mon
	return p
}

// experiment is the world's experiment on pool b with 2 s intervals and the given hold.
func (p *procWorld) experiment(name string, hold time.Duration) string {
	return strings.Replace(p.world.experiment(name, "b", hold.String()), "interval: 1m", "interval: 2s", 1)
}

// env is the environment of a verdict child: the emulator's credentials, nothing from
// the caller's configuration.
func (p *procWorld) env(t *testing.T, extra ...string) []string {
	return append(append(os.Environ(), "CLOUDFLARE_API_TOKEN="+p.emu.Token(), "CLOUDFLARE_BASE_URL="+p.emu.APIURL(),
		"XDG_CONFIG_HOME="+t.TempDir(), "VERDICT_STATE="+t.TempDir(), "VERDICT_TOKEN=", "VERDICT_REPLICA=", "VERDICT_STORE="), extra...)
}

// startChild starts `bin args...` with its output in a log file; done closes when it exits.
func startChild(t *testing.T, name string, env []string, bin string, args ...string) *child {
	t.Helper()
	c := &child{name: name, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); f.Close(); close(c.done) }()
	return c
}

// startVerdictRun starts `verdict run file args...`, killed when the test ends (its output
// logged if the test failed).
func (p *procWorld) startVerdictRun(t *testing.T, file string, args ...string) *child {
	t.Helper()
	c := startChild(t, "verdict-run", p.env(t), p.bin, append([]string{"run", file, "--store", p.dsn, "--tick", "200ms", "-o", "json"}, args...)...)
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			tail(t, c)
		}
	})
	return c
}

// TestReplicaProcessesSurviveSIGKILL runs three `verdict serve` processes on one PostgreSQL
// with the emulator and the embedded Prometheus on real time, and SIGKILLs whichever
// replica owns the experiment at random moments (VERDICT_HA_KILLS times, 4 by default),
// starting a new replica each time. Every takeover must happen within the TTL and a step,
// and the run must end promoted with its three steps written and no interval decided twice.
func TestReplicaProcessesSurviveSIGKILL(t *testing.T) {
	skipProcessTest(t)
	kills := 4
	if v, err := strconv.Atoi(os.Getenv("VERDICT_HA_KILLS")); err == nil && v > 0 {
		kills = v
	}
	p := newProcWorld(t, storetest.PostgresSchema(t))
	w, mon := p.world, p.mon
	const ttl = 2 * time.Second
	hold := max(8, kills*4/3+2)
	rs := startReplicas(t, p, ttl, 3)
	w.write("ha-proc.yaml", p.experiment("ha-proc", time.Duration(hold)*time.Second))

	ctx := context.Background()
	var id string
	eventually(t, "the run to be started", func() bool {
		if rec, err := mon.Run(ctx, "ha-proc"); err == nil {
			id = rec.ID
		}
		return id != ""
	})
	owner := func() string { return ownerOf(mon, id) }
	ended := func() bool { return endedRun(mon, id) }
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var takeovers []time.Duration
	spread := max(3*hold*1000/kills-2000, 500) // milliseconds
	for k := 0; k < kills && !ended(); k++ {
		var victim string
		eventually(t, "an owner", func() bool { victim = owner(); return victim != "" || ended() })
		// Spread the kills over the run: preflight, the three steps and the promotion.
		time.Sleep(time.Duration(300+rng.IntN(spread)) * time.Millisecond)
		if ended() {
			break
		}
		if o := owner(); o != "" {
			victim = o
		}
		c := rs.get(victim)
		if c == nil {
			t.Fatalf("lease held by unknown replica %q", victim)
		}
		killed := time.Now()
		c.cmd.Process.Kill() // SIGKILL: no release, no last save
		<-c.done
		rs.spawn()
		var next string
		eventually(t, "a takeover", func() bool { next = owner(); return (next != "" && next != victim) || ended() })
		if next == "" {
			break // ended during the takeover: a replica finished it
		}
		took := time.Since(killed)
		takeovers = append(takeovers, took)
		t.Logf("kill %d: %s SIGKILLed at step %d; %s took over after %s", k+1, victim, stepOf(t, mon, id), next, took)
		if limit := ttl + 1500*time.Millisecond; took > limit {
			t.Errorf("takeover took %s, want within TTL + a step (%s)", took, limit)
		}
	}
	if len(takeovers) < min(kills, 2) {
		t.Errorf("only %d takeovers happened before the run ended", len(takeovers))
	}
	rec, nWrites, ds := promotedOnce(t, mon, w, id, time.Duration(4*hold)*time.Second+30*time.Second, len(takeovers))
	t.Logf("%d kills, takeovers %v; %d writes; %d decisions; ended %s", len(takeovers), takeovers, nWrites, len(ds), rec.State)
}

// replicaSet is a group of `verdict serve` replica processes on one store.
type replicaSet struct {
	t    *testing.T
	bin  string
	args []string
	env  []string

	mu       sync.Mutex
	children map[string]*child
	gen      int
}

// startReplicas starts n replicas serving p's experiment directory from its store; they are
// stopped (SIGTERM, then SIGKILL) when the test ends, and their output is logged if it
// failed.
func startReplicas(t *testing.T, p *procWorld, ttl time.Duration, n int) *replicaSet {
	rs := &replicaSet{t: t, children: map[string]*child{}, bin: p.bin, env: p.env(t),
		args: []string{"serve", "--dir", p.dir, "--store", p.dsn, "--lease-ttl", ttl.String(),
			"--poll", "100ms", "--tick", "200ms", "--listen", "127.0.0.1:0", "-o", "json"}}
	t.Cleanup(rs.stop)
	for range n {
		rs.spawn()
	}
	return rs
}

// spawn starts one more replica.
func (rs *replicaSet) spawn() *child {
	t := rs.t
	rs.mu.Lock()
	rs.gen++
	name := fmt.Sprintf("proc-%d", rs.gen)
	rs.mu.Unlock()
	c := startChild(t, name, rs.env, rs.bin, append(append([]string(nil), rs.args...), "--replica", name, "--state", t.TempDir())...)
	rs.mu.Lock()
	rs.children[name] = c
	rs.mu.Unlock()
	return c
}

func (rs *replicaSet) get(name string) *child {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.children[name]
}

// exited lists the replicas that ended on their own (not killed by the test).
func (rs *replicaSet) exited() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []string
	for name, c := range rs.children {
		select {
		case <-c.done:
			if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				out = append(out, name)
			}
		default:
		}
	}
	return out
}

func (rs *replicaSet) stop() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, c := range rs.children {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range rs.children {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
		if rs.t.Failed() {
			tail(rs.t, c)
		}
	}
}

// ownerOf is the replica holding run id's lease; "" when none does or the store cannot say
// (the database restarting, say: ask again).
func ownerOf(mon store.Leaser, id string) string {
	ls, err := mon.Leases(context.Background())
	if err != nil {
		return ""
	}
	for _, l := range ls {
		if l.RunID == id {
			return l.Owner
		}
	}
	return ""
}

func endedRun(mon store.Store, id string) bool {
	rec, err := mon.Run(context.Background(), id)
	return err == nil && rec.State.Terminal()
}

// poolWrites counts the weight writes that reached pool letter's pool.
func poolWrites(w *world, letter string) int {
	n := 0
	for _, call := range w.emu.Calls() {
		if (call.Method == "PUT" || call.Method == "PATCH") && strings.Contains(call.Path, pools[letter]) && call.Status < 300 {
			n++
		}
	}
	// Claims on the pool (its description) are writes too, but not weight writes.
	w.claimMu.Lock()
	defer w.claimMu.Unlock()
	return n - w.claimWrites[pools[letter]]
}

// promotedOnce waits up to within for run id to end, and fails the test unless it was
// promoted with its three steps written to pool b (plus at most extra writes: one per
// takeover or outage, which may reconcile an interrupted write) and no interval decided
// twice. It returns the run, the writes and the decisions.
func promotedOnce(t *testing.T, mon *store.Postgres, w *world, id string, within time.Duration, extra int) (*store.Run, int, []store.Decision) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !endedRun(mon, id) {
		if time.Now().After(deadline) {
			t.Fatalf("run did not end (state %s, step %d)", stateOf(t, mon, id), stepOf(t, mon, id))
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, err := mon.Run(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != store.StatePromoted {
		t.Fatalf("run ended %s/%s (%s), want promoted", rec.State, rec.Verdict, rec.Reason)
	}
	n := poolWrites(w, "b")
	if n < 3 || n > 3+extra {
		t.Errorf("%d weight writes to the pool, want 3 (three steps), plus at most %d", n, extra)
	}
	return rec, n, decidedOnce(t, mon, id)
}

// decidedOnce returns run id's decisions, failing the test for any interval decided twice.
func decidedOnce(t *testing.T, mon store.Store, id string) []store.Decision {
	t.Helper()
	ds, err := mon.Decisions(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		step            int
		elapsed, action string
	}
	seen := map[key]bool{}
	for _, d := range ds {
		var det struct {
			StepElapsed string `json:"stepElapsed"`
		}
		_ = json.Unmarshal(d.Details, &det)
		k := key{d.Step, det.StepElapsed, d.Action}
		if seen[k] {
			t.Errorf("decision recorded twice: step %d at %s elapsed, %s", d.Step, det.StepElapsed, d.Action)
		}
		seen[k] = true
	}
	return ds
}

func stepOf(t *testing.T, st store.Store, id string) int {
	rec, err := st.Run(context.Background(), id)
	if err != nil {
		return -1
	}
	return rec.Step
}

func stateOf(t *testing.T, st store.Store, id string) store.State {
	rec, err := st.Run(context.Background(), id)
	if err != nil {
		return ""
	}
	return rec.State
}

// tail logs the end of a replica's output.
func tail(t *testing.T, c *child) {
	f, err := os.Open(c.log)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	t.Logf("--- %s:\n%s", c.name, strings.Join(lines, "\n"))
}

// TestServeTakesOverAKilledVerdictRun: a run started with `verdict run --store
// postgres://...` is driven by that process under a lease, shown by `verdict status` on the
// same store, and taken over by a serve replica whose directory holds the file when the
// process is SIGKILLed.
func TestServeTakesOverAKilledVerdictRun(t *testing.T) {
	skipProcessTest(t)
	p := newProcWorld(t, storetest.PostgresSchema(t))
	w, mon, bin, dsn := p.world, p.mon, p.bin, p.dsn
	const ttl = 2 * time.Second
	file := w.write("cli-run.yaml", p.experiment("cli-run", 6*time.Second))
	ctx := context.Background()
	run := p.startVerdictRun(t, file, "--lease-ttl", ttl.String())
	var id string
	eventually(t, "the run to be started", func() bool {
		if rec, err := mon.Run(ctx, "cli-run"); err == nil {
			id = rec.ID
		}
		return id != ""
	})
	host, _ := os.Hostname()
	// One owner name per process (verdict-run@HOST/PID), so a second driver is refused.
	runOwner := fmt.Sprintf("verdict-run@%s/%d", host, run.cmd.Process.Pid)
	eventually(t, "verdict run to hold the lease", func() bool { return ownerOf(mon, id) == runOwner })
	out, err := exec.Command(bin, "status", id, "--store", dsn).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Driven by "+runOwner) {
		t.Errorf("verdict status --store: %v\n%s", err, out)
	}

	// A serve replica on the same store and directory sees the run as another process's.
	rs := startReplicas(t, p, ttl, 1)
	eventually(t, "the run to reach step 1", func() bool { return stepOf(t, mon, id) >= 1 })
	time.Sleep(time.Second)
	if o := ownerOf(mon, id); o != runOwner {
		t.Fatalf("while verdict run lives, the lease is %q's", o)
	}
	run.cmd.Process.Kill()
	<-run.done
	killed := time.Now()
	eventually(t, "the replica to take the run over", func() bool { return ownerOf(mon, id) == "proc-1" || endedRun(mon, id) })
	took := time.Since(killed)
	if limit := ttl + 1500*time.Millisecond; took > limit {
		t.Errorf("takeover took %s, want within TTL + a step (%s)", took, limit)
	}
	rec, _, _ := promotedOnce(t, mon, w, id, 90*time.Second, 1)
	if gone := rs.exited(); len(gone) > 0 {
		t.Errorf("replica exited: %v", gone)
	}
	t.Logf("verdict run SIGKILLed at step %d; proc-1 took over after %s; ended %s", rec.Step, took.Round(time.Millisecond), rec.State)
}
