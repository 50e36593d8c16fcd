package analysis

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

type oracleFile struct {
	Scipy string `json:"scipy"`
	Cases []struct {
		Name  string    `json:"name"`
		X     []float64 `json:"x"`
		Y     []float64 `json:"y"`
		Welch map[string]struct {
			T *float64 `json:"t"`
			P *float64 `json:"p"`
		} `json:"welch"`
		MannWhitney map[string]struct {
			U float64  `json:"u"`
			P *float64 `json:"p"`
		} `json:"mannwhitney"`
	} `json:"cases"`
	Binomial []struct {
		Name string  `json:"name"`
		K    float64 `json:"k"`
		N    float64 `json:"n"`
		P    float64 `json:"p"`
		Alts map[string]struct {
			P, Lo, Hi float64
		} `json:"-"`
		TwoSided struct{ P, Lo, Hi float64 } `json:"two-sided"`
		Greater  struct{ P, Lo, Hi float64 } `json:"greater"`
		Less     struct{ P, Lo, Hi float64 } `json:"less"`
	} `json:"binomial"`
}

var alternatives = map[string]Alternative{"two-sided": TwoSided, "greater": Greater, "less": Less}

// relClose reports |got−want| ≤ rel·|want|, with an absolute floor for values
// that are zero up to rounding (a t of 1e-17 from two means equal to 16 digits).
func relClose(got, want, rel, abs float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= math.Max(rel*math.Abs(want), abs)
}

func isConstant(v []float64) bool {
	return slices.Min(v) == slices.Max(v)
}

// TestOracleWelchMannWhitney compares against scipy 1.10 on 234 generated
// cases (sizes 3–5,000; ties, skew, zeros, constant samples) for all three
// alternatives, to 1e-9 relative. Where the math differs it says why:
//   - Welch with a constant sample: numpy's pairwise mean of n equal values
//     is not always exactly that value, so scipy sees a variance of ~1e-30 and
//     reports a huge or NaN t; ours is exactly 0 variance, and the defined
//     result (t = ±Inf, p = 0, or t = 0, p = 1) is asserted instead.
//   - Statistics that are 0 up to rounding (equal means) are compared with an
//     absolute floor of 1e-12 instead of relative error.
func TestOracleWelchMannWhitney(t *testing.T) {
	var o oracleFile
	readJSON(t, "testdata/oracle/cases.json", &o)
	if len(o.Cases) < 200 {
		t.Fatalf("oracle has %d cases, want ≥200", len(o.Cases))
	}
	for _, c := range o.Cases {
		t.Run(c.Name, func(t *testing.T) {
			for altName, alt := range alternatives {
				w, err := WelchTTest(c.X, c.Y, alt)
				if err != nil {
					t.Fatalf("welch %s: %v", altName, err)
				}
				want := c.Welch[altName]
				if isConstant(c.X) && isConstant(c.Y) {
					if math.IsNaN(w.Statistic) || math.IsNaN(w.PValue) {
						t.Fatalf("welch on constant samples gave NaN")
					}
					if c.X[0] == c.Y[0] && (w.Statistic != 0 || w.PValue != 1) {
						t.Fatalf("equal constants: t=%v p=%v, want 0 and 1", w.Statistic, w.PValue)
					}
					if c.X[0] != c.Y[0] && !math.IsInf(w.Statistic, 0) {
						t.Fatalf("different constants: t=%v, want ±Inf", w.Statistic)
					}
				} else {
					if want.T == nil || want.P == nil {
						t.Fatalf("scipy gave NaN on a non-constant case")
					}
					if !relClose(w.Statistic, *want.T, 1e-9, 1e-12) {
						t.Errorf("welch %s t = %.17g, scipy %.17g", altName, w.Statistic, *want.T)
					}
					if !relClose(w.PValue, *want.P, 1e-9, 1e-300) {
						t.Errorf("welch %s p = %.17g, scipy %.17g", altName, w.PValue, *want.P)
					}
				}
				m, err := MannWhitneyUTest(c.X, c.Y, alt)
				if err != nil {
					t.Fatalf("mann-whitney %s: %v", altName, err)
				}
				mw := c.MannWhitney[altName]
				if m.Statistic != mw.U {
					t.Errorf("mann-whitney U = %v, scipy %v", m.Statistic, mw.U)
				}
				if mw.P == nil {
					if m.PValue != 1 {
						t.Errorf("all tied: p = %v, want 1", m.PValue)
					}
				} else if !relClose(m.PValue, *mw.P, 1e-9, 1e-300) {
					t.Errorf("mann-whitney %s p = %.17g, scipy %.17g", altName, m.PValue, *mw.P)
				}
			}
		})
	}
}

