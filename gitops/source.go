// Package gitops keeps the declared source of truth of a pool's origin weights true: a
// Terraform file or a YAML/JSON values file in a Git checkout that says what the weights
// should be. It reads the declared weights (Read), compares them with the live pool
// (Diff, Check), writes the live weights back into the file without touching anything
// else in it (Write), and publishes that edit as a commit on a new branch with an
// optional GitHub pull request (Sync, Repo, GitHub).
//
// The package knows nothing about experiments: callers map an experiment's clusters to
// pool origins and file keys (see KeysFromClusters) and hand in the live weights.
package gitops

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/verdict-dev/verdict/traffic"
)

// Source declares where a pool's weights live: one file in a Git checkout and the place
// in it that holds a map (key -> weight) or a list of origins (name and weight).
// Exactly one of Terraform and Values is set.
type Source struct {
	// Dir is the root of the checkout; File is relative to it. An empty Dir means the
	// current directory.
	Dir string
	// File is the slash-separated path of the file inside the checkout.
	File string
	// Terraform locates the weights in a Terraform file (.tf or .tfvars).
	Terraform *TerraformRef
	// Values locates the weights in a YAML or JSON values file.
	Values *ValuesRef
	// Keys maps pool origin names to the keys the file uses for them (often short
	// cluster names). Only mapped origins are read, compared and written; other keys in
	// the same map are left alone. Nil means identity over every key the file declares
	// there.
	Keys map[string]string
}

// TerraformRef names the weights in a Terraform file by a Terraform reference:
//
//	local.NAME[.KEY...]             an attribute of a locals block (.tf)
//	var.NAME[.KEY...]               a variable's default (.tf) or a tfvars assignment (.tfvars)
//	TYPE.NAME.ATTR[.KEY...]         a resource argument, e.g. cloudflare_load_balancer_pool.use1.origins
//
// Keys may also be written as index steps (local.split["us-east-1"], origins[0]). The
// expression must end at an object of literal numbers ({a = 0.5, b = 0.5}) or a list of
// origins with literal name and weight ([{name = "a", weight = 0.5}], provider v5), or,
// for a resource, repeated origins blocks (provider v4).
type TerraformRef struct {
	Expression string
}

// ValuesRef names the weights in a YAML or JSON file by a dotted key path such as
// cloudflare.pools.use1.weights; keys containing dots are written as ["a.b"] and list
// items as [0]. The path must end at a mapping of numbers or a list of mappings with
// name and weight.
type ValuesRef struct {
	Path string
	// Format is "yaml" or "json"; empty picks it from the file extension (.json is
	// JSON, everything else YAML).
	Format string
}

// Kind returns "terraform" or "values".
func (s Source) Kind() string {
	if s.Terraform != nil {
		return "terraform"
	}
	return "values"
}

// Ref returns the expression or key path that locates the weights.
func (s Source) Ref() string {
	switch {
	case s.Terraform != nil:
		return s.Terraform.Expression
	case s.Values != nil:
		return s.Values.Path
	}
	return ""
}

// String renders the source for messages: "infra/lb.tf local.traffic_split.use1".
func (s Source) String() string { return s.File + " " + s.Ref() }

// Path returns the file's path on disk.
func (s Source) Path() string {
	return filepath.Join(s.Dir, filepath.FromSlash(s.File))
}

// format returns "hcl", "yaml" or "json".
func (s Source) format() string {
	if s.Terraform != nil {
		return "hcl"
	}
	switch strings.ToLower(s.Values.Format) {
	case "json":
		return "json"
	case "yaml", "yml":
		return "yaml"
	}
	if strings.EqualFold(path.Ext(s.File), ".json") {
		return "json"
	}
	return "yaml"
}

