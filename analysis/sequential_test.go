package analysis

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/verdict-dev/verdict/internal/randx"
)

func finiteInterval(t *testing.T, iv Interval) {
	t.Helper()
	for name, x := range map[string]float64{"estimate": iv.Estimate, "lower": iv.Lower, "upper": iv.Upper, "dispersion": iv.Dispersion, "p": iv.PValue, "canary": iv.CanaryValue} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			t.Fatalf("%s = %v in %+v", name, x, iv)
		}
	}
	if iv.Lower > iv.Upper {
		t.Fatalf("lower %v > upper %v", iv.Lower, iv.Upper)
	}
	if _, err := json.Marshal(iv); err != nil {
		t.Fatalf("interval does not marshal: %v", err)
	}
}

// feedRatio adds n Poisson intervals with canary share `share` and rate
// ratio phi.
func feedRatio(r *RatioSequence, rng *rand.Rand, n int, share, phi, rate, load float64) {
	for range n {
		nc, nb := load*share, load*(1-share)
		r.Add(randx.Poisson(rng, nc*rate*phi), nc, randx.Poisson(rng, nb*rate), nb)
	}
}

func TestRatioSequenceEstimates(t *testing.T) {
	tests := map[string]struct {
		phi       float64
		shares    []float64
		wantHarm  bool // lower bound above 0
		wantClear bool // upper bound below 0.25
	}{
		"doubled errors":            {phi: 2, shares: []float64{0.1}, wantHarm: true},
		"equal rates":               {phi: 1, shares: []float64{0.1}, wantClear: true},
		"equal rates, share change": {phi: 1, shares: []float64{0.05, 0.3, 0.5}, wantClear: true},
		"halved errors":             {phi: 0.5, shares: []float64{0.2}, wantClear: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			r := NewRatioSequence(RatioOptions{})
			for _, s := range tc.shares {
				feedRatio(r, rng, 60/len(tc.shares), s, tc.phi, 0.01, 20000)
			}
			iv := r.Interval(0.05)
			finiteInterval(t, iv)
			if !iv.Ready || !iv.Relative {
				t.Fatalf("not ready/relative: %+v", iv)
			}
			if !(iv.Lower < tc.phi-1 && tc.phi-1 < iv.Upper) {
				t.Fatalf("interval [%v, %v] misses the true effect %v", iv.Lower, iv.Upper, tc.phi-1)
			}
			if math.Abs(iv.Estimate-(tc.phi-1)) > 0.1*tc.phi {
				t.Fatalf("estimate %v far from %v", iv.Estimate, tc.phi-1)
			}
			if tc.wantHarm && !(iv.Lower > 0) {
				t.Fatalf("lower %v: doubled errors not detected", iv.Lower)
			}
			if tc.wantClear && !(iv.Upper < 0.25) {
				t.Fatalf("upper %v: cannot clear a 25%% margin", iv.Upper)
			}
			// the §3 binomial sequence agrees on Poisson data
			b := r.BinomialInterval(0.05)
			finiteInterval(t, b)
			if !(b.Lower <= tc.phi-1 && tc.phi-1 <= b.Upper) {
				t.Fatalf("binomial interval [%v, %v] misses %v", b.Lower, b.Upper, tc.phi-1)
			}
			harm := r.HarmEValue(1) >= math.Log(20)
			if harm != tc.wantHarm {
				t.Fatalf("binomial harm e-process crossed = %v, want %v", harm, tc.wantHarm)
			}
		})
	}
}

func TestRatioSequenceDispersionReported(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	r := NewRatioSequence(RatioOptions{})
	for range 100 {
		nc, nb := 2000.0, 18000.0
		m := randx.Gamma(rng, 2) / 2 // strongly overdispersed canary
		r.Add(randx.Poisson(rng, nc*0.01*m), nc, randx.Poisson(rng, nb*0.01), nb)
	}
	iv := r.Interval(0.05)
	if iv.Dispersion < 2 {
		t.Fatalf("dispersion %v: overdispersion not reported", iv.Dispersion)
	}
	if !(iv.Lower < 0 && iv.Upper > 0) {
		t.Fatalf("A/A interval [%v, %v] excludes 0", iv.Lower, iv.Upper)
	}
}

