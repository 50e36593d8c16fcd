package experiments

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/prometheus/prometheus/promql/parser"
)

// QueryVars are the values a PromQL template may use. Cluster and Clusters are escaped
// for the inside of a double-quoted PromQL string (cluster="{{.Cluster}}",
// cluster=~"{{.Clusters}}"), the way every example writes them: a cluster called
// eu.west-1 or prod/a:b must select exactly its own series, not a regex neighbour, and a
// quote or backslash in a name must not end the string early.
type QueryVars struct {
	Interval     string // the analysis interval as a range, e.g. 1m
	Cluster      string // one cluster (preconditions evaluated per cluster, capacity hooks)
	Clusters     string // every experiment cluster as a regex alternation, for =~ matchers
	ClusterLabel string // the label that names clusters
}

// TemplateVariables lists the variables queries may use, for error messages and docs.
var TemplateVariables = []string{"{{.Interval}}", "{{.Cluster}}", "{{.Clusters}}", "{{.ClusterLabel}}"}

var promqlParser = parser.NewParser(parser.Options{})

// Vars returns the template values for this experiment's queries; cluster fills
// {{.Cluster}}.
func (e *Experiment) Vars(cluster string) QueryVars {
	v := e.rawVars(cluster)
	quoted := make([]string, 0, len(e.Spec.Baselines)+1)
	for _, c := range e.Spec.Clusters() {
		quoted = append(quoted, PromQLString(regexp.QuoteMeta(c)))
	}
	v.Cluster = PromQLString(cluster)
	v.Clusters = strings.Join(quoted, "|")
	return v
}

// rawVars are the same values unescaped, for hook commands, which are arguments, not PromQL.
func (e *Experiment) rawVars(cluster string) QueryVars {
	quoted := make([]string, 0, len(e.Spec.Baselines)+1)
	for _, c := range e.Spec.Clusters() {
		quoted = append(quoted, regexp.QuoteMeta(c))
	}
	return QueryVars{
		Interval:     e.Spec.Analysis.Interval.String(),
		Cluster:      cluster,
		Clusters:     strings.Join(quoted, "|"),
		ClusterLabel: e.Spec.Prometheus.ClusterLabel,
	}
}

// PromQLString escapes s for the inside of a double-quoted PromQL string literal, whose
// escapes are Go's: a regexp.QuoteMeta'd "eu\.west" must reach Prometheus as "eu\\.west",
// since PromQL refuses the unknown escape "\.".
func PromQLString(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

var unknownField = regexp.MustCompile(`can't evaluate field (\w+)`)

// RenderQuery expands a query template. Unknown variables are errors, not empty strings:
// an empty range selector would otherwise surface later as a confusing PromQL error.
func RenderQuery(tmpl string, vars QueryVars) (string, error) {
	t, err := template.New("query").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return "", fmt.Errorf("bad template: %s", msg)
	}
	var b strings.Builder
	if err := t.Execute(&b, vars); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return "", fmt.Errorf("unknown template variable {{.%s}} (known: %s)", m[1], strings.Join(TemplateVariables, ", "))
		}
		return "", fmt.Errorf("bad template: %v", err)
	}
	return b.String(), nil
}

// ParseQuery renders a template and parses the result as PromQL.
func ParseQuery(tmpl string, vars QueryVars) (string, parser.Expr, error) {
	q, err := RenderQuery(tmpl, vars)
	if err != nil {
		return "", nil, err
	}
	expr, err := promqlParser.ParseExpr(q)
	if err != nil {
		var perrs parser.ParseErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			return q, nil, fmt.Errorf("invalid PromQL: %s (in %q)", perrs[0].Err, q)
		}
		return q, nil, fmt.Errorf("invalid PromQL: %v (in %q)", err, q)
	}
	return q, expr, nil
}

// keepsLabels reports whether every series the expression returns is guaranteed to keep
// the named labels. KPI queries must aggregate by the cluster label: a query that returned
// one series per pod, or one for the whole fleet, could not be split into canary and
// baselines. It errs on the side of accepting shapes it cannot judge only for functions
// that pass labels through.
func keepsLabels(expr parser.Expr, want ...string) bool {
	switch e := expr.(type) {
	case *parser.ParenExpr:
		return keepsLabels(e.Expr, want...)
	case *parser.StepInvariantExpr:
		return keepsLabels(e.Expr, want...)
	case *parser.SubqueryExpr:
		return keepsLabels(e.Expr, want...)
	case *parser.AggregateExpr:
		if e.Without {
			for _, w := range want {
				if slices.Contains(e.Grouping, w) {
					return false
				}
			}
			return keepsLabels(e.Expr, want...)
		}
		for _, w := range want {
			if !slices.Contains(e.Grouping, w) {
				return false
			}
		}
		return true
	case *parser.BinaryExpr:
		l, r := e.LHS.Type() == parser.ValueTypeVector, e.RHS.Type() == parser.ValueTypeVector
		switch {
		case l && r:
			if e.VectorMatching != nil && e.VectorMatching.On {
				for _, w := range want {
					if !slices.Contains(e.VectorMatching.MatchingLabels, w) {
						return false
					}
				}
			}
			return keepsLabels(e.LHS, want...) && keepsLabels(e.RHS, want...)
		case l:
			return keepsLabels(e.LHS, want...)
		case r:
			return keepsLabels(e.RHS, want...)
		}
		return false
	case *parser.Call:
		// Functions that take one instant vector and keep its labels (abs, clamp, histogram_quantile, ...).
		// *_over_time functions keep the labels of their range argument.
		for _, a := range e.Args {
			if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
				return keepsLabels(a, want...)
			}
		}
		return false
	}
	return false
}
