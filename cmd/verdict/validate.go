package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
)

// validateArgs are the parsed arguments of verdict validate.
type validateArgs struct {
	files []string
}

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check experiment files without touching anything",
		Long: `Validate loads every experiment in the given files, applies defaults and checks them:
required fields, cluster and origin mapping, steps, durations, and that every PromQL query
parses and aggregates by the cluster label. Every problem is printed as
FILE:LINE:COL: field.path: message. Warnings (e.g. spec.canary.apply not set) are printed
as FILE:LINE:COL: warning: EXPERIMENT: message and do not fail validation.
Exit status 0 means all valid, 2 means some are not.`,
		Example: "  verdict validate examples/*.yaml",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runValidate(g, validateArgs{files: args})
		},
	}
}

func runValidate(g *globals, a validateArgs) error {
	results := make([]server.ValidateFile, 0, len(a.files))
	allValid := true
	for _, f := range a.files {
		if r, ok, err := validateDrill(g, f); err != nil {
			return err
		} else if ok {
			allValid = allValid && r.Valid
			results = append(results, r)
			continue
		}
		exps, err := experiments.LoadFile(f, experiments.LoadOptions{})
		r := server.ValidateFile{File: f, Valid: err == nil, Experiments: []string{}, Errors: []*experiments.FieldError{}, Warnings: []server.ValidateWarning{}}
		for _, e := range exps {
			r.Experiments = append(r.Experiments, e.Metadata.Name)
			if err == nil {
				for _, w := range e.Warnings() {
					r.Warnings = append(r.Warnings, server.ValidateWarning{Pos: e.Source, Experiment: e.Metadata.Name, Msg: w})
				}
			}
		}
		if err != nil {
			allValid = false
			var list experiments.ErrorList
			if !errors.As(err, &list) {
				return withCode(exitError, err)
			}
			r.Errors = list
		}
		results = append(results, r)
		if g.json() {
			continue
		}
		if r.Valid {
			for _, e := range exps {
				fmt.Fprintf(g.stdout, "%s: %s is valid (canary %s, %d baseline(s), %d step(s), %d KPI(s))\n",
					f, e.Metadata.Name, e.Spec.Canary.Cluster, len(e.Spec.Baselines), len(e.Spec.Traffic.Steps), len(e.Spec.KPIs))
			}
			for _, w := range r.Warnings {
				fmt.Fprintf(g.stdio.err, "%s: warning: %s: %s\n", w.Pos, w.Experiment, w.Msg)
			}
			continue
		}
		for _, fe := range r.Errors {
			fmt.Fprintln(g.stdio.err, fe.Error())
		}
	}
	if g.json() {
		if err := writeJSON(g.stdout, server.ValidateResult{TypeMeta: server.Meta(server.KindValidateResult), Valid: allValid, Files: results}); err != nil {
			return withCode(exitError, err)
		}
	}
	if !allValid {
		if !g.json() {
			n := 0
			for _, r := range results {
				n += len(r.Errors)
			}
			fmt.Fprintf(g.stdio.err, "%d problem(s) found\n", n)
		}
		return silentExit(exitInvalid)
	}
	return nil
}

// validateDrill validates f if it is a drill file (kind: Drill); ok is false for any other
// file, which the experiment loader then reads and reports on.
func validateDrill(g *globals, f string) (r server.ValidateFile, ok bool, err error) {
	data, rerr := experiments.ReadFile(f)
	if rerr != nil || experiments.FileKind(data) != experiments.KindDrill {
		return r, false, nil
	}
	drills, lerr := experiments.LoadDrill(f, data, experiments.LoadOptions{})
	r = server.ValidateFile{File: f, Valid: lerr == nil, Experiments: []string{}, Errors: []*experiments.FieldError{}, Warnings: []server.ValidateWarning{}}
	for _, d := range drills {
		r.Drills = append(r.Drills, d.Metadata.Name)
	}
	if lerr != nil {
		var list experiments.ErrorList
		if !errors.As(lerr, &list) {
			return r, true, withCode(exitError, lerr)
		}
		r.Errors = list
	}
	if g.json() {
		return r, true, nil
	}
	if r.Valid {
		for _, d := range drills {
			fmt.Fprintf(g.stdout, "%s: %s\n", f, d.Summary())
		}
		return r, true, nil
	}
	for _, fe := range r.Errors {
		fmt.Fprintln(g.stdio.err, fe.Error())
	}
	return r, true, nil
}
