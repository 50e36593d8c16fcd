package engine

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// sotTF declares the world's pool weights (o1 0.26, o2 0.27, o3 0.27) the monday.com way.
const sotTF = `locals {
  traffic_split = {
    use1 = {
      o1 = 0.26 # canary
      o2 = 0.27
      o3 = 0.27
      standby = 0.2
    }
  }
}
`

// sotRepo is a bare remote standing in for the Git host and a clone with lb/use1.tf.
type sotRepo struct {
	t                *testing.T
	home, bare, work string
}

func newSotRepo(t *testing.T, tf string) *sotRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	g := &sotRepo{t: t, home: filepath.Join(root, "home"), bare: filepath.Join(root, "remote.git"), work: filepath.Join(root, "work")}
	if err := os.MkdirAll(filepath.Join(g.home), 0o755); err != nil {
		t.Fatal(err)
	}
	g.git(root, "init", "--quiet", "--bare", "-b", "main", g.bare)
	g.git(root, "clone", "--quiet", g.bare, g.work)
	if err := os.MkdirAll(filepath.Join(g.work, "lb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.work, "lb", "use1.tf"), []byte(tf), 0o644); err != nil {
		t.Fatal(err)
	}
	g.git(g.work, "add", "-A")
	g.git(g.work, "commit", "--quiet", "-m", "initial")
	g.git(g.work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
	t.Setenv("HOME", g.home)
	return g
}

func (g *sotRepo) git(dir string, args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + g.home, "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// sotEdit is the experiment edit that declares the source of truth in g's checkout.
func (g *sotRepo) sotEdit(git string) []string {
	return []string{"    onRollback: restore\n", "    onRollback: restore\n    sourceOfTruth:\n      terraform: {file: " + filepath.Join(g.work, "lb", "use1.tf") +
		", expression: local.traffic_split.use1}\n" + git}
}

// githubServer answers POST /repos/acme/infra/pulls as GitHub documents it (201 and the
// pull request object) and records the requests.
func githubServer(t *testing.T, token string) (*httptest.Server, func() []map[string]any) {
	t.Helper()
	var mu sync.Mutex
	var reqs []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/repos/acme/infra/pulls" {
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"message":"Bad credentials"}`)
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		reqs = append(reqs, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"number": 42, "html_url": "https://github.com/acme/infra/pull/42", "state": "open", "head": {"ref": "`+body["head"].(string)+`"}, "base": {"ref": "main"}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []map[string]any { mu.Lock(); defer mu.Unlock(); return append([]map[string]any(nil), reqs...) }
}

func (w *world) sourceEvents(typ string) []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Event
	for _, e := range w.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestPromotionWritesTheSourceOfTruthBack: a run promoted with onPromote: keep pushes a
// branch whose file changes exactly the weights that moved (comments, other keys and
// formatting kept) and opens a pull request; the event and the bookkeeping carry it, and
// the GitHub token appears nowhere.
func TestPromotionWritesTheSourceOfTruthBack(t *testing.T) {
	const token = "ghp_sourceoftruth_secret_4f1e"
	t.Setenv("VERDICT_TEST_GH_TOKEN", token)
	g := newSotRepo(t, sotTF)
	gh, prs := githubServer(t, token)
	w := newWorld(t)
	w.Rate = 1000
	git := "      git:\n        remote: origin\n        base: main\n        pullRequest:\n          github: {repo: acme/infra, tokenEnv: VERDICT_TEST_GH_TOKEN, apiURL: " + gh.URL + "}\n"
	r := start(t, w, w.engine(), g.sotEdit(git)...)
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	assertWeights(t, w, map[string]float64{"o1": 0.27, "o2": 0.27, "o3": 0.26})

	evs := w.sourceEvents(EventSourceSynced)
	if len(evs) != 1 {
		t.Fatalf("want one %s event, got %d", EventSourceSynced, len(evs))
	}
	data, err := DecodeEventData[SourceSyncData](evs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	branch := "verdict/" + r.ID()
	if data.Error != "" || data.Branch != branch || !data.Pushed || data.PullRequest != "https://github.com/acme/infra/pull/42" || data.Changes != 2 {
		t.Fatalf("sync event: %+v", data)
	}
	var b book
	if err := json.Unmarshal(r.Record().Data, &b); err != nil || b.Sync == nil || b.Sync.Commit != data.Commit {
		t.Errorf("bookkeeping sync: %+v (%v)", b.Sync, err)
	}
	got := g.git(g.bare, "show", branch+":lb/use1.tf") + "\n"
	want := strings.NewReplacer("o1 = 0.26", "o1 = 0.27", "o3 = 0.27", "o3 = 0.26").Replace(sotTF)
	if got != want {
		t.Errorf("branch file:\n%s\nwant:\n%s", got, want)
	}
	msg := g.git(g.bare, "log", "-1", "--format=%B", branch)
	for _, s := range []string{"after run " + r.ID() + " (promoted)", "Verdict-Run: " + r.ID(), "Verdict-Report: verdict report " + r.ID()} {
		if !strings.Contains(msg, s) {
			t.Errorf("commit message lacks %q:\n%s", s, msg)
		}
	}
	reqs := prs()
	if len(reqs) != 1 || reqs[0]["head"] != branch || reqs[0]["base"] != "main" {
		t.Errorf("pull requests: %v", reqs)
	}
	// The token is in no event, no commit and no bookkeeping.
	raw, _ := json.Marshal(w.events)
	if strings.Contains(string(raw)+msg+string(r.Record().Data)+string(r.Record().Spec), token) {
		t.Error("the GitHub token leaked into events, the commit or the run")
	}
	// The checkout itself is untouched.
	if b, _ := os.ReadFile(filepath.Join(g.work, "lb", "use1.tf")); string(b) != sotTF {
		t.Errorf("the checkout's file changed:\n%s", b)
	}
}

// TestRollbackWritesNothing: a rolled-back run (restore) leaves the intended weights as
// they were: no branch, no event.
func TestRollbackWritesNothing(t *testing.T) {
	g := newSotRepo(t, sotTF)
	w := newWorld(t)
	w.Rate = 1000
	w.ErrP["c1"] = 0.025
	r := start(t, w, w.engine(), g.sotEdit("      git: {remote: origin}\n")...)
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StateRolledBack, VerdictRolledBack)
	if evs := w.sourceEvents(EventSourceSynced); len(evs) != 0 {
		t.Errorf("a rollback wrote back: %+v", evs)
	}
	if heads := g.git(g.bare, "for-each-ref", "--format=%(refname)", "refs/heads/"); heads != "refs/heads/main" {
		t.Errorf("remote branches after a rollback: %s", heads)
	}
	if n := len(w.sourceEvents(EventSourceChecked)); n != 1 {
		t.Errorf("want the preflight comparison once, got %d", n)
	}
}

// TestSourceMismatchFailsBeforeAnyChange: a file that disagrees with the pool ends the run
// check_failed in preflight, with the plan in the reason, and no weight is written;
// onMismatch: warn lets it run.
func TestSourceMismatchFailsBeforeAnyChange(t *testing.T) {
	stale := strings.Replace(sotTF, "o1 = 0.26", "o1 = 0.5", 1)
	g := newSotRepo(t, stale)
	w := newWorld(t)
	w.Rate = 1000
	r := start(t, w, w.engine(), g.sotEdit("")...)
	w.Drive(r, 10*time.Minute, nil)
	assertEnded(t, r, store.StateFailed, VerdictCheckFailed)
	if rs := r.Record().Reason; !strings.Contains(rs, "~ o1: 0.26 -> 0.50") || !strings.Contains(rs, "Plan: 1 to change") {
		t.Errorf("reason does not show the plan: %s", rs)
	}
	if ev := w.eventTypes(); ev[EventWeightsIntent] != 0 {
		t.Errorf("weights were written: %v", ev)
	}
	assertWeights(t, w, original)

	w2 := newWorld(t)
	w2.Rate = 1000
	edit := g.sotEdit("      onMismatch: warn\n")
	r2 := start(t, w2, w2.engine(), edit...)
	w2.Drive(r2, 15*time.Minute, nil)
	if r2.Record().State == store.StateFailed || w2.eventTypes()[EventWeightsIntent] == 0 {
		t.Errorf("onMismatch: warn did not let the run go on: %s %s", r2.Record().State, r2.Record().Reason)
	}
}

// captureNotifier records notifications.
type captureNotifier struct {
	mu sync.Mutex
	ns []Notification
}

func (c *captureNotifier) Notify(_ context.Context, _ []experiments.Notify, n Notification) {
	c.mu.Lock()
	c.ns = append(c.ns, n)
	c.mu.Unlock()
}

// TestFailedWriteBackKeepsTheVerdict: a remote that cannot be reached leaves the run
// promoted; the error is an event, in the bookkeeping, and an alert.
func TestFailedWriteBackKeepsTheVerdict(t *testing.T) {
	g := newSotRepo(t, sotTF)
	w := newWorld(t)
	w.Rate = 1000
	n := &captureNotifier{}
	gone := filepath.Join(t.TempDir(), "gone.git")
	edits := append(g.sotEdit("      git: {remote: "+gone+", base: main}\n"), "  preconditions:", "  notify:\n    - webhook: {url: http://127.0.0.1:9/hook}\n  preconditions:")
	r := start(t, w, w.engine(func(o *Options) { o.Notifier = n; o.SyncTimeout = 30 * time.Second }), edits...)
	w.Drive(r, 3*time.Hour, nil)
	assertEnded(t, r, store.StatePromoted, VerdictPromoted)
	evs := w.sourceEvents(EventSourceSynced)
	if len(evs) != 1 {
		t.Fatalf("want one %s event, got %d", EventSourceSynced, len(evs))
	}
	d, _ := DecodeEventData[SourceSyncData](evs[0].Data)
	if d.Error == "" || d.UpToDate || d.Pushed || !strings.Contains(d.Summary(), "failed: fetch base branch") {
		t.Errorf("sync event: %+v", d)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	alerted := false
	for _, x := range n.ns {
		if strings.HasPrefix(x.Text, "ALERT world-test") && strings.Contains(x.Text, "verdict sync "+r.ID()) {
			alerted = true
		}
	}
	if !alerted {
		t.Errorf("no alert among %d notifications", len(n.ns))
	}
}
