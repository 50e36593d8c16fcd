package gitops

import (
	"fmt"
	"path"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// locateHCL finds the entries the Terraform expression names in content. It returns
// the position of the map or list that holds them, for "missing key" messages.
//
// Edits are made by replacing the byte range of each weight literal as hclsyntax reports
// it, rather than by re-rendering the expression through hclwrite: hclwrite exposes an
// attribute's value only as raw tokens, and splicing literals keeps every other byte of
// the file (alignment, comments, quoting, trailing commas) exactly as it was.
func locateHCL(src Source, content []byte) (Position, []entry, error) {
	tr, err := parseTFExpression(src.Terraform.Expression)
	if err != nil {
		return Position{}, nil, &FieldError{Field: "terraform.expression", Msg: err.Error()}
	}
	f, diags := hclsyntax.ParseConfig(content, src.File, hcl.InitialPos)
	if diags.HasErrors() {
		return Position{}, nil, &SourceError{Pos: diagPos(src.File, diags), Summary: "not valid HCL", Detail: diagSummary(diags)}
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return Position{}, nil, &SourceError{Pos: Position{File: src.File}, Summary: "not native HCL syntax"}
	}
	expr := src.Terraform.Expression
	fileStart := Position{File: src.File, Line: 1}
	notFound := func(pos Position, format string, args ...any) error {
		return &SourceError{Pos: pos, Summary: fmt.Sprintf(format, args...), Err: ErrKeyNotFound}
	}
	name, ok := attrName(tr[1])
	if !ok {
		return Position{}, nil, &FieldError{Field: "terraform.expression", Msg: fmt.Sprintf("%q: write %s.NAME, not an index", expr, tr.RootName())}
	}
	var (
		target hclsyntax.Expression
		steps  = tr[2:]
		walked = tr.RootName() + "." + name
	)
	switch tr.RootName() {
	case "local":
		var found []*hclsyntax.Attribute
		for _, b := range body.Blocks {
			if b.Type == "locals" {
				if a, ok := b.Body.Attributes[name]; ok {
					found = append(found, a)
				}
			}
		}
		switch len(found) {
		case 0:
			return Position{}, nil, notFound(fileStart, "no locals block defines %q", name)
		case 1:
			target = found[0].Expr
		default:
			return Position{}, nil, &SourceError{Pos: hclPos(src.File, found[1].SrcRange.Start), Summary: fmt.Sprintf("local %q is defined twice", name), Detail: "also at " + hclPos(src.File, found[0].SrcRange.Start).String()}
		}
	case "var":
		if path.Ext(src.File) == ".tfvars" {
			a, ok := body.Attributes[name]
			if !ok {
				return Position{}, nil, notFound(fileStart, "the tfvars file does not assign %q", name)
			}
			target = a.Expr
			break
		}
		var blk *hclsyntax.Block
		for _, b := range body.Blocks {
			if b.Type == "variable" && len(b.Labels) == 1 && b.Labels[0] == name {
				blk = b
			}
		}
		if blk == nil {
			return Position{}, nil, notFound(fileStart, "no variable %q block (for a value set in a .tfvars file, point file at that file)", name)
		}
		a, ok := blk.Body.Attributes["default"]
		if !ok {
			return Position{}, nil, notFound(hclPos(src.File, blk.DefRange().Start), "variable %q has no default", name)
		}
		target = a.Expr
	default:
		typ := tr.RootName()
		var blk *hclsyntax.Block
		for _, b := range body.Blocks {
			if b.Type == "resource" && len(b.Labels) == 2 && b.Labels[0] == typ && b.Labels[1] == name {
				blk = b
			}
		}
		if blk == nil {
			return Position{}, nil, notFound(fileStart, "no resource %q %q", typ, name)
		}
		arg, ok := attrName(steps[0])
		if !ok {
			return Position{}, nil, &FieldError{Field: "terraform.expression", Msg: fmt.Sprintf("%q: write %s.%s.ARGUMENT", expr, typ, name)}
		}
		steps, walked = steps[1:], walked+"."+arg
		if a, ok := blk.Body.Attributes[arg]; ok {
			target = a.Expr
			break
		}
		var blocks []*hclsyntax.Block
		for _, b := range blk.Body.Blocks {
			if b.Type == arg {
				blocks = append(blocks, b)
			}
		}
		if len(blocks) == 0 {
			return Position{}, nil, notFound(hclPos(src.File, blk.DefRange().Start), "resource %s.%s has no %s argument or blocks", typ, name, arg)
		}
		if len(steps) > 0 {
			return Position{}, nil, &FieldError{Field: "terraform.expression", Msg: fmt.Sprintf("%q: %s are blocks; the expression must end at them", expr, arg)}
		}
		ents, err := blockEntries(src.File, content, blocks)
		return hclPos(src.File, blocks[0].DefRange().Start), ents, err
	}
	for _, step := range steps {
		next, err := hclStep(src.File, target, step, walked)
		if err != nil {
			return Position{}, nil, err
		}
		walked += stepString(step)
		target = next
	}
	pos := hclPos(src.File, target.Range().Start)
	switch t := target.(type) {
	case *hclsyntax.ObjectConsExpr:
		ents := make([]entry, 0, len(t.Items))
		for _, it := range t.Items {
			k, err := hclKey(src.File, it.KeyExpr)
			if err != nil {
				return Position{}, nil, err
			}
			ents = append(ents, hclEntry(src.File, content, k, it.ValueExpr))
		}
		return pos, ents, nil
	case *hclsyntax.TupleConsExpr:
		ents := make([]entry, 0, len(t.Exprs))
		for i, el := range t.Exprs {
			obj, ok := el.(*hclsyntax.ObjectConsExpr)
			if !ok {
				return Position{}, nil, &SourceError{Pos: hclPos(src.File, el.Range().Start), Summary: fmt.Sprintf("%s[%d] is not an object literal", walked, i),
					Detail: "a list of origins must be written as [{ name = \"...\", weight = 0.5 }, ...]", Err: ErrNotLiteral}
			}
			attrs := map[string]hclsyntax.Expression{}
			for _, it := range obj.Items {
				if k, err := hclKey(src.File, it.KeyExpr); err == nil {
					attrs[k] = it.ValueExpr
				}
			}
			e, err := listEntry(src.File, content, fmt.Sprintf("%s[%d]", walked, i), obj.Range(), attrs)
			if err != nil {
				return Position{}, nil, err
			}
			ents = append(ents, e)
		}
		return pos, ents, nil
	}
	return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s is %s, not a map of weights or a list of origins", walked, describeHCL(content, target)),
		Detail: "the expression must end at { key = 0.5, ... } or [{ name = \"...\", weight = 0.5 }, ...]", Err: ErrNotLiteral}
}

