package gitops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// pathStep is one step of a values key path: a mapping key or a list index.
type pathStep struct {
	key   string
	index int // -1 for a key step
}

func (s pathStep) String() string {
	if s.index >= 0 {
		return "[" + strconv.Itoa(s.index) + "]"
	}
	if strings.ContainsAny(s.key, ".[]\"") || s.key == "" {
		return "[" + strconv.Quote(s.key) + "]"
	}
	return "." + s.key
}

// parseKeyPath parses cloudflare.pools.use1.weights, a["b.c"].d and origins[0].
func parseKeyPath(p string) ([]pathStep, error) {
	var steps []pathStep
	i := 0
	for i < len(p) {
		switch p[i] {
		case '.':
			if i == 0 || i == len(p)-1 || p[i+1] == '.' || p[i+1] == '[' {
				return nil, fmt.Errorf("%q: empty key at offset %d", p, i)
			}
			i++
		case '[':
			end := strings.IndexByte(p[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("%q: unclosed [", p)
			}
			inner := p[i+1 : i+end]
			if strings.HasPrefix(inner, `"`) {
				// A quoted key may itself contain ]; find the closing quote.
				k, rest, err := unquotePrefix(p[i+1:])
				if err != nil || !strings.HasPrefix(rest, "]") {
					return nil, fmt.Errorf("%q: bad quoted key at offset %d", p, i)
				}
				steps = append(steps, pathStep{key: k, index: -1})
				i = len(p) - len(rest) + 1
				continue
			}
			n, err := strconv.Atoi(inner)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%q: [%s] is neither a list index nor a quoted key", p, inner)
			}
			steps = append(steps, pathStep{index: n})
			i += end + 1
		default:
			j := i
			for j < len(p) && p[j] != '.' && p[j] != '[' {
				j++
			}
			steps = append(steps, pathStep{key: p[i:j], index: -1})
			i = j
		}
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("empty key path")
	}
	return steps, nil
}

func unquotePrefix(s string) (string, string, error) {
	for j := 1; j < len(s); j++ {
		if s[j] == '\\' {
			j++
			continue
		}
		if s[j] == '"' {
			k, err := strconv.Unquote(s[:j+1])
			return k, s[j+1:], err
		}
	}
	return "", "", fmt.Errorf("unterminated quote")
}

// locateValues finds the entries the key path names in a YAML or JSON document. Edits
// replace the weight scalars' bytes in place (found from the parser's line and column),
// so comments, blank lines, quoting, key order and indentation stay as they were;
// re-encoding the yaml.Node tree would lose blank lines and re-indent the file.
func locateValues(src Source, content []byte) (Position, []entry, error) {
	steps, err := parseKeyPath(src.Values.Path)
	if err != nil {
		return Position{}, nil, &FieldError{Field: "values.path", Msg: err.Error()}
	}
	file := src.File
	if src.format() == "json" && !json.Valid(content) {
		var v any
		err := json.Unmarshal(content, &v)
		pos := Position{File: file}
		if se, ok := err.(*json.SyntaxError); ok {
			pos = offsetPos(file, content, int(se.Offset))
		}
		return Position{}, nil, &SourceError{Pos: pos, Summary: "not valid JSON", Detail: fmt.Sprint(err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		return Position{}, nil, &SourceError{Pos: Position{File: file}, Summary: "not valid YAML", Detail: err.Error()}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return Position{}, nil, &SourceError{Pos: Position{File: file, Line: 1}, Summary: "the file is empty", Err: ErrKeyNotFound}
	}
	n := doc.Content[0]
	walked := ""
	for _, st := range steps {
		pos := yamlPos(file, n)
		if n.Kind == yaml.AliasNode {
			return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s is a YAML alias", strings.TrimPrefix(walked, ".")),
				Detail: "editing it would change every place that uses the anchor; point the path at the anchored value", Err: ErrNotLiteral}
		}
		name := strings.TrimPrefix(walked+st.String(), ".")
		if st.index >= 0 {
			if n.Kind != yaml.SequenceNode {
				return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s: not a list", name), Err: ErrKeyNotFound}
			}
			if st.index >= len(n.Content) {
				return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s: the list has %d items", name, len(n.Content)), Err: ErrKeyNotFound}
			}
			n = n.Content[st.index]
		} else {
			if n.Kind != yaml.MappingNode {
				return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s: %s is not a mapping", name, orRoot(walked)), Err: ErrKeyNotFound}
			}
			v := mappingValue(n, st.key)
			if v == nil {
				return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s has no key %q", orRoot(walked), st.key),
					Detail: "keys there: " + strings.Join(orNone(mappingKeys(n)), ", "), Err: ErrKeyNotFound}
			}
			n = v
		}
		walked += st.String()
	}
	walked = strings.TrimPrefix(walked, ".")
	pos := yamlPos(file, n)
	switch n.Kind {
	case yaml.MappingNode:
		var ents []entry
		for i := 0; i+1 < len(n.Content); i += 2 {
			ents = append(ents, yamlEntry(file, content, n.Content[i].Value, n.Content[i+1]))
		}
		return pos, ents, nil
	case yaml.SequenceNode:
		var ents []entry
		for i, item := range n.Content {
			what := fmt.Sprintf("%s[%d]", walked, i)
			if item.Kind != yaml.MappingNode {
				return Position{}, nil, &SourceError{Pos: yamlPos(file, item), Summary: what + " is not a mapping",
					Detail: "a list of origins must hold mappings with name and weight", Err: ErrNotLiteral}
			}
			nameNode := mappingValue(item, "name")
			if nameNode == nil || nameNode.Kind != yaml.ScalarNode || nameNode.ShortTag() != "!!str" {
				return Position{}, nil, &SourceError{Pos: yamlPos(file, item), Summary: what + " has no string name", Err: ErrKeyNotFound}
			}
			w := mappingValue(item, "weight")
			if w == nil {
				ents = append(ents, entry{key: nameNode.Value, pos: yamlPos(file, item), err: &SourceError{Pos: yamlPos(file, item),
					Summary: fmt.Sprintf("origin %q has no weight", nameNode.Value), Detail: "write weight: 1 so that Verdict can rewrite it", Err: ErrKeyNotFound}})
				continue
			}
			ents = append(ents, yamlEntry(file, content, nameNode.Value, w))
		}
		return pos, ents, nil
	}
	return Position{}, nil, &SourceError{Pos: pos, Summary: fmt.Sprintf("%s is a single value, not a map of weights or a list of origins", walked), Err: ErrNotLiteral}
}

