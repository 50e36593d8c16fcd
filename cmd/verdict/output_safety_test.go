package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
)

func TestSafeText(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"plain":       {"rolled back: error rate +12% (ok)", "rolled back: error rate +12% (ok)"},
		"unicode":     {"déployé — ✓ 日本", "déployé — ✓ 日本"},
		"csi":         {"a\x1b[2Jb", `a\x1b[2Jb`},
		"osc title":   {"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		"nul newline": {"a\x00b\nc\td", `a\x00b\x0ac\x09d`},
		"del":         {"a\x7f", `a\x7f`},
		"c1 csi":      {"a\u009b2J", `a\u009b2J`},
		"rtl":         {"abc\u202edcba", `abc\u202edcba`},
		"isolate":     {"\u2067x\u2069", `\u2067x\u2069`},
		"invalid":     {"a\xffb", `a\xffb`},
	} {
		t.Run(name, func(t *testing.T) {
			if got := safeText(tc.in); got != tc.want {
				t.Errorf("safeText(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestStatusEscapesUserText stores a run whose name, reason, actor and events carry ESC
// sequences, NUL and a right-to-left override, as an API caller could send them, and checks
// that status, the run list and an action's confirmation print none of them raw.
func TestStatusEscapesUserText(t *testing.T) {
	state := t.TempDir()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	const evil = "\x1b[2J\x1b]0;owned\x07\x00\u202e"
	now := time.Now()
	running := &store.Run{ID: "evil-1", Experiment: "exp" + evil, Pool: "acct/pool-1", State: store.StateRamping, Step: 1, CreatedAt: now,
		Current: store.Weights{"o1" + evil: 0.5}, Original: store.Weights{"o1" + evil: 0.4}}
	ended := &store.Run{ID: "evil-2", Experiment: "exp2", Pool: "acct/pool-2", State: store.StateAborted, CreatedAt: now,
		Verdict: "aborted", Reason: "aborted by " + evil + ": because" + evil, EndedBy: "mallory" + evil, EndedAt: now}
	for _, r := range []*store.Run{running, ended} {
		if err := st.CreateRun(ctx, r, store.Event{RunID: r.ID, At: now, Type: "action", Message: "mallory" + evil + " asked to abort: " + evil}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	for _, args := range [][]string{
		{"status", "evil-1"},
		{"status", "evil-2"},
		{"status", "--all"},
		{"pause", "evil-1", "--who", "eve" + evil, "--reason", "why" + evil},
	} {
		code, out, errOut := runCLI(t, append([]string{"--state", state}, args...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		for _, bad := range []string{"\x1b", "\x07", "\x00", "\u202e"} {
			if strings.Contains(out, bad) {
				t.Errorf("%v printed %q raw:\n%q", args, bad, out)
			}
		}
		if !strings.Contains(out, `\x1b[2J\x1b]0;owned\x07\x00\u202e`) {
			t.Errorf("%v does not show the text escaped:\n%s", args, out)
		}
	}
}
