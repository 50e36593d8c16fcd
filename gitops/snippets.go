package gitops

import (
	"fmt"
	"strings"
)

// Snippet is configuration a team adds for an experiment window, with the caveats that
// come with it, for plan and check to print.
type Snippet struct {
	Title    string   `json:"title"`
	Language string   `json:"language"` // hcl or yaml
	Text     string   `json:"text"`
	Caveats  []string `json:"caveats"`
}

// String renders the title, the snippet and the caveats as plain text.
func (s Snippet) String() string {
	var b strings.Builder
	b.WriteString(s.Title + ":\n\n")
	for _, l := range strings.Split(strings.TrimRight(s.Text, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	if len(s.Caveats) > 0 {
		b.WriteString("\nCaveats:\n")
		for _, c := range s.Caveats {
			b.WriteString("  - " + c + "\n")
		}
	}
	return b.String()
}

// TerraformIgnoreChanges returns the lifecycle block that stops terraform apply from
// reverting the weights Verdict sets, for the cloudflare_load_balancer_pool resource
// address (e.g. cloudflare_load_balancer_pool.use1) and the Cloudflare provider's major
// version (4 or 5; anything else is treated as 5).
func TerraformIgnoreChanges(resource string, providerMajor int) Snippet {
	typ, name, ok := strings.Cut(resource, ".")
	if !ok || name == "" {
		typ, name = "cloudflare_load_balancer_pool", resource
	}
	if name == "" {
		name = "NAME"
	}
	if providerMajor != 4 {
		providerMajor = 5
	}
	s := Snippet{
		Title:    fmt.Sprintf("Terraform: keep terraform apply from reverting Verdict's weights on %s.%s (cloudflare provider v%d)", typ, name, providerMajor),
		Language: "hcl",
	}
	var body string
	if providerMajor == 4 {
		body = "  # origins { name = ..., address = ..., weight = ... } blocks as before\n"
	} else {
		body = "  # origins = [{ name = ..., address = ..., weight = ... }, ...] as before\n"
	}
	s.Text = fmt.Sprintf(`resource %q %q {
%s
  lifecycle {
    # Verdict owns the origin weights during the experiment window and writes them
    # back to this repository afterwards (verdict sync); remove this block once that
    # change is merged.
    ignore_changes = [origins]
  }
}
`, typ, name, body)
	s.Caveats = append(s.Caveats,
		"ignore_changes must be a static list: it cannot be switched on and off by a variable, so add it in a pull request before the experiment and remove it after the write-back is merged. While it is in place, any change to the pool's origins in Terraform (addresses, enabled, new origins) is ignored too, not only the weights.",
		"Keep verdict sync --check in CI: with ignore_changes in place, a file that disagrees with the pool no longer shows up in terraform plan.",
	)
	if providerMajor == 4 {
		s.Caveats = append(s.Caveats,
			"Provider v4 models origins as a set of nested blocks: sets cannot be indexed, so ignore_changes can only name the whole origins set, not origins[*].weight.",
			"Upgrading to provider v5 turns origins into a list attribute (origins = [{...}]); the ignore_changes entry stays [origins], and Verdict's source of truth reads both forms.",
		)
	} else {
		s.Caveats = append(s.Caveats,
			"Provider v5 models origins as a list attribute. ignore_changes = [origins[0].weight] is possible but fragile: list positions shift when an origin is added or when the provider reorders origins.",
			"Some v5 releases show a perpetual diff on origins when the configuration does not list them sorted by name, because the API returns them sorted by name (terraform-provider-cloudflare#7179, previously #6140). Until your provider version has the fix, list origins sorted by name; otherwise every plan shows a change even when the weights agree.",
		)
	}
	return s
}

// ArgoCDTarget names the Kubernetes object a GitOps-managed values file renders the
// pool into (for example a Crossplane managed resource for the Cloudflare pool), for
// ArgoCDIgnoreDifferences.
type ArgoCDTarget struct {
	Application string // the Argo CD Application; default "my-app"
	Group       string // API group of the rendered object; default loadbalancer.cloudflare.upbound.io
	Kind        string // default LoadBalancerPool
	Name        string // optional: only this object
	Namespace   string // optional
	// JQPaths are the weight fields; default .spec.forProvider.origins[].weight.
	JQPaths []string
}

// ArgoCDIgnoreDifferences returns the Application fields that keep Argo CD from
// reporting, and with RespectIgnoreDifferences from reverting, the weights Verdict sets
// while the values file still holds the old ones.
func ArgoCDIgnoreDifferences(t ArgoCDTarget) Snippet {
	if t.Application == "" {
		t.Application = "my-app"
	}
	if t.Group == "" {
		t.Group = "loadbalancer.cloudflare.upbound.io"
	}
	if t.Kind == "" {
		t.Kind = "LoadBalancerPool"
	}
	if len(t.JQPaths) == 0 {
		t.JQPaths = []string{".spec.forProvider.origins[].weight"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: %s\nspec:\n  ignoreDifferences:\n    - group: %s\n      kind: %s\n", t.Application, t.Group, t.Kind)
	if t.Name != "" {
		fmt.Fprintf(&b, "      name: %s\n", t.Name)
	}
	if t.Namespace != "" {
		fmt.Fprintf(&b, "      namespace: %s\n", t.Namespace)
	}
	b.WriteString("      jqPathExpressions:\n")
	for _, p := range t.JQPaths {
		fmt.Fprintf(&b, "        - %s\n", yamlQuote(p))
	}
	b.WriteString("  syncPolicy:\n    syncOptions:\n      # without this, a sync still writes the ignored fields back from Git\n      - RespectIgnoreDifferences=true\n")
	return Snippet{
		Title:    fmt.Sprintf("Argo CD: ignore the pool weights of %s/%s during the experiment window", t.Group, t.Kind),
		Language: "yaml",
		Text:     b.String(),
		Caveats: []string{
			"ignoreDifferences changes only how Argo CD compares; RespectIgnoreDifferences=true also keeps a sync from writing the ignored fields. Remove both once Verdict's write-back pull request is merged.",
			"Argo CD cannot reliably keep individual fields inside list items on sync (argo-cd#17694): if a sync still resets the weights, ignore the whole origins list (.spec.forProvider.origins) for the window.",
			"The controller that owns the rendered object (e.g. Crossplane's Cloudflare provider) also reconciles it against Cloudflare and may revert the weights by itself: pause it for the window (crossplane.io/paused: \"true\", or a managementPolicies list without Update).",
			"Set group, kind and paths to the object your chart or kustomization actually renders.",
		},
	}
}

func yamlQuote(s string) string {
	if strings.ContainsAny(s, ":#[]{}&*!|>'\"%@`") || strings.HasPrefix(s, ".") {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return s
}
