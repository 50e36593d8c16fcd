package gitops

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Repo publishes edits of one file in a Git checkout as a commit on a new branch pushed
// to a remote. It runs the git binary with a clean environment (no terminal prompts,
// no inherited GIT_* settings) and never changes the checkout's work tree, index or
// current branch: the commit is built from the remote base branch with git plumbing
// (hash-object, a temporary index, commit-tree), so a long-running server can publish
// from the same checkout again and again. Calls on one Repo are serialized.
type Repo struct {
	// Dir is the checkout (any directory inside the work tree).
	Dir string
	// Remote is a remote name or URL; default "origin".
	Remote string
	// Base is the branch the new branch starts from, fetched from Remote; default the
	// checkout's current branch.
	Base string
	// Token authenticates to an HTTPS remote. It is sent only to the remote's host, as
	// an http.extraHeader passed through the environment (never on a command line), and
	// scrubbed from every error and log line.
	Token string
	// Author signs the commit; default Verdict <verdict@localhost>.
	Author Signature
	// Git is the git binary; default "git" from PATH. Git 2.31 or later.
	Git string
	// Env adds variables to git's environment (e.g. GIT_SSH_COMMAND, HOME).
	Env []string
	// Logger receives one line per git command; default discards.
	Logger *slog.Logger

	mu     sync.Mutex
	cwd    string // overrides Dir while Publish runs
	scope  string // tokenScope, computed once per Publish
	scoped bool
}

// Signature is a commit author.
type Signature struct {
	Name  string
	Email string
}

// Published says what Publish did.
type Published struct {
	Branch     string `json:"branch"`
	Base       string `json:"base"`
	BaseCommit string `json:"baseCommit"`
	Commit     string `json:"commit,omitempty"`
	// Changed is false when the edit changed nothing: no commit, no push.
	Changed bool `json:"changed"`
	// Pushed is false when the remote already had the branch with this content (a
	// repeated sync), or nothing changed.
	Pushed bool `json:"pushed"`
}

// EditFunc returns the file's new content given its content on the base branch, and
// the commit message for the change.
type EditFunc func(old []byte) (content []byte, message string, err error)

// BranchName returns prefix + the run ID made safe for a ref name: verdict/<run-id>.
// An empty prefix means "verdict/".
func BranchName(prefix, runID string) string {
	if prefix == "" {
		prefix = "verdict/"
	}
	id := regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(runID, "-")
	id = strings.Trim(strings.ReplaceAll(id, "..", "."), ".-")
	if strings.HasSuffix(id, ".lock") {
		id = strings.TrimSuffix(id, ".lock") + "-lock"
	}
	return prefix + id
}

// CheckClean returns an error wrapping ErrDirty if the checkout has uncommitted
// changes (staged, unstaged or untracked) to file, a slash path relative to Dir.
func (r *Repo) CheckClean(ctx context.Context, file string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkClean(ctx, file)
}

func (r *Repo) checkClean(ctx context.Context, file string) error {
	out, err := r.run(ctx, nil, nil, "status", "--porcelain=v1", "--untracked-files=all", "--", filepath.FromSlash(file))
	if err != nil {
		return fmt.Errorf("check checkout %s: %w", r.Dir, err)
	}
	if s := strings.TrimSpace(out); s != "" {
		return fmt.Errorf("checkout %s has uncommitted changes to %s (%s): commit or discard them first, so that the edit starts from what the remote holds: %w", r.Dir, file, s, ErrDirty)
	}
	return nil
}