func TestOracleBinomial(t *testing.T) {
	var o oracleFile
	readJSON(t, "testdata/oracle/cases.json", &o)
	if len(o.Binomial) < 50 {
		t.Fatalf("oracle has %d binomial cases", len(o.Binomial))
	}
	for _, c := range o.Binomial {
		t.Run(c.Name, func(t *testing.T) {
			for name, want := range map[string]struct{ P, Lo, Hi float64 }{"two-sided": c.TwoSided, "greater": c.Greater, "less": c.Less} {
				got := BinomialTest(c.K, c.N, c.P, alternatives[name])
				if !relClose(got, want.P, 1e-9, 1e-300) {
					t.Errorf("%s p = %.17g, scipy %.17g", name, got, want.P)
				}
			}
			// two-sided 95% Clopper–Pearson interval
			lo, hi := 0.0, 1.0
			if c.K > 0 {
				lo = clopperPearsonLower(c.K, c.N, 0.025)
			}
			if c.K < c.N {
				hi = clopperPearsonUpper(c.K, c.N, 0.025)
			}
			if !relClose(lo, c.TwoSided.Lo, 1e-9, 1e-300) || !relClose(hi, c.TwoSided.Hi, 1e-9, 1e-300) {
				t.Errorf("interval [%.17g, %.17g], scipy [%.17g, %.17g]", lo, hi, c.TwoSided.Lo, c.TwoSided.Hi)
			}
		})
	}
}

func TestRateRatioTest(t *testing.T) {
	tests := map[string]struct {
		c, tc, b, tb float64
		// scipy binomtest(c, c+b, tc/(tc+tb)) with the exact interval mapped to
		// the ratio scale, i.e. R poisson.test(c(c, b), c(tc, tb))
		wantRatio, wantLo, wantHi, wantP float64
		wantErr                          error
	}{
		"half the rate":           {c: 10, tc: 1000, b: 20, tb: 1000, wantRatio: 0.5, wantLo: 0.209005965023833, wantHi: 1.1191830442442048, wantP: 0.09873714670538905},
		"equal rates small share": {c: 50, tc: 5000, b: 950, tb: 95000, wantRatio: 1, wantLo: 0.7368844275809706, wantHi: 1.32934584372392, wantP: 1},
		"no events":               {c: 0, tc: 10, b: 0, tb: 10, wantErr: ErrNotEnoughData},
		"negative":                {c: -1, tc: 10, b: 0, tb: 10, wantErr: ErrInvalidArgument},
		"NaN exposure":            {c: 1, tc: math.NaN(), b: 0, tb: 10, wantErr: ErrNonFinite},
		"zero exposure":           {c: 1, tc: 0, b: 1, tb: 10, wantErr: ErrInvalidArgument},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := RateRatioTest(tc.c, tc.tc, tc.b, tc.tb, 1, 0.95)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !relClose(got.RateRatio, tc.wantRatio, 1e-12, 0) || !relClose(got.Lower, tc.wantLo, 1e-9, 0) || !relClose(got.Upper, tc.wantHi, 1e-9, 0) || !relClose(got.PValue, tc.wantP, 1e-9, 0) {
				t.Fatalf("got %+v, want ratio %v CI [%v, %v] p %v", got, tc.wantRatio, tc.wantLo, tc.wantHi, tc.wantP)
			}
		})
	}
}

