package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
)

// checkPoolJSON is the check experiment's pool: the canary o1 above an even share.
func checkPoolJSON(description string, origins ...string) string {
	if len(origins) == 0 {
		origins = []string{`{"name": "o1", "address": "10.0.0.1", "weight": 0.5}`, `{"name": "o2", "address": "10.0.0.2", "weight": 0.25}`, `{"name": "o3", "address": "10.0.0.3", "weight": 0.25}`}
	}
	d, _ := json.Marshal(description)
	return fmt.Sprintf(`{"id": "p1", "name": "check-pool", "description": %s, "origins": [%s]}`, d, strings.Join(origins, ","))
}

// TestCheckReadsThePool: check reads the pool the way run will, shows the weights, refuses
// a pool another run claims or that lacks an origin, and warns before undoing a promotion.
func TestCheckReadsThePool(t *testing.T) {
	prom := checkProm(t)
	exp := writeCheckExperiment(t, prom.URL(), "c3")

	t.Run("warnings", func(t *testing.T) {
		last := traffic.LastRun{Run: "20261205-1000-prev", Verdict: "promoted", Ended: time.Now().Add(-10 * time.Minute)}
		drainEnv(t, checkPoolJSON("checkout "+last.String()))
		code, out, errOut := runVerdict(t, "check", "--history", "0", exp)
		if code != exitOK {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		for _, want := range []string{"Pool p1 (check-pool)", "o1      0.5", "last run on this pool: 20261205-1000-prev, promoted",
			"WARNING: run 20261205-1000-prev promoted on this pool", "WARNING: step 1 lowers the canary c1 from 50% to 10%", "OK: the experiment can run."} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		code, out, _ = runVerdict(t, "check", "--history", "0", "-o", "json", exp)
		var got struct {
			Ready bool `json:"ready"`
			Pool  struct {
				Checked  bool `json:"checked"`
				Warnings []struct {
					Kind string `json:"kind"`
				} `json:"warnings"`
				Origins []struct {
					Origin string  `json:"origin"`
					Weight float64 `json:"weight"`
				} `json:"origins"`
			} `json:"pool"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK {
			t.Fatalf("exit %d, %v:\n%s", code, err, out)
		}
		if !got.Ready || !got.Pool.Checked || len(got.Pool.Warnings) != 2 || len(got.Pool.Origins) != 3 || got.Pool.Origins[0].Weight != 0.5 {
			t.Errorf("JSON pool view: %+v", got)
		}
	})

	t.Run("claimed", func(t *testing.T) {
		c := traffic.Claim{Run: "20261205-1100-other", Owner: "verdict-run@elsewhere", Since: time.Now().Add(-time.Minute)}
		drainEnv(t, checkPoolJSON(c.String()))
		code, out, _ := runVerdict(t, "check", "--history", "0", exp)
		if code != exitCheckFailed || !strings.Contains(out, "ERROR: pool p1 is claimed by run 20261205-1100-other (driven by verdict-run@elsewhere") || !strings.Contains(out, "FAILED") {
			t.Errorf("a claimed pool: exit %d\n%s", code, out)
		}
	})

	t.Run("missing origin", func(t *testing.T) {
		drainEnv(t, checkPoolJSON("", `{"name": "o1", "address": "10.0.0.1", "weight": 0.5}`, `{"name": "o2", "address": "10.0.0.2", "weight": 0.5}`))
		code, out, _ := runVerdict(t, "check", "--history", "0", exp)
		if code != exitCheckFailed || !strings.Contains(out, `ERROR: origin "o3" of cluster c3 is not in pool p1`) || !strings.Contains(out, "missing") {
			t.Errorf("a pool without o3: exit %d\n%s", code, out)
		}
	})

	t.Run("unhealthy origin", func(t *testing.T) {
		emu, _ := drainEnv(t, checkPoolJSON(""))
		if err := emu.SetOriginHealth("p1", "o2", false); err != nil {
			t.Fatal(err)
		}
		code, out, _ := runVerdict(t, "check", "--history", "0", exp)
		for _, want := range []string{"HEALTH", "o1      0.5         healthy", `ERROR: origin "o2" of cluster c2 is UNHEALTHY (marked unhealthy; in 1/1 regions) at the load balancer`, "FAILED"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if code != exitCheckFailed {
			t.Errorf("exit %d, want %d", code, exitCheckFailed)
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		t.Setenv(traffic.EnvCloudflareToken, "")
		t.Setenv(traffic.EnvCloudflareTokenFile, "")
		code, out, _ := runVerdict(t, "check", "--history", "0", exp)
		if code != exitOK || !strings.Contains(out, "not checked: set CLOUDFLARE_API_TOKEN") {
			t.Errorf("without credentials: exit %d\n%s", code, out)
		}
	})
}

// TestPlanShowsOriginHealth: plan reading the pool live shows each cluster's origin
// health and warns that an unhealthy one carries none of its share.
func TestPlanShowsOriginHealth(t *testing.T) {
	prom := checkProm(t)
	exp := writeCheckExperiment(t, prom.URL(), "c3")
	emu, _ := drainEnv(t, checkPoolJSON(""))
	if err := emu.SetOriginHealth("p1", "o3", false); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runVerdict(t, "plan", exp)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"Origin health at the load balancer:", "c1 (o1): healthy", "c3 (o3): UNHEALTHY", `WARNING: cluster c3's origin "o3" is unhealthy`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runVerdict(t, "plan", "-o", "json", exp)
	var pj struct {
		Health    map[string]string `json:"health"`
		Unhealthy []string          `json:"unhealthy"`
	}
	if err := json.Unmarshal([]byte(out), &pj); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	if len(pj.Unhealthy) != 1 || pj.Unhealthy[0] != "c3" || pj.Health["c1"] != "healthy" {
		t.Errorf("JSON health: %+v", pj)
	}
}