func TestRatioSequenceEdgeCases(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := map[string]struct {
		obs             [][4]float64
		wantInformative int
		wantInvalid     int
	}{
		"empty":                 {},
		"zero events":           {obs: [][4]float64{{0, 100, 0, 900}, {0, 100, 0, 900}}},
		"NaN":                   {obs: [][4]float64{{nan, 100, 1, 900}}, wantInvalid: 1},
		"Inf":                   {obs: [][4]float64{{1, inf, 1, 900}}, wantInvalid: 1},
		"negative":              {obs: [][4]float64{{-1, 100, 1, 900}}, wantInvalid: 1},
		"absurd":                {obs: [][4]float64{{1e16, 1e17, 1, 900}}, wantInvalid: 1},
		"canary weight 0":       {obs: [][4]float64{{0, 0, 5, 1000}}},
		"canary weight 1":       {obs: [][4]float64{{5, 1000, 0, 0}}},
		"huge counts":           {obs: [][4]float64{{1e9, 1e12, 9e9, 9e12}, {1.1e9, 1e12, 9e9, 9e12}}, wantInformative: 2},
		"fractional counts":     {obs: [][4]float64{{0.5, 10.5, 3.25, 99.9}}, wantInformative: 1},
		"all events on canary":  {obs: [][4]float64{{10, 100, 0, 900}, {12, 100, 0, 900}}, wantInformative: 2},
		"events without totals": {obs: [][4]float64{{3, 0, 0, 0}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := NewRatioSequence(RatioOptions{MinIntervals: 1})
			for _, o := range tc.obs {
				r.Add(o[0], o[1], o[2], o[3])
			}
			for _, alpha := range []float64{0.05, 0, -1, nan, 1} {
				iv := r.Interval(alpha)
				finiteInterval(t, iv)
				if iv.Informative != tc.wantInformative || r.Invalid() != tc.wantInvalid || iv.Intervals != len(tc.obs) {
					t.Fatalf("informative %d invalid %d intervals %d, want %d %d %d", iv.Informative, r.Invalid(), iv.Intervals, tc.wantInformative, tc.wantInvalid, len(tc.obs))
				}
				finiteInterval(t, r.BinomialInterval(alpha))
			}
			if e := r.HarmEValue(1); math.IsNaN(e) || math.IsInf(e, 0) {
				t.Fatalf("e-value %v", e)
			}
			if e := r.HarmEValue(nan); e != 0 {
				t.Fatalf("e-value at NaN φ0 = %v, want 0", e)
			}
		})
	}
}

func TestRatioSequenceAllOnCanaryIsHarm(t *testing.T) {
	r := NewRatioSequence(RatioOptions{})
	for range 30 {
		r.Add(20, 1000, 0, 9000)
	}
	iv := r.Interval(0.05)
	if !(iv.Lower > 1) || iv.UpperBounded {
		t.Fatalf("all errors on the canary: %+v, want a large lower bound and an unbounded upper end", iv)
	}
}

func TestReplayIsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var pre, obs []RatioObservation
	var gpre, gobs []GaugeObservation
	live := NewRatioSequence(RatioOptions{})
	glive := NewGaugeSequence(GaugeOptions{})
	for i := range 40 {
		o := RatioObservation{randx.Poisson(rng, 30), 3000, randx.Poisson(rng, 270), 27000}
		g := GaugeObservation{Canary: 100 * math.Exp(0.05*rng.NormFloat64()), Baseline: 100 * math.Exp(0.05*rng.NormFloat64())}
		if i < 10 {
			pre = append(pre, o)
			gpre = append(gpre, g)
			live.AddPre(o.CanaryEvents, o.CanaryTotal, o.BaselineEvents, o.BaselineTotal)
			glive.AddPre(g.Canary, g.Baseline)
			continue
		}
		obs = append(obs, o)
		gobs = append(gobs, g)
		live.Add(o.CanaryEvents, o.CanaryTotal, o.BaselineEvents, o.BaselineTotal)
		glive.Add(g.Canary, g.Baseline)
	}
	re := ReplayRatio(live.Options(), pre, obs)
	gre := ReplayGauge(glive.Options(), gpre, gobs)
	if !reflect.DeepEqual(live.Interval(0.025), re.Interval(0.025)) || !reflect.DeepEqual(live.BinomialInterval(0.025), re.BinomialInterval(0.025)) {
		t.Fatalf("ratio replay differs:\n%+v\n%+v", live.Interval(0.025), re.Interval(0.025))
	}
	if !reflect.DeepEqual(glive.Interval(0.025), gre.Interval(0.025)) {
		t.Fatalf("gauge replay differs:\n%+v\n%+v", glive.Interval(0.025), gre.Interval(0.025))
	}
	if !live.Interval(0.025).PreAdjusted || !glive.Interval(0.025).PreAdjusted {
		t.Fatal("pre-period not used")
	}
}

func TestPrePeriodWidensInterval(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	plain := NewRatioSequence(RatioOptions{})
	did := NewRatioSequence(RatioOptions{})
	for range 20 {
		nc, nb := 4000.0, 8000.0
		// the canary cluster runs 30% hotter before the change
		did.AddPre(randx.Poisson(rng, nc*0.01*1.3), nc, randx.Poisson(rng, nb*0.01), nb)
	}
	for range 60 {
		nc, nb := 2000.0, 18000.0
		c, b := randx.Poisson(rng, nc*0.01*1.3), randx.Poisson(rng, nb*0.01)
		plain.Add(c, nc, b, nb)
		did.Add(c, nc, b, nb)
	}
	p, d := plain.Interval(0.05), did.Interval(0.05)
	if !(p.Lower > 0) {
		t.Fatalf("without pre-period the 30%% cluster bias should show: %+v", p)
	}
	if !(d.Lower < 0 && d.Upper > 0) {
		t.Fatalf("difference-in-differences should remove the bias: [%v, %v]", d.Lower, d.Upper)
	}
	if !(d.Upper-d.Lower > p.Upper-p.Lower) {
		t.Fatalf("pre-period uncertainty should widen the interval: %v vs %v", d.Upper-d.Lower, p.Upper-p.Lower)
	}
}

func TestGaugeSequence(t *testing.T) {
	tests := map[string]struct {
		scale    GaugeScale
		effect   float64 // multiplicative for LogRatio, additive for Difference
		wantHarm bool
	}{
		"latency +20%":     {scale: LogRatio, effect: 1.2, wantHarm: true},
		"latency same":     {scale: LogRatio, effect: 1},
		"cpu +5 units":     {scale: Difference, effect: 5, wantHarm: true},
		"cpu same (diff)":  {scale: Difference, effect: 0},
		"latency -20%":     {scale: LogRatio, effect: 0.8},
		"cpu -5 (no harm)": {scale: Difference, effect: -5},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 3))
			g := NewGaugeSequence(GaugeOptions{Scale: tc.scale})
			for range 40 {
				b := 100 * (1 + 0.05*rng.NormFloat64())
				c := 100 * (1 + 0.05*rng.NormFloat64())
				if tc.scale == LogRatio {
					c *= tc.effect
				} else {
					c += tc.effect
				}
				g.Add(c, b)
			}
			iv := g.Interval(0.05)
			finiteInterval(t, iv)
			truth := tc.effect - 1
			if tc.scale == Difference {
				truth = tc.effect
			}
			if !(iv.Lower < truth && truth < iv.Upper) {
				t.Fatalf("[%v, %v] misses %v", iv.Lower, iv.Upper, truth)
			}
			if (iv.Lower > 0) != tc.wantHarm {
				t.Fatalf("lower %v, harm want %v", iv.Lower, tc.wantHarm)
			}
			if iv.Relative != (tc.scale == LogRatio) {
				t.Fatalf("relative = %v", iv.Relative)
			}
		})
	}
}

