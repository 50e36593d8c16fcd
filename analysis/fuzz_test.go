package analysis

import (
	"encoding/json"
	"math"
	"testing"
)

// FuzzSequences feeds arbitrary interval values to both live sequences and
// the decision: whatever comes in, nothing panics, every number out is finite
// and the decision serialises.
func FuzzSequences(f *testing.F) {
	f.Add(3.0, 1000.0, 27.0, 9000.0, 101.0, 99.0, 0.05)
	f.Add(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
	f.Add(math.NaN(), math.Inf(1), -1.0, 1e300, math.Inf(-1), -5.0, math.NaN())
	f.Add(1e9, 1e12, 1e9, 1e12, 1e-300, 1e300, 1.0)
	f.Fuzz(func(t *testing.T, c, nc, b, nb, gc, gb, alpha float64) {
		r := NewRatioSequence(RatioOptions{MinIntervals: 2})
		g := NewGaugeSequence(GaugeOptions{MinIntervals: 2})
		for i := range 12 {
			k := float64(i % 3)
			r.Add(c+k, nc, b+k, nb)
			r.AddPre(c, nc, b, nb)
			g.Add(gc+k, gb)
			g.AddPre(gc, gb)
		}
		for _, iv := range []Interval{r.Interval(alpha), r.BinomialInterval(alpha), g.Interval(alpha)} {
			for _, x := range []float64{iv.Estimate, iv.Lower, iv.Upper, iv.Dispersion, iv.PValue, iv.Alpha, iv.CanaryValue} {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("non-finite output in %+v", iv)
				}
			}
		}
		d := Decide([]KPI{{Name: "errors", State: r, Harm: Increase, Tolerance: 0.1}, {Name: "latency", State: g, Harm: Increase, Tolerance: 0.05}}, Step{Alpha: alpha, HoldComplete: true, Final: true})
		if _, err := json.Marshal(d); err != nil {
			t.Fatalf("decision does not marshal: %v", err)
		}
	})
}

// FuzzFixedHorizon checks the fixed-horizon tests on arbitrary small
// samples: an error or a p-value in [0, 1], never a panic or NaN.
func FuzzFixedHorizon(f *testing.F) {
	f.Add(1.0, 2.0, 3.0, 1.0, 1.0, 1.0)
	f.Add(math.NaN(), 0.0, math.Inf(1), -1e308, 1e308, 0.0)
	f.Fuzz(func(t *testing.T, a, b, c, d, e, g float64) {
		x, y := []float64{a, b, c}, []float64{d, e, g}
		for _, fn := range []func([]float64, []float64, ...Alternative) (TestResult, error){WelchTTest, MannWhitneyUTest} {
			res, err := fn(x, y)
			if err == nil && (math.IsNaN(res.PValue) || res.PValue < 0 || res.PValue > 1) {
				t.Fatalf("p = %v for %v %v", res.PValue, x, y)
			}
			if _, err := json.Marshal(res); err != nil {
				t.Fatal(err)
			}
		}
		if hl, err := HodgesLehmann(x, y, 0.95); err == nil && (math.IsNaN(hl.Estimate) || hl.Lower > hl.Upper+1e-3*math.Max(1, math.Abs(hl.Upper))) {
			t.Fatalf("hodges-lehmann %+v for %v %v", hl, x, y)
		}
		_ = ClassifyKayenta(x, y, ClassifierOptions{})
	})
}