// blockEntries reads repeated origins { name = "...", weight = ... } blocks (provider v4).
func blockEntries(file string, content []byte, blocks []*hclsyntax.Block) ([]entry, error) {
	ents := make([]entry, 0, len(blocks))
	for i, b := range blocks {
		attrs := map[string]hclsyntax.Expression{}
		for n, a := range b.Body.Attributes {
			attrs[n] = a.Expr
		}
		e, err := listEntry(file, content, fmt.Sprintf("%s block %d", b.Type, i+1), b.Range(), attrs)
		if err != nil {
			return nil, err
		}
		ents = append(ents, e)
	}
	return ents, nil
}

// listEntry reads one origin object or block: a literal name and a weight.
func listEntry(file string, content []byte, what string, rng hcl.Range, attrs map[string]hclsyntax.Expression) (entry, error) {
	nameExpr, ok := attrs["name"]
	if !ok {
		return entry{}, &SourceError{Pos: hclPos(file, rng.Start), Summary: what + " has no name", Err: ErrKeyNotFound}
	}
	nv, diags := nameExpr.Value(nil)
	if diags.HasErrors() || !nv.IsKnown() || nv.IsNull() || nv.Type() != cty.String {
		return entry{}, &SourceError{Pos: hclPos(file, nameExpr.Range().Start), Summary: what + ": name is not a literal string",
			Detail: "found " + snippet(content, nameExpr.Range()), Err: ErrNotLiteral}
	}
	name := nv.AsString()
	w, ok := attrs["weight"]
	if !ok {
		return entry{key: name, pos: hclPos(file, rng.Start), err: &SourceError{Pos: hclPos(file, rng.Start), Summary: fmt.Sprintf("origin %q has no weight", name),
			Detail: "Cloudflare's default is 1; write weight = 1 so that Verdict can rewrite it", Err: ErrKeyNotFound}}, nil
	}
	return hclEntry(file, content, name, w), nil
}

