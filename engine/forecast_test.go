package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analysis"
)

// forecastAfter writes an hour of history at the world's current settings and forecasts the
// experiment from it.
func forecastAfter(t *testing.T, w *world) *Forecast {
	t.Helper()
	w.Advance(w.Now().Add(time.Hour))
	f, err := ForecastRun(context.Background(), w.Experiment(), w.Src, w.Now(), 60)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after %s at step %d (planned end %s, max %s; canary share %.2f, %d intervals): %s",
		f.Action, f.After, f.Step, f.PlannedEnd, f.MaxDuration, f.CanaryShare, f.Intervals, f.Reason)
	return f
}

// TestForecastPromotesAHealthyCanaryAtEnoughTraffic: at the traffic the engine tests promote
// at, the replay of a healthy canary's own history promotes too, and says when each KPI
// became non-inferior.
func TestForecastPromotesAHealthyCanaryAtEnoughTraffic(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	f := forecastAfter(t, w)
	if f.Action != analysis.Promote {
		t.Fatalf("forecast %s (%s), want promote", f.Action, f.Reason)
	}
	if f.Intervals < 55 || f.CanaryShare < 0.3 || f.CanaryShare > 0.37 {
		t.Errorf("history: %d intervals, canary share %.3f; want about 60 and 0.33", f.Intervals, f.CanaryShare)
	}
	if f.After < f.PlannedEnd || f.After > f.MaxDuration {
		t.Errorf("promoted after %s: not before the holds end (%s) nor after maxDuration (%s)", f.After, f.PlannedEnd, f.MaxDuration)
	}
	for _, k := range f.KPIs {
		if !k.Reached || k.NonInferiorAfter <= 0 || k.NonInferiorAfter > f.After {
			t.Errorf("KPI %s: reached %v after %s", k.Name, k.Reached, k.NonInferiorAfter)
		}
		// the learned noise model forecasts the proof too, and not as instant
		if k.Proof == nil || !k.Proof.Reached || k.Proof.Median <= 0 || k.Proof.P90 < k.Proof.Median {
			t.Errorf("KPI %s: proof forecast %+v", k.Name, k.Proof)
		}
	}
	if len(f.Noise) != len(f.KPIs) {
		t.Errorf("noise models for %d of %d KPIs", len(f.Noise), len(f.KPIs))
	}
}

// TestForecastSaysLowTrafficEndsInconclusive: with a hundredth of the traffic the evidence
// cannot arrive in time, and the forecast says so before any traffic moves.
func TestForecastSaysLowTrafficEndsInconclusive(t *testing.T) {
	w := newWorld(t)
	w.Rate = 10
	f := forecastAfter(t, w)
	if f.Action == analysis.Promote {
		t.Fatalf("forecast promote at 10 req/s (%s)", f.Reason)
	}
	if f.After != f.MaxDuration {
		t.Errorf("ended after %s, want at maxDuration %s (inconclusive)", f.After, f.MaxDuration)
	}
	if len(f.Warnings) == 0 {
		t.Error("no warning that the plan cannot conclude at this traffic")
	}
	for _, w := range f.Warnings {
		t.Log(w)
	}
	unproven := 0
	for _, k := range f.KPIs {
		if !k.Reached {
			unproven++
		}
	}
	if unproven == 0 {
		t.Error("every KPI reached non-inferiority, yet the run was not promoted")
	}
}

// TestForecastSeesACanaryClusterAlreadyWorse: a canary cluster that already breaks more
// requests than its baselines would be rolled back for it whatever the variant does; the
// forecast says so, naming the KPI.
func TestForecastSeesACanaryClusterAlreadyWorse(t *testing.T) {
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.025
	f := forecastAfter(t, w)
	if f.Action != analysis.Rollback || !strings.Contains(f.Reason, "error-rate") {
		t.Fatalf("forecast %s (%s), want a rollback naming error-rate", f.Action, f.Reason)
	}
	if f.After > 30*time.Minute {
		t.Errorf("the harm shows only after %s", f.After)
	}
}
