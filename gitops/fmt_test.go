package gitops

import (
	"bytes"
	"os"
	"testing"

	"github.com/hashicorp/hcl/v2/hclwrite"
)

// TestEditKeepsTerraformFmt: a file that terraform fmt leaves alone stays that way after
// an edit that changes the width of values with aligned trailing comments.
func TestEditKeepsTerraformFmt(t *testing.T) {
	orig := []byte("locals {\n  split = {\n    a = 0.5 # one\n    b = 0.5 # two\n  }\n}\n")
	if !bytes.Equal(hclwrite.Format(orig), orig) {
		t.Fatalf("fixture not canonical:\n%s", hclwrite.Format(orig))
	}
	src := Source{File: "x.tf", Terraform: &TerraformRef{Expression: "local.split"}}
	out, err := Edit(src, orig, map[string]float64{"a": 0.25, "b": 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hclwrite.Format(out), out) {
		t.Errorf("edited file is not terraform fmt clean:\n%s", out)
	}
	for _, f := range []string{"locals.tf", "v5_origins.tf", "v4_blocks.tf", "variable.tf", "prod.tfvars"} {
		b, _ := os.ReadFile("testdata/good/" + f)
		if !bytes.Equal(hclwrite.Format(b), b) {
			t.Logf("fixture %s is not canonical (edits keep its layout as is)", f)
		}
	}
}

func TestEditAlignsComments(t *testing.T) {
	orig := []byte("locals {\n  split = {\n    a = 0.5 # one\n    b = 0.5 # two\n  }\n}\n")
	src := Source{File: "x.tf", Terraform: &TerraformRef{Expression: "local.split"}}
	out, err := Edit(src, orig, map[string]float64{"a": 0.25, "b": 1})
	if err != nil {
		t.Fatal(err)
	}
	want := "locals {\n  split = {\n    a = 0.25 # one\n    b = 1    # two\n  }\n}\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}
