package gitops

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGitHub follows GitHub's documented shapes for "Create a pull request"
// (POST /repos/{owner}/{repo}/pulls) and "List pull requests" (GET with head=owner:branch).
type fakeGitHub struct {
	t        *testing.T
	token    string // the only token accepted; "readonly" gets 403
	owner    string
	repo     string
	mu       sync.Mutex
	prs      []map[string]any
	requests []string
	// limited makes the next n requests fail with a primary rate limit.
	limited int
	reset   time.Time
}

func newFakeGitHub(t *testing.T) (*fakeGitHub, *httptest.Server) {
	f := &fakeGitHub{t: t, token: "ghs_test_token_123", owner: "acme", repo: "infra"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	w.Header().Set("X-RateLimit-Limit", "5000")
	reply := func(status int, v any) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	docs := "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
	if got := r.Header.Get("Accept"); got != "application/vnd.github+json" {
		f.t.Errorf("Accept = %q", got)
	}
	if got := r.Header.Get("X-GitHub-Api-Version"); got != "2022-11-28" {
		f.t.Errorf("X-GitHub-Api-Version = %q", got)
	}
	if r.Header.Get("User-Agent") == "" {
		f.t.Error("no User-Agent (GitHub rejects requests without one)")
	}
	if f.limited > 0 {
		f.limited--
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(f.reset.Unix(), 10))
		w.Header().Set("X-RateLimit-Resource", "core")
		reply(http.StatusForbidden, map[string]any{"message": "API rate limit exceeded for installation ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", "status": "403"})
		return
	}
	w.Header().Set("X-RateLimit-Remaining", "4999")
	switch r.Header.Get("Authorization") {
	case "Bearer " + f.token:
	case "Bearer readonly":
		reply(http.StatusForbidden, map[string]any{"message": "Resource not accessible by personal access token", "documentation_url": docs, "status": "403"})
		return
	default:
		reply(http.StatusUnauthorized, map[string]any{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
		return
	}
	base := fmt.Sprintf("/repos/%s/%s/pulls", f.owner, f.repo)
	if r.URL.Path != base {
		reply(http.StatusNotFound, map[string]any{"message": "Not Found", "documentation_url": docs, "status": "404"})
		return
	}
	switch r.Method {
	case http.MethodPost:
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			f.t.Errorf("Content-Type = %q", ct)
		}
		var in struct {
			Title, Head, Base, Body string
			Draft                   bool
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Title == "" || in.Head == "" || in.Base == "" {
			reply(http.StatusUnprocessableEntity, map[string]any{"message": "Invalid request.", "documentation_url": docs, "status": "422"})
			return
		}
		for _, pr := range f.prs {
			if pr["head"].(map[string]any)["ref"] == in.Head && pr["state"] == "open" {
				reply(http.StatusUnprocessableEntity, map[string]any{
					"message": "Validation Failed",
					"errors": []map[string]any{{"resource": "PullRequest", "code": "custom",
						"message": fmt.Sprintf("A pull request already exists for %s:%s.", f.owner, in.Head)}},
					"documentation_url": docs, "status": "422"})
				return
			}
		}
		n := 1347 + len(f.prs)
		pr := map[string]any{
			"url":      fmt.Sprintf("https://api.github.com/repos/%s/%s/pulls/%d", f.owner, f.repo, n),
			"id":       1000000 + n,
			"node_id":  "PR_kwDOAbc" + strconv.Itoa(n),
			"html_url": fmt.Sprintf("https://github.com/%s/%s/pull/%d", f.owner, f.repo, n),
			"number":   n, "state": "open", "locked": false, "title": in.Title, "body": in.Body, "draft": in.Draft,
			"user":       map[string]any{"login": "verdict-bot[bot]", "id": 1, "type": "Bot"},
			"head":       map[string]any{"label": f.owner + ":" + in.Head, "ref": in.Head, "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
			"base":       map[string]any{"label": f.owner + ":" + in.Base, "ref": in.Base, "sha": "9fceb02d0ae598e95dc970b74767f19372d61af8"},
			"created_at": "2026-12-05T20:00:00Z", "merged": false, "mergeable": nil,
		}
		f.prs = append(f.prs, pr)
		reply(http.StatusCreated, pr)
	case http.MethodGet:
		head := r.URL.Query().Get("head")
		out := []map[string]any{}
		for _, pr := range f.prs {
			if pr["head"].(map[string]any)["label"] == head && (r.URL.Query().Get("state") != "open" || pr["state"] == "open") {
				out = append(out, pr)
			}
		}
		reply(http.StatusOK, out)
	default:
		reply(http.StatusNotFound, map[string]any{"message": "Not Found"})
	}
}

func TestGitHubOpenPullRequest(t *testing.T) {
	f, srv := newFakeGitHub(t)
	gh := &GitHub{BaseURL: srv.URL, Token: f.token}
	req := PullRequestRequest{Owner: "acme", Repo: "infra", Title: "Verdict: weights", Head: "verdict/r1", Base: "main", Body: "body"}
	pr, err := gh.OpenPullRequest(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Number != 1347 || pr.HTMLURL != "https://github.com/acme/infra/pull/1347" || pr.State != "open" || pr.Existing {
		t.Errorf("pr = %+v", pr)
	}
	// Again: GitHub answers 422 "already exists"; the open one is found and returned.
	again, err := gh.OpenPullRequest(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if again.Number != 1347 || !again.Existing {
		t.Errorf("again = %+v", again)
	}
	if got := f.requests[len(f.requests)-1]; got != "GET /repos/acme/infra/pulls?base=main&head=acme%3Averdict%2Fr1&state=open" {
		t.Errorf("lookup request = %q", got)
	}
}

func TestGitHubErrors(t *testing.T) {
	f, srv := newFakeGitHub(t)
	req := PullRequestRequest{Owner: "acme", Repo: "infra", Title: "t", Head: "verdict/r1", Base: "main"}
	tests := map[string]struct {
		token string
		repo  string
		want  []string
	}{
		"401": {token: "ghp_wrongtoken999", want: []string{"401 Bad credentials", "the token is missing, expired or revoked"}},
		"403": {token: "readonly", want: []string{"403 Resource not accessible by personal access token", "needs pull requests: write"}},
		"404": {token: f.token, repo: "nope", want: []string{"404 Not Found", "no such repository, or the token cannot see it"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := req
			if tc.repo != "" {
				r.Repo = tc.repo
			}
			_, err := (&GitHub{BaseURL: srv.URL, Token: tc.token}).OpenPullRequest(context.Background(), r)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Errorf("token in error: %v", err)
			}
		})
	}
	if _, err := (&GitHub{BaseURL: srv.URL}).OpenPullRequest(context.Background(), PullRequestRequest{Owner: "acme"}); err == nil {
		t.Error("incomplete request accepted")
	}
}

func TestGitHubRateLimit(t *testing.T) {
	f, srv := newFakeGitHub(t)
	now := time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC)
	f.limited, f.reset = 1, now.Add(20*time.Second)
	var slept []time.Duration
	gh := &GitHub{BaseURL: srv.URL, Token: f.token, Now: func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	req := PullRequestRequest{Owner: "acme", Repo: "infra", Title: "t", Head: "verdict/r1", Base: "main"}
	pr, err := gh.OpenPullRequest(context.Background(), req)
	if err != nil || pr.Number == 0 {
		t.Fatalf("pr = %+v, %v", pr, err)
	}
	if len(slept) != 1 || slept[0] != 21*time.Second {
		t.Errorf("slept %v, want [21s] (until x-ratelimit-reset, plus a second)", slept)
	}
	// A reset further away than MaxWait is an error that says when to come back.
	f.limited, f.reset = 1, now.Add(time.Hour)
	req.Head = "verdict/r2"
	_, err = gh.OpenPullRequest(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), "resets in 1h0m1s") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadToken(t *testing.T) {
	t.Setenv("VERDICT_TEST_GH_TOKEN", " tok-from-env\n")
	if tok, err := LoadToken("VERDICT_TEST_GH_TOKEN", ""); err != nil || tok != "tok-from-env" {
		t.Errorf("env: %q, %v", tok, err)
	}
	if _, err := LoadToken("VERDICT_TEST_GH_UNSET", ""); err == nil || !strings.Contains(err.Error(), "VERDICT_TEST_GH_UNSET is not set") {
		t.Errorf("unset: %v", err)
	}
	p := t.TempDir() + "/token"
	if err := writeFileAtomic(p, []byte("tok-from-file\n")); err != nil {
		t.Fatal(err)
	}
	if tok, err := LoadToken("", p); err != nil || tok != "tok-from-file" {
		t.Errorf("file: %q, %v", tok, err)
	}
}

// TestSyncWithPullRequest: the whole write-back: branch pushed to a real bare
// repository, pull request opened on the GitHub test server, secrets in neither.
func TestSyncWithPullRequest(t *testing.T) {
	t.Parallel()
	f, srv := newFakeGitHub(t)
	w := newGitWorld(t, map[string]string{"infra/lb.tf": fixture(t, "good/locals.tf")})
	src := Source{Dir: w.work, File: "infra/lb.tf", Terraform: &TerraformRef{Expression: "local.traffic_split.use1"}}
	opts := SyncOptions{
		Run:         RunInfo{ID: "r77", Verdict: "promote", ReportURL: "https://verdict.example.com/runs/r77?token=" + f.token},
		Git:         &Repo{Env: w.env},
		PullRequest: &PullRequestOptions{GitHub: &GitHub{BaseURL: srv.URL, Token: f.token}, Repo: "acme/infra"},
	}
	res, err := Sync(context.Background(), src, promoted, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.PullRequest == nil || res.PullRequest.Number != 1347 {
		t.Fatalf("result = %+v", res)
	}
	pr := f.prs[0]
	if pr["head"].(map[string]any)["ref"] != "verdict/r77" || pr["base"].(map[string]any)["ref"] != "main" {
		t.Errorf("pr head/base = %v / %v", pr["head"], pr["base"])
	}
	body := pr["body"].(string)
	for _, want := range []string{"Run **r77** ended with verdict **promote**", "- snorlax = 0.33\n+ snorlax = 0.5", "Report: https://verdict.example.com/runs/r77?token=[REDACTED]"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if msg := w.git(w.bare, "log", "-1", "--format=%B", "verdict/r77"); strings.Contains(msg, f.token) || strings.Contains(body, f.token) {
		t.Errorf("token in commit or pull request:\n%s\n%s", msg, body)
	}
	js, _ := json.Marshal(res)
	if strings.Contains(string(js), f.token) {
		t.Errorf("token in result JSON: %s", js)
	}
	// Running the sync again finds the same pull request.
	again, err := Sync(context.Background(), src, promoted, opts)
	if err != nil || again.PullRequest.Number != 1347 || !again.PullRequest.Existing {
		t.Errorf("again = %+v, %v", again.PullRequest, err)
	}
}

func TestGitHubSecondaryRateLimit(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		switch calls {
		case 1:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits","status":"403"}`))
		case 2:
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message":"You have exceeded a secondary rate limit and have been temporarily blocked from content creation.","status":"403"}`))
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"number":5,"html_url":"https://github.com/acme/infra/pull/5","state":"open"}`))
		}
	}))
	defer srv.Close()
	var slept []time.Duration
	gh := &GitHub{BaseURL: srv.URL, Token: "t", Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	pr, err := gh.OpenPullRequest(context.Background(), PullRequestRequest{Owner: "acme", Repo: "infra", Title: "t", Head: "h", Base: "main"})
	if err != nil || pr.Number != 5 {
		t.Fatalf("pr = %+v, %v", pr, err)
	}
	if len(slept) != 2 || slept[0] != 7*time.Second || slept[1] != time.Minute {
		t.Errorf("slept %v, want [7s 1m]", slept)
	}
}