// Publish edits file (a slash path relative to Dir) as of the remote base branch and
// pushes the result as a new branch. It refuses, before changing anything, if the
// checkout has uncommitted changes to the file (ErrDirty) or the branch already exists,
// locally or on the remote, with other content (ErrBranchConflict); a branch that
// exists with exactly this content is reported as published, so a repeated call is
// harmless.
func (r *Repo) Publish(ctx context.Context, file, branch string, edit EditFunc) (Published, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := Published{Branch: branch}
	r.scope, r.scoped = r.tokenScope(ctx), true
	defer func() { r.scope, r.scoped = "", false }()
	if _, err := r.run(ctx, nil, nil, "check-ref-format", "--branch", branch); err != nil {
		return res, fmt.Errorf("branch name %q is not valid: %w", branch, err)
	}
	if err := r.checkClean(ctx, file); err != nil {
		return res, err
	}
	prefix, err := r.run(ctx, nil, nil, "rev-parse", "--show-prefix")
	if err != nil {
		return res, fmt.Errorf("%s is not a Git checkout: %w", r.Dir, err)
	}
	top, err := r.run(ctx, nil, nil, "rev-parse", "--show-toplevel")
	if err != nil {
		return res, fmt.Errorf("%s is not a Git work tree: %w", r.Dir, err)
	}
	repoPath := path.Clean(strings.TrimSpace(prefix) + file)
	// From here on paths are relative to the top of the work tree.
	r.cwd = strings.TrimSpace(top)
	defer func() { r.cwd = "" }()
	base := r.Base
	if base == "" {
		b, err := r.run(ctx, nil, nil, "symbolic-ref", "--quiet", "--short", "HEAD")
		if err != nil {
			return res, fmt.Errorf("checkout %s is not on a branch; set the base branch: %w", r.Dir, err)
		}
		base = strings.TrimSpace(b)
	}
	res.Base = base
	remote := r.remote()
	if _, err := r.run(ctx, nil, nil, "fetch", "--no-tags", "--quiet", remote, "refs/heads/"+base); err != nil {
		return res, fmt.Errorf("fetch base branch %q from %s: %w", base, r.scrub(remote), err)
	}
	baseCommit, err := r.revParse(ctx, "FETCH_HEAD^{commit}")
	if err != nil {
		return res, err
	}
	res.BaseCommit = baseCommit
	ls, err := r.run(ctx, nil, nil, "ls-tree", baseCommit, "--", repoPath)
	if err != nil || strings.TrimSpace(ls) == "" {
		return res, fmt.Errorf("%s is not in branch %q of %s: %w", repoPath, base, r.scrub(remote), errors.Join(ErrKeyNotFound, err))
	}
	mode := strings.Fields(ls)[0]
	old, err := r.run(ctx, nil, nil, "cat-file", "blob", baseCommit+":"+repoPath)
	if err != nil {
		return res, fmt.Errorf("read %s at %s: %w", repoPath, base, err)
	}
	content, message, err := edit([]byte(old))
	if err != nil {
		return res, err
	}
	if bytes.Equal(content, []byte(old)) {
		return res, nil
	}
	res.Changed = true
	tree, err := r.writeTree(ctx, baseCommit, mode, repoPath, content)
	if err != nil {
		return res, err
	}
	// The branch on the remote: absent, ours already (a repeated call), or someone else's.
	ref := "refs/heads/" + branch
	lsr, err := r.run(ctx, nil, nil, "ls-remote", "--heads", remote, ref)
	if err != nil {
		return res, fmt.Errorf("list branches of %s: %w", r.scrub(remote), err)
	}
	if theirCommit := remoteRef(lsr, ref); theirCommit != "" {
		if _, err := r.run(ctx, nil, nil, "fetch", "--no-tags", "--quiet", remote, ref); err != nil {
			return res, fmt.Errorf("fetch existing branch %q: %w", branch, err)
		}
		theirs, err := r.revParse(ctx, "FETCH_HEAD^{tree}")
		if err != nil {
			return res, err
		}
		if theirs != tree {
			return res, fmt.Errorf("branch %q already exists on %s (commit %s) with other content; delete it or publish under another run ID: %w", branch, r.scrub(remote), short(theirCommit), ErrBranchConflict)
		}
		res.Commit = theirCommit
		return res, nil
	}
	// A local branch left by an earlier attempt whose push failed is reused if it holds
	// the same tree.
	commit := ""
	if local, err := r.run(ctx, nil, nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}"); err == nil {
		local = strings.TrimSpace(local)
		localTree, err := r.revParse(ctx, local+"^{tree}")
		if err != nil {
			return res, err
		}
		if localTree != tree {
			return res, fmt.Errorf("local branch %q already exists in %s with other content; delete it (git branch -D %s) or publish under another run ID: %w", branch, r.Dir, branch, ErrBranchConflict)
		}
		commit = local
	} else {
		author := r.Author
		if author.Name == "" {
			author.Name = "Verdict"
		}
		if author.Email == "" {
			author.Email = "verdict@localhost"
		}
		env := []string{"GIT_AUTHOR_NAME=" + author.Name, "GIT_AUTHOR_EMAIL=" + author.Email,
			"GIT_COMMITTER_NAME=" + author.Name, "GIT_COMMITTER_EMAIL=" + author.Email}
		out, err := r.run(ctx, []byte(Scrub(message, r.Token)), env, "commit-tree", tree, "-p", baseCommit, "-F", "-")
		if err != nil {
			return res, fmt.Errorf("commit %s: %w", repoPath, err)
		}
		commit = strings.TrimSpace(out)
		if _, err := r.run(ctx, nil, nil, "update-ref", ref, commit, ""); err != nil {
			return res, fmt.Errorf("create branch %q: %w", branch, err)
		}
	}
	res.Commit = commit
	if _, err := r.run(ctx, nil, nil, "push", "--porcelain", "--quiet", remote, commit+":"+ref); err != nil {
		return res, fmt.Errorf("push branch %q to %s: %w", branch, r.scrub(remote), err)
	}
	res.Pushed = true
	r.logger().Info("pushed source of truth", "branch", branch, "commit", commit, "remote", r.scrub(remote))
	return res, nil
}