// Validate checks the declaration without reading the file. Problems are joined so that
// a person sees them all at once; each names the field.
func (s Source) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case s.Terraform == nil && s.Values == nil:
		bad("sourceOfTruth", "set either terraform or values")
	case s.Terraform != nil && s.Values != nil:
		bad("sourceOfTruth", "set only one of terraform and values")
	}
	if s.File == "" {
		bad("file", "required: the path of the file inside the checkout")
	} else {
		clean := path.Clean(s.File)
		if path.IsAbs(s.File) || filepath.IsAbs(s.File) || clean == ".." || strings.HasPrefix(clean, "../") {
			bad("file", "%q must be a relative path inside the checkout", s.File)
		}
	}
	if s.Terraform != nil {
		if s.Terraform.Expression == "" {
			bad("terraform.expression", "required: e.g. local.traffic_split.use1")
		} else if _, err := parseTFExpression(s.Terraform.Expression); err != nil {
			bad("terraform.expression", "%v", err)
		}
		if s.File != "" {
			ext := path.Ext(s.File)
			if ext != ".tf" && ext != ".tfvars" {
				bad("file", "%q: a Terraform source is a .tf or .tfvars file (for .tf.json or .tfvars.json use values with format json)", s.File)
			}
		}
	}
	if s.Values != nil {
		if s.Values.Path == "" {
			bad("values.path", "required: e.g. cloudflare.pools.use1.weights")
		} else if _, err := parseKeyPath(s.Values.Path); err != nil {
			bad("values.path", "%v", err)
		}
		switch strings.ToLower(s.Values.Format) {
		case "", "yaml", "yml", "json":
		default:
			bad("values.format", "%q: want yaml or json", s.Values.Format)
		}
	}
	seen := map[string]string{}
	for _, o := range sortedKeys(s.Keys) {
		k := s.Keys[o]
		if o == "" || k == "" {
			bad("keys", "origin %q maps to key %q: neither may be empty", o, k)
			continue
		}
		if prev, ok := seen[k]; ok {
			bad("keys."+o, "key %q is already the key of origin %q", k, prev)
		}
		seen[k] = o
	}
	return errors.Join(errs...)
}

// KeysFromClusters builds Source.Keys from an experiment's two cluster maps: cluster ->
// key in the file (spec.traffic.sourceOfTruth.*.keys) and cluster -> pool origin
// (spec.traffic.cloudflare.origins). A cluster without a key uses its own name as key.
func KeysFromClusters(clusterKeys, clusterOrigins map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(clusterOrigins))
	var errs []error
	for c := range clusterKeys {
		if _, ok := clusterOrigins[c]; !ok {
			errs = append(errs, &FieldError{Field: "keys." + c, Msg: fmt.Sprintf("cluster %q has no pool origin", c)})
		}
	}
	for _, c := range sortedKeys(clusterOrigins) {
		k := clusterKeys[c]
		if k == "" {
			k = c
		}
		out[clusterOrigins[c]] = k
	}
	return out, errors.Join(errs...)
}

// FieldError is a problem with one field of a declaration.
type FieldError struct {
	Field string
	Msg   string
}

// Error renders "field: message".
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Position is a place in a file, for messages and plans. Line and Column start at 1.
type Position struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column,omitempty"`
}

// String renders "file:line".
func (p Position) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// SourceError is a problem found in the file itself: where it is, a one-line summary and
// a detail that says what to do.
type SourceError struct {
	Pos     Position
	Summary string
	Detail  string
	Err     error // a sentinel such as ErrNotLiteral or ErrKeyNotFound, or nil
}

