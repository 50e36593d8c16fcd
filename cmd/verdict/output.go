package main

import (
	"encoding/json"
	"io"
	"maps"
	"slices"
)

// jsonVersion is the version of every JSON message the CLI prints; consumers check it the
// way Terraform's machine-readable UI is checked.
const jsonVersion = 1

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// sortedKeys returns a map's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
