package gitops

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnippets(t *testing.T) {
	tests := map[string]struct {
		s    Snippet
		want []string
	}{
		"terraform v4": {TerraformIgnoreChanges("cloudflare_load_balancer_pool.use1", 4), []string{
			`resource "cloudflare_load_balancer_pool" "use1" {`, "ignore_changes = [origins]", "origins { name = ...", "set of nested blocks", "(cloudflare provider v4)"}},
		"terraform v5": {TerraformIgnoreChanges("use1", 5), []string{
			`resource "cloudflare_load_balancer_pool" "use1" {`, "ignore_changes = [origins]", "origins = [{", "terraform-provider-cloudflare#7179", "#6140", "sorted by name", "(cloudflare provider v5)"}},
		"argo cd": {ArgoCDIgnoreDifferences(ArgoCDTarget{Application: "edge", Name: "use1"}), []string{
			"name: edge", "kind: LoadBalancerPool", "name: use1", "jqPathExpressions:", "- '.spec.forProvider.origins[].weight'", "RespectIgnoreDifferences=true", "argo-cd#17694", "crossplane.io/paused"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out := tc.s.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("snippet lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestSyncInPlace(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "edge"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "edge/values.yaml"), []byte(fixture(t, "good/values.yaml")), 0o644); err != nil {
		t.Fatal(err)
	}
	src := Source{Dir: dir, File: "edge/values.yaml", Values: &ValuesRef{Path: "cloudflare.pools.use1.weights"}}
	ctx := context.Background()
	if _, err := Check(ctx, src, promoted); !errors.Is(err, ErrOutOfSync) {
		t.Fatalf("Check = %v", err)
	}
	res, err := Sync(ctx, src, promoted, SyncOptions{})
	if err != nil || !res.Written || len(res.Plan.Changes) != 2 {
		t.Fatalf("Sync = %+v, %v", res, err)
	}
	got, _ := os.ReadFile(src.Path())
	if string(got) != fixture(t, "golden/values.yaml.golden") {
		t.Errorf("file:\n%s", got)
	}
	if p, err := Check(ctx, src, promoted); err != nil || !p.InSync() {
		t.Errorf("Check after = %v", err)
	}
	if res, err := Sync(ctx, src, promoted, SyncOptions{}); err != nil || res.Written {
		t.Errorf("second Sync = %+v, %v", res, err)
	}
	if _, err := Sync(ctx, src, promoted, SyncOptions{PullRequest: &PullRequestOptions{Repo: "a/b"}}); err == nil {
		t.Error("pull request without git accepted")
	}
}
