package experiments

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/verdict-dev/verdict/gitops"
)

// SourceOfTruth says where the pool's weights are declared (a Terraform file or a YAML/JSON
// values file in a Git checkout), so that plan, check and preflight can compare it with the
// live pool and an ending that changes the intended weights can write them back
// (docs/gitops.md). Exactly one of Terraform and Values is set. Paths are relative to the
// experiment file's directory.
type SourceOfTruth struct {
	Terraform *TerraformSource `yaml:"terraform" json:"terraform,omitempty"`
	Values    *ValuesSource    `yaml:"values" json:"values,omitempty"`
	// Git, when set, publishes the write-back as a branch (and optionally a pull request)
	// instead of rewriting the file in place.
	Git *GitSource `yaml:"git" json:"git,omitempty"`
	// OnMismatch is what a run does when the file and the live pool disagree before any
	// change: fail (the default; the run ends check_failed) or warn (a warning event).
	OnMismatch string `yaml:"onMismatch" json:"onMismatch,omitempty"`
	// Dir is the absolute directory of the experiment file, set when it is loaded and kept
	// with the stored run, so that `verdict sync RUN-ID` resolves the same paths.
	Dir string `yaml:"-" json:"dir,omitempty"`
}

// SourceOfTruth.OnMismatch values.
const (
	OnMismatchFail = "fail"
	OnMismatchWarn = "warn"
)

// TerraformSource locates the weights in a Terraform file by a Terraform reference such as
// local.traffic_split.use1 (gitops.TerraformRef).
type TerraformSource struct {
	File       string `yaml:"file" json:"file"`
	Expression string `yaml:"expression" json:"expression"`
	// Keys maps clusters to the keys the file uses for them; a cluster without one uses
	// its pool origin's name.
	Keys map[string]string `yaml:"keys" json:"keys,omitempty"`
}

// ValuesSource locates the weights in a YAML or JSON file by a dotted key path
// (gitops.ValuesRef).
type ValuesSource struct {
	File   string            `yaml:"file" json:"file"`
	Path   string            `yaml:"path" json:"path"`
	Format string            `yaml:"format" json:"format,omitempty"`
	Keys   map[string]string `yaml:"keys" json:"keys,omitempty"`
}

// GitSource publishes the write-back as a commit on a new branch pushed to Remote.
type GitSource struct {
	// Checkout is a directory of the Git work tree holding the file; default the
	// experiment file's directory.
	Checkout     string     `yaml:"checkout" json:"checkout,omitempty"`
	Remote       string     `yaml:"remote" json:"remote,omitempty"`
	Base         string     `yaml:"base" json:"base,omitempty"`
	BranchPrefix string     `yaml:"branchPrefix" json:"branchPrefix,omitempty"`
	Author       *GitAuthor `yaml:"author" json:"author,omitempty"`
	// TokenEnv or TokenFile hold the token for an HTTPS remote (never the token itself).
	TokenEnv    string           `yaml:"tokenEnv" json:"tokenEnv,omitempty"`
	TokenFile   string           `yaml:"tokenFile" json:"tokenFile,omitempty"`
	PullRequest *PullRequestSpec `yaml:"pullRequest" json:"pullRequest,omitempty"`
}

// GitAuthor signs the write-back commit.
type GitAuthor struct {
	Name  string `yaml:"name" json:"name"`
	Email string `yaml:"email" json:"email"`
}

// PullRequestSpec opens a pull request for the pushed branch; GitHub is the only host.
type PullRequestSpec struct {
	GitHub *GitHubPullRequest `yaml:"github" json:"github,omitempty"`
}

// GitHubPullRequest opens the pull request through GitHub's REST API.
type GitHubPullRequest struct {
	Repo      string `yaml:"repo" json:"repo"`
	Base      string `yaml:"base" json:"base,omitempty"`
	TokenEnv  string `yaml:"tokenEnv" json:"tokenEnv,omitempty"`
	TokenFile string `yaml:"tokenFile" json:"tokenFile,omitempty"`
	Draft     bool   `yaml:"draft" json:"draft,omitempty"`
	// APIURL is the API root for GitHub Enterprise Server (https://HOST/api/v3); default
	// https://api.github.com.
	APIURL string `yaml:"apiURL" json:"apiURL,omitempty"`
}

