package sim

import (
	"math"
	"slices"
	"testing"
	"time"
)

// drawMany draws n outcomes from p on route /api/items at rate arrivals per second of
// virtual time, starting at t0.
func drawMany(p Profile, seed uint64, n int, rate float64) []outcome {
	t0 := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	b := newBehaviour(p, seed, t0)
	out := make([]outcome, n)
	for i := range out {
		out[i] = b.draw(t0.Add(time.Duration(float64(i)/rate*float64(time.Second))), routeItems)
	}
	return out
}

func quantile(o []outcome, q float64) float64 {
	lat := make([]float64, len(o))
	for i, x := range o {
		lat[i] = x.latency.Seconds()
	}
	slices.Sort(lat)
	return lat[int(q*float64(len(lat)-1))]
}

func errorShare(o []outcome) float64 {
	n := 0
	for _, x := range o {
		if x.status >= 500 {
			n++
		}
	}
	return float64(n) / float64(len(o))
}

// TestProfileDistribution checks the default profile's latency and error rate against the
// figures DefaultProfile documents, on virtual time.
func TestProfileDistribution(t *testing.T) {
	p := DefaultProfile()
	o := drawMany(p, 1, 200_000, 100)
	if med := quantile(o, 0.5); math.Abs(med-0.050)/0.050 > 0.08 {
		t.Errorf("median = %.4fs, want ≈ 0.050s", med)
	}
	if p99 := quantile(o, 0.99); p99 < 0.2 || p99 > 0.45 {
		t.Errorf("p99 = %.3fs, want ≈ 0.3s", p99)
	}
	if e := errorShare(o); math.Abs(e-0.01)/0.01 > 0.25 {
		t.Errorf("error share = %.4f, want ≈ 0.01", e)
	}
}

// TestEffectMovesP99 checks that a latency effect moves p99 by its factor and an error
// effect multiplies the error rate: the scenarios' "p99 +30%, errors ×2" are what the
// metrics will show.
func TestEffectMovesP99(t *testing.T) {
	p := DefaultProfile()
	p.Drift, p.LatencyNoise, p.ErrorDispersion, p.BurstProbability = 0, 0, 0, 0
	base := drawMany(p, 7, 200_000, 100)
	worse := drawMany(p.With(Effect{Latency: 1.3, Errors: 2}), 7, 200_000, 100)
	if r := quantile(worse, 0.99) / quantile(base, 0.99); math.Abs(r-1.3) > 0.05 {
		t.Errorf("p99 ratio = %.3f, want 1.3", r)
	}
	if r := errorShare(worse) / errorShare(base); math.Abs(r-2) > 0.25 {
		t.Errorf("error ratio = %.3f, want 2", r)
	}
}

// TestErrorsAreOverdispersed checks that per-epoch error counts vary more than Poisson
// counts would (statistics.md §3a): the point of ErrorDispersion and bursts.
func TestErrorsAreOverdispersed(t *testing.T) {
	counts := func(p Profile) (mean, variance float64) {
		const rate, epochs = 100.0, 400
		o := drawMany(p, 3, int(rate*10*epochs), rate) // 10 s epochs
		per := make([]float64, epochs)
		for i, x := range o {
			if x.status >= 500 {
				per[i/int(rate*10)]++
			}
		}
		for _, c := range per {
			mean += c
		}
		mean /= epochs
		for _, c := range per {
			variance += (c - mean) * (c - mean)
		}
		return mean, variance / (epochs - 1)
	}
	p := DefaultProfile()
	p.Drift = 0
	p.ErrorDispersion, p.BurstProbability = 0, 0
	m, v := counts(p)
	if v/m > 1.3 {
		t.Errorf("Poisson profile: variance/mean = %.2f, want ≈ 1", v/m)
	}
	p.ErrorDispersion, p.BurstProbability = 5, 0.05
	m, v = counts(p)
	if v/m < 2 {
		t.Errorf("overdispersed profile: variance/mean = %.2f, want well above 1", v/m)
	}
}

// TestCapacity checks that latency rises as the load nears capacity and the excess beyond
// it is shed with 503s.
func TestCapacity(t *testing.T) {
	p := DefaultProfile()
	p.Drift, p.LatencyNoise, p.ErrorRate, p.ErrorDispersion, p.BurstProbability, p.ClientErrorRate = 0, 0, 0, 0, 0, 0
	p.Capacity = 100
	light := drawMany(p, 5, 20_000, 20)
	near := drawMany(p, 5, 20_000, 90)
	over := drawMany(p, 5, 20_000, 200)
	if r := quantile(near, 0.5) / quantile(light, 0.5); r < 2 {
		t.Errorf("median at 90%% load / at 20%% = %.2f, want ≥ 2", r)
	}
	if e := errorShare(light); e > 0.001 {
		t.Errorf("errors at 20%% load = %.4f, want 0", e)
	}
	if e := errorShare(over); math.Abs(e-0.5) > 0.05 {
		t.Errorf("shed share at 200%% load = %.3f, want ≈ 0.5", e)
	}
}

func TestProfileValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*Profile)
		ok     bool
	}{
		"default":        {func(*Profile) {}, true},
		"error rate > 1": {func(p *Profile) { p.ErrorRate = 1.5 }, false},
		"negative tail":  {func(p *Profile) { p.TailFraction = -0.1 }, false},
		"burst factor":   {func(p *Profile) { p.BurstFactor = 1 }, false},
		"no bursts":      {func(p *Profile) { p.BurstProbability, p.BurstFactor = 0, 0 }, true},
		"negative cap":   {func(p *Profile) { p.Capacity = -1 }, false},
	} {
		p := DefaultProfile()
		tc.change(&p)
		if err := p.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestEffectString(t *testing.T) {
	if got, want := (Effect{Errors: 2, Latency: 1.3}).String(), "errors ×2, latency ×1.3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Effect{}).String(); got != "no change" {
		t.Errorf("zero Effect = %q", got)
	}
}
