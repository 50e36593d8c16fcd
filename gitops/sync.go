package gitops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/verdict-dev/verdict/traffic"
)

// RunInfo names the run whose ending changed the intended weights, for commit messages
// and pull requests.
type RunInfo struct {
	ID      string // run ID; also names the branch
	Verdict string // e.g. promote, rollback
	Ending  string // what changed the weights, e.g. "promote (keep)", "drain"
	// ReportURL links the run's report; URL passwords in it are scrubbed.
	ReportURL string
}

// SyncOptions says how Sync publishes the edit. The zero value edits the file in place.
type SyncOptions struct {
	Run RunInfo
	// Git, when set, publishes the edit as a commit on branch BranchPrefix+run ID pushed
	// to Git.Remote, starting from the remote base branch; the checkout's work tree is
	// left alone. When nil, the file in the checkout is rewritten in place.
	Git *Repo
	// BranchPrefix defaults to "verdict/".
	BranchPrefix string
	// PullRequest, when set (with Git), opens a pull request for the branch.
	PullRequest *PullRequestOptions
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// PullRequestOptions opens a GitHub pull request after a push.
type PullRequestOptions struct {
	GitHub *GitHub
	Repo   string // owner/name
	Base   string // default the branch the edit started from (Repo.Base)
	Draft  bool
}

// Result is what Sync did, ready to be recorded in the run.
type Result struct {
	Plan Plan `json:"plan"`
	// Written: the file in the checkout was rewritten (in-place mode).
	Written     bool         `json:"written"`
	Published   *Published   `json:"published,omitempty"`
	PullRequest *PullRequest `json:"pullRequest,omitempty"`
}

// Check compares the file in the checkout with the live weights. It returns the plan
// and, when they disagree, an error wrapping ErrOutOfSync (for verdict sync --check).
func Check(ctx context.Context, src Source, live traffic.Weights) (Plan, error) {
	if err := ctx.Err(); err != nil {
		return Plan{}, err
	}
	d, err := Read(src)
	if err != nil {
		return Plan{}, err
	}
	p := Diff(d, live)
	if !p.InSync() {
		return p, fmt.Errorf("%s: %d origins differ from the live pool: %w", src, len(p.Changes), ErrOutOfSync)
	}
	return p, nil
}

// Sync writes the live weights of the origins src covers into the source of truth: in
// place, or (with opts.Git) as a pushed branch and optionally a pull request. A file that
// already agrees is left alone and nothing is committed. It refuses when the file
// declares an origin the pool does not have, since no live weight can be written there.
func Sync(ctx context.Context, src Source, live traffic.Weights, opts SyncOptions) (Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := src.Validate(); err != nil {
		return Result{}, fmt.Errorf("source of truth: %w", err)
	}
	var res Result
	edit := func(old []byte) ([]byte, error) {
		d, err := Parse(src, old)
		if err != nil {
			return nil, err
		}
		res.Plan = Diff(d, live)
		want := traffic.Weights{}
		var missing []string
		for _, c := range res.Plan.Changes {
			switch c.Action {
			case Update:
				want[c.Origin] = c.Live
			case NotInPool:
				missing = append(missing, fmt.Sprintf("%s (%s)", c.Origin, c.Pos))
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("%s declares origins the pool does not have: %s; remove them from the file or from the key mapping", src, strings.Join(missing, ", "))
		}
		if len(want) == 0 {
			return old, nil
		}
		return Edit(src, old, want)
	}
	if opts.Git == nil {
		if opts.PullRequest != nil {
			return res, errors.New("sync: a pull request needs git settings")
		}
		content, err := readSource(src)
		if err != nil {
			return res, err
		}
		out, err := edit(content)
		if err != nil {
			return res, err
		}
		if string(out) == string(content) {
			return res, nil
		}
		if err := writeFileAtomic(src.Path(), out); err != nil {
			return res, fmt.Errorf("write source of truth %s: %w", src.File, err)
		}
		res.Written = true
		log.Info("source of truth rewritten", "file", src.File, "changes", len(res.Plan.Changes))
		return res, nil
	}
	if opts.Run.ID == "" {
		return res, errors.New("sync: the run ID is required to name the branch")
	}
	repo := opts.Git
	if repo.Dir == "" {
		repo.Dir = src.Dir
	}
	if repo.Logger == nil {
		repo.Logger = opts.Logger
	}
	secrets := []string{repo.Token}
	if opts.PullRequest != nil && opts.PullRequest.GitHub != nil {
		secrets = append(secrets, opts.PullRequest.GitHub.Token)
	}
	branch := BranchName(opts.BranchPrefix, opts.Run.ID)
	pub, err := repo.Publish(ctx, src.File, branch, func(old []byte) ([]byte, string, error) {
		out, err := edit(old)
		return out, Scrub(CommitMessage(opts.Run, res.Plan), secrets...), err
	})
	res.Published = &pub
	if err != nil {
		return res, err
	}
	if !pub.Changed {
		log.Info("source of truth already matches the pool", "file", src.File, "base", pub.Base)
		return res, nil
	}
	if opts.PullRequest == nil {
		return res, nil
	}
	pr := opts.PullRequest
	owner, name, err := ParseRepo(pr.Repo)
	if err != nil {
		return res, err
	}
	base := pr.Base
	if base == "" {
		base = pub.Base
	}
	gh := pr.GitHub
	if gh == nil {
		gh = &GitHub{}
	}
	got, err := gh.OpenPullRequest(ctx, PullRequestRequest{
		Owner: owner, Repo: name, Head: branch, Base: base, Draft: pr.Draft,
		Title: PullRequestTitle(opts.Run),
		Body:  Scrub(PullRequestBody(opts.Run, res.Plan, pub), secrets...),
	})
	if err != nil {
		return res, err
	}
	res.PullRequest = &got
	log.Info("pull request for source of truth", "url", got.HTMLURL, "existing", got.Existing)
	return res, nil
}

func readSource(src Source) ([]byte, error) {
	d, err := os.ReadFile(src.Path())
	if err != nil {
		return nil, fmt.Errorf("read source of truth %s: %w", src.File, err)
	}
	return d, nil
}

// CommitMessage is the message of the write-back commit: a subject naming the run and
// its verdict, the plan, and trailers linking the report.
func CommitMessage(run RunInfo, p Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict: set %s weights after run %s (%s)\n\n", p.Ref, run.ID, orDash(run.Verdict))
	fmt.Fprintf(&b, "Run %s ended with verdict %s", run.ID, orDash(run.Verdict))
	if run.Ending != "" {
		fmt.Fprintf(&b, ", ending %s", run.Ending)
	}
	fmt.Fprintf(&b, ".\nThis writes the pool's weights after the run into %s\nso that the next apply keeps them.\n\n", p.File)
	for _, c := range p.Changes {
		if c.Action == Update {
			fmt.Fprintf(&b, "  ~ %s: %s -> %s\n", c.Origin, FormatWeight(c.Declared), FormatWeight(c.Live))
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "Verdict-Run: %s\n", run.ID)
	if run.ReportURL != "" {
		fmt.Fprintf(&b, "Verdict-Report: %s\n", run.ReportURL)
	}
	return Scrub(b.String())
}

// PullRequestTitle is the title of the write-back pull request.
func PullRequestTitle(run RunInfo) string {
	return fmt.Sprintf("Verdict: pool weights after run %s (%s)", run.ID, orDash(run.Verdict))
}

// PullRequestBody is the Markdown body of the write-back pull request.
func PullRequestBody(run RunInfo, p Plan, pub Published) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run **%s** ended with verdict **%s**", run.ID, orDash(run.Verdict))
	if run.Ending != "" {
		fmt.Fprintf(&b, ", ending %s", run.Ending)
	}
	fmt.Fprintf(&b, ". Verdict changed the load balancer pool's weights through the API; this pull request writes them into `%s` (`%s`) so that the next apply keeps them instead of reverting them.\n\n", p.File, p.Ref)
	b.WriteString("```diff\n")
	for _, c := range p.Changes {
		if c.Action == Update {
			fmt.Fprintf(&b, "- %s = %s\n+ %s = %s\n", c.Key, FormatWeight(c.Declared), c.Key, FormatWeight(c.Live))
		}
	}
	b.WriteString("```\n\n")
	if run.ReportURL != "" {
		fmt.Fprintf(&b, "Report: %s\n\n", run.ReportURL)
	}
	fmt.Fprintf(&b, "Based on `%s` at %s. After merging, `verdict sync --check` should pass.\n", pub.Base, short(pub.BaseCommit))
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
