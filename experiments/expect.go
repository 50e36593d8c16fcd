package experiments

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/template"
)

// Expect is a comparison a precondition's value must satisfy, such as "== 0" or "< 0.01".
type Expect struct {
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

var expectOps = []string{"==", "!=", "<=", ">=", "<", ">"}

// ParseExpect parses "OP NUMBER" with OP one of == != < <= > >=.
func ParseExpect(s string) (Expect, error) {
	t := strings.TrimSpace(s)
	for _, op := range expectOps {
		if rest, ok := strings.CutPrefix(t, op); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return Expect{}, fmt.Errorf("%q: %q after %s is not a number", s, strings.TrimSpace(rest), op)
			}
			return Expect{Op: op, Value: v}, nil
		}
	}
	return Expect{}, fmt.Errorf(`%q must be a comparison such as "== 0", "< 0.01" or ">= 3" (operators: %s)`, s, strings.Join(expectOps, " "))
}

// Holds reports whether x satisfies the expectation. NaN satisfies nothing, so a query that
// returns garbage can never pass a precondition.
func (e Expect) Holds(x float64) bool {
	if math.IsNaN(x) {
		return false
	}
	switch e.Op {
	case "==":
		return x == e.Value
	case "!=":
		return x != e.Value
	case "<":
		return x < e.Value
	case "<=":
		return x <= e.Value
	case ">":
		return x > e.Value
	case ">=":
		return x >= e.Value
	}
	return false
}

func (e Expect) String() string { return e.Op + " " + strconv.FormatFloat(e.Value, 'g', -1, 64) }

// HookVars are the values a capacity hook's arguments may use.
type HookVars struct {
	Cluster     string
	MinReplicas int
	MaxReplicas int
	Percent     float64 // the cluster's share of the pool's traffic, 0–100
}

// RenderHookArg expands one capacity hook argument.
func RenderHookArg(arg string, vars HookVars) (string, error) {
	t, err := template.New("hook").Option("missingkey=error").Parse(arg)
	if err != nil {
		return "", fmt.Errorf("bad template: %v", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, vars); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return "", fmt.Errorf("unknown template variable {{.%s}} (known: {{.Cluster}}, {{.MinReplicas}}, {{.MaxReplicas}}, {{.Percent}})", m[1])
		}
		return "", fmt.Errorf("bad template: %v", err)
	}
	return b.String(), nil
}
