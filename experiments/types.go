package experiments

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// scalarDecoder is implemented by the spec's value types that parse themselves from one
// YAML scalar (after ${VAR} expansion).
type scalarDecoder interface {
	decodeScalar(s string) error
}

// Fraction is a share or a relative margin. Files write it as a percentage ("5%") or as a
// fraction ("0.05"); both mean the same, so 5 (without %) is refused rather than guessed.
type Fraction float64

func (f *Fraction) decodeScalar(s string) error {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%q is not a percentage like 5%%", s)
		}
		*f = Fraction(v / 100)
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%q is not a percentage like 5%% or a fraction like 0.05", s)
	}
	if v > 1 {
		return fmt.Errorf("%s is ambiguous: write %s%% for a percentage, or a fraction between 0 and 1", s, s)
	}
	*f = Fraction(v)
	return nil
}

// String formats the fraction as a percentage, the way files usually write it.
func (f Fraction) String() string {
	return strconv.FormatFloat(float64(f)*100, 'f', -1, 64) + "%"
}

// MarshalJSON writes the plain fraction: machines read 0.05, people read String.
func (f Fraction) MarshalJSON() ([]byte, error) { return json.Marshal(float64(f)) }

// Duration is a Prometheus-style duration ("30s", "10m", "1h30m", "1d"), the notation users
// already write in PromQL range selectors.
type Duration time.Duration

func (d *Duration) decodeScalar(s string) error {
	s = strings.TrimSpace(s)
	v, err := model.ParseDuration(s)
	if err != nil {
		// People write Go's fractional forms too ("0.5s", "1.5m"); Prometheus's notation has
		// no fractions, so those are read the Go way and rendered back in Prometheus's.
		gv, gerr := time.ParseDuration(s)
		if gerr != nil || gv < 0 {
			return fmt.Errorf("%q is not a duration like 30s, 0.5s, 10m or 1h30m", s)
		}
		v = model.Duration(gv)
	}
	*d = Duration(v)
	return nil
}

// String formats the duration the way PromQL range selectors want it, e.g. 1m or 1h30m.
func (d Duration) String() string { return model.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "10m".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Threshold is an absolute KPI limit. Files write whatever reads naturally for the KPI: a
// number (120), a percentage for rates ("2%" = 0.02) or a duration for latencies ("800ms" =
// 0.8, since Prometheus histograms count seconds).
type Threshold float64

func (t *Threshold) decodeScalar(s string) error {
	s = strings.TrimSpace(s)
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%q is not a finite number", s)
		}
		*t = Threshold(v)
		return nil
	}
	if strings.HasSuffix(s, "%") {
		var f Fraction
		if err := f.decodeScalar(s); err != nil {
			return err
		}
		*t = Threshold(f)
		return nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		*t = Threshold(d.Seconds())
		return nil
	}
	return fmt.Errorf("%q is not a number, a percentage like 2%% or a duration like 800ms", s)
}

// Float returns the threshold as a plain number.
func (t *Threshold) Float() float64 { return float64(*t) }

// UnmarshalJSON reads the string form MarshalJSON writes, so a stored spec round-trips.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	return d.decodeScalar(s)
}
