package gitops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// GitHub opens pull requests through GitHub's REST API (api.github.com or a GitHub
// Enterprise Server's /api/v3).
type GitHub struct {
	// BaseURL is the API root; default https://api.github.com.
	BaseURL string
	// Token is a fine-grained or installation token with pull requests: write. It is
	// sent as a Bearer token and never appears in errors.
	Token string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// MaxWait is the longest a rate-limited request waits for the limit to reset
	// before giving up; default 1 minute.
	MaxWait time.Duration
	// Now and Sleep default to the real clock; tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// PullRequestRequest is a pull request to open from Head into Base in Owner/Repo.
type PullRequestRequest struct {
	Owner, Repo string
	Title       string
	Head        string // branch name in Owner/Repo
	Base        string
	Body        string
	Draft       bool
}

// PullRequest is the part of GitHub's pull request object Verdict records.
type PullRequest struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	State   string `json:"state"`
	// Existing is true when a pull request for the branch was already open.
	Existing bool `json:"existing"`
}

// ParseRepo splits "owner/name".
func ParseRepo(s string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("repository %q: want owner/name", s)
	}
	return owner, name, nil
}

// LoadToken returns a token from the environment variable env or, if env is empty,
// from file (trimmed). The token itself never appears in the error.
func LoadToken(env, file string) (string, error) {
	switch {
	case env != "":
		t := strings.TrimSpace(os.Getenv(env))
		if t == "" {
			return "", fmt.Errorf("token: environment variable %s is not set", env)
		}
		return t, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("token: read %s: %w", file, err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token: %s is empty", file)
		}
		return t, nil
	}
	return "", errors.New("token: set tokenEnv or tokenFile")
}

// APIError is an unsuccessful GitHub API response.
type APIError struct {
	Status  int
	Method  string
	Path    string
	Message string // GitHub's message plus the first validation error, if any
	Hint    string
}

// Error renders the method, path, status, GitHub's message and a hint.
func (e *APIError) Error() string {
	s := fmt.Sprintf("GitHub %s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// OpenPullRequest opens a pull request, or returns the open one GitHub already has for
// the same head and base ("A pull request already exists").
func (g *GitHub) OpenPullRequest(ctx context.Context, req PullRequestRequest) (PullRequest, error) {
	if req.Owner == "" || req.Repo == "" || req.Head == "" || req.Base == "" || req.Title == "" {
		return PullRequest{}, errors.New("pull request: owner, repo, head, base and title are required")
	}
	p := fmt.Sprintf("/repos/%s/%s/pulls", url.PathEscape(req.Owner), url.PathEscape(req.Repo))
	body, _ := json.Marshal(map[string]any{"title": req.Title, "head": req.Head, "base": req.Base, "body": req.Body, "draft": req.Draft})
	var pr PullRequest
	err := g.do(ctx, http.MethodPost, p, body, &pr)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity && strings.Contains(strings.ToLower(ae.Message), "already exists") {
		q := url.Values{"head": {req.Owner + ":" + req.Head}, "base": {req.Base}, "state": {"open"}}
		var prs []PullRequest
		if err := g.do(ctx, http.MethodGet, p+"?"+q.Encode(), nil, &prs); err != nil {
			return PullRequest{}, fmt.Errorf("find the existing pull request for %s: %w", req.Head, err)
		}
		if len(prs) == 0 {
			return PullRequest{}, fmt.Errorf("GitHub says a pull request for %s already exists but lists none open: %w", req.Head, err)
		}
		prs[0].Existing = true
		return prs[0], nil
	}
	if err != nil {
		return PullRequest{}, fmt.Errorf("open pull request %s -> %s in %s/%s: %w", req.Head, req.Base, req.Owner, req.Repo, err)
	}
	return pr, nil
}

// do sends one request and decodes a 2xx JSON reply into out. A rate-limited reply
// (403 or 429 with x-ratelimit-remaining: 0 or retry-after) is retried after the
// advertised wait when that is within MaxWait.
func (g *GitHub) do(ctx context.Context, method, p string, body []byte, out any) error {
	base := strings.TrimSuffix(g.BaseURL, "/")
	if base == "" {
		base = "https://api.github.com"
	}
	client := g.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+p, rd)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		req.Header.Set("User-Agent", "verdict-gitops")
		if g.Token != "" {
			req.Header.Set("Authorization", "Bearer "+g.Token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return errors.New(Scrub(err.Error(), g.Token))
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("GitHub %s %s: read reply: %w", method, p, err)
		}
		if resp.StatusCode/100 == 2 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("GitHub %s %s: reply is not the expected JSON: %w", method, p, err)
			}
			return nil
		}
		if wait, limited := g.rateLimitWait(resp, data); limited {
			if attempt < 3 && wait <= g.maxWait() {
				if err := g.sleep(ctx, wait); err != nil {
					return err
				}
				continue
			}
			return &APIError{Status: resp.StatusCode, Method: method, Path: p, Message: "rate limited",
				Hint: fmt.Sprintf("the limit resets in %s, longer than the %s Verdict waits; run verdict sync later", wait.Round(time.Second), g.maxWait())}
		}
		return apiError(resp.StatusCode, method, p, data, g.Token)
	}
}

// rateLimitWait reads GitHub's rate-limit signals: retry-after (secondary limits),
// x-ratelimit-remaining: 0 with x-ratelimit-reset (epoch seconds), or a secondary
// rate limit message.
func (g *GitHub) rateLimitWait(resp *http.Response, body []byte) (time.Duration, bool) {
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			return time.Duration(n) * time.Second, true
		}
	}
	if resp.Header.Get("X-Ratelimit-Remaining") == "0" {
		reset, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Reset"), 10, 64)
		if err != nil {
			return time.Minute, true
		}
		now := time.Now
		if g.Now != nil {
			now = g.Now
		}
		return max(time.Unix(reset, 0).Sub(now())+time.Second, time.Second), true
	}
	// A secondary rate limit without retry-after: GitHub asks for at least a minute.
	if resp.StatusCode == http.StatusTooManyRequests || bytes.Contains(bytes.ToLower(body), []byte("secondary rate limit")) {
		return time.Minute, true
	}
	return 0, false
}

func (g *GitHub) maxWait() time.Duration {
	if g.MaxWait == 0 {
		return time.Minute
	}
	return g.MaxWait
}

func (g *GitHub) sleep(ctx context.Context, d time.Duration) error {
	if g.Sleep != nil {
		return g.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func apiError(status int, method, p string, data []byte, token string) error {
	var ge struct {
		Message string `json:"message"`
		Errors  []struct {
			Message string `json:"message"`
			Code    string `json:"code"`
			Field   string `json:"field"`
		} `json:"errors"`
	}
	_ = json.Unmarshal(data, &ge)
	msg := ge.Message
	if msg == "" {
		msg = http.StatusText(status)
	}
	if len(ge.Errors) > 0 {
		switch first := ge.Errors[0]; {
		case first.Message != "":
			msg += ": " + first.Message
		case first.Code != "":
			msg += ": " + first.Field + " " + first.Code
		}
	}
	e := &APIError{Status: status, Method: method, Path: p, Message: Scrub(msg, token)}
	switch status {
	case http.StatusUnauthorized:
		e.Hint = "the token is missing, expired or revoked"
	case http.StatusForbidden:
		e.Hint = "the token lacks permission: it needs pull requests: write (and contents: read) on the repository"
	case http.StatusNotFound:
		e.Hint = "no such repository, or the token cannot see it"
	case http.StatusUnprocessableEntity:
		e.Hint = "check that the head branch was pushed and the base branch exists"
	}
	return e
}
