package gitops

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func tf(file, expr string) Source {
	return Source{Dir: "testdata", File: file, Terraform: &TerraformRef{Expression: expr}}
}

func vals(file, p string) Source {
	return Source{Dir: "testdata", File: file, Values: &ValuesRef{Path: p}}
}

func TestReadGood(t *testing.T) {
	tests := map[string]struct {
		src      Source
		want     map[string]float64
		line     map[string]int // origin -> line of its weight
		unmapped []string
	}{
		"locals map": {
			src:  tf("good/locals.tf", "local.traffic_split.use1"),
			want: map[string]float64{"squirtle": 0.33, "snorlax": 0.33, "staryu": 0.34},
			line: map[string]int{"squirtle": 6, "snorlax": 7, "staryu": 8},
		},
		"locals one-line object, key mapping": {
			src:      Source{Dir: "testdata", File: "good/locals.tf", Terraform: &TerraformRef{Expression: `local.traffic_split["euw1"]`}, Keys: map[string]string{"squirtle-euw1": "squirtle"}},
			want:     map[string]float64{"squirtle-euw1": 0.5},
			line:     map[string]int{"squirtle-euw1": 10},
			unmapped: []string{"snorlax"},
		},
		"provider v5 origins list": {
			src:  tf("good/v5_origins.tf", "cloudflare_load_balancer_pool.use1.origins"),
			want: map[string]float64{"squirtle": 0.33, "snorlax": 0.33, "staryu": 0.34},
			line: map[string]int{"snorlax": 10, "squirtle": 16, "staryu": 18},
		},
		"provider v4 origins blocks": {
			src:  tf("good/v4_blocks.tf", "cloudflare_load_balancer_pool.use1.origins"),
			want: map[string]float64{"squirtle": 0.5, "snorlax": 0.5},
			line: map[string]int{"squirtle": 8, "snorlax": 13},
		},
		"variable default, quoted key": {
			src:  tf("good/variable.tf", `var.traffic_split["us-east-1"]`),
			want: map[string]float64{"squirtle": 0.25, "snorlax": 0.75},
			line: map[string]int{"squirtle": 6},
		},
		"tfvars": {
			src:  tf("good/prod.tfvars", "var.traffic_split.use1"),
			want: map[string]float64{"squirtle": 1, "snorlax": 0},
			line: map[string]int{"snorlax": 6},
		},
		"yaml values": {
			src:  vals("good/values.yaml", "cloudflare.pools.use1.weights"),
			want: map[string]float64{"squirtle": 0.33, "snorlax": 0.33, "staryu": 0.34},
			line: map[string]int{"squirtle": 9, "staryu": 12},
		},
		"yaml flow mapping": {
			src:  vals("good/values.yaml", "cloudflare.pools.euw1.weights"),
			want: map[string]float64{"squirtle": 0.5, "snorlax": 0.5},
			line: map[string]int{"snorlax": 14},
		},
		"yaml origins list (Crossplane)": {
			src:  vals("good/origins.yaml", "spec.forProvider.origins"),
			want: map[string]float64{"squirtle": 0.67, "snorlax": 0.33},
			line: map[string]int{"squirtle": 13},
		},
		"json with tabs": {
			src:  vals("good/values.json", "cloudflare.pools.use1.weights"),
			want: map[string]float64{"squirtle": 0.33, "snorlax": 0.33, "staryu": 0.34},
			line: map[string]int{"staryu": 8},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := Read(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if !sameWeights(d.Weights, tc.want) {
				t.Errorf("weights = %v, want %v", d.Weights, tc.want)
			}
			for o, l := range tc.line {
				if got := d.Positions[o]; got.Line != l || got.File != tc.src.File {
					t.Errorf("position of %s = %v, want %s:%d", o, got, tc.src.File, l)
				}
			}
			if strings.Join(d.Unmapped, ",") != strings.Join(tc.unmapped, ",") {
				t.Errorf("unmapped = %v, want %v", d.Unmapped, tc.unmapped)
			}
		})
	}
}

