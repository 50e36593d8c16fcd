package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestPlanDrainedApply plans the Kubernetes upgrade example, whose variant is applied with
// the canary drained: the plan shows the phases and an APPLY (drained) column between now
// and step 1.
func TestPlanDrainedApply(t *testing.T) {
	args := []string{"plan", "../../examples/k8s-upgrade.yaml", "--pool-file", "../../examples/pools/use1.json"}
	code, out, errOut := runCLI(t, args...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "plan-k8s-upgrade.txt", out)
	for _, want := range []string{
		"phases: baseline → apply → ready → ramp\n",
		"apply: terraform -chdir=clusters/prod-use1-monday-snorlax apply",
		"APPLY (drained)",
		"STEP 2 (5%, 15m, min 5m)",
		"history: 1d before the run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan does not show %q", want)
		}
	}

	code, out, errOut = runCLI(t, append([]string{"-o", "json"}, args...)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "plan-k8s-upgrade.json", out)
	var plan struct {
		Phases         []string `json:"phases"`
		ApplyDuring    string   `json:"applyDuring"`
		History        string   `json:"history"`
		ShareTolerance float64  `json:"shareTolerance"`
		Steps          []struct {
			MinHold string `json:"minHold"`
		} `json:"steps"`
		Drained *struct {
			CanaryShare float64 `json:"canaryShare"`
			Origins     []struct {
				Cluster string  `json:"cluster"`
				Weight  float64 `json:"weight"`
			} `json:"origins"`
		} `json:"drained"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan.Phases, []string{"baseline", "apply", "ready", "ramp"}) || plan.ApplyDuring != "drained" || plan.History != "1d" || plan.ShareTolerance != 0.05 {
		t.Errorf("unexpected header: %+v", plan)
	}
	if len(plan.Steps) != 5 || plan.Steps[2].MinHold != "5m" || plan.Steps[1].MinHold != "" {
		t.Errorf("minHold per step: %+v", plan.Steps)
	}
	if plan.Drained == nil || plan.Drained.CanaryShare != 0 || plan.Drained.Origins[0].Weight != 0 {
		t.Errorf("drained: %+v", plan.Drained)
	}
}

// TestPlanPhasesWithoutApply: an experiment that does not declare apply still plans, and
// says that the variant's arrival is not declared.
func TestPlanPhasesWithoutApply(t *testing.T) {
	code, out, errOut := runCLI(t, "plan", "../../examples/probes.yaml", "--pool-file", "../../examples/pools/apse1.json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"phases: baseline (variant arrival not declared) → ramp\n", "share tolerance: 15%"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "APPLY") || strings.Contains(out, "while applying") {
		t.Errorf("apply shown without spec.canary.apply:\n%s", out)
	}
}
