package traffic_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
	"github.com/verdict-dev/verdict/traffic/traffictest"
)

// TestRefusedTokenFailsFastAndSaysWhatToFix: with a wrong token every operation fails on
// its first call (a retry cannot fix a token), matches ErrUnauthorized, names the variable
// the token came from and the permission it needs, and never shows the token.
func TestRefusedTokenFailsFastAndSaysWhatToFix(t *testing.T) {
	wrong := "wrong-" + testToken
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sources := map[string]struct {
		mod  func(*traffic.CloudflareOptions)
		from []string
	}{
		"token variable": {func(o *traffic.CloudflareOptions) { o.Token = wrong }, []string{traffic.EnvCloudflareToken}},
		"token file":     {func(o *traffic.CloudflareOptions) { o.Token, o.TokenFile = "", file }, []string{traffic.EnvCloudflareTokenFile, file}},
	}
	claim := traffic.Claim{Run: "r1", Owner: "me", Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	ops := map[string]func(c *traffic.Cloudflare, ref traffic.PoolRef) error{
		"Pool": func(c *traffic.Cloudflare, ref traffic.PoolRef) error {
			_, err := c.Pool(context.Background(), ref)
			return err
		},
		"SetWeights": func(c *traffic.Cloudflare, ref traffic.PoolRef) error {
			return c.SetWeights(context.Background(), ref, traffic.Weights{"canary": 0.1}, traffic.Weights{"canary": 0})
		},
		"ListPools": func(c *traffic.Cloudflare, ref traffic.PoolRef) error {
			_, err := c.ListPools(context.Background(), "")
			return err
		},
		"Claim": func(c *traffic.Cloudflare, ref traffic.PoolRef) error {
			return c.Claim(context.Background(), ref, claim, false)
		},
		"Release": func(c *traffic.Cloudflare, ref traffic.PoolRef) error {
			return c.Release(context.Background(), ref, traffic.LastRun{Run: "r1", Verdict: "promoted"})
		},
	}
	for sname, src := range sources {
		for oname, op := range ops {
			t.Run(sname+"/"+oname, func(t *testing.T) {
				// Generous retry bounds: were a 403 retried, the test would see the calls.
				s := startEmu(t, cfemu.Options{}, "", func(o *traffic.CloudflareOptions) {
					src.mod(o)
					o.MaxAttempts, o.MaxRateLimitWait = 10, time.Minute
				})
				err := op(s.client, s.ref)
				if !errors.Is(err, traffic.ErrUnauthorized) {
					t.Fatalf("err = %v, want ErrUnauthorized", err)
				}
				if n := len(s.emu.Calls()); n != 1 {
					t.Errorf("API calls = %d, want 1: a refused token is never retried", n)
				}
				msg := err.Error()
				for _, want := range append(src.from, "9109", `"Load Balancing: Monitors and Pools"`, "Edit", traffic.EnvCloudflareAccount) {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not mention %q", msg, want)
					}
				}
				if strings.Contains(msg, wrong) || strings.Contains(msg, testToken) {
					t.Errorf("error shows the token: %q", msg)
				}
			})
		}
	}
}

// TestUnauthorized401IsNotRetried: Cloudflare answers 401 for some auth failures; it is
// as final as a 403.
func TestUnauthorized401IsNotRetried(t *testing.T) {
	srv, n := recordedServer(t, http.StatusUnauthorized, `{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}`, nil)
	_, err := clientFor(t, srv.URL, nil).Pool(context.Background(), traffic.PoolRef{Pool: traffictest.PoolID})
	if !errors.Is(err, traffic.ErrUnauthorized) || n.Load() != 1 {
		t.Fatalf("err = %v after %d calls, want ErrUnauthorized after 1", err, n.Load())
	}
	if !strings.Contains(err.Error(), traffic.EnvCloudflareToken) {
		t.Errorf("error %q does not say which token to fix", err)
	}
}

