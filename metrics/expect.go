package metrics

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Expect is a precondition's expectation on a query's value, such as `== 0` or `< 0.01`.
// The spec validator parses expect strings with ParseExpect so that a typo fails
// `verdict validate`, not the experiment's start.
type Expect struct {
	// Op is one of ==, !=, <, <=, >, >=.
	Op string
	// Threshold is the number the value is compared with.
	Threshold float64
}

var expectOps = []string{"==", "!=", "<=", ">=", "<", ">"} // two-character operators first

// ParseExpect parses an expectation: an operator (==, !=, <, <=, >, >=) followed by a finite
// number, with optional spaces: "== 0", "<0.01", ">= 3", "!= 1e-3".
func ParseExpect(s string) (Expect, error) {
	t := strings.TrimSpace(s)
	for _, op := range expectOps {
		rest, ok := strings.CutPrefix(t, op)
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		v, err := strconv.ParseFloat(rest, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return Expect{}, fmt.Errorf("invalid expect %q: %q is not a finite number", s, rest)
		}
		return Expect{Op: op, Threshold: v}, nil
	}
	return Expect{}, fmt.Errorf("invalid expect %q: want an operator (==, !=, <, <=, >, >=) and a number, e.g. \"== 0\"", s)
}

// Holds reports whether v meets the expectation. NaN never does: a precondition cannot pass
// on a value that is not a number.
func (e Expect) Holds(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	switch e.Op {
	case "==":
		return v == e.Threshold
	case "!=":
		return v != e.Threshold
	case "<":
		return v < e.Threshold
	case "<=":
		return v <= e.Threshold
	case ">":
		return v > e.Threshold
	case ">=":
		return v >= e.Threshold
	}
	return false
}

// String gives the canonical form, e.g. "< 0.01".
func (e Expect) String() string {
	return e.Op + " " + strconv.FormatFloat(e.Threshold, 'g', -1, 64)
}

// EvalExpect parses expect and applies it to v in one call.
func EvalExpect(expect string, v float64) (bool, error) {
	e, err := ParseExpect(expect)
	if err != nil {
		return false, err
	}
	return e.Holds(v), nil
}