// writeTree returns the tree of baseCommit with path replaced by content, built in a
// temporary index so the checkout's own index is never touched.
func (r *Repo) writeTree(ctx context.Context, baseCommit, mode, repoPath string, content []byte) (string, error) {
	blob, err := r.run(ctx, content, nil, "hash-object", "-w", "--stdin", "--no-filters")
	if err != nil {
		return "", fmt.Errorf("store edited %s: %w", repoPath, err)
	}
	dir, err := os.MkdirTemp("", "verdict-index-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	idx := []string{"GIT_INDEX_FILE=" + filepath.Join(dir, "index")}
	if _, err := r.run(ctx, nil, idx, "read-tree", baseCommit); err != nil {
		return "", fmt.Errorf("read tree of %s: %w", short(baseCommit), err)
	}
	if _, err := r.run(ctx, nil, idx, "update-index", "--cacheinfo", mode+","+strings.TrimSpace(blob)+","+repoPath); err != nil {
		return "", fmt.Errorf("stage edited %s: %w", repoPath, err)
	}
	tree, err := r.run(ctx, nil, idx, "write-tree")
	if err != nil {
		return "", fmt.Errorf("write tree: %w", err)
	}
	return strings.TrimSpace(tree), nil
}

func (r *Repo) revParse(ctx context.Context, rev string) (string, error) {
	out, err := r.run(ctx, nil, nil, "rev-parse", "--verify", "--quiet", rev)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", rev, err)
	}
	return strings.TrimSpace(out), nil
}

func (r *Repo) remote() string {
	if r.Remote == "" {
		return "origin"
	}
	return r.Remote
}

func (r *Repo) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// passEnv are the only variables git inherits: what it needs to find itself, reach a
// remote through a proxy, and use SSH keys.
var passEnv = []string{"PATH", "HOME", "USER", "TMPDIR", "SSH_AUTH_SOCK", "GIT_SSH", "GIT_SSH_COMMAND",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO"}

// env builds git's environment: inherited essentials, no prompts, the token as an
// extra header scoped to the remote's host, then Repo.Env and extra.
func (r *Repo) env(ctx context.Context, extra []string) []string {
	env := []string{"LC_ALL=C", "GIT_TERMINAL_PROMPT=0", "GCM_INTERACTIVE=never", "GIT_CONFIG_NOSYSTEM=1"}
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	scope := r.scope
	if !r.scoped {
		scope = r.tokenScope(ctx)
	}
	if scope != "" {
		header := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+r.Token))
		env = append(env, "GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=http."+scope+".extraHeader", "GIT_CONFIG_VALUE_0="+header,
			// No credential helper may answer (or store) for this remote.
			"GIT_CONFIG_KEY_1=credential.helper", "GIT_CONFIG_VALUE_1=")
	}
	env = append(env, r.Env...)
	return append(env, extra...)
}

// tokenScope returns scheme://host/ of an HTTP(S) remote when a token is set, so the
// header goes to that host only; "" otherwise.
func (r *Repo) tokenScope(ctx context.Context) string {
	if r.Token == "" {
		return ""
	}
	raw := r.remote()
	if !strings.Contains(raw, "://") {
		cmd := exec.CommandContext(ctx, r.gitBin(), "remote", "get-url", raw)
		cmd.Dir = r.Dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GIT_CONFIG_NOSYSTEM=1"}
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		raw = strings.TrimSpace(string(out))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/"
}

func (r *Repo) gitBin() string {
	if r.Git == "" {
		return "git"
	}
	return r.Git
}

// run runs one git command in Dir and returns its stdout. Errors carry git's stderr,
// scrubbed of the token and of URL passwords.
func (r *Repo) run(ctx context.Context, stdin []byte, extraEnv []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.gitBin(), args...)
	cmd.Dir = r.Dir
	if r.cwd != "" {
		cmd.Dir = r.cwd
	}
	cmd.Env = r.env(ctx, extraEnv)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r.logger().Debug("git", "args", r.scrub(strings.Join(args, " ")), "err", err)
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.String(), &GitError{Args: r.scrub(args[0]), Stderr: r.scrub(msg)}
	}
	return stdout.String(), nil
}

// GitError is a failed git command: its subcommand and its (scrubbed) error output.
type GitError struct {
	Args   string
	Stderr string
}

// Error renders "git SUBCOMMAND: stderr".
func (e *GitError) Error() string { return "git " + e.Args + ": " + e.Stderr }

var urlPassword = regexp.MustCompile(`(://[^/@\s:]*):[^/@\s]*@`)

// scrub removes the token (raw and in its Basic form) and URL passwords from s.
func (r *Repo) scrub(s string) string {
	return Scrub(s, r.Token)
}

// Scrub removes the given secrets, their base64 forms as sent in Basic authorization
// headers, and any password in a URL (https://user:secret@host) from s.
func Scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		s = strings.ReplaceAll(s, base64.StdEncoding.EncodeToString([]byte("x-access-token:"+sec)), "[REDACTED]")
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return urlPassword.ReplaceAllString(s, "$1:[REDACTED]@")
}

// remoteRef returns the commit ls-remote lists for exactly ref, or "".
func remoteRef(lsRemote, ref string) string {
	for _, line := range strings.Split(lsRemote, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == ref {
			return f[0]
		}
	}
	return ""
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
