package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/verdict-dev/verdict/traffic"
)

// Read reads the weights src declares from its file on disk.
func Read(src Source) (*Declared, error) {
	if err := src.Validate(); err != nil {
		return nil, fmt.Errorf("source of truth: %w", err)
	}
	content, err := os.ReadFile(src.Path())
	if err != nil {
		return nil, fmt.Errorf("read source of truth %s: %w", src.File, err)
	}
	return Parse(src, content)
}

// Parse reads the weights src declares from content, the file's bytes (for example as
// committed on a branch rather than as checked out).
func Parse(src Source, content []byte) (*Declared, error) {
	pos, ents, err := locate(src, content)
	if err != nil {
		return nil, err
	}
	return collect(src, pos, ents)
}

func locate(src Source, content []byte) (Position, []entry, error) {
	if src.Terraform != nil {
		return locateHCL(src, content)
	}
	if src.Values != nil {
		return locateValues(src, content)
	}
	return Position{}, nil, &FieldError{Field: "sourceOfTruth", Msg: "set either terraform or values"}
}

// Write rewrites the weights of the given origins in src's file in place. Only the
// weight literals whose value changes at 0.01 granularity are touched; every other byte
// of the file (formatting, comments, order, other keys) stays as it was. Every origin in
// weights must be one src declares. It reports whether the file changed.
func Write(src Source, weights traffic.Weights) (bool, error) {
	if err := src.Validate(); err != nil {
		return false, fmt.Errorf("source of truth: %w", err)
	}
	p := src.Path()
	content, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("read source of truth %s: %w", src.File, err)
	}
	out, err := Edit(src, content, weights)
	if err != nil {
		return false, err
	}
	if bytes.Equal(out, content) {
		return false, nil
	}
	if err := writeFileAtomic(p, out); err != nil {
		return false, fmt.Errorf("write source of truth %s: %w", src.File, err)
	}
	return true, nil
}

// Edit returns content with the weights of the given origins rewritten (see Write).
// The result is parsed again and must read back as the new weights.
func Edit(src Source, content []byte, weights traffic.Weights) ([]byte, error) {
	pos, ents, err := locate(src, content)
	if err != nil {
		return nil, err
	}
	d, err := collect(src, pos, ents)
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]entry, len(ents))
	for _, e := range ents {
		byKey[e.key] = e
	}
	type repl struct {
		start, end int
		text       string
	}
	var repls []repl
	var errs []error
	for _, o := range sortedKeys(weights) {
		w := weights[o]
		k, ok := d.Keys[o]
		if !ok {
			errs = append(errs, fmt.Errorf("%s does not declare origin %q (declared: %v)", src, o, sortedKeys(d.Keys)))
			continue
		}
		if w < 0 || w > 1 || math.IsNaN(w) {
			errs = append(errs, fmt.Errorf("weight %v for origin %q is outside 0..1", w, o))
			continue
		}
		e := byKey[k]
		if hundredths(e.val) == hundredths(w) {
			continue
		}
		repls = append(repls, repl{e.start, e.end, FormatWeight(w)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(repls, func(a, b repl) int { return b.start - a.start })
	out := append([]byte(nil), content...)
	for _, r := range repls {
		out = slices.Concat(out[:r.start], []byte(r.text), out[r.end:])
	}
	// A Terraform file that was terraform fmt clean stays so: a value of another width
	// can shift the alignment of trailing comments, which hclwrite's formatter restores.
	// A file that was not clean is left as its authors wrote it.
	if src.Terraform != nil && len(repls) > 0 && bytes.Equal(hclwrite.Format(content), content) {
		out = hclwrite.Format(out)
	}
	// Prove the edit: the file still parses and says exactly what was asked.
	back, err := Parse(src, out)
	if err != nil {
		return nil, fmt.Errorf("edited %s no longer reads back (a bug; file left unchanged): %w", src.File, err)
	}
	for o, w := range weights {
		if hundredths(back.Weights[o]) != hundredths(w) {
			return nil, fmt.Errorf("edited %s reads back %s = %v, want %v (a bug; file left unchanged)", src.File, o, back.Weights[o], w)
		}
	}
	return out, nil
}

// FormatWeight writes a weight as Terraform (and hclwrite) would write the number:
// rounded to 0.01, shortest form, no exponent: 0.5, 0.33, 1, 0.
func FormatWeight(w float64) string {
	return strconv.FormatFloat(float64(hundredths(w))/100, 'f', -1, 64)
}

// hundredths rounds a weight to Cloudflare's 0.01 granularity.
func hundredths(w float64) int64 { return int64(math.Round(w * 100)) }

// writeFileAtomic replaces p with data, keeping its mode, through a temporary file in
// the same directory so a crash leaves either the old or the new file.
func writeFileAtomic(p string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(p); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".verdict-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