func TestRateRatioHugeCounts(t *testing.T) {
	// 10^9 requests per side, a 10% higher canary error rate: defined, finite,
	// and decisive.
	got, err := RateRatioTest(1.1e6, 1e9, 1e6, 1e9, 1, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.RateRatio-1.1) > 1e-12 || !(got.Lower > 1.09 && got.Upper < 1.11) || got.PValue > 1e-100 {
		t.Fatalf("got %+v", got)
	}
	same, err := RateRatioTest(1e9, 1e12, 1e9, 1e12, 1, 0.95)
	if err != nil || same.PValue != 1 || math.IsNaN(same.Lower) {
		t.Fatalf("equal huge counts: %+v %v", same, err)
	}
}

func TestMultipleTestingAdjustments(t *testing.T) {
	p := []float64{0.01, 0.04, 0.03, 0.005, math.NaN()}
	// R: p.adjust(c(.01,.04,.03,.005,1), "holm") = 0.040 0.090 0.090 0.025 1.000
	//    p.adjust(c(.01,.04,.03,.005,1), "BH")   = 0.025 0.050 0.050 0.025 1.000
	tests := map[string]struct {
		fn   func([]float64) []float64
		want []float64
	}{
		"holm": {HolmAdjust, []float64{0.04, 0.09, 0.09, 0.025, 1}},
		"bh":   {BenjaminiHochbergAdjust, []float64{0.025, 0.05, 0.05, 0.025, 1}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := tc.fn(p)
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-12 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
			if len(tc.fn(nil)) != 0 {
				t.Fatal("empty input should give empty output")
			}
		})
	}
}

func TestFixedHorizonEdgeCases(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	tests := map[string]struct {
		x, y     []float64
		welchErr error
		mwErr    error
		hlErr    error
	}{
		"empty":       {x: nil, y: []float64{1, 2}, welchErr: ErrNotEnoughData, mwErr: ErrNotEnoughData, hlErr: ErrNotEnoughData},
		"one value":   {x: []float64{1}, y: []float64{1, 2}, welchErr: ErrNotEnoughData},
		"NaN":         {x: []float64{1, nan}, y: []float64{1, 2}, welchErr: ErrNonFinite, mwErr: ErrNonFinite, hlErr: ErrNonFinite},
		"Inf":         {x: []float64{1, inf}, y: []float64{1, 2}, welchErr: ErrNonFinite, hlErr: ErrNonFinite},
		"all equal":   {x: []float64{3, 3, 3}, y: []float64{3, 3}, hlErr: ErrNotEnoughData},
		"huge":        {x: []float64{1e300, 1.1e300, 0.9e300}, y: []float64{1e300, 1.2e300}},
		"single each": {x: []float64{1}, y: []float64{2}, welchErr: ErrNotEnoughData},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w, err := WelchTTest(tc.x, tc.y)
			if !errors.Is(err, tc.welchErr) || (tc.welchErr == nil && err != nil) {
				t.Fatalf("welch err %v, want %v", err, tc.welchErr)
			}
			if math.IsNaN(w.PValue) || w.PValue < 0 || w.PValue > 1 {
				t.Fatalf("welch p %v", w.PValue)
			}
			if name == "huge" && !(w.PValue > 0.05 && math.Abs(w.Statistic) < 3) {
				t.Fatalf("huge values: t = %v p = %v, want an ordinary non-significant result", w.Statistic, w.PValue)
			}
			m, err := MannWhitneyUTest(tc.x, tc.y)
			if !errors.Is(err, tc.mwErr) || (tc.mwErr == nil && err != nil) {
				t.Fatalf("mw err %v, want %v", err, tc.mwErr)
			}
			if math.IsNaN(m.PValue) || m.PValue < 0 || m.PValue > 1 {
				t.Fatalf("mw p %v", m.PValue)
			}
			_, err = HodgesLehmann(tc.x, tc.y, 0.95)
			if !errors.Is(err, tc.hlErr) || (tc.hlErr == nil && err != nil) {
				t.Fatalf("hl err %v, want %v", err, tc.hlErr)
			}
		})
	}
	if _, err := HodgesLehmann([]float64{1, 2}, []float64{1, 3}, 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("conf level 1: err %v", err)
	}
}

