package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

func TestServeRefusesNonLoopbackWithoutToken(t *testing.T) {
	t.Setenv("CLOUDFLARE_API_TOKEN", "x")
	t.Setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:1/client/v4/")
	t.Setenv("VERDICT_TOKEN", "")
	code, _, errOut := runCLI(t, "serve", "--state", t.TempDir(), "--dir", t.TempDir(), "--listen", "0.0.0.0:0")
	if code != exitInvalid || !strings.Contains(errOut, "token") {
		t.Errorf("exit %d, stderr %q; want 2 and a word about the token", code, errOut)
	}
	code, _, errOut = runCLI(t, "serve", "--state", t.TempDir())
	if code != exitInvalid || !strings.Contains(errOut, "--dir") {
		t.Errorf("serve without --dir: exit %d, %q", code, errOut)
	}
	// watch follows a local run without a server; an unknown one says where else to look.
	code, _, errOut = runCLI(t, "watch", "some-run", "--state", t.TempDir())
	if code != exitInvalid || !strings.Contains(errOut, "--server") {
		t.Errorf("watch of an unknown local run: exit %d, %q", code, errOut)
	}
}

const remoteExperiment = `apiVersion: verdict.dev/v1alpha1
kind: Experiment
metadata: {name: remote}
spec:
  canary: {cluster: c1}
  baselines: [c2]
  traffic:
    cloudflare:
      accountID: %s
      poolID: %s
      origins: {c1: o1, c2: o2}
    steps: [{weight: 10%%, hold: 1h}]
  prometheus: {address: "http://127.0.0.1:1"}
  kpis:
    - name: errors
      type: ratio
      events: sum by (cluster) (increase(e[{{.Interval}}]))
      total: sum by (cluster) (increase(t[{{.Interval}}]))
  analysis: {interval: 1m, prePeriod: 0s, maxDuration: 2h, noDataTimeout: 1h}
`