func TestReadBad(t *testing.T) {
	tests := map[string]struct {
		src     Source
		wantErr string // every line of it must appear
		is      error
	}{
		"reference": {
			src:     tf("bad/reference.tf", "local.traffic_split.use1"),
			wantErr: `bad/reference.tf:5: weight of "snorlax" is not a literal number: var.snorlax_weight`,
			is:      ErrNotLiteral,
		},
		"reference not mapped is fine to skip": {
			src:     Source{Dir: "testdata", File: "bad/reference.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}, Keys: map[string]string{"a": "squirtle", "b": "nope"}},
			wantErr: `bad/reference.tf:3: local.traffic_split.use1 has no key "nope" (origin "b"): keys there: snorlax, squirtle, staryu`,
			is:      ErrKeyNotFound,
		},
		"function": {
			src:     tf("bad/function.tf", "local.traffic_split.use1"),
			wantErr: "bad/function.tf:3: local.traffic_split.use1 is a function call, not a map of weights",
			is:      ErrNotLiteral,
		},
		"function, walking into it": {
			src:     tf("bad/function.tf", "local.traffic_split.use1.snorlax"),
			wantErr: `bad/function.tf:3: local.traffic_split.use1 is not an object literal, so it has no key "snorlax"`,
			is:      ErrNotLiteral,
		},
		"missing region": {
			src:     tf("bad/missing.tf", "local.traffic_split.euw1"),
			wantErr: `bad/missing.tf:2: local.traffic_split has no key "euw1": keys there: use1`,
			is:      ErrKeyNotFound,
		},
		"missing local": {
			src:     tf("bad/missing.tf", "local.split.use1"),
			wantErr: `bad/missing.tf:1: no locals block defines "split"`,
			is:      ErrKeyNotFound,
		},
		"missing mapped origin": {
			src:     Source{Dir: "testdata", File: "bad/missing.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}, Keys: map[string]string{"o1": "squirtle", "o3": "staryu"}},
			wantErr: `bad/missing.tf:3: local.traffic_split.use1 has no key "staryu" (origin "o3")`,
			is:      ErrKeyNotFound,
		},
		"invalid hcl": {
			src:     tf("bad/invalid.tf", "local.traffic_split.use1"),
			wantErr: "bad/invalid.tf:5: not valid HCL",
		},
		"out of range": {
			src:     tf("bad/range.tf", "local.traffic_split.use1"),
			wantErr: `bad/range.tf:2: weight of "squirtle" is 1.5, outside 0..1`,
		},
		"no weight in v5 list": {
			src:     tf("bad/noweight.tf", "cloudflare_load_balancer_pool.use1.origins"),
			wantErr: `bad/noweight.tf:3: origin "squirtle" has no weight: Cloudflare's default is 1`,
			is:      ErrKeyNotFound,
		},
		"missing resource": {
			src:     tf("bad/noweight.tf", "cloudflare_load_balancer_pool.euw1.origins"),
			wantErr: `bad/noweight.tf:1: no resource "cloudflare_load_balancer_pool" "euw1"`,
			is:      ErrKeyNotFound,
		},
		"missing variable": {
			src:     tf("good/variable.tf", "var.split"),
			wantErr: `good/variable.tf:1: no variable "split" block`,
			is:      ErrKeyNotFound,
		},
		"yaml string weight": {
			src:     vals("bad/string.yaml", "weights"),
			wantErr: `bad/string.yaml:2: weight of "squirtle" is not a plain number: "0.5", a string`,
			is:      ErrNotLiteral,
		},
		"yaml alias": {
			src:     vals("bad/alias.yaml", "pools.use1"),
			wantErr: "bad/alias.yaml:5: pools.use1 is a single value",
		},
		"yaml missing key": {
			src:     vals("good/values.yaml", "cloudflare.pools.apse1.weights"),
			wantErr: `good/values.yaml:6: cloudflare.pools has no key "apse1": keys there: use1, euw1`,
			is:      ErrKeyNotFound,
		},
		"json trailing comma": {
			src:     vals("bad/trailing.json", "weights"),
			wantErr: "bad/trailing.json:1: not valid JSON",
		},
		"no file": {
			src:     tf("good/nope.tf", "local.x"),
			wantErr: "read source of truth good/nope.tf",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Read(tc.src)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		src     Source
		wantErr []string
	}{
		"ok":           {src: tf("a.tf", "local.x.y")},
		"none":         {src: Source{File: "a.tf"}, wantErr: []string{"sourceOfTruth: set either terraform or values"}},
		"both":         {src: Source{File: "a.tf", Terraform: &TerraformRef{Expression: "local.x"}, Values: &ValuesRef{Path: "a"}}, wantErr: []string{"only one"}},
		"escape":       {src: tf("../a.tf", "local.x"), wantErr: []string{`file: "../a.tf" must be a relative path`}},
		"absolute":     {src: tf("/etc/a.tf", "local.x"), wantErr: []string{"must be a relative path"}},
		"extension":    {src: tf("a.tf.json", "local.x"), wantErr: []string{"use values with format json"}},
		"bad expr":     {src: tf("a.tf", "local."), wantErr: []string{"terraform.expression: \"local.\" is not a Terraform reference"}},
		"short local":  {src: tf("a.tf", "local"), wantErr: []string{"names no local value"}},
		"short res":    {src: tf("a.tf", "cloudflare_load_balancer_pool.x"), wantErr: []string{"TYPE.NAME.ATTRIBUTE"}},
		"bad path":     {src: vals("a.yaml", "a..b"), wantErr: []string{"values.path"}},
		"bad format":   {src: Source{File: "a.yaml", Values: &ValuesRef{Path: "a", Format: "toml"}}, wantErr: []string{"values.format"}},
		"shared key":   {src: Source{File: "a.yaml", Values: &ValuesRef{Path: "a"}, Keys: map[string]string{"o1": "k", "o2": "k"}}, wantErr: []string{`keys.o2: key "k" is already the key of origin "o1"`}},
		"many at once": {src: Source{Values: &ValuesRef{}}, wantErr: []string{"file: required", "values.path: required"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.src.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestKeyPath(t *testing.T) {
	got, err := parseKeyPath(`a.b["c.d"][2].e`)
	if err != nil {
		t.Fatal(err)
	}
	var s string
	for _, st := range got {
		s += st.String()
	}
	if s != `.a.b["c.d"][2].e` {
		t.Errorf("steps = %s", s)
	}
	for _, bad := range []string{"", ".a", "a.", "a[", "a[x]", `a["x]`} {
		if _, err := parseKeyPath(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestKeysFromClusters(t *testing.T) {
	got, err := KeysFromClusters(map[string]string{"use1-blue": "squirtle"}, map[string]string{"use1-blue": "o-blue", "use1-green": "o-green"})
	if err != nil {
		t.Fatal(err)
	}
	if got["o-blue"] != "squirtle" || got["o-green"] != "use1-green" || len(got) != 2 {
		t.Errorf("keys = %v", got)
	}
	if _, err := KeysFromClusters(map[string]string{"ghost": "x"}, map[string]string{}); err == nil || !strings.Contains(err.Error(), `cluster "ghost" has no pool origin`) {
		t.Errorf("err = %v", err)
	}
}

// TestEditGolden rewrites each good fixture and compares it with a golden file. Only
// the changed weights' lines may differ from the original.
func TestEditGolden(t *testing.T) {
	tests := map[string]struct {
		src  Source
		set  map[string]float64
		nChg int // lines expected to differ
	}{
		"locals.tf":     {tf("good/locals.tf", "local.traffic_split.use1"), map[string]float64{"snorlax": 0.5, "staryu": 0.17, "squirtle": 0.33}, 2},
		"locals_euw1":   {tf("good/locals.tf", "local.traffic_split.euw1"), map[string]float64{"snorlax": 0.25, "squirtle": 0.75}, 1},
		"v5_origins.tf": {tf("good/v5_origins.tf", "cloudflare_load_balancer_pool.use1.origins"), map[string]float64{"snorlax": 0.5, "staryu": 0.17}, 2},
		"v4_blocks.tf":  {tf("good/v4_blocks.tf", "cloudflare_load_balancer_pool.use1.origins"), map[string]float64{"snorlax": 1, "squirtle": 0}, 2},
		"variable.tf":   {tf("good/variable.tf", `var.traffic_split["us-east-1"]`), map[string]float64{"snorlax": 0.5, "squirtle": 0.5000000001}, 2},
		"prod.tfvars":   {tf("good/prod.tfvars", "var.traffic_split.use1"), map[string]float64{"snorlax": 0.01, "squirtle": 0.99}, 2},
		"values.yaml":   {vals("good/values.yaml", "cloudflare.pools.use1.weights"), map[string]float64{"snorlax": 0.5, "staryu": 0.17}, 2},
		"values_flow":   {vals("good/values.yaml", "cloudflare.pools.euw1.weights"), map[string]float64{"snorlax": 0.1}, 1},
		"origins.yaml":  {vals("good/origins.yaml", "spec.forProvider.origins"), map[string]float64{"snorlax": 0.6, "squirtle": 0.4}, 2},
		"values.json":   {vals("good/values.json", "cloudflare.pools.use1.weights"), map[string]float64{"staryu": 0.2, "snorlax": 0.47}, 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(tc.src.Path())
			if err != nil {
				t.Fatal(err)
			}
			out, err := Edit(tc.src, orig, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", name+".golden")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("edited file differs from %s:\n%s", golden, out)
			}
			ol, nl := strings.Split(string(orig), "\n"), strings.Split(string(out), "\n")
			if len(ol) != len(nl) {
				t.Fatalf("line count changed: %d -> %d", len(ol), len(nl))
			}
			diff := 0
			for i := range ol {
				if ol[i] != nl[i] {
					diff++
				}
			}
			if diff != tc.nChg {
				t.Errorf("%d lines changed, want %d", diff, tc.nChg)
			}
			d, err := Parse(tc.src, out)
			if err != nil {
				t.Fatal(err)
			}
			for o, w := range tc.set {
				if hundredths(d.Weights[o]) != hundredths(w) {
					t.Errorf("%s reads back %v, want %v", o, d.Weights[o], w)
				}
			}
			// Editing again to the same weights changes nothing.
			again, err := Edit(tc.src, out, tc.set)
			if err != nil || !bytes.Equal(again, out) {
				t.Errorf("second edit changed the file (err %v)", err)
			}
		})
	}
}

func TestEditErrors(t *testing.T) {
	orig, _ := os.ReadFile("testdata/good/locals.tf")
	src := tf("good/locals.tf", "local.traffic_split.use1")
	if _, err := Edit(src, orig, map[string]float64{"pikachu": 0.5}); err == nil || !strings.Contains(err.Error(), `does not declare origin "pikachu"`) {
		t.Errorf("unknown origin: %v", err)
	}
	if _, err := Edit(src, orig, map[string]float64{"snorlax": 1.2}); err == nil || !strings.Contains(err.Error(), "outside 0..1") {
		t.Errorf("out of range: %v", err)
	}
	bad, _ := os.ReadFile("testdata/bad/reference.tf")
	if _, err := Edit(src, bad, map[string]float64{"squirtle": 0.5}); !errors.Is(err, ErrNotLiteral) {
		t.Errorf("non-literal beside: %v", err)
	}
}

func TestWriteInPlace(t *testing.T) {
	dir := t.TempDir()
	orig, _ := os.ReadFile("testdata/good/locals.tf")
	p := filepath.Join(dir, "lb.tf")
	if err := os.WriteFile(p, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	src := Source{Dir: dir, File: "lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	changed, err := Write(src, map[string]float64{"snorlax": 0.5, "staryu": 0.17})
	if err != nil || !changed {
		t.Fatalf("Write = %v, %v", changed, err)
	}
	want, _ := os.ReadFile("testdata/golden/locals.tf.golden")
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, want) {
		t.Errorf("file:\n%s", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600 kept", fi.Mode().Perm())
	}
	changed, err = Write(src, map[string]float64{"snorlax": 0.5})
	if err != nil || changed {
		t.Errorf("second Write = %v, %v; want no change", changed, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// TestFormatWeightMatchesHCLWrite: weights are written exactly as hclwrite (and so
// terraform fmt) writes the number.
func TestFormatWeightMatchesHCLWrite(t *testing.T) {
	for i := 0; i <= 100; i++ {
		w := float64(i) / 100
		want := strings.TrimSpace(string(hclwrite.TokensForValue(cty.NumberFloatVal(w)).Bytes()))
		if got := FormatWeight(w); got != want {
			t.Errorf("FormatWeight(%v) = %q, hclwrite writes %q", w, got, want)
		}
	}
	for in, want := range map[float64]string{0.50000001: "0.5", 0.333: "0.33", 1: "1", 0: "0", 0.005: "0.01", 0.1 + 0.2: "0.3"} {
		if got := FormatWeight(in); got != want {
			t.Errorf("FormatWeight(%v) = %q, want %q", in, got, want)
		}
	}
}

func FuzzEdit(f *testing.F) {
	for _, p := range []string{"testdata/good/locals.tf", "testdata/bad/reference.tf", "testdata/good/prod.tfvars"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 0.5)
	}
	src := Source{File: "f.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	f.Fuzz(func(t *testing.T, content []byte, w float64) {
		d, err := Parse(src, content)
		if err != nil {
			return
		}
		want := map[string]float64{}
		for o := range d.Weights {
			want[o] = w
		}
		out, err := Edit(src, content, want)
		if w < 0 || w > 1 || w != w {
			if err == nil && len(want) > 0 {
				t.Fatalf("weight %v accepted", w)
			}
			return
		}
		if err != nil {
			t.Fatalf("Edit of a readable file failed: %v", err)
		}
		if _, err := Parse(src, out); err != nil {
			t.Fatalf("edited file does not parse: %v", err)
		}
	})
}

func sameWeights(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || hundredths(v) != hundredths(w) {
			return false
		}
	}
	return true
}

func FuzzEditValues(f *testing.F) {
	for _, p := range []string{"testdata/good/values.yaml", "testdata/good/values.json", "testdata/bad/string.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "cloudflare.pools.use1.weights", 0.25)
	}
	f.Fuzz(func(t *testing.T, content []byte, keyPath string, w float64) {
		if w < 0 || w > 1 || w != w {
			return
		}
		src := Source{File: "f.yaml", Values: &ValuesRef{Path: keyPath}}
		d, err := Parse(src, content)
		if err != nil {
			return
		}
		want := map[string]float64{}
		for o := range d.Weights {
			want[o] = w
		}
		out, err := Edit(src, content, want)
		if err != nil {
			t.Fatalf("Edit of a readable file failed: %v", err)
		}
		back, err := Parse(src, out)
		if err != nil {
			t.Fatalf("edited file does not parse: %v", err)
		}
		if !sameWeights(back.Weights, want) {
			t.Fatalf("read back %v, want %v", back.Weights, want)
		}
	})
}
