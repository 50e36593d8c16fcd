package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// TestRoute53CrashSafety kills `verdict run` of a Route 53 experiment with SIGKILL at
// random moments after its step-1 intent is stored (before, during or just after the
// ChangeResourceRecordSets batch and its wait for INSYNC), then resumes it or aborts it,
// and checks that:
//   - at the kill, the experiment's records hold the original weights or the step's,
//     never a mix (a change is one batch);
//   - the run ends promoted, rolled back or aborted, with the records exactly those of its
//     ending;
//   - the records outside the experiment (a standby in the set, a record of another
//     name) are untouched;
//   - the claim TXT record no longer names a live run.
//
// It also measures moto's time to INSYNC for a change batch like Verdict's.
func TestRoute53CrashSafety(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("starts moto_server and a fleet and kills child processes; skipped with -short and under -race (the children are not race builds)")
	}
	moto := motoserver.Start(t)
	trials := 5
	if v, err := strconv.Atoi(os.Getenv("VERDICT_CRASH_KILLS")); err == nil && v > 0 {
		trials = v
	}
	bin := buildVerdict(t)
	sc, err := sim.DNSScenario(crashScenario(t))
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := sim.Start(sim.Options{Scenario: sc, Rate: 400, Fast: true, Seed: 42, DNS: &sim.DNSOptions{Endpoint: moto.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	env := os.Environ()
	for _, kv := range fleet.Env() {
		env = append(env, kv[0]+"="+kv[1])
	}
	// Nothing from the machine's own AWS configuration.
	env = append(env, "AWS_PROFILE=", "AWS_SESSION_TOKEN=", "AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	exps, err := experiments.LoadFile(fleet.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exp := exps[0]
	ids := exp.Spec.Traffic.Route53.SetIdentifiers // cluster → SetIdentifier
	inExp := map[string]bool{}
	for _, id := range ids {
		inExp[id] = true
	}
	admin := moto.Route53()
	zone, name := fleet.HostedZoneID(), fleet.RecordName()
	original := motoserver.MustRecords(t, admin, zone)
	units := func() map[string]int64 {
		u := map[string]int64{}
		for _, r := range motoserver.MustRecords(t, admin, zone) {
			if strings.EqualFold(aws.ToString(r.Name), name) && r.SetIdentifier != nil {
				u[aws.ToString(r.SetIdentifier)] = aws.ToInt64(r.Weight)
			}
		}
		return u
	}
	start := units()
	claimKey := "_verdict." + name + "/TXT/"

	// restore puts the experiment's records back as seeded, timing the batch to INSYNC.
	var insync []time.Duration
	restore := func() {
		t.Helper()
		var changes []types.Change
		for _, r := range original {
			if r.SetIdentifier != nil && inExp[aws.ToString(r.SetIdentifier)] {
				changes = append(changes, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &r})
			}
		}
		d, err := changeInSync(admin, zone, changes)
		if err != nil {
			t.Fatal(err)
		}
		insync = append(insync, d)
	}

	state := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), state)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	outcomes := map[string]int{}
	for trial := 1; trial <= trials; trial++ {
		restore()
		before := units()
		cmd := exec.Command(bin, "--state", state, "run", fleet.ExperimentFile(), "-o", "json")
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wait := make(chan error, 1)
		go func() { wait <- cmd.Wait() }()

		// Wait for the step-1 intent, then kill: the first trial at once (the batch not
		// yet sent or in flight), the others after a random delay within their slice of
		// 0–3.5s. The batch is sent within milliseconds of the intent and the CLI's
		// steerer polls GetChange every 3s, so the later slices kill during the wait for
		// INSYNC, at the read-back or just after the confirmation.
		runID, intent := waitIntent(t, st, wait, &stderr)
		const span = 3500 * time.Millisecond
		var delay time.Duration
		if trial > 1 {
			slice := span / time.Duration(trials-1)
			delay = time.Duration(trial-2)*slice + time.Duration(rng.Int64N(int64(slice)))
		}
		select {
		case err := <-wait:
			t.Fatalf("trial %d: run %s exited (%v) before the kill %s after its step-1 intent:\n%s", trial, runID, err, delay, stderr.String())
		case <-time.After(delay):
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-wait

		// At the kill: all of the experiment's records moved, or none.
		at := units()
		want1 := map[string]int64{}
		for o, w := range intent.Want {
			want1[o] = route53.Units(w)
		}
		moved := sameExpUnits(at, want1, inExp)
		if !moved && !sameExpUnits(at, before, inExp) {
			t.Fatalf("trial %d: killed %s after the step-1 intent, the records hold %v: neither the original %v nor the step's %v", trial, delay, at, before, want1)
		}

		// Resume or abort.
		how := "resume"
		args := []string{"--state", state, "run", fleet.ExperimentFile(), "--resume", runID, "-o", "json"}
		if trial%2 == 0 {
			how = "abort"
			args = []string{"--state", state, "abort", runID, "--reason", "crash test"}
		}
		c := exec.Command(bin, args...)
		c.Env = env
		out, err := runWithTimeout(c, 3*time.Minute)
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("trial %d: %s %s: %v\n%s", trial, how, runID, err, out)
		}
		rec, err := st.Run(context.Background(), runID)
		if err != nil {
			t.Fatal(err)
		}
		outcomes[how+" → "+string(rec.State)]++
		after := units()
		var want map[string]int64
		switch rec.State {
		case store.StatePromoted:
			want = map[string]int64{}
			for o, w := range rec.Current {
				want[o] = route53.Units(w)
			}
		case store.StateRolledBack, store.StateAborted:
			want = before
		default:
			t.Fatalf("trial %d: %s of %s exited %d and left it %s (%s):\n%s", trial, how, runID, code, rec.State, rec.Reason, out)
		}
		if !sameExpUnits(after, want, inExp) {
			t.Fatalf("trial %d: run %s ended %s but the records hold %v, want %v", trial, runID, rec.State, after, want)
		}
		for id, u := range start {
			if !inExp[id] && after[id] != u {
				t.Fatalf("trial %d: record %s outside the experiment changed from %d to %d", trial, id, u, after[id])
			}
		}
		now := motoserver.MustRecords(t, admin, zone)
		for k, r := range original {
			if r.SetIdentifier == nil || !strings.EqualFold(aws.ToString(r.Name), name) {
				if k == claimKey {
					continue
				}
				if n, ok := now[k]; !ok || !sameRecord(n, r) {
					t.Fatalf("trial %d: record %s outside the set changed: %+v", trial, k, n)
				}
			}
		}
		claim := txt(now[claimKey])
		if strings.Contains(claim, "[verdict: run=") {
			t.Fatalf("trial %d: the claim record still holds a live claim after the run ended %s: %q", trial, rec.State, claim)
		}
		if !strings.Contains(claim, "run="+runID) {
			t.Errorf("trial %d: the claim record does not record run %s's end: %q", trial, runID, claim)
		}
		t.Logf("trial %d: killed %s after the step-1 intent (records %s), %s → %s (exit %d): %s", trial, delay,
			map[bool]string{true: "moved", false: "not yet moved"}[moved], how, rec.State, code, rec.Reason)
	}
	// More samples of the same batch, now that nothing else writes to the zone.
	for range 20 {
		restore()
	}
	slices.Sort(insync)
	t.Logf("moto time to INSYNC over %d change batches: median %s, max %s; outcomes %v", len(insync), insync[len(insync)/2], insync[len(insync)-1], outcomes)
}