// remotePool runs an emulator with remoteExperiment's two-origin pool.
func remotePool(t *testing.T) *cfemu.Server {
	t.Helper()
	emu := cfemu.New(cfemu.Options{RateLimit: -1})
	if _, err := emu.AddPool([]byte(`{"id": "` + remotePoolID + `", "name": "p", "origins": [{"name": "o1", "address": "a", "weight": 0.5}, {"name": "o2", "address": "b", "weight": 0.5}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

const remotePoolID = "0123456789abcdef0123456789abcdef"

// remoteWorld is remotePool with remoteExperiment in an experiment directory, and a state
// directory.
func remoteWorld(t *testing.T) (emu *cfemu.Server, dir, state string) {
	t.Helper()
	emu = remotePool(t)
	dir, state = t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "remote.yaml"), []byte(fmt.Sprintf(remoteExperiment, emu.AccountID(), remotePoolID)), 0o600); err != nil {
		t.Fatal(err)
	}
	return emu, dir, state
}

// TestRemoteCommands drives status, watch and the actions against a running server.
// Prometheus is unreachable on purpose: the run ramps to step 1 and then waits for data,
// which is all the commands need.
func TestRemoteCommands(t *testing.T) {
	emu := remotePool(t)
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: emu.Token(), AccountID: emu.AccountID(), BaseURL: emu.APIURL()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "remote.yaml"), []byte(fmt.Sprintf(remoteExperiment, emu.AccountID(), remotePoolID)), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "tok-123"
	srv, err := server.New(server.Options{Store: st, Steerer: steer, Dir: dir, Listen: "127.0.0.1:0", Token: token, Poll: 50 * time.Millisecond, Tick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := srv.URL()

	t.Setenv("VERDICT_TOKEN", "wrong")
	if code, _, errOut := runCLI(t, "status", "--server", url); code != exitError || !strings.Contains(errOut, "refused the token") {
		t.Errorf("wrong token: exit %d, %q", code, errOut)
	}
	t.Setenv("VERDICT_TOKEN", token)
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ramping run on the server")
		}
		_, out, _ := runCLI(t, "status", "--server", url)
		if strings.Contains(out, "Ramping") {
			id = strings.Fields(strings.Split(out, "\n")[1])[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, errOut := runCLI(t, "status", id, "--server", url)
	if code != 0 || !strings.Contains(out, "Experiment remote") || !strings.Contains(out, "weights_confirmed") {
		t.Errorf("status RUN: exit %d\n%s%s", code, out, errOut)
	}

	// watch follows the run until the abort ends it, and exits 4 like verdict run.
	type result struct {
		code     int
		out, err string
	}
	watched := make(chan result, 1)
	go func() {
		c, o, e := runCLI(t, "watch", id, "--server", url, "-o", "json")
		watched <- result{c, o, e}
	}()
	time.Sleep(200 * time.Millisecond) // let watch connect; it catches up from its cursor either way
	t.Setenv("VERDICT_SERVER", url)    // the environment works like --server
	code, out, errOut = runCLI(t, "abort", id, "--who", "frank", "--reason", "from the CLI")
	if code != 0 || !strings.Contains(out, "applied (by frank)") {
		t.Errorf("abort: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case r := <-watched:
		if r.code != exitAborted || !strings.Contains(r.out, `"type":"run_ended"`) || !strings.Contains(r.out, `"type":"run_result"`) {
			t.Errorf("watch: exit %d\n%s%s", r.code, r.out, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not end with the run")
	}
	code, _, errOut = runCLI(t, "pause", id)
	if code != exitInvalid || !strings.Contains(errOut, "already ended") {
		t.Errorf("pause of an ended run: exit %d, %q", code, errOut)
	}
	code, out, _ = runCLI(t, "status", "--all", "-o", "json")
	if code != 0 || !strings.Contains(out, `"state":"Aborted"`) || !strings.Contains(out, `"endedBy":"frank"`) {
		t.Errorf("status --all via VERDICT_SERVER: exit %d\n%s", code, out)
	}
}

// TestServeCommand runs `verdict serve` itself against the emulator: it starts the
// directory's experiment, answers the API, logs JSON lines naming the run, and stops on
// cancellation (SIGTERM) leaving the run unfinished for the next start.
func TestServeCommand(t *testing.T) {
	emu, dir, state := remoteWorld(t)
	t.Setenv("CLOUDFLARE_API_TOKEN", emu.Token())
	t.Setenv("CLOUDFLARE_BASE_URL", emu.APIURL())
	t.Setenv("VERDICT_TOKEN", "")
	var out, errb lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRootCmd(&streams{in: strings.NewReader(""), out: &out, err: &errb})
		root.SetArgs([]string{"serve", "--dir", dir, "--state", state, "--listen", "127.0.0.1:0", "--poll", "50ms", "--tick", "100ms"})
		done <- root.ExecuteContext(ctx)
	}()
	var url string
	deadline := time.Now().Add(30 * time.Second)
	for url == "" {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s%s", out.String(), errb.String())
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "dashboard" {
				url = strings.TrimSuffix(f[1], "/")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	var runID string
	for runID == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no ramping run:\n%s", errb.String())
		}
		_, o, _ := runCLI(t, "status", "--server", url)
		if strings.Contains(o, "Ramping") {
			runID = strings.Fields(strings.Split(o, "\n")[1])[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	// One serve per SQLite state directory: a second is refused, naming the first.
	code, _, e := runCLI(t, "serve", "--dir", dir, "--state", state, "--listen", "127.0.0.1:0")
	if code != exitError || !strings.Contains(e, fmt.Sprintf("locked by process %d", os.Getpid())) || !strings.Contains(e, "one verdict serve per state directory") {
		t.Errorf("a second serve on the same state directory: exit %d, %s", code, e)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	logs := errb.String()
	if !strings.Contains(logs, `"run":"`+runID+`"`) || !strings.Contains(logs, `"msg":"pool weights written"`) || strings.Contains(logs, emu.Token()) {
		t.Errorf("logs: want JSON lines naming the run (the Cloudflare client's too) and no token:\n%s", logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(line, "weights") && !strings.Contains(line, `"run":"`+runID+`"`) {
			t.Errorf("a line about the run without its ID: %s", line)
		}
	}
	code, o, _ := runCLI(t, "status", "--state", state, "-o", "json")
	if code != 0 || !strings.Contains(o, runID) || !strings.Contains(o, `"state":"Ramping"`) {
		t.Errorf("after stopping, the run should be left Ramping for the next start: %s", o)
	}
}

// TestServeRestartedAfterSIGKILLResumesAtOnce: on SQLite one serve holds the state
// directory, so its replica name needs no pid; a serve restarted after a SIGKILL takes its
// runs' leases back at once instead of waiting out the dead process's (--lease-ttl 1m).
func TestServeRestartedAfterSIGKILLResumesAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs verdict serve processes")
	}
	bin := buildVerdict(t)
	emu, dir, state := remoteWorld(t)
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--dir", dir, "--state", state, "--listen", "127.0.0.1:0", "--poll", "50ms", "--tick", "100ms", "--lease-ttl", "1m")
		cmd.Env = append(os.Environ(), "CLOUDFLARE_API_TOKEN="+emu.Token(), "CLOUDFLARE_BASE_URL="+emu.APIURL(), "VERDICT_TOKEN=", "VERDICT_REPLICA=", "VERDICT_STORE=", "XDG_CONFIG_HOME="+t.TempDir())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	owner := func() (string, store.Lease) {
		_, o, _ := runCLI(t, "status", "--state", state, "-o", "json")
		var out struct {
			Runs []struct {
				ID    string       `json:"id"`
				State string       `json:"state"`
				Lease *store.Lease `json:"lease"`
			} `json:"runs"`
		}
		if json.Unmarshal([]byte(o), &out) != nil || len(out.Runs) == 0 || out.Runs[0].Lease == nil || out.Runs[0].State != "Ramping" {
			return "", store.Lease{}
		}
		return out.Runs[0].ID, *out.Runs[0].Lease
	}
	// waitOwner waits for a lease newer than token: a process that took the run.
	waitOwner := func(what string, token int64) (string, store.Lease) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if id, l := owner(); l.Token > token {
				return id, l
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := serve()
	id, l := waitOwner("the first serve to drive the run", 0)
	host, _ := os.Hostname()
	if l.Owner != host {
		t.Errorf("replica name on SQLite is %q, want the hostname %q", l.Owner, host)
	}
	first.Process.Kill()
	first.Wait()
	killed := time.Now()
	serve()
	id2, _ := waitOwner("the restarted serve to take the run back", l.Token)
	if id2 != id {
		t.Fatalf("the restarted serve drives run %s, want %s", id2, id)
	}
	if took := time.Since(killed); took > 15*time.Second {
		t.Errorf("the restarted serve took the run back after %s; it must not wait out the 1m lease", took)
	} else {
		t.Logf("run %s taken back %s after the SIGKILL (lease TTL 1m)", id, took.Round(time.Millisecond))
	}
}

func TestReadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := readTokens(write("ok", "# who holds what\nci-bot  s3cret-1\n\nalice\ts3cret-2\n"))
	if err != nil || len(got) != 2 || got[0] != (server.NamedToken{Name: "ci-bot", Secret: "s3cret-1"}) || got[1].Name != "alice" {
		t.Errorf("readTokens: %+v, %v", got, err)
	}
	for name, body := range map[string]string{"one-field": "ci-bot\n", "three": "a b c\n", "empty": "# nothing\n"} {
		if _, err := readTokens(write(name, body)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if got, err := readTokens(""); got != nil || err != nil {
		t.Errorf("no file: %v, %v", got, err)
	}
	code, out, _ := runCLI(t, "serve", "--help")
	if code != 0 || !strings.Contains(out, "--adopt-orphans") || !strings.Contains(out, "--tokens-file") {
		t.Errorf("serve --help: %d\n%s", code, out)
	}
}
