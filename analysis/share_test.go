package analysis

import (
	"math/rand/v2"
	"testing"

	"github.com/verdict-dev/verdict/internal/randx"
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
			counts[i] = randx.Poisson(r, perMin*p[i])
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
		counts := []float64{randx.Poisson(r, 12000*c), randx.Poisson(r, 12000*(1-c)/2), randx.Poisson(r, 12000*(1-c)/2)}
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

// TestShareCheckedOnlyWithEnoughIntervals: a check that has not had its minimum of intervals
// at the current weights has found nothing because it could not; it says so, every weight
// change starts the count again, and a cut-over (weights 0 and 1 only) is checked by its
// first interval, since all it can find is traffic to a cluster at weight 0.
func TestShareCheckedOnlyWithEnoughIntervals(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	sc := NewShareCheckTolerance(0.05, 0.05)
	feed := func(w []float64, n int) ShareResult {
		for range n {
			counts := make([]float64, len(w))
			for i := range w {
				counts[i] = randx.Poisson(r, 10000*w[i])
			}
			if err := sc.Add(counts, w); err != nil {
				t.Fatal(err)
			}
		}
		return sc.Result(0.05)
	}
	if res := sc.Result(0.05); res.Checked || res.Intervals != 0 {
		t.Fatalf("empty check: checked %v after %d intervals", res.Checked, res.Intervals)
	}
	step1 := []float64{0.1, 0.45, 0.45}
	if res := feed(step1, 9); res.Checked || res.Intervals != 9 || res.Mismatch {
		t.Fatalf("9 intervals: checked %v, %d intervals, mismatch %v; want unchecked", res.Checked, res.Intervals, res.Mismatch)
	}
	if res := feed(step1, 1); !res.Checked || res.Mismatch {
		t.Fatalf("10 intervals: checked %v, mismatch %v (%s); want checked, no mismatch", res.Checked, res.Mismatch, res.Reason)
	}
	if res := feed([]float64{0.25, 0.375, 0.375}, 3); res.Checked || res.Intervals != 3 {
		t.Fatalf("3 intervals at new weights: checked %v after %d", res.Checked, res.Intervals)
	}
	if res := feed([]float64{1, 0, 0}, 1); !res.Checked || res.Mismatch {
		t.Fatalf("cut-over: checked %v, mismatch %v (%s)", res.Checked, res.Mismatch, res.Reason)
	}
	bf := NewShareCheck(0)
	if err := bf.Add([]float64{100, 900}, []float64{0.1, 0.9}); err != nil {
		t.Fatal(err)
	}
	if res := bf.Result(0.05); !res.Checked {
		t.Fatal("the Bayes-factor check weighs every interval; one interval is a check")
	}
}