// Error renders "file:line: summary: detail".
func (e *SourceError) Error() string {
	s := e.Pos.String() + ": " + e.Summary
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the sentinel, if any.
func (e *SourceError) Unwrap() error { return e.Err }

// Sentinels for callers that branch on the kind of problem.
var (
	// ErrKeyNotFound: the expression, path or a mapped key is not in the file.
	ErrKeyNotFound = errors.New("key not found")
	// ErrNotLiteral: a weight (or an origin name) is computed rather than written as a
	// literal, so Verdict can neither compare nor rewrite it.
	ErrNotLiteral = errors.New("not a literal")
	// ErrOutOfSync: the declared weights and the live pool disagree (Check).
	ErrOutOfSync = errors.New("source of truth out of sync with the pool")
	// ErrDirty: the checkout has uncommitted changes to the file.
	ErrDirty = errors.New("uncommitted changes")
	// ErrBranchConflict: the branch already exists with other content.
	ErrBranchConflict = errors.New("branch exists with other content")
)

// Declared is what the file says: the weight of each origin the source covers, where
// each is written, and the file's keys there that no mapped origin uses.
type Declared struct {
	Source    Source
	Weights   traffic.Weights     // origin -> weight
	Keys      map[string]string   // origin -> key in the file
	Positions map[string]Position // origin -> where its weight is written
	// Unmapped lists keys the file declares beside the mapped ones (sorted); they are
	// neither compared nor written.
	Unmapped []string
}

// entry is one key -> weight found in a file, with the byte range of the weight literal.
type entry struct {
	key        string
	pos        Position
	start, end int     // byte range of the literal, for rewriting
	val        float64 // parsed value
	literal    string  // the literal's text
	err        error   // not a number literal, reported when the key is used
}

// collect turns the entries found at the target into a Declared for src.
func collect(src Source, container Position, ents []entry) (*Declared, error) {
	byKey := make(map[string]entry, len(ents))
	for _, e := range ents {
		if prev, dup := byKey[e.key]; dup {
			return nil, &SourceError{Pos: e.pos, Summary: fmt.Sprintf("duplicate key %q", e.key), Detail: "also at " + prev.pos.String()}
		}
		byKey[e.key] = e
	}
	keys := src.Keys
	if keys == nil {
		keys = make(map[string]string, len(ents))
		for _, e := range ents {
			keys[e.key] = e.key
		}
	}
	d := &Declared{Source: src, Weights: traffic.Weights{}, Keys: map[string]string{}, Positions: map[string]Position{}}
	used := map[string]bool{}
	var errs []error
	for _, o := range sortedKeys(keys) {
		k := keys[o]
		e, ok := byKey[k]
		if !ok {
			errs = append(errs, &SourceError{Pos: container, Summary: fmt.Sprintf("%s has no key %q (origin %q)", src.Ref(), k, o),
				Detail: "keys there: " + strings.Join(entryKeys(ents), ", "), Err: ErrKeyNotFound})
			continue
		}
		used[k] = true
		if e.err != nil {
			errs = append(errs, e.err)
			continue
		}
		d.Weights[o], d.Keys[o], d.Positions[o] = e.val, k, e.pos
	}
	for _, e := range ents {
		if !used[e.key] {
			d.Unmapped = append(d.Unmapped, e.key)
		}
	}
	sort.Strings(d.Unmapped)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

func entryKeys(ents []entry) []string {
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.key)
	}
	if len(out) == 0 {
		return []string{"(none)"}
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// parseTFExpression parses a Terraform reference such as local.traffic_split.use1.
func parseTFExpression(expr string) (hcl.Traversal, error) {
	tr, diags := hclsyntax.ParseTraversalAbs([]byte(expr), "expression", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%q is not a Terraform reference (want e.g. local.traffic_split.use1): %s", expr, diagSummary(diags))
	}
	switch tr.RootName() {
	case "local", "var":
		if len(tr) < 2 {
			return nil, fmt.Errorf("%q names no %s value (want e.g. %s.traffic_split)", expr, tr.RootName(), tr.RootName())
		}
	default:
		if len(tr) < 3 {
			return nil, fmt.Errorf("%q: a resource reference is TYPE.NAME.ATTRIBUTE (e.g. cloudflare_load_balancer_pool.use1.origins), or use local.NAME or var.NAME", expr)
		}
	}
	for _, step := range tr[1:] {
		switch s := step.(type) {
		case hcl.TraverseAttr:
		case hcl.TraverseIndex:
			if !s.Key.IsKnown() || s.Key.IsNull() {
				return nil, fmt.Errorf("%q: index keys must be literal strings or numbers", expr)
			}
		default:
			return nil, fmt.Errorf("%q: unsupported step", expr)
		}
	}
	return tr, nil
}

func diagSummary(diags hcl.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		s := d.Summary
		if d.Detail != "" {
			s += ": " + d.Detail
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}
