package experiments

import (
	"bytes"
	"fmt"
	"text/template"
)

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
