package experiments

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// LoadOptions changes how files are read.
type LoadOptions struct {
	// LookupEnv resolves ${VAR} references; nil means the process environment.
	LookupEnv func(string) (string, bool)
	// SkipValidation returns decoded experiments with defaults but without validating them.
	SkipValidation bool
}

// MaxFileSize bounds what LoadFile and ReadFile read: experiment files are small, and a
// mistaken path to a huge file should fail fast rather than fill memory.
const MaxFileSize = 4 << 20

// LoadFile reads every experiment in the named file (YAML documents separated by ---),
// applies defaults and validates them. Any problem comes back as an ErrorList whose entries
// name the file, line, column and field.
func LoadFile(path string, opts LoadOptions) ([]*Experiment, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Load(path, data, opts)
}

// ReadFile reads an experiment file as LoadFile does, never more than MaxFileSize bytes (a
// larger file is refused from its size before any of it is read). Its errors are the
// ErrorList LoadFile (and so verdict validate) gives, so every reader of experiment files
// says the same thing about the same file.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: "cannot read experiment file: " + msg}}
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: "is a directory, not an experiment file"}}
	} else if err == nil && st.Size() > MaxFileSize {
		return nil, tooLarge(path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: "cannot read experiment file: " + err.Error()}}
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path) // grew since the stat
	}
	return data, nil
}

func tooLarge(path string) ErrorList {
	return ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("file is larger than %d MiB; not an experiment file", MaxFileSize>>20)}}
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// Load is LoadFile on bytes already read; name is used in error positions.
func Load(name string, data []byte, opts LoadOptions) ([]*Experiment, error) {
	return loadDocuments(name, data, opts, "experiment", func(n *yaml.Node, d *decoder, mapping bool) *Experiment {
		e := &Experiment{Source: Pos{File: name, Line: n.Line, Column: n.Column}}
		if mapping {
			d.decode(n, reflect.ValueOf(e).Elem(), "")
		}
		e.positions, e.nulls = d.positions, d.nulls
		if sot := e.Spec.Traffic.SourceOfTruth; sot != nil {
			sot.Dir = absDir(name)
		}
		return e
	}, func(e *Experiment) string { return e.Metadata.Name })
}

// loadDocuments reads every YAML document of a file as one T (an experiment or a drill;
// what names it in messages): decodeOne decodes a document's root node, and every document
// gets the same checks after it (defaults and validation without follow-on errors), as
// does the file (a syntax error stops it, cut short after a key, empty, a name twice).
func loadDocuments[T document](name string, data []byte, opts LoadOptions, what string, decodeOne func(n *yaml.Node, d *decoder, mapping bool) T, nameOf func(T) string) ([]T, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = osLookupEnv
	}
	if err := checkText(name, data); err != nil {
		return nil, ErrorList{err}
	}
	var (
		docs []T
		errs ErrorList
		last *yaml.Node // the last document's root
	)
	article := "a"
	if strings.ContainsRune("aeiou", rune(what[0])) {
		article = "an"
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, syntaxError(name, err))
			break // the parser cannot resynchronise after a syntax error
		}
		n := &root
		if n.Kind == yaml.DocumentNode {
			if len(n.Content) == 0 {
				continue
			}
			n = n.Content[0]
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			continue // an empty document, e.g. a trailing ---
		}
		d := &decoder{file: name, lookupEnv: opts.LookupEnv, positions: map[string]Pos{}, nulls: map[string]bool{}}
		mapping := n.Kind == yaml.MappingNode
		if !mapping {
			d.errorf(n, "", "%s %s document must be a mapping with apiVersion, kind, metadata and spec; got %s", article, what, kindName(n))
		}
		doc := decodeOne(n, d, mapping)
		errs = append(errs, d.errs...)
		if mapping {
			errs = append(errs, checkDocument(doc, d.errs, opts.SkipValidation)...)
		}
		docs = append(docs, doc)
		last = n
	}
	if fe := truncated(name, data, last); fe != nil && !syntaxFailed(errs) {
		errs = append(errs, fe)
	}
	if len(docs) == 0 && len(errs) == 0 {
		errs = append(errs, &FieldError{Pos: Pos{File: name, Line: 1, Column: 1}, Msg: fmt.Sprintf("no %s in file (it is empty)", what)})
	}
	if len(docs) > 1 && len(errs) == 0 {
		seen := map[string]bool{}
		for _, doc := range docs {
			n := nameOf(doc)
			if seen[n] {
				errs = append(errs, &FieldError{Pos: doc.Pos("metadata.name"), Path: "metadata.name", Msg: fmt.Sprintf("%s %q is defined more than once in this file", what, n)})
			}
			seen[n] = true
		}
	}
	if err := errs.Err(); err != nil {
		return docs, err
	}
	return docs, nil
}