// TestConcurrentClaimThatWinsIsReported: another run claims the pool right after this
// claim's PATCH (the window no read can close); the read-back sees it and Claim reports
// the winner instead of believing it owns the pool.
func TestConcurrentClaimThatWinsIsReported(t *testing.T) {
	other := traffic.Claim{Run: "checkout-other-run", Owner: "verdict-run@laptop", Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	var s emuSetup
	var once sync.Once
	s = startEmu(t, cfemu.Options{AfterRequest: func(r *http.Request, status int) {
		if r.Method == http.MethodPatch && status == http.StatusOK {
			once.Do(func() {
				raw, _ := s.emu.Pool(s.ref.Pool)
				p, _ := traffic.DecodePool(raw)
				body := `{"description": "` + traffic.WithClaim(p.Description, other.String()) + `"}`
				if err := s.emu.Patch(s.ref.Pool, []byte(body)); err != nil {
					t.Error(err)
				}
			})
		}
	}}, "", nil)
	err := s.client.Claim(context.Background(), s.ref, traffic.Claim{Run: "checkout-mine", Owner: "me", Since: other.Since}, false)
	var ce *traffic.ClaimedError
	if !errors.As(err, &ce) || ce.Claim.Run != other.Run {
		t.Fatalf("Claim = %v, want *ClaimedError naming %s", err, other.Run)
	}
}

// TestClaimRetriedAfter429SeesAClaimMadeMeanwhile: the claim's PATCH is rate limited and
// another run claims the pool during the wait. The retry decides from a fresh read, so it
// is refused instead of overwriting the other run's claim.
func TestClaimRetriedAfter429SeesAClaimMadeMeanwhile(t *testing.T) {
	other := traffic.Claim{Run: "checkout-other-run", Owner: "serve-a", Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	var s emuSetup
	var calls atomic.Int32
	s = startEmu(t, cfemu.Options{AfterRequest: func(r *http.Request, status int) {
		switch n := calls.Add(1); {
		case n == 1: // the claim's first read: its PATCH will be refused
			s.emu.SetFault(cfemu.Fault{Fail: 1, Status: http.StatusTooManyRequests})
		case r.Method == http.MethodPatch && status == http.StatusTooManyRequests:
			if err := s.emu.Patch(s.ref.Pool, []byte(`{"description": "`+other.String()+`"}`)); err != nil {
				t.Error(err)
			}
		}
	}}, "", nil)
	err := s.client.Claim(context.Background(), s.ref, traffic.Claim{Run: "checkout-mine", Owner: "me", Since: other.Since}, false)
	var ce *traffic.ClaimedError
	if !errors.As(err, &ce) || ce.Claim.Run != other.Run {
		t.Fatalf("Claim = %v, want *ClaimedError naming %s", err, other.Run)
	}
	raw, _ := s.emu.Pool(s.ref.Pool)
	p, _ := traffic.DecodePool(raw)
	if c, _ := p.Claim(); c.Run != other.Run {
		t.Errorf("pool claim = %+v, want the other run's kept", c)
	}
}

func TestParseClaimAndWithClaim(t *testing.T) {
	since := time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	odd := []traffic.Claim{
		{Run: "plain-run-1", Owner: "verdict-run@host", Since: since},
		{Run: "run with spaces", Owner: "ops team (eu)", Since: since},
		{Run: "run]with[brackets", Owner: "o=w=n=e=r", Since: since},
		{Run: "run%20encoded+plus", Owner: "émile@hôte", Since: since},
		{Run: "[verdict: run=fake]", Owner: "a]b [verdict-last: run=x]", Since: since},
		{Run: "tab\tand\nnewline", Owner: "", Since: since},
	}
	humans := []string{"", "checkout clusters, managed by Terraform", "  padded  ", "uses [brackets] and = signs"}
	for _, c := range odd {
		for _, h := range humans {
			d := traffic.WithClaim(h, c.String())
			got, ok := traffic.ParseClaim(d)
			if !ok || got.Run != c.Run || got.Owner != c.Owner || !got.Since.Equal(c.Since) {
				t.Errorf("ParseClaim(WithClaim(%q, %+v)) = %+v, %v; description %q", h, c, got, ok, d)
			}
			if !strings.HasPrefix(d, strings.TrimSpace(h)) {
				t.Errorf("description %q lost the human text %q", d, h)
			}
			if _, ok := traffic.ParseLastRun(d); ok {
				t.Errorf("a claim parsed as a last-run note: %q", d)
			}
			// Releasing: the note replaces the claim, the human text stays.
			last := traffic.LastRun{Run: c.Run, Verdict: "rolled back", Ended: since.Add(time.Hour)}
			r := traffic.WithClaim(d, last.String())
			if _, ok := traffic.ParseClaim(r); ok {
				t.Errorf("claim survived its release: %q", r)
			}
			if l, ok := traffic.ParseLastRun(r); !ok || l != last {
				t.Errorf("ParseLastRun(%q) = %+v, %v; want %+v", r, l, ok, last)
			}
			if strings.TrimSpace(traffic.WithClaim(r, "")) != strings.TrimSpace(h) {
				t.Errorf("removing every marker from %q left %q, want %q", r, traffic.WithClaim(r, ""), h)
			}
		}
	}
	if _, ok := traffic.ParseClaim("checkout clusters [verdict: owner=x]"); ok {
		t.Errorf("a claim without a run was accepted")
	}
	if _, ok := traffic.ParseClaim("no marker here"); ok {
		t.Errorf("a description without a marker has a claim")
	}
}
