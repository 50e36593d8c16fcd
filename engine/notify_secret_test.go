package engine

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
)

// TestNotifierNeverReportsTheURL fails deliveries every way net/http can, to URLs with
// secrets in the path, the query and the password, and checks that no report quotes them.
func TestNotifierNeverReportsTheURL(t *testing.T) {
	const path, query, password = "/services/T000/B000/pathsecret", "token=querysecret", "pwsecret"
	secrets := []string{"pathsecret", "querysecret", "pwsecret", path, query}

	// Port 1 (tcpmux) is outside the ephemeral range: nothing listens there, and unlike the
	// port of a closed test server no other test's server can be given it meanwhile (which
	// once turned "connection refused" into a delivery in the race pass).
	const refusedURL = "http://127.0.0.1:1"
	failing := newNotifyServer(t, func(int, http.Header) int { return 500 })
	hung := newNotifyServer(t, nil)
	hung.hold = make(chan struct{})
	t.Cleanup(func() { close(hung.hold) })
	loop := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, r.URL.String(), http.StatusFound)
	}))
	t.Cleanup(loop.Close)
	withUser := func(base string) string {
		return strings.Replace(base, "http://", "http://user:"+password+"@", 1) + path + "?" + query
	}

	tests := map[string]struct {
		target    experiments.Notify
		wantInErr string
	}{
		"connection refused":  {target: notifyWebhook(refusedURL + path + "?" + query), wantInErr: "connection refused"},
		"5xx with a password": {target: notifyWebhook(withUser(failing.URL)), wantInErr: "HTTP 500"},
		"timeout":             {target: notifyWebhook(hung.URL + path + "?" + query), wantInErr: "deadline exceeded"},
		"redirect loop":       {target: notifyWebhook(loop.URL + path + "?" + query), wantInErr: "redirects"},
		"invalid URL":         {target: notifyWebhook("http://exa mple.com" + path + "?" + query), wantInErr: "invalid URL"},
		"slack, refused":      {target: experiments.Notify{Slack: &experiments.SlackNotify{WebhookURL: withUser(refusedURL)}}, wantInErr: "connection refused"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var f notifyFailures
			h := fastNotifier(&f)
			h.Attempts, h.Timeout = 2, 200*time.Millisecond
			h.Notify(context.Background(), []experiments.Notify{tc.target}, notifyNote("end", 1))
			if err := closeNotifier(t, h, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			list, errs := f.get()
			if len(list) != 1 {
				t.Fatalf("Failed told %v, want one failure", list)
			}
			if !strings.Contains(list[0], tc.wantInErr) {
				t.Errorf("failure %q does not say %q", list[0], tc.wantInErr)
			}
			url := ""
			if tc.target.Slack != nil {
				url = tc.target.Slack.WebhookURL
			} else {
				url = tc.target.Webhook.URL
			}
			for _, s := range append(secrets, url) {
				if strings.Contains(list[0], s) || strings.Contains(errs[0].Error(), s) {
					t.Errorf("failure %q quotes the secret %q", list[0], s)
				}
			}
		})
	}
}

func TestScrubURL(t *testing.T) {
	target := "https://user:pw-1@hooks.example.com/T0/B0/xyz%2Fsecret?k=v1&sig=abc"
	in := `Post "` + target + `": dial tcp: lookup hooks.example.com: no such host; path /T0/B0/xyz%2Fsecret; sig k=v1&sig=abc; pw-1`
	got := scrubURL(in, target)
	for _, s := range []string{target, "xyz%2Fsecret", "/T0/B0/xyz/secret", "k=v1&sig=abc", "pw-1"} {
		if strings.Contains(got, s) {
			t.Errorf("scrubbed text %q still holds %q", got, s)
		}
	}
	if !strings.Contains(got, "lookup hooks.example.com: no such host") {
		t.Errorf("scrubbed text %q lost the cause", got)
	}
}
