package metrics_test

import (
	"math"
	"testing"

	"github.com/verdict-dev/verdict/metrics"
)

func TestParseExpect(t *testing.T) {
	tests := []struct {
		in      string
		want    metrics.Expect
		wantErr bool
	}{
		{"== 0", metrics.Expect{Op: "==", Threshold: 0}, false},
		{"<0.01", metrics.Expect{Op: "<", Threshold: 0.01}, false},
		{"  >= 3 ", metrics.Expect{Op: ">=", Threshold: 3}, false},
		{"!= 1e-3", metrics.Expect{Op: "!=", Threshold: 0.001}, false},
		{"<= -2", metrics.Expect{Op: "<=", Threshold: -2}, false},
		{"> 10", metrics.Expect{Op: ">", Threshold: 10}, false},
		{"= 0", metrics.Expect{}, true},
		{"0", metrics.Expect{}, true},
		{"==", metrics.Expect{}, true},
		{"== NaN", metrics.Expect{}, true},
		{"< +Inf", metrics.Expect{}, true},
		{"=> 3", metrics.Expect{}, true},
		{"== 0 0", metrics.Expect{}, true},
		{"", metrics.Expect{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := metrics.ParseExpect(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseExpect(%q) = %+v, %v", tt.in, got, err)
			}
		})
	}
}

func TestExpectHolds(t *testing.T) {
	tests := []struct {
		expect string
		v      float64
		want   bool
	}{
		{"== 0", 0, true}, {"== 0", 1, false},
		{"!= 0", 1, true}, {"!= 0", 0, false},
		{"< 0.01", 0.009, true}, {"< 0.01", 0.01, false},
		{"<= 0.01", 0.01, true}, {"<= 0.01", 0.02, false},
		{"> 3", 4, true}, {"> 3", 3, false},
		{">= 3", 3, true}, {">= 3", 2.9, false},
		{"== 0", math.NaN(), false}, {"!= 0", math.NaN(), false},
		{"> 3", math.Inf(1), true},
	}
	for _, tt := range tests {
		got, err := metrics.EvalExpect(tt.expect, tt.v)
		if err != nil || got != tt.want {
			t.Errorf("EvalExpect(%q, %v) = %v, %v; want %v", tt.expect, tt.v, got, err, tt.want)
		}
	}
	if _, err := metrics.EvalExpect("~ 1", 1); err == nil {
		t.Error("want an error for an unknown operator")
	}
	if s := (metrics.Expect{Op: "<", Threshold: 0.01}).String(); s != "< 0.01" {
		t.Errorf("String() = %q", s)
	}
}

func FuzzParseExpect(f *testing.F) {
	for _, s := range []string{"== 0", "< 0.01", ">= 3", "!= 1e-3", "= 0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := metrics.ParseExpect(s)
		if err != nil {
			return
		}
		// A parsed expectation round-trips through its canonical form.
		again, err := metrics.ParseExpect(e.String())
		if err != nil || again != e {
			t.Errorf("%q → %q → %+v, %v", s, e.String(), again, err)
		}
	})
}
