package analysis

import (
	"math/rand/v2"
	"testing"
)

// shareRun feeds n intervals of perMin requests split as the weights say, the canary
// receiving honour times its configured share, and reports whether a mismatch was flagged.
func shareRun(r *rand.Rand, perMin, honour float64, n int) (bool, ShareResult) {
	sc := NewShareCheckTolerance(0.05, 0.05)
	weights := []float64{0.10, 0.45, 0.45}
	for k := range n {
		if k == n/3 {
			weights = []float64{0.25, 0.375, 0.375} // the next step
		}
		c := weights[0] * honour
		p := []float64{c, (1 - c) / 2, (1 - c) / 2}
		counts := make([]float64, 3)
		for i := range counts {
			counts[i] = poissonRand(r, perMin*p[i])
		}
		if err := sc.Add(counts, weights); err != nil {
			panic(err)
		}
	}
	res := sc.Result(0.05)
	return res.Mismatch, res
}

// TestShareCheckHasAPracticalTolerance is issue 15's case: at 700k requests a minute a canary
// receiving 99.5% of its configured share is certainly short and entirely harmless, and must
// not block promotion; one receiving 60% (session affinity) must be flagged, at 12k too.
func TestShareCheckHasAPracticalTolerance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const runs = 200
	flagged := 0
	for range runs {
		if m, _ := shareRun(r, 700000, 0.995, 150); m {
			flagged++
		}
	}
	if flagged > runs/20 {
		t.Errorf("99.5%% of the share at 700k/min flagged in %d/%d runs", flagged, runs)
	}
	for _, perMin := range []float64{12000, 700000} {
		m, res := shareRun(r, perMin, 0.6, 60)
		if !m {
			t.Errorf("60%% of the share at %.0f/min not flagged: %+v", perMin, res)
		}
	}
	_, res := shareRun(r, 700000, 0.995, 150)
	if d := res.Deviation[0]; d > -0.002 || d < -0.008 {
		t.Errorf("canary deviation %.4f, want about −0.005", d)
	}
}

// TestShareMismatchStaysFound: a share off by −50% for a while and then by +65% must not
// average out; once found, the mismatch stays in the result.
func TestShareMismatchStaysFound(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	sc := NewShareCheckTolerance(0.05, 0.05)
	weights := []float64{0.2, 0.4, 0.4}
	found := false
	for k := range 40 {
		c := 0.10
		if k >= 20 {
			c = 0.33
		}
		counts := []float64{poissonRand(r, 12000*c), poissonRand(r, 12000*(1-c)/2), poissonRand(r, 12000*(1-c)/2)}
		if err := sc.Add(counts, weights); err != nil {
			t.Fatal(err)
		}
		res := sc.Result(0.05)
		if found && !res.Mismatch {
			t.Fatalf("interval %d: the mismatch found earlier was forgotten: %+v", k, res)
		}
		found = res.Mismatch
	}
	if !found {
		t.Error("mismatch never found")
	}
}
