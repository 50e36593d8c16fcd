package report

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteJSON writes the report in its documented JSON form (docs/report-json.md), indented
// so that a diff of two reports is readable.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode report %s: %w (%s)", r.Experiment.Name, err, findNaN(r))
	}
	return nil
}

// findNaN names the first non-finite number, for a useful error.
func findNaN(r *Report) string {
	for _, k := range r.KPIs {
		for _, t := range k.Tests {
			if !finite(t.PValue) || !finite(t.PAdjusted) {
				return k.Name + " " + t.Method + " p-value"
			}
		}
		e := k.Effect
		if !finite(e.Alpha) || !finite(e.Dispersion) {
			return k.Name + " effect"
		}
	}
	if !finite(r.Traffic.LogBayesFactor) {
		return "traffic log Bayes factor"
	}
	if !finite(r.Alpha) {
		return "alpha"
	}
	return "unknown field"
}
