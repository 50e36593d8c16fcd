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

// crashScenario is a small, fast world: three clusters in the experiment and a standby
// origin outside it that must never be touched, steps of a few seconds.
func crashScenario(t *testing.T) *sim.Scenario {
	t.Helper()
	data, err := os.ReadFile("../../sim/scenarios/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := string(data)
	y = strings.Replace(y, "clusters:\n", "clusters:\n  - name: prod-use1-monday-onix\n    origin: prod-use1-onix-standby\n    weight: 0.1\n", 1)
	for old, new := range map[string]string{
		"{weight: 10%, hold: 30s}": "{weight: 10%, hold: 6s}",
		"{weight: 25%, hold: 30s}": "{weight: 25%, hold: 6s}",
		"{weight: 50%, hold: 60s}": "{weight: 50%, hold: 6s}",
		"interval: 5s":             "interval: 3s",
		"minIntervals: 6":          "minIntervals: 3",
		"maxDuration: 6m":          "maxDuration: 60s",
		"noDataTimeout: 1m":        "noDataTimeout: 20s",
		// Wide margins so that about half the runs are promoted within the short horizon and
		// both endings are exercised under kills.
		"        tolerance: 20%": "        tolerance: 60%",
		"        tolerance: 5%":  "        tolerance: 30%\n        slowTolerance: 60%",
	} {
		if !strings.Contains(y, old) {
			t.Fatalf("scenario changed: %q not found", old)
		}
		y = strings.Replace(y, old, new, 1)
	}
	sc, err := sim.ParseScenario("crash.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func buildVerdict(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "verdict")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build verdict: %v\n%s", err, out)
	}
	return bin
}

// TestCrashSafety kills `verdict run` with SIGKILL at random moments, resumes it each
// time, and checks that every run still ends promoted or rolled back with the pool's
// weights exactly those of its ending, and the origin outside the experiment untouched.
func TestCrashSafety(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("starts a fleet and kills child processes; skipped with -short and under -race (the children are not race builds)")
	}
	kills := 20
	if v, err := strconv.Atoi(os.Getenv("VERDICT_CRASH_KILLS")); err == nil && v > 0 {
		kills = v
	}
	bin := buildVerdict(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	fleet, err := sim.Start(sim.Options{Scenario: crashScenario(t), Rate: 400, Fast: true, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	state := t.TempDir()
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
	exp := exps[0]
	ref := traffic.PoolRef{Pool: fleet.PoolID()}
	readPool := func() traffic.Weights {
		p, err := steer.Pool(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		return p.Weights()
	}
	start := readPool()
	const standby = "prod-use1-onix-standby"

	killed, runs := 0, 0
	outcomes := map[string]int{}
	for killed < kills {
		runs++
		if runs > kills+5 {
			t.Fatalf("too many runs for %d kills", kills)
		}
		before := readPool()
		runID := ""
		args := []string{"--state", state, "run", fleet.ExperimentFile(), "-o", "json"}
		for attempt := 0; ; attempt++ {
			if attempt > 60 {
				t.Fatalf("run %s never finished", runID)
			}
			a := args
			if runID == "" && attempt > 0 {
				a = args // nothing was created yet: start afresh
			}
			if runID != "" {
				a = append(args, "--resume", runID)
			}
			cmd := exec.Command(bin, a...)
			cmd.Env = env
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ids := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				sent := false
				for sc.Scan() {
					var m struct {
						Run string `json:"run"`
					}
					if !sent && json.Unmarshal(sc.Bytes(), &m) == nil && m.Run != "" {
						ids <- m.Run
						sent = true
					}
				}
				close(ids)
			}()
			wait := make(chan error, 1)
			go func() { wait <- cmd.Wait() }()
			deadline := time.After(time.Duration(200+rng.IntN(3000)) * time.Millisecond)
			var exited error
			var done bool
			select {
			case exited = <-wait:
				done = true
			case <-deadline:
				if killed < kills {
					cmd.Process.Signal(syscall.SIGKILL)
					<-wait
					killed++
				} else {
					exited = <-wait
					done = true
				}
			}
			if id, ok := <-ids; ok && runID == "" {
				runID = id
			}
			if runID == "" {
				// Killed before it printed anything: the run may exist already.
				if st, err := store.OpenSQLite(context.Background(), state); err == nil {
					if un, err := st.ListRuns(context.Background(), store.ListOptions{Unfinished: true}); err == nil && len(un) > 0 {
						runID = un[0].ID
					}
					st.Close()
				}
			}
			if runID == "" && done {
				t.Fatalf("no run ID from the child; stderr:\n%s", stderr.String())
			}
			if done {
				code := 0
				if ee, ok := exited.(*exec.ExitError); ok {
					code = ee.ExitCode()
				}
				if code != exitOK && code != exitRolledBack && code != exitInconclusive {
					t.Fatalf("run %s exited %d:\n%s", runID, code, stderr.String())
				}
				break
			}
		}
		st, err := store.OpenSQLite(context.Background(), state)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.Run(context.Background(), runID)
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		outcomes[string(rec.State)]++
		t.Logf("run %d (%s) ended %s: %s", runs, rec.ID, rec.State, rec.Reason)
		after := readPool()
		if !traffic.SameWeight(after[standby], start[standby]) {
			t.Fatalf("run %s changed the standby origin outside the experiment: %v -> %v", runID, start[standby], after[standby])
		}
		var want map[string]float64
		switch rec.State {
		case store.StatePromoted:
			want = rec.Current // the final step, confirmed by read-back
			if len(want) != 3 {
				t.Fatalf("promoted run without final weights: %+v", rec)
			}
		case store.StateRolledBack:
			want = before
		default:
			t.Fatalf("run %s ended %s", runID, rec.State)
		}
		for _, c := range exp.Spec.Clusters() {
			o := exp.Spec.Traffic.Cloudflare.Origins[c]
			if !traffic.SameWeight(after[o], want[o]) {
				t.Fatalf("run %s ended %s but origin %s has weight %v, want %v", runID, rec.State, o, after[o], want[o])
			}
		}
		if rec.State == store.StatePromoted {
			// The next run starts from the promoted weights; put the pool back so each run
			// ramps the same way.
			for o, w := range before {
				if err := fleet.Emulator().SetWeight(fleet.PoolID(), o, w); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	t.Logf("%d SIGKILLs over %d runs; outcomes %v; every run ended with the pool exactly as its ending requires", killed, runs, outcomes)
	fmt.Fprintf(os.Stderr, "crash safety: %d kills, %d runs, outcomes %v\n", killed, runs, outcomes)
}