func TestGaugeSequenceEdgeCases(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := map[string]struct {
		scale       GaugeScale
		pairs       [][2]float64
		wantInvalid int
	}{
		"empty":           {},
		"NaN":             {pairs: [][2]float64{{nan, 1}, {1, nan}}, wantInvalid: 2},
		"Inf":             {pairs: [][2]float64{{inf, 1}}, wantInvalid: 1},
		"zero on log":     {pairs: [][2]float64{{0, 1}, {1, 0}}, wantInvalid: 2},
		"zero on diff":    {scale: Difference, pairs: [][2]float64{{0, 1}, {1, 0}}},
		"constant":        {pairs: [][2]float64{{5, 5}, {5, 5}, {5, 5}}},
		"huge":            {pairs: [][2]float64{{1e300, 1e-300}, {1e300, 1e-300}}},
		"huge diff":       {scale: Difference, pairs: [][2]float64{{1e308, -1e308}}, wantInvalid: 1},
		"one value":       {pairs: [][2]float64{{2, 1}}},
		"negative on log": {pairs: [][2]float64{{-2, 1}}, wantInvalid: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewGaugeSequence(GaugeOptions{Scale: tc.scale, MinIntervals: 2})
			for _, p := range tc.pairs {
				g.Add(p[0], p[1])
			}
			iv := g.Interval(0.05)
			finiteInterval(t, iv)
			if g.Invalid() != tc.wantInvalid {
				t.Fatalf("invalid %d, want %d", g.Invalid(), tc.wantInvalid)
			}
		})
	}
}

func TestGaugeGuardrail(t *testing.T) {
	g := NewGaugeSequence(GaugeOptions{Guardrail: &Guardrail{Limit: 800, Consecutive: 3}})
	for i, v := range []float64{900, 900, 700, 900, 900, 900} {
		g.Add(v, 100)
		iv := g.Interval(0.05)
		want := i == 5
		if iv.GuardrailBreached != want {
			t.Fatalf("after %d values breached = %v, want %v (streak %d)", i+1, iv.GuardrailBreached, want, iv.GuardrailStreak)
		}
	}
}

func TestRunningPValueIsMonotone(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	r := NewRatioSequence(RatioOptions{})
	prev := 1.0
	for range 80 {
		feedRatio(r, rng, 1, 0.2, 1.3, 0.01, 10000)
		p := r.Interval(0.05).PValue
		if p > prev || p < 0 || p > 1 {
			t.Fatalf("running p-value went %v → %v", prev, p)
		}
		prev = p
	}
	if prev > 0.01 {
		t.Fatalf("a 30%% effect over 80 intervals should give a small running p, got %v", prev)
	}
}

// TestOneSidedBoundaryIsConservative checks the fixed-point boundary is never
// below the exact root of the one-sided mixture and within 0.5% of it.
func TestOneSidedBoundaryIsConservative(t *testing.T) {
	for _, alpha := range []float64{0.001, 0.0125, 0.025, 0.05, 0.2} {
		for _, v := range []float64{0.1, 1, 10, 100, 1e4} {
			rho := 10.0
			b := nmOneSided(v, rho, alpha)
			logM := func(s float64) float64 {
				w := v + rho
				return math.Ln2 + 0.5*math.Log(rho/w) + s*s/(2*w) + math.Log1p(-normalSF(s/math.Sqrt(w)))
			}
			if logM(b) < math.Log(1/alpha)-1e-9 {
				t.Fatalf("α=%v V=%v: boundary %v below the exact root", alpha, v, b)
			}
			if logM(b*0.995) > math.Log(1/alpha) {
				t.Fatalf("α=%v V=%v: boundary %v more than 0.5%% above the root", alpha, v, b)
			}
		}
	}
}

