package gitops

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// gitWorld is a bare repository standing in for the Git host and a clone of it standing
// in for the team's checkout, with a HOME of their own so no user or system config
// leaks in.
type gitWorld struct {
	t    *testing.T
	home string
	bare string
	work string
	env  []string
}

func newGitWorld(t *testing.T, files map[string]string) *gitWorld {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	w := &gitWorld{t: t, home: filepath.Join(root, "home"), bare: filepath.Join(root, "remote.git"), work: filepath.Join(root, "work")}
	if err := os.MkdirAll(w.home, 0o755); err != nil {
		t.Fatal(err)
	}
	w.env = []string{"HOME=" + w.home, "GIT_CONFIG_GLOBAL=" + filepath.Join(w.home, "gitconfig")}
	w.git(root, "init", "--quiet", "--bare", "-b", "main", w.bare)
	w.git(root, "clone", "--quiet", w.bare, w.work)
	w.commit(w.work, "initial", files)
	w.git(w.work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
	return w
}

func (w *gitWorld) git(dir string, args ...string) string {
	w.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com"}, w.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (w *gitWorld) commit(dir, msg string, files map[string]string) {
	w.t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			w.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			w.t.Fatal(err)
		}
	}
	w.git(dir, "add", "-A")
	w.git(dir, "commit", "--quiet", "-m", msg)
}

// otherClone is a second clone, for changes made by someone else.
func (w *gitWorld) otherClone() string {
	dir := filepath.Join(filepath.Dir(w.bare), "other")
	if _, err := os.Stat(dir); err != nil {
		w.git(filepath.Dir(w.bare), "clone", "--quiet", w.bare, dir)
	} else {
		w.git(dir, "pull", "--quiet", "--ff-only")
	}
	return dir
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var promoted = map[string]float64{"squirtle": 0.33, "snorlax": 0.5, "staryu": 0.17}

func TestSyncGitRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lb := fixture(t, "good/locals.tf")
	w := newGitWorld(t, map[string]string{"infra/lb.tf": lb, "README.md": "infra\n"})
	src := Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	run := RunInfo{ID: "2026-12-05/run 42", Verdict: "promote", Ending: "promote (keep)", ReportURL: "https://verdict.example.com/runs/42"}

	// Before the run: plan shows the drift the promotion is about to create.
	if p, err := Check(ctx, src, promoted); !errors.Is(err, ErrOutOfSync) || len(p.Changes) != 2 {
		t.Fatalf("Check before = %v, %v", p.Changes, err)
	}

	var logs bytes.Buffer
	opts := SyncOptions{Run: run, Git: &Repo{Env: w.env}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	res, err := Sync(ctx, src, promoted, opts)
	if err != nil {
		t.Fatal(err)
	}
	pub := res.Published
	if pub == nil || !pub.Changed || !pub.Pushed || pub.Branch != "verdict/2026-12-05-run-42" || pub.Base != "main" {
		t.Fatalf("published = %+v", pub)
	}
	// The branch on the remote changes exactly the two weights.
	if got := w.git(w.bare, "diff", "--numstat", "main", pub.Branch); got != "2\t2\tinfra/lb.tf" {
		t.Errorf("diff --numstat = %q", got)
	}
	if got := w.git(w.bare, "show", pub.Branch+":infra/lb.tf"); got+"\n" != fixture(t, "golden/locals.tf.golden") {
		t.Errorf("file on branch:\n%s", got)
	}
	if got := w.git(w.bare, "rev-parse", pub.Branch); got != pub.Commit {
		t.Errorf("remote branch at %s, want %s", got, pub.Commit)
	}
	msg := w.git(w.bare, "log", "-1", "--format=%an <%ae>%n%B", pub.Branch)
	for _, want := range []string{"Verdict <verdict@localhost>", "run 2026-12-05/run 42 (promote)", "ending promote (keep)", "~ snorlax: 0.33 -> 0.5", "Verdict-Report: https://verdict.example.com/runs/42"} {
		if !strings.Contains(msg, want) {
			t.Errorf("commit message lacks %q:\n%s", want, msg)
		}
	}
	// The checkout is untouched: same file, same branch, clean.
	if got, _ := os.ReadFile(src.Path()); string(got) != lb {
		t.Error("work tree file changed")
	}
	if got := w.git(w.work, "status", "--porcelain"); got != "" {
		t.Errorf("checkout dirty: %s", got)
	}
	if got := w.git(w.work, "symbolic-ref", "--short", "HEAD"); got != "main" {
		t.Errorf("checkout switched to %s", got)
	}
	if !strings.Contains(logs.String(), "pushed source of truth") {
		t.Errorf("logs: %s", logs.String())
	}

	// A repeated sync of the same run finds its branch and pushes nothing.
	again, err := Sync(ctx, src, promoted, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Published.Pushed || again.Published.Commit != pub.Commit {
		t.Errorf("repeat = %+v", again.Published)
	}

	// The team merges; sync --check passes on the updated checkout.
	w.git(w.bare, "update-ref", "refs/heads/main", pub.Commit)
	w.git(w.work, "pull", "--quiet", "--ff-only")
	if p, err := Check(ctx, src, promoted); err != nil || !p.InSync() {
		t.Errorf("Check after merge = %v, %v", p, err)
	}
	// And a later sync has nothing to do: no branch.
	opts.Run.ID = "run-43"
	res, err = Sync(ctx, src, promoted, opts)
	if err != nil || res.Published.Changed || res.Published.Pushed {
		t.Errorf("sync after merge = %+v, %v", res.Published, err)
	}
	if got := w.git(w.bare, "branch", "--list", "verdict/run-43"); got != "" {
		t.Errorf("branch created without a change: %s", got)
	}
}

func TestSyncGitV5AndValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newGitWorld(t, map[string]string{
		"lb/pool.tf":              fixture(t, "good/v5_origins.tf"),
		"deploy/edge/values.yaml": fixture(t, "good/values.yaml"),
	})
	for name, src := range map[string]Source{
		"v5": {Dir: w.work, File: "lb/pool.tf", Terraform: &TerraformRef{Expression: "cloudflare_load_balancer_pool.use1.origins"}},
		// Dir may be a subdirectory of the checkout.
		"yaml": {Dir: filepath.Join(w.work, "deploy"), File: "edge/values.yaml", Values: &ValuesRef{Path: "cloudflare.pools.use1.weights"}},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := Sync(ctx, src, promoted, SyncOptions{Run: RunInfo{ID: "r-" + name, Verdict: "promote"}, Git: &Repo{Env: w.env}})
			if err != nil {
				t.Fatal(err)
			}
			stat := w.git(w.bare, "diff", "--numstat", "main", res.Published.Branch)
			if !strings.HasPrefix(stat, "2\t2\t") {
				t.Errorf("numstat %q", stat)
			}
			d, err := Parse(src, []byte(w.git(w.bare, "show", res.Published.Branch+":"+strings.TrimPrefix(filepath.ToSlash(filepath.Join(strings.TrimPrefix(src.Dir, w.work), src.File)), "/"))))
			if err != nil {
				t.Fatal(err)
			}
			if !sameWeights(d.Weights, promoted) {
				t.Errorf("branch declares %v", d.Weights)
			}
		})
	}
}

func TestSyncGitRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lb := fixture(t, "good/locals.tf")
	src := func(w *gitWorld) Source {
		return Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	}
	t.Run("uncommitted change", func(t *testing.T) {
		w := newGitWorld(t, map[string]string{"infra/lb.tf": lb})
		if err := os.WriteFile(filepath.Join(w.work, "infra/lb.tf"), []byte(lb+"# wip\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Sync(ctx, src(w), promoted, SyncOptions{Run: RunInfo{ID: "r1"}, Git: &Repo{Env: w.env}})
		if !errors.Is(err, ErrDirty) || !strings.Contains(err.Error(), "uncommitted changes to infra/lb.tf") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("branch exists with other content", func(t *testing.T) {
		w := newGitWorld(t, map[string]string{"infra/lb.tf": lb})
		other := w.otherClone()
		w.git(other, "checkout", "--quiet", "-b", "verdict/r2")
		w.commit(other, "someone else's", map[string]string{"infra/lb.tf": lb + "# theirs\n"})
		w.git(other, "push", "--quiet", "origin", "verdict/r2")
		_, err := Sync(ctx, src(w), promoted, SyncOptions{Run: RunInfo{ID: "r2"}, Git: &Repo{Env: w.env}})
		if !errors.Is(err, ErrBranchConflict) || !strings.Contains(err.Error(), `branch "verdict/r2" already exists on origin`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("declared origin not in pool", func(t *testing.T) {
		w := newGitWorld(t, map[string]string{"infra/lb.tf": lb})
		_, err := Sync(ctx, src(w), map[string]float64{"squirtle": 0.5, "snorlax": 0.5}, SyncOptions{Run: RunInfo{ID: "r3"}, Git: &Repo{Env: w.env}})
		if err == nil || !strings.Contains(err.Error(), "declares origins the pool does not have: staryu (infra/lb.tf:8)") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no run ID", func(t *testing.T) {
		w := newGitWorld(t, map[string]string{"infra/lb.tf": lb})
		if _, err := Sync(ctx, src(w), promoted, SyncOptions{Git: &Repo{Env: w.env}}); err == nil {
			t.Error("no error")
		}
	})
}

// TestSyncGitStartsFromRemoteBase: the branch starts from the remote's base branch, not
// from a stale checkout, so the pull request holds only the weight change.
func TestSyncGitStartsFromRemoteBase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newGitWorld(t, map[string]string{"infra/lb.tf": fixture(t, "good/locals.tf"), "README.md": "a\n"})
	other := w.otherClone()
	w.commit(other, "unrelated", map[string]string{"README.md": "b\n"})
	w.git(other, "push", "--quiet", "origin", "main")
	head := w.git(w.bare, "rev-parse", "main")
	res, err := Sync(ctx, Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}, promoted,
		SyncOptions{Run: RunInfo{ID: "r9"}, Git: &Repo{Env: w.env, Base: "main", Author: Signature{Name: "Bot", Email: "bot@example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.git(w.bare, "rev-parse", res.Published.Branch+"^"); got != head {
		t.Errorf("parent %s, want remote main %s", got, head)
	}
	if got := w.git(w.bare, "diff", "--name-only", "main", res.Published.Branch); got != "infra/lb.tf" {
		t.Errorf("changed files %q", got)
	}
	if got := w.git(w.bare, "log", "-1", "--format=%an", res.Published.Branch); got != "Bot" {
		t.Errorf("author %q", got)
	}
}

// TestSyncGitLocalBranchReused: a push that failed leaves a local branch; the next
// attempt reuses it when it holds the same change.
func TestSyncGitLocalBranchReused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newGitWorld(t, map[string]string{"infra/lb.tf": fixture(t, "good/locals.tf")})
	src := Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	res, err := Sync(ctx, src, promoted, SyncOptions{Run: RunInfo{ID: "r5"}, Git: &Repo{Env: w.env}})
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the push never happened.
	w.git(w.bare, "update-ref", "-d", "refs/heads/verdict/r5")
	again, err := Sync(ctx, src, promoted, SyncOptions{Run: RunInfo{ID: "r5"}, Git: &Repo{Env: w.env}})
	if err != nil || !again.Published.Pushed || again.Published.Commit != res.Published.Commit {
		t.Errorf("retry = %+v, %v", again.Published, err)
	}
	// A local branch with another change is refused.
	_, err = Sync(ctx, src, map[string]float64{"squirtle": 0.2, "snorlax": 0.4, "staryu": 0.4}, SyncOptions{Run: RunInfo{ID: "r5"}, Git: &Repo{Env: w.env}})
	if !errors.Is(err, ErrBranchConflict) {
		t.Errorf("err = %v", err)
	}
}

// TestGitTokenNeverLeaks: the token goes to the remote's host as a Basic authorization
// header and appears in no error or log line, nor does a password in a remote URL.
func TestGitTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	const token = "ghp_s3cretT0kenValue"
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		rw.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(rw, "denied "+r.Header.Get("Authorization"), http.StatusUnauthorized)
	}))
	defer srv.Close()
	w := newGitWorld(t, map[string]string{"infra/lb.tf": fixture(t, "good/locals.tf")})
	w.git(w.work, "remote", "add", "hosted", srv.URL+"/acme/infra.git")
	src := Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))

	for name, repo := range map[string]*Repo{
		"named remote": {Remote: "hosted", Token: token},
		"url remote":   {Remote: srv.URL + "/acme/infra.git", Token: token},
		"url password": {Remote: strings.Replace(srv.URL, "http://", "http://bot:"+token+"@", 1) + "/acme/infra.git"},
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			repo.Env = w.env
			repo.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			_, err := Sync(context.Background(), src, promoted, SyncOptions{Run: RunInfo{ID: "r"}, Git: repo, Logger: repo.Logger})
			if err == nil {
				t.Fatal("push to a server that refuses succeeded")
			}
			for _, secret := range []string{token, basic} {
				if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("secret in error or logs:\n%v\n%s", err, logs.String())
				}
			}
			if !strings.Contains(err.Error(), "fetch base branch") {
				t.Errorf("err = %v", err)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	sawHeader := false
	for _, a := range auths {
		if a == "Basic "+basic {
			sawHeader = true
		}
	}
	if !sawHeader {
		t.Errorf("server never got the token header; got %q", auths)
	}
}

func TestScrub(t *testing.T) {
	got := Scrub("push https://bot:hunter2@github.com/a/b.git failed; token tok123 header "+base64.StdEncoding.EncodeToString([]byte("x-access-token:tok123")), "tok123", "")
	for _, bad := range []string{"hunter2", "tok123", "eC1hY2Nlc3MtdG9rZW46dG9rMTIz"} {
		if strings.Contains(got, bad) {
			t.Errorf("%q left in %q", bad, got)
		}
	}
	if !strings.Contains(got, "https://bot:[REDACTED]@github.com/a/b.git") {
		t.Errorf("got %q", got)
	}
}

func TestBranchName(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"", "run-1"}:            "verdict/run-1",
		{"exp/", "a b/c..d"}:     "exp/a-b-c.d",
		{"", "x.lock"}:           "verdict/x-lock",
		{"", "01JEXAMPLE~^:?*["}: "verdict/01JEXAMPLE",
	} {
		if got := BranchName(in[0], in[1]); got != want {
			t.Errorf("BranchName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}
