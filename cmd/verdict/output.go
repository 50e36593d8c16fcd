package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
)

// jsonVersion is the version of every JSON message the CLI prints; consumers check it the
// way Terraform's machine-readable UI is checked.
const jsonVersion = 1

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// sortedKeys returns a map's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// safeText makes text that came from users or the store (run and experiment names, reasons,
// who asked, event messages) safe to print on a terminal: control characters (C0, DEL, C1 —
// ESC sequences included), Unicode bidirectional overrides and isolates, and invalid UTF-8
// are written as Go escapes (\x1b, \u202e), so they can neither move the cursor, recolour
// or clear the screen, nor reorder what the reader sees. Ordinary text is returned as is.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// unsafeRune reports whether r may change how a terminal shows what follows it.
func unsafeRune(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}

// eventJSON is one event of a run as run, watch, drill and replay stream it under -o json,
// one per line: the engine's event types (step, decision, rollback, …) with the version
// every CLI message carries. ID is the server's event ID, when the events come from one.
type eventJSON struct {
	Type    string          `json:"type"`
	Version int             `json:"version"`
	ID      string          `json:"id,omitempty"`
	Run     string          `json:"run"`
	At      time.Time       `json:"at"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// resultJSON is the last line of run, watch and drill under -o json: how the run ended,
// the exit code the command returns with, and the weights it left.
type resultJSON struct {
	Type     string        `json:"type"` // run_result or drill_result
	Version  int           `json:"version"`
	Run      string        `json:"run"`
	State    store.State   `json:"state"`
	Verdict  string        `json:"verdict,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	ExitCode int           `json:"exitCode"`
	Weights  store.Weights `json:"weights"`
}

// newEventJSON is e as a streamed message.
func newEventJSON(e engine.Event) eventJSON {
	return eventJSON{Type: e.Type, Version: jsonVersion, Run: e.RunID, At: e.At, Message: e.Message, Data: e.Data}
}

// messageJSON is a server's event message as a streamed message, with the server's ID.
func messageJSON(m *server.Message) eventJSON {
	return eventJSON{Type: m.Type, Version: jsonVersion, ID: m.ID, Run: m.RunID, At: m.At, Message: m.Message, Data: m.Data}
}

// newResultJSON is how rec ended, as the last streamed message.
func newResultJSON(kind string, rec store.Run, code int) resultJSON {
	return resultJSON{Type: kind, Version: jsonVersion, Run: rec.ID, State: rec.State, Verdict: rec.Verdict, Reason: rec.Reason, ExitCode: code, Weights: rec.Current}
}