// waitIntent polls the store until a run holds a step-1 intent; it fails the test when the
// child exits first.
func waitIntent(t *testing.T, st *store.SQLite, exited <-chan error, stderr *strings.Builder) (string, store.Intent) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("verdict run exited (%v) before its step-1 intent:\n%s", err, stderr.String())
		default:
		}
		runs, err := st.ListRuns(context.Background(), store.ListOptions{Unfinished: true})
		if err == nil {
			for _, r := range runs {
				rec, err := st.Run(context.Background(), r.ID)
				if err == nil && rec.Intent != nil && rec.Intent.Purpose == "step:1" {
					return rec.ID, *rec.Intent
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no step-1 intent within 2m")
	return "", store.Intent{}
}

// sameExpUnits compares the experiment's records only.
func sameExpUnits(got, want map[string]int64, inExp map[string]bool) bool {
	for id := range inExp {
		if got[id] != want[id] {
			return false
		}
	}
	return true
}

func sameRecord(a, b types.ResourceRecordSet) bool {
	if aws.ToInt64(a.TTL) != aws.ToInt64(b.TTL) || aws.ToInt64(a.Weight) != aws.ToInt64(b.Weight) || len(a.ResourceRecords) != len(b.ResourceRecords) {
		return false
	}
	for i := range a.ResourceRecords {
		if aws.ToString(a.ResourceRecords[i].Value) != aws.ToString(b.ResourceRecords[i].Value) {
			return false
		}
	}
	return true
}

func txt(r types.ResourceRecordSet) string {
	var b strings.Builder
	for _, v := range r.ResourceRecords {
		b.WriteString(strings.Trim(aws.ToString(v.Value), `"`))
	}
	return b.String()
}

// changeInSync sends one change batch and returns how long moto took to report it INSYNC,
// polling GetChange every 10ms.
func changeInSync(c *r53.Client, zone string, changes []types.Change) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	out, err := c.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: aws.String(zone), ChangeBatch: &types.ChangeBatch{Changes: changes}})
	if err != nil {
		return 0, err
	}
	for out.ChangeInfo.Status != types.ChangeStatusInsync {
		time.Sleep(10 * time.Millisecond)
		g, err := c.GetChange(ctx, &r53.GetChangeInput{Id: out.ChangeInfo.Id})
		if err != nil {
			return 0, err
		}
		out.ChangeInfo = g.ChangeInfo
	}
	return time.Since(began), nil
}

// runWithTimeout runs a command, killing it after d.
func runWithTimeout(c *exec.Cmd, d time.Duration) (string, error) {
	var b strings.Builder
	c.Stdout, c.Stderr = &b, &b
	if err := c.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return b.String(), err
	case <-time.After(d):
		_ = c.Process.Kill()
		<-done
		return b.String(), errors.New("timed out after " + d.String())
	}
}
