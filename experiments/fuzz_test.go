package experiments

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader: it must never panic, and every rejection
// must be an ErrorList whose entries carry a position in the file.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, p := range append(seeds, examples...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: verdict.dev/v1alpha1\nkind: Experiment\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("- ${A}\n- $${B}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		exps, err := Load("fuzz.yaml", data, LoadOptions{LookupEnv: noEnv})
		if err == nil {
			if len(exps) == 0 {
				t.Fatal("no error and no experiment")
			}
			for _, e := range exps {
				if e.Validate() != nil {
					t.Fatal("accepted an experiment that does not validate")
				}
			}
			return
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error is not an ErrorList: %T %v", err, err)
		}
		for _, fe := range list {
			if fe.File != "fuzz.yaml" || fe.Line < 1 {
				t.Fatalf("error without position: %v", fe)
			}
		}
	})
}