// TestHodgesLehmannAgainstPairwiseMedian checks the root-finding estimate
// against the textbook Hodges–Lehmann estimator (median of pairwise
// differences) on continuous data, where the two agree to within the solver
// tolerance plus half a gap between neighbouring differences.
func TestHodgesLehmannAgainstPairwiseMedian(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{5, 20, 60} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			x, y := make([]float64, n), make([]float64, n+3)
			for i := range x {
				x[i] = rng.NormFloat64() + 1
			}
			for i := range y {
				y[i] = rng.NormFloat64()
			}
			var d []float64
			for _, a := range x {
				for _, b := range y {
					d = append(d, a-b)
				}
			}
			sort.Float64s(d)
			med := QuantileType7(d, 0.5)
			got, err := HodgesLehmann(x, y, 0.95)
			if err != nil {
				t.Fatal(err)
			}
			// neighbouring differences around the median
			i := sort.SearchFloat64s(d, med)
			gap := d[min(i+1, len(d)-1)] - d[max(i-1, 0)]
			if math.Abs(got.Estimate-med) > gap+1e-4 {
				t.Fatalf("estimate %v, pairwise median %v (gap %v)", got.Estimate, med, gap)
			}
			if !(got.Lower < got.Estimate && got.Estimate < got.Upper) {
				t.Fatalf("interval %+v does not contain the estimate", got)
			}
		})
	}
}

func BenchmarkMannWhitneyHodgesLehmann1e5(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	x, y := make([]float64, 100000), make([]float64, 100000)
	for i := range x {
		x[i] = math.Exp(rng.NormFloat64()*0.5) * 105
		y[i] = math.Exp(rng.NormFloat64()*0.5) * 100
	}
	b.ResetTimer()
	for b.Loop() {
		r, err := CompareRanks(x, y, 0.95)
		if err != nil || !r.ShiftOK {
			b.Fatal(err)
		}
	}
}

func TestCompareRanksMatchesSeparateCalls(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	tests := map[string]struct{ nx, ny int }{"small": {5, 7}, "medium": {200, 150}}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x, y := make([]float64, tc.nx), make([]float64, tc.ny)
			for i := range x {
				x[i] = math.Round(rng.ExpFloat64()*20) / 2 // ties
			}
			for i := range y {
				y[i] = math.Round(rng.ExpFloat64()*18) / 2
			}
			got, err := CompareRanks(x, y, 0.95)
			if err != nil {
				t.Fatal(err)
			}
			mw, _ := MannWhitneyUTest(x, y)
			hl, err := HodgesLehmann(x, y, 0.95)
			if err != nil || !got.ShiftOK {
				t.Fatalf("shift: %v %v", err, got.ShiftOK)
			}
			if got.Test != mw || got.Shift != hl {
				t.Fatalf("combined %+v differs from separate %+v %+v", got, mw, hl)
			}
		})
	}
	if _, err := CompareRanks([]float64{1}, nil, 0.95); !errors.Is(err, ErrNotEnoughData) {
		t.Fatalf("empty: %v", err)
	}
	if r, err := CompareRanks([]float64{2, 2}, []float64{2}, 0.95); err != nil || r.ShiftOK || r.Test.PValue != 1 {
		t.Fatalf("all tied: %+v %v", r, err)
	}
}