// resolve returns p relative to the experiment file's directory, or p when absolute.
func (s *SourceOfTruth) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.Dir, filepath.FromSlash(p))
}

func (s *SourceOfTruth) fileAndKeys() (file string, keys map[string]string) {
	switch {
	case s.Terraform != nil:
		return s.Terraform.File, s.Terraform.Keys
	case s.Values != nil:
		return s.Values.File, s.Values.Keys
	}
	return "", nil
}

// kindPath is the field of the declaration, for messages.
func (s *SourceOfTruth) kindPath() string {
	if s.Values != nil && s.Terraform == nil {
		return "spec.traffic.sourceOfTruth.values"
	}
	return "spec.traffic.sourceOfTruth.terraform"
}

// ErrNoSourceOfTruth: the experiment declares no spec.traffic.sourceOfTruth.
var ErrNoSourceOfTruth = errors.New("no spec.traffic.sourceOfTruth declared")

// Source returns the declared source of truth as gitops reads it: the checkout (git.checkout,
// else the experiment file's directory, else the file's own directory when the file lies
// outside it), the file inside it, and the pool origin → file key mapping.
func (t *Traffic) Source() (gitops.Source, error) {
	s := t.SourceOfTruth
	if s == nil {
		return gitops.Source{}, ErrNoSourceOfTruth
	}
	file, clusterKeys := s.fileAndKeys()
	origins := t.Origins()
	full := map[string]string{}
	for c, o := range origins {
		full[c] = o // default: the origin's name
		if k := clusterKeys[c]; k != "" {
			full[c] = k
		}
	}
	for c, k := range clusterKeys {
		if _, ok := origins[c]; !ok {
			full[c] = k // KeysFromClusters reports it
		}
	}
	keys, err := gitops.KeysFromClusters(full, origins)
	src := gitops.Source{Keys: keys}
	if s.Terraform != nil {
		src.Terraform = &gitops.TerraformRef{Expression: s.Terraform.Expression}
	}
	if s.Values != nil {
		src.Values = &gitops.ValuesRef{Path: s.Values.Path, Format: s.Values.Format}
	}
	abs := s.resolve(file)
	checkout := s.Dir
	if s.Git != nil && s.Git.Checkout != "" {
		checkout = s.resolve(s.Git.Checkout)
	}
	rel, rerr := filepath.Rel(checkout, abs)
	switch {
	case file == "":
	case rerr != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)):
		if s.Git != nil && s.Git.Checkout != "" {
			err = errors.Join(err, fmt.Errorf("%s is outside git.checkout %s", abs, checkout))
		} else {
			checkout, rel = filepath.Dir(abs), filepath.Base(abs)
		}
	}
	src.Dir, src.File = checkout, filepath.ToSlash(rel)
	if file == "" {
		src.File = ""
	}
	return src, err
}

// SyncOptions returns how gitops.Sync publishes the write-back for run: in place without
// git settings, else a branch on the remote and, with pullRequest, a GitHub pull request.
// Tokens are read here, from their environment variables or files.
func (t *Traffic) SyncOptions(run gitops.RunInfo) (gitops.SyncOptions, error) {
	s := t.SourceOfTruth
	opts := gitops.SyncOptions{Run: run}
	if s == nil {
		return opts, ErrNoSourceOfTruth
	}
	g := s.Git
	if g == nil {
		return opts, nil
	}
	src, err := t.Source()
	if err != nil {
		return opts, err
	}
	repo := &gitops.Repo{Dir: src.Dir, Remote: g.Remote, Base: g.Base}
	if g.Author != nil {
		repo.Author = gitops.Signature{Name: g.Author.Name, Email: g.Author.Email}
	}
	if g.TokenEnv != "" || g.TokenFile != "" {
		if repo.Token, err = gitops.LoadToken(g.TokenEnv, s.resolve(g.TokenFile)); err != nil {
			return opts, fmt.Errorf("spec.traffic.sourceOfTruth.git: %w", err)
		}
	}
	opts.Git, opts.BranchPrefix = repo, g.BranchPrefix
	if pr := g.PullRequest; pr != nil && pr.GitHub != nil {
		gh := pr.GitHub
		client := &gitops.GitHub{BaseURL: gh.APIURL}
		if gh.TokenEnv != "" || gh.TokenFile != "" {
			if client.Token, err = gitops.LoadToken(gh.TokenEnv, s.resolve(gh.TokenFile)); err != nil {
				return opts, fmt.Errorf("spec.traffic.sourceOfTruth.git.pullRequest.github: %w", err)
			}
		}
		opts.PullRequest = &gitops.PullRequestOptions{GitHub: client, Repo: gh.Repo, Base: gh.Base, Draft: gh.Draft}
	}
	return opts, nil
}

