package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a log destination the test reads while the server writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestActionsNameThePrincipal: an action authenticated by a named token is recorded as
// done by the token's name, the who the client sends only as an "on behalf of" note; with
// the shared token the client's who stands. Control characters in who and reason (ESC, a
// newline forging a log line, an RTL override) are stored and logged escaped.
func TestActionsNameThePrincipal(t *testing.T) {
	w := newWorld(t)
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	var logs lockedBuffer
	s := w.server(func(o *Options) {
		o.Token = "shared-secret"
		o.Tokens = []NamedToken{{Name: "ci-bot", Secret: "ci-secret"}, {Name: "alice", Secret: "alice-secret"}}
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ci := &client{t: t, base: s.URL(), token: "ci-secret"}
	shared := &client{t: t, base: s.URL(), token: "shared-secret"}
	id := ci.waitRun("long")

	forged := "ok\nlevel=ERROR msg=\"forged line\""
	var res ActionResult
	if code := ci.do("POST", "/api/v1/runs/"+id+"/pause", ActionRequest{Who: "mallory\x1b[31m\u202e", Reason: forged}, &res); code != 200 && code != 202 {
		t.Fatalf("pause with a named token: %d %+v", code, res)
	}
	if res.Who != "ci-bot" {
		t.Errorf("who of an action by the ci-bot token: %q, want ci-bot", res.Who)
	}
	if res.OnBehalfOf != `mallory\x1b[31m\u202e` {
		t.Errorf("onBehalfOf: %q, want the client's who escaped", res.OnBehalfOf)
	}
	if want := `ok\nlevel=ERROR msg="forged line" — on behalf of mallory\x1b[31m\u202e (as the client said)`; res.Reason != want {
		t.Errorf("reason:\n got %q\nwant %q", res.Reason, want)
	}
	// The command as stored, which status and the reports print.
	evs, err := s.opts.Store.Events(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.ContainsAny(e.Message, "\x1b\u202e") || strings.Contains(e.Message, "\nlevel=") {
			t.Errorf("event %s carries raw control text: %q", e.Type, e.Message)
		}
	}

	// The shared token has no name: the client's who stands, escaped.
	res = ActionResult{}
	if code := shared.do("POST", "/api/v1/runs/"+id+"/resume", ActionRequest{Who: "bob\r\nlevel=WARN", Reason: "done"}, &res); code != 200 && code != 202 {
		t.Fatalf("resume with the shared token: %d %+v", code, res)
	}
	if res.Who != `bob\r\nlevel=WARN` || res.OnBehalfOf != "" || res.Reason != "done" {
		t.Errorf("action by the shared token: who %q, onBehalfOf %q, reason %q", res.Who, res.OnBehalfOf, res.Reason)
	}

	// The log: one line per action, none forged, no raw ESC.
	out := logs.String()
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\u202e") {
		t.Errorf("raw control characters in the log:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "level=ERROR msg=\"forged") || strings.HasPrefix(line, "level=WARN") && !strings.Contains(line, " msg=") {
			t.Errorf("forged log line: %q", line)
		}
	}
	if n := strings.Count(out, `msg="action requested"`); n != 2 {
		t.Errorf("%d action lines, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "who=ci-bot") {
		t.Errorf("the log does not name the principal:\n%s", out)
	}
}