// absDir is the absolute directory of the experiment file name, against which a source of
// truth's relative paths resolve.
func absDir(name string) string {
	d, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return filepath.Dir(name)
	}
	return d
}

// truncated reports a file that ends with a key and no value (`prePeriod:` and nothing
// after it): an empty value means "use the default" anywhere else, but at the very end of
// the file it is far more likely a file cut short by a failed copy or a bad merge.
func truncated(name string, data []byte, root *yaml.Node) *FieldError {
	if root == nil || root.Kind != yaml.MappingNode {
		return nil
	}
	path := ""
	n := root
	for {
		var key, val *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			if len(n.Content) < 2 {
				return nil
			}
			key, val = n.Content[len(n.Content)-2], n.Content[len(n.Content)-1]
			if path != "" {
				path += "."
			}
			path += key.Value
		case yaml.SequenceNode:
			if len(n.Content) == 0 {
				return nil
			}
			val = n.Content[len(n.Content)-1]
			path += fmt.Sprintf("[%d]", len(n.Content)-1)
		default:
			return nil
		}
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" && val.Value == "" && key != nil {
			if !onlyCommentsAfter(data, key.Line) {
				return nil
			}
			return &FieldError{Pos: Pos{File: name, Line: key.Line, Column: key.Column}, Path: path,
				Msg: "has no value and the file ends here: is the file cut short? Write the value, or remove the key to take the default"}
		}
		if val.Kind != yaml.MappingNode && val.Kind != yaml.SequenceNode {
			return nil
		}
		n = val
	}
}

// onlyCommentsAfter reports whether nothing but blank lines, comments and document markers
// follows line (1-based) in data.
func onlyCommentsAfter(data []byte, line int) bool {
	lines := strings.Split(string(data), "\n")
	for i := line; i < len(lines); i++ {
		t := strings.TrimSpace(lines[i])
		if t != "" && !strings.HasPrefix(t, "#") && t != "---" && t != "..." {
			return false
		}
	}
	return true
}

func syntaxFailed(errs ErrorList) bool {
	for _, e := range errs {
		if strings.Contains(e.Msg, "syntax") || e.Path == "" {
			return true
		}
	}
	return false
}

// checkText refuses binary files before the YAML parser sees them: its messages for
// garbage are confusing, and a NUL byte almost always means the wrong file.
func checkText(name string, data []byte) *FieldError {
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return &FieldError{Pos: Pos{File: name, Line: line, Column: col}, Msg: fmt.Sprintf("not a text file: invalid UTF-8 at byte %d", i)}
		case r == 0 || (r < 0x20 && r != '\n' && r != '\r' && r != '\t'):
			return &FieldError{Pos: Pos{File: name, Line: line, Column: col}, Msg: fmt.Sprintf("not a text file: control character %#02x at byte %d", r, i)}
		case r == '\n':
			line, col = line+1, 1
		default:
			col++
		}
		i += size
	}
	return nil
}

func syntaxError(name string, err error) *FieldError {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if m[1] != "" {
			line, _ = strconv.Atoi(m[1])
		}
		msg = m[2]
	}
	if line > 0 && isParserError(msg) {
		line++
	}
	if line == 0 {
		line = 1
	}
	return &FieldError{Pos: Pos{File: name, Line: line, Column: 1}, Msg: "invalid YAML: " + msg}
}

// parserErrorPrefixes are the messages of go.yaml.in/yaml/v3's parser (not its scanner).
// For those it reports a 0-based line, one above where the problem is.
var parserErrorPrefixes = []string{
	"did not find expected <", "did not find expected node content", "did not find expected key",
	"did not find expected '-' indicator", "did not find expected ',' or",
	"found undefined tag handle", "found duplicate %", "found incompatible YAML",
}

func isParserError(msg string) bool {
	for _, p := range parserErrorPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// document is a decoded experiment or drill.
type document interface {
	Pos(path string) Pos
	checkExplicitZeros() ErrorList
	SetDefaults()
	Validate() ErrorList
}

// checkDocument applies doc's defaults and validates it, even after decoding errors so
// that one run shows every problem; a field the decoder could not decode (in decodeErrs)
// is reported once, by the decoder.
func checkDocument(doc document, decodeErrs ErrorList, skipValidation bool) ErrorList {
	bad := map[string]bool{}
	for _, fe := range decodeErrs {
		bad[fe.Path] = true
	}
	more := doc.checkExplicitZeros()
	doc.SetDefaults()
	if !skipValidation {
		more = append(more, doc.Validate()...)
	}
	var out ErrorList
	for _, fe := range more {
		if !bad[fe.Path] {
			out = append(out, fe)
		}
	}
	return out
}
