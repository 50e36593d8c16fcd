package experiments

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder turns a YAML node tree into spec types strictly: every unknown key, wrong type
// and unset ${VAR} becomes a FieldError at the node's line and column. It never stops at the
// first problem, so one run shows them all.
type decoder struct {
	file      string
	lookupEnv func(string) (string, bool)
	errs      ErrorList
	positions map[string]Pos
	// nulls are the paths written with an empty value (key: with nothing after it), which
	// mean "not set".
	nulls map[string]bool
	// visited and active bound the work aliases can cause: a recursive alias or a
	// "billion laughs" document must end in an error, not a hang.
	visited int
	active  map[*yaml.Node]bool
}

// maxNodes is far above any real experiment file.
const maxNodes = 50000

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Column: n.Column} }

func (d *decoder) errorf(n *yaml.Node, path, format string, a ...any) {
	d.errs = append(d.errs, &FieldError{Pos: d.pos(n), Path: path, Msg: fmt.Sprintf(format, a...)})
}

var (
	scalarDecoderType = reflect.TypeFor[scalarDecoder]()
	timeType          = reflect.TypeFor[time.Time]()
)

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

// decode fills v (addressable) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.errorf(n, path, "unresolved alias")
			return
		}
		if d.active[n.Alias] {
			d.errorf(n, path, "alias *%s refers to itself", n.Value)
			return
		}
		n = n.Alias
	}
	if d.visited++; d.visited > maxNodes {
		if d.visited == maxNodes+1 {
			d.errorf(n, path, "document expands to more than %d values (aliases?); not an experiment file", maxNodes)
		}
		return
	}
	if d.active == nil {
		d.active = map[*yaml.Node]bool{}
	}
	d.active[n] = true
	defer delete(d.active, n)
	if path != "" {
		d.positions[path] = d.pos(n)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		if d.nulls != nil {
			d.nulls[path] = true
		}
		return // an empty value means "not set": defaults apply
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if v.Type() == timeType {
		s, ok := d.scalar(n, path, "a time")
		if !ok {
			return
		}
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
		if err != nil {
			d.errorf(n, path, "%q is not an RFC 3339 time like 2026-12-05T09:30:00Z", s)
			return
		}
		v.Set(reflect.ValueOf(t))
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(scalarDecoderType) {
		s, ok := d.scalar(n, path, "a value")
		if !ok {
			return
		}
		if err := v.Addr().Interface().(scalarDecoder).decodeScalar(s); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			d.errorf(n, path, "want true or false, got %q", s)
			return
		}
		v.SetBool(b)
	case reflect.Int:
		s, ok := d.scalar(n, path, "a whole number")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			d.errorf(n, path, "want a whole number, got %q", s)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		s, ok := d.scalar(n, path, "a number")
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			d.errorf(n, path, "want a number, got %q", s)
			return
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("experiments: no decoder for %s", v.Type()))
	}
}

// scalar returns n's value with ${VAR} references expanded.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want %s, got %s", want, kindName(n))
		return "", false
	}
	return d.expand(n, path, n.Value)
}

var envRef = regexp.MustCompile(`\$\$|\$\{([^}]*)\}`)

// expand replaces ${VAR} and ${VAR:-default} with the environment's values; $$ is a
// literal $. Expansion happens per scalar, after parsing, so a value can never inject YAML.
func (d *decoder) expand(n *yaml.Node, path, s string) (string, bool) {
	if !strings.Contains(s, "$") {
		return s, true
	}
	ok := true
	out := envRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		ref := m[2 : len(m)-1]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			d.errorf(n, path, "%q is not a valid environment variable reference", m)
			ok = false
			return ""
		}
		if val, set := d.lookupEnv(name); set && val != "" {
			return val
		}
		if hasDef {
			return def
		}
		d.errorf(n, path, "environment variable %s is not set (write ${%s:-default} for a default)", name, name)
		ok = false
		return ""
	})
	return out, ok
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// fieldsOf returns the YAML keys of a struct type and their field indexes.
func fieldsOf(t reflect.Type) ([]string, map[string]int) {
	var names []string
	idx := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		names = append(names, tag)
		idx[tag] = i
	}
	return names, idx
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", kindName(n))
		return
	}
	names, idx := fieldsOf(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		sub := key
		if path != "" {
			sub = path + "." + key
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain names, got %s", kindName(k))
			continue
		}
		if key == "<<" {
			d.errorf(k, path, "YAML merge keys (<<) are not supported; write the fields out")
			continue
		}
		if seen[key] {
			d.errorf(k, sub, "set more than once")
			continue
		}
		seen[key] = true
		fi, ok := idx[key]
		if !ok {
			msg := fmt.Sprintf("unknown field %q", key)
			if s := didYouMean(key, names); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else {
				msg += fmt.Sprintf(" (known: %s)", strings.Join(names, ", "))
			}
			d.errorf(k, sub, "%s", msg)
			continue
		}
		d.positions[sub] = d.pos(k)
		d.decode(val, v.Field(fi), sub)
		// The key's position is more useful than the value's for "this field" errors.
		d.positions[sub] = d.pos(k)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("experiments: map keys must be strings")
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain names, got %s", kindName(k))
			continue
		}
		sub := path + "." + k.Value
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.errorf(k, sub, "set more than once")
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, e, sub)
		d.positions[sub] = d.pos(k)
		m.SetMapIndex(reflect.ValueOf(k.Value), e)
	}
	v.Set(m)
}

// osLookupEnv is the default environment.
var osLookupEnv = os.LookupEnv
