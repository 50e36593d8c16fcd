package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// TestRunCommandsLocalAndRemote drives get, list, status --watch, rollback, report and
// retry against a server started here and against its state directory, and checks both
// answer the same documents. Prometheus is unreachable on purpose: runs ramp to step 1
// and wait for data, which is all these commands need.
func TestRunCommandsLocalAndRemote(t *testing.T) {
	emu, dir, state := remoteWorld(t)
	steer, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: emu.Token(), AccountID: emu.AccountID(), BaseURL: emu.APIURL()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Options{Store: st, Steerer: steer, Dir: dir, Listen: "127.0.0.1:0", Poll: 50 * time.Millisecond, Tick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := srv.URL()
	t.Setenv("VERDICT_TOKEN", "")
	t.Setenv("VERDICT_SERVER", "")

	id := waitForRun(t, "--server", url)

	// get: the same run, the same document kind, from the server and from the store.
	code, out, errOut := runCLI(t, "get", id, "--server", url)
	if code != 0 || !strings.Contains(out, "Experiment remote   run "+id) || !strings.Contains(out, "Driven by this server") ||
		!strings.Contains(out, "ORIGIN") || !strings.Contains(out, "Report: verdict report "+id+" --server "+url) {
		t.Errorf("get --server: exit %d\n%s%s", code, out, errOut)
	}
	remote := getJSON(t, "get", "remote", "--server", url, "-o", "json")
	local := getJSON(t, "get", id, "--state", state, "-o", "json")
	for _, d := range []server.RunDetail{remote, local} {
		if d.APIVersion != server.APIVersion || d.Kind != server.KindRun || d.Run.ID != id || d.Run.Canary != "c1" || d.Run.Steps != 1 || len(d.Messages) == 0 {
			t.Errorf("get -o json: %+v", d)
		}
	}
	if local.Run.DrivenBy != "verdict-test" && local.Run.DrivenBy != "nobody" && local.Run.DrivenBy == "" {
		t.Errorf("local get: no driver named: %+v", local.Run)
	}
	code, out, _ = runCLI(t, "get", id, "--state", state)
	if code != 0 || !strings.Contains(out, "Report: verdict report "+id+" --state "+state) {
		t.Errorf("local get: the report hint must carry --state:\n%s", out)
	}

	// list, with filters, both ways (--run-state: --state is the state directory).
	for _, where := range [][]string{{"--server", url}, {"--state", state}} {
		l := listJSON(t, append([]string{"list", "--run-state", "ramping,paused", "-o", "json"}, where...)...)
		if l.Kind != server.KindRunList || len(l.Runs) != 1 || l.Runs[0].ID != id {
			t.Errorf("list --state ramping %v: %+v", where, l)
		}
		if l := listJSON(t, append([]string{"list", "--run-state", "Promoted", "-o", "json"}, where...)...); len(l.Runs) != 0 {
			t.Errorf("list --state Promoted %v: %+v", where, l)
		}
		if l := listJSON(t, append([]string{"list", "--experiment", "other", "--all", "-o", "json"}, where...)...); len(l.Runs) != 0 {
			t.Errorf("list --experiment other %v: %+v", where, l)
		}
	}
	if code, _, errOut := runCLI(t, "list", "--run-state", "ramped", "--state", state); code != exitInvalid || !strings.Contains(errOut, `unknown state "ramped"`) {
		t.Errorf("list --state ramped: exit %d, %s", code, errOut)
	}

	// status --watch follows the run until rollback (abort's alias) ends it, and exits 4.
	type result struct {
		code     int
		out, err string
	}
	watched := make(chan result, 1)
	go func() {
		c, o, e := runCLI(t, "status", "--watch", id, "--server", url, "--interval", "100ms", "-o", "json")
		watched <- result{c, o, e}
	}()
	time.Sleep(300 * time.Millisecond)
	code, out, errOut = runCLI(t, "rollback", id, "--server", url, "--who", "ops", "-o", "json")
	var act server.ActionResult
	if code != 0 || json.Unmarshal([]byte(out), &act) != nil || act.Kind != server.KindActionResult || act.Action != "abort" || act.Who != "ops" {
		t.Errorf("rollback: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case r := <-watched:
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		var last server.RunDetail
		if r.code != exitAborted || len(lines) < 2 || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || last.Run.State != store.StateAborted {
			t.Errorf("status --watch: exit %d, %d documents\n%s%s", r.code, len(lines), r.out, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("status --watch did not end with the run")
	}
	if d := getJSON(t, "get", id, "--state", state, "-o", "json"); d.Run.EndedAt.IsZero() || d.Run.State != store.StateAborted {
		t.Errorf("ended run: %+v", d.Run)
	}

	// report from the server: every format, to stdout and to a file.
	code, out, errOut = runCLI(t, "report", id, "--server", url, "-o", "json")
	if code != 0 || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"schemaVersion"`) {
		t.Errorf("report --server -o json: exit %d %s\n%.200s", code, errOut, out)
	}
	file := filepath.Join(t.TempDir(), "r.html")
	code, out, errOut = runCLI(t, "report", id, "--server", url, "--out", file)
	if b, err := os.ReadFile(file); code != 0 || err != nil || !strings.HasPrefix(string(b), "<!DOCTYPE html>") || !strings.Contains(out, "Wrote "+file) {
		t.Errorf("report --server --out FILE.html: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "report", "no-such-run", "--server", url); code != exitInvalid || !strings.Contains(errOut, "no run or experiment no-such-run") {
		t.Errorf("report of an unknown run: exit %d %s", code, errOut)
	}

	// retry on the server: a new run of the stored experiment, linked both ways.
	code, out, errOut = runCLI(t, "retry", id, "--server", url, "-o", "json")
	var rr server.RetryResult
	if code != 0 || json.Unmarshal([]byte(out), &rr) != nil || rr.Kind != server.KindRetryResult || rr.RetryOf != id || rr.Run == "" || rr.Run == id {
		t.Fatalf("retry --server: exit %d\n%s%s", code, out, errOut)
	}
	if d := getJSON(t, "get", rr.Run, "--server", url, "-o", "json"); d.Run.RetryOf != id {
		t.Errorf("the retry does not name the run it retries: %+v", d.Run)
	}
	if d := getJSON(t, "get", id, "--state", state, "-o", "json"); !strings.Contains(string(mustMarshal(d.Messages)), `"type":"retried"`) {
		t.Errorf("the retried run does not say so: %+v", d.Messages)
	}
	if code, _, errOut := runCLI(t, "retry", rr.Run, "--server", url); code != exitInvalid || !strings.Contains(errOut, "has not ended") {
		t.Errorf("retry of a running run: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "abort", rr.Run, "--server", url); code != 0 {
		t.Fatalf("abort the retry: exit %d %s", code, errOut)
	}
	waitEnded(t, rr.Run, "--server", url)
	srv.Close()

	// retry here: this process drives the new run; abort from another command ends it.
	t.Setenv("CLOUDFLARE_API_TOKEN", emu.Token())
	t.Setenv("CLOUDFLARE_BASE_URL", emu.APIURL())
	retried := make(chan result, 1)
	go func() {
		c, o, e := runCLI(t, "retry", id, "--state", state, "--no-ui", "--tick", "100ms", "--who", "ops")
		retried <- result{c, o, e}
	}()
	var local2 string
	for deadline := time.Now().Add(30 * time.Second); local2 == ""; time.Sleep(50 * time.Millisecond) {
		select {
		case r := <-retried:
			t.Fatalf("retry ended before it ramped: exit %d\n%s%s", r.code, r.out, r.err)
		default:
		}
		if time.Now().After(deadline) {
			_, all, _ := runCLI(t, "list", "--all", "--state", state)
			t.Fatalf("the local retry did not ramp:\n%s", all)
		}
		// Unfinished, whatever its phase: with Prometheus unreachable it stays in preflight.
		if l := listJSON(t, "list", "--state", state, "-o", "json"); len(l.Runs) > 0 {
			local2 = l.Runs[0].ID
		}
	}
	// abort waits for the driver and exits with the run's status: 4, aborted.
	if code, out, errOut := runCLI(t, "abort", local2, "--state", state); code != exitAborted {
		t.Fatalf("abort the local retry: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case r := <-retried:
		if r.code != exitAborted {
			t.Errorf("retry: exit %d\n%s%s", r.code, r.out, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the local retry did not end")
	}
	code, out, _ = runCLI(t, "get", local2, "--state", state)
	if code != 0 || !strings.Contains(out, "Retry of run "+id) || !strings.Contains(out, "retry_of") {
		t.Errorf("local retry: get shows no link to the old run:\n%s", out)
	}
}

// waitForRun waits for a Ramping run and returns its ID.
func waitForRun(t *testing.T, where ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l := listJSON(t, append([]string{"list", "--run-state", "Ramping", "-o", "json"}, where...)...)
		if len(l.Runs) > 0 {
			return l.Runs[0].ID
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no ramping run %v", where)
	return ""
}

func waitEnded(t *testing.T, id string, where ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if d := getJSON(t, append([]string{"get", id, "-o", "json"}, where...)...); d.Run.State.Terminal() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("run %s did not end", id)
}

func getJSON(t *testing.T, args ...string) server.RunDetail {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	var d server.RunDetail
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
	}
	return d
}

func listJSON(t *testing.T, args ...string) server.RunList {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	var l server.RunList
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
	}
	return l
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