// hclEntry reads a weight literal. A weight that is not one is recorded as the entry's
// error, so that only keys Verdict uses have to be literal.
func hclEntry(file string, content []byte, key string, e hclsyntax.Expression) entry {
	r := e.Range()
	ent := entry{key: key, pos: hclPos(file, r.Start), start: r.Start.Byte, end: r.End.Byte, literal: snippet(content, r)}
	lit, ok := e.(*hclsyntax.LiteralValueExpr)
	if !ok || lit.Val.IsNull() || lit.Val.Type() != cty.Number {
		ent.err = &SourceError{Pos: ent.pos, Summary: fmt.Sprintf("weight of %q is not a literal number: %s", key, ent.literal),
			Detail: "Verdict reads and rewrites only literal numbers; write the weight as a number here, or point the source of truth at the map that holds the numbers", Err: ErrNotLiteral}
		return ent
	}
	ent.val, _ = lit.Val.AsBigFloat().Float64()
	ent.err = checkRange(ent.pos, key, ent.val)
	return ent
}

func checkRange(pos Position, key string, v float64) error {
	if v < 0 || v > 1 {
		return &SourceError{Pos: pos, Summary: fmt.Sprintf("weight of %q is %v, outside 0..1", key, v), Detail: "Cloudflare pool origin weights are fractions from 0 to 1"}
	}
	return nil
}

// hclStep moves one traversal step into an object or tuple constructor.
func hclStep(file string, e hclsyntax.Expression, step hcl.Traverser, walked string) (hclsyntax.Expression, error) {
	pos := hclPos(file, e.Range().Start)
	var key string
	switch s := step.(type) {
	case hcl.TraverseAttr:
		key = s.Name
	case hcl.TraverseIndex:
		if s.Key.Type() == cty.Number {
			t, ok := e.(*hclsyntax.TupleConsExpr)
			if !ok {
				return nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s is not a list literal, so it has no index %s", walked, s.Key.AsBigFloat().String()), Err: ErrKeyNotFound}
			}
			bf := s.Key.AsBigFloat()
			i, acc := bf.Int64()
			if acc != 0 || i < 0 || int(i) >= len(t.Exprs) {
				return nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s has no element %s (it has %d)", walked, bf.String(), len(t.Exprs)), Err: ErrKeyNotFound}
			}
			return t.Exprs[i], nil
		}
		key = s.Key.AsString()
	}
	obj, ok := e.(*hclsyntax.ObjectConsExpr)
	if !ok {
		return nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s is not an object literal, so it has no key %q", walked, key), Err: ErrNotLiteral}
	}
	var keys []string
	for _, it := range obj.Items {
		k, err := hclKey(file, it.KeyExpr)
		if err != nil {
			continue
		}
		if k == key {
			return it.ValueExpr, nil
		}
		keys = append(keys, k)
	}
	return nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s has no key %q", walked, key), Detail: "keys there: " + strings.Join(orNone(keys), ", "), Err: ErrKeyNotFound}
}

func hclKey(file string, k hclsyntax.Expression) (string, error) {
	v, diags := k.Value(nil)
	if diags.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		return "", &SourceError{Pos: hclPos(file, k.Range().Start), Summary: "object key is not a literal name or string", Err: ErrNotLiteral}
	}
	return v.AsString(), nil
}

func attrName(t hcl.Traverser) (string, bool) {
	switch s := t.(type) {
	case hcl.TraverseAttr:
		return s.Name, true
	case hcl.TraverseIndex:
		if s.Key.Type() == cty.String {
			return s.Key.AsString(), true
		}
	}
	return "", false
}

func stepString(t hcl.Traverser) string {
	switch s := t.(type) {
	case hcl.TraverseAttr:
		return "." + s.Name
	case hcl.TraverseIndex:
		if s.Key.Type() == cty.Number {
			return "[" + s.Key.AsBigFloat().String() + "]"
		}
		return fmt.Sprintf("[%q]", s.Key.AsString())
	}
	return ""
}

func describeHCL(content []byte, e hclsyntax.Expression) string {
	switch e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return "a literal " + snippet(content, e.Range())
	case *hclsyntax.ScopeTraversalExpr, *hclsyntax.RelativeTraversalExpr:
		return "a reference (" + snippet(content, e.Range()) + ")"
	case *hclsyntax.FunctionCallExpr:
		return "a function call"
	case *hclsyntax.ForExpr:
		return "a for expression"
	}
	return "an expression (" + snippet(content, e.Range()) + ")"
}

func snippet(content []byte, r hcl.Range) string {
	if r.Start.Byte < 0 || r.End.Byte > len(content) || r.Start.Byte > r.End.Byte {
		return "?"
	}
	s := string(content[r.Start.Byte:r.End.Byte])
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func hclPos(file string, p hcl.Pos) Position {
	return Position{File: file, Line: p.Line, Column: p.Column}
}

func diagPos(file string, diags hcl.Diagnostics) Position {
	for _, d := range diags {
		if d.Subject != nil {
			return hclPos(file, d.Subject.Start)
		}
	}
	return Position{File: file}
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"(none)"}
	}
	return s
}