func TestShareCheck(t *testing.T) {
	tests := map[string]struct {
		counts   [][]float64
		weights  [][]float64
		mismatch bool
		wantErr  bool
	}{
		"matching shares": {counts: repeat([]float64{500, 4750, 4750}, 60), weights: repeat([]float64{5, 47.5, 47.5}, 60)},
		"canary starved":  {counts: repeat([]float64{400, 4800, 4800}, 60), weights: repeat([]float64{5, 47.5, 47.5}, 60), mismatch: true},
		"weight change tracked": {
			counts:  append(repeat([]float64{500, 9500}, 30), repeat([]float64{2000, 8000}, 30)...),
			weights: append(repeat([]float64{5, 95}, 30), repeat([]float64{20, 80}, 30)...),
		},
		"weight change ignored by steering": {
			counts:   append(repeat([]float64{500, 9500}, 30), repeat([]float64{500, 9500}, 30)...),
			weights:  append(repeat([]float64{5, 95}, 30), repeat([]float64{20, 80}, 30)...),
			mismatch: true,
		},
		"weight 0 gets traffic": {counts: [][]float64{{10, 1000}}, weights: [][]float64{{0, 1}}, mismatch: true},
		"weight 0 and 1":        {counts: [][]float64{{0, 1000}, {0, 1e9}}, weights: [][]float64{{0, 1}, {0, 1}}},
		"length mismatch":       {counts: [][]float64{{1, 2}}, weights: [][]float64{{1}}, wantErr: true},
		"NaN count":             {counts: [][]float64{{math.NaN(), 2}}, weights: [][]float64{{1, 1}}, wantErr: true},
		"all weights zero":      {counts: [][]float64{{1, 2}}, weights: [][]float64{{0, 0}}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := NewShareCheck(0)
			var err error
			for i := range tc.counts {
				if e := s.Add(tc.counts[i], tc.weights[i]); e != nil {
					err = e
				}
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			res := s.Result(0.05)
			if res.Mismatch != tc.mismatch {
				t.Fatalf("mismatch %v (log BF %v, observed %v), want %v", res.Mismatch, res.LogBayesFactor, res.Observed, tc.mismatch)
			}
			if math.IsNaN(res.LogBayesFactor) || math.IsInf(res.LogBayesFactor, 0) {
				t.Fatalf("log BF %v", res.LogBayesFactor)
			}
			if _, err := json.Marshal(res); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func repeat(v []float64, n int) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// BenchmarkRatioAdd is one conditional-binomial e-process update on a
// 200-point grid (201: the grid keeps φ = 1 on a point), including the
// running p-values.
func BenchmarkRatioAdd(b *testing.B) {
	r := NewRatioSequence(RatioOptions{GridPoints: 200})
	rng := rand.New(rand.NewPCG(1, 2))
	obs := make([][2]float64, 1024)
	for i := range obs {
		obs[i] = [2]float64{randx.Poisson(rng, 10), randx.Poisson(rng, 90)}
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		o := obs[i%len(obs)]
		r.Add(o[0], 1000, o[1], 9000)
		i++
	}
}

// BenchmarkRatioInterval is the robust confidence sequence read once per
// interval per KPI.
func BenchmarkRatioInterval(b *testing.B) {
	r := NewRatioSequence(RatioOptions{})
	rng := rand.New(rand.NewPCG(1, 2))
	feedRatio(r, rng, 100, 0.1, 1.1, 0.01, 10000)
	for b.Loop() {
		_ = r.Interval(0.025)
	}
}

func TestRatioGuardrail(t *testing.T) {
	r := NewRatioSequence(RatioOptions{Guardrail: &Guardrail{Limit: 0.02, Consecutive: 2}})
	steps := []struct {
		c, nc float64
		want  bool
	}{{10, 1000, false}, {30, 1000, false}, {math.NaN(), 1000, false}, {25, 1000, true}, {5, 1000, false}}
	for i, s := range steps {
		r.Add(s.c, s.nc, 100, 9000)
		if got := r.Interval(0.05).GuardrailBreached; got != s.want {
			t.Fatalf("step %d: breached %v, want %v", i, got, s.want)
		}
	}
}