func orRoot(walked string) string {
	if walked == "" {
		return "the document"
	}
	return strings.TrimPrefix(walked, ".")
}

func yamlEntry(file string, content []byte, key string, n *yaml.Node) entry {
	ent := entry{key: key, pos: yamlPos(file, n), start: -1}
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || n.Style != 0 {
		what := n.Value
		switch {
		case n.Kind == yaml.AliasNode:
			what = "an alias (*" + n.Value + ")"
		case n.Kind != yaml.ScalarNode:
			what = "a mapping or list"
		case tag == "!!str":
			what = strconv.Quote(n.Value) + ", a string"
		case n.Style != 0:
			what = n.Value + " with an explicit tag or quoting"
		}
		ent.err = &SourceError{Pos: ent.pos, Summary: fmt.Sprintf("weight of %q is not a plain number: %s", key, what),
			Detail: "Verdict reads and rewrites only plain numbers (weight: 0.5)", Err: ErrNotLiteral}
		return ent
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil {
		ent.err = &SourceError{Pos: ent.pos, Summary: fmt.Sprintf("weight of %q is not a decimal number: %s", key, n.Value), Err: ErrNotLiteral}
		return ent
	}
	ent.val, ent.literal = v, n.Value
	off := lineColOffset(content, n.Line, n.Column)
	if off < 0 || !bytes.HasPrefix(content[off:], []byte(n.Value)) {
		ent.err = &SourceError{Pos: ent.pos, Summary: fmt.Sprintf("cannot find the text of the weight of %q", key), Err: ErrNotLiteral}
		return ent
	}
	ent.start, ent.end = off, off+len(n.Value)
	ent.err = checkRange(ent.pos, key, v)
	return ent
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func mappingKeys(n *yaml.Node) []string {
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, n.Content[i].Value)
	}
	return out
}

func yamlPos(file string, n *yaml.Node) Position {
	return Position{File: file, Line: n.Line, Column: n.Column}
}

// lineColOffset turns the YAML parser's 1-based line and character column into a byte
// offset, or -1.
func lineColOffset(content []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(content[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	for c := 1; c < col; c++ {
		if off >= len(content) || content[off] == '\n' {
			return -1
		}
		_, size := utf8.DecodeRune(content[off:])
		off += size
	}
	return off
}

func offsetPos(file string, content []byte, off int) Position {
	if off > len(content) {
		off = len(content)
	}
	line := 1 + bytes.Count(content[:off], []byte("\n"))
	return Position{File: file, Line: line}
}