// sourceOfTruth validates spec.traffic.sourceOfTruth without reading the file.
func (v *validator) sourceOfTruth() {
	t := &v.e.Spec.Traffic
	s := t.SourceOfTruth
	if s == nil {
		return
	}
	const p = "spec.traffic.sourceOfTruth"
	switch {
	case s.Terraform == nil && s.Values == nil:
		v.errorf(p, "set terraform (a .tf or .tfvars file and an expression) or values (a YAML or JSON file and a key path)")
		return
	case s.Terraform != nil && s.Values != nil:
		v.errorf(p+".values", "set either terraform or values, not both")
		return
	}
	if t.Provider() == ProviderRoute53 {
		// Route 53 records weigh 0-255 in Terraform and CloudFormation; the comparison and
		// the write-back work on the 0-1 weights of a load balancer pool.
		v.errorf(p, "is supported for Cloudflare pools only so far (a Route 53 record's weight is an integer 0-255 in Terraform)")
	}
	if s.OnMismatch != "" && s.OnMismatch != OnMismatchFail && s.OnMismatch != OnMismatchWarn {
		v.errorf(p+".onMismatch", "must be fail or warn, not %q", s.OnMismatch)
	}
	kp := s.kindPath()
	_, keys := s.fileAndKeys()
	clusters := v.e.Spec.Clusters()
	for _, c := range sortedKeys(keys) {
		if !slices.Contains(clusters, c) {
			msg := fmt.Sprintf("cluster %q is neither the canary nor a baseline", c)
			if hint := didYouMean(c, clusters); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			v.errorf(kp+".keys."+c, "%s", msg)
		}
	}
	if g := s.Git; g != nil {
		gp := p + ".git"
		if g.TokenEnv != "" && g.TokenFile != "" {
			v.errorf(gp+".tokenFile", "set tokenEnv or tokenFile, not both")
		}
		if pr := g.PullRequest; pr != nil {
			if pr.GitHub == nil {
				v.errorf(gp+".pullRequest", "required: github (the only pull request host so far)")
			} else {
				gh := pr.GitHub
				hp := gp + ".pullRequest.github"
				if _, _, err := gitops.ParseRepo(gh.Repo); err != nil {
					v.errorf(hp+".repo", "required: the repository as owner/name, e.g. acme/infra")
				}
				switch {
				case gh.TokenEnv != "" && gh.TokenFile != "":
					v.errorf(hp+".tokenFile", "set tokenEnv or tokenFile, not both")
				case gh.TokenEnv == "" && gh.TokenFile == "":
					v.errorf(hp, "required: tokenEnv or tokenFile, the GitHub token with pull requests: write")
				}
				if gh.APIURL != "" {
					if err := checkURL(gh.APIURL); err != nil {
						v.errorf(hp+".apiURL", "%v", err)
					}
				}
			}
		}
	}
	src, err := t.Source()
	if err != nil {
		v.gitopsErrors(kp, err)
	}
	if err := src.Validate(); err != nil {
		v.gitopsErrors(kp, err)
	}
}

// gitopsErrors places gitops' field errors (file, terraform.expression, keys.X, ...) at the
// experiment's fields.
func (v *validator) gitopsErrors(kp string, err error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *gitops.FieldError
		if !errors.As(e, &fe) {
			v.errorf(kp+".file", "%v", e)
			continue
		}
		field := fe.Field
		if i := strings.IndexByte(field, '.'); i >= 0 && (field[:i] == "terraform" || field[:i] == "values") {
			field = field[i+1:]
		}
		switch {
		case field == "sourceOfTruth":
			v.errorf("spec.traffic.sourceOfTruth", "%s", fe.Msg)
		case strings.HasPrefix(field, "keys."):
			// gitops names origins; the spec names clusters, already checked above.
			v.errorf(kp+".keys", "%s", fe.Msg)
		default:
			v.errorf(kp+"."+field, "%s", fe.Msg)
		}
	}
}
