package server

import (
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/store"
)

// TestStreamOrderAndResume reads a run's events over SSE, checks they come in order and
// end with the verdict, then reconnects with Last-Event-ID and gets exactly the rest.
func TestStreamOrderAndResume(t *testing.T) {
	w := newWorld(t)
	w.setErrors("a1", 0.04)
	s := w.server()
	c := &client{t: t, base: s.URL()}
	all := c.stream("/api/v1/stream", "")
	w.write("bad.yaml", w.experiment("bad", "a", "3m"))
	s.Rescan()
	id := c.waitRun("bad")
	eventually(t, "bad rolled back", func() bool { return c.run(id).State == store.StateRolledBack })

	// The all-runs stream saw everything from the start: the file, then the run's life.
	var got []sseEvent
	for {
		e := all.next(t)
		got = append(got, e)
		if e.Msg.Type == "run_ended" {
			break
		}
	}
	all.close()
	types := []string{}
	for i, e := range got {
		types = append(types, e.Msg.Type)
		if e.ID != e.Msg.ID {
			t.Errorf("event %d: SSE id %s, message id %s", i, e.ID, e.Msg.ID)
		}
		if i > 0 {
			_, prev, _ := parseID(got[i-1].ID)
			_, cur, _ := parseID(e.ID)
			if cur <= prev {
				t.Errorf("event %d out of order: %s after %s", i, e.ID, got[i-1].ID)
			}
		}
	}
	seq := strings.Join(types, " ")
	for _, want := range []string{"run_started", "state_changed", "weights_intent", "weights_confirmed", "decision", "run_ended"} {
		if !strings.Contains(seq, want) {
			t.Errorf("stream lacks %s: %s", want, seq)
		}
	}
	if strings.Index(seq, "run_started") > strings.Index(seq, "weights_intent") || strings.Index(seq, "weights_intent") > strings.Index(seq, "weights_confirmed") {
		t.Errorf("out of order: %s", seq)
	}

	// The run's own stream, resumed from the middle, sends exactly what followed.
	var runEvents []sseEvent
	for _, e := range got {
		if e.Msg.RunID == id {
			runEvents = append(runEvents, e)
		}
	}
	mid := len(runEvents) / 2
	r := c.stream("/api/v1/runs/"+id+"/stream", runEvents[mid].ID)
	for i := mid + 1; i < len(runEvents); i++ {
		e := r.next(t)
		if e.ID != runEvents[i].ID || e.Msg.Type != runEvents[i].Msg.Type {
			t.Fatalf("resumed event %d: got %s %s, want %s %s", i, e.ID, e.Msg.Type, runEvents[i].ID, runEvents[i].Msg.Type)
		}
	}
	r.close()

	// A position from another server process cannot be resumed: the client is told to
	// re-read the state, and gets the current cursor.
	r = c.stream("/api/v1/runs/"+id+"/stream", "0badc0de-17")
	if e := r.next(t); e.Event != "reset" || e.ID != s.broker.cursor() {
		t.Errorf("stale position: got %+v, want a reset at %s", e, s.broker.cursor())
	}
	r.close()
	if code := c.do("GET", "/api/v1/runs/nope/stream", nil, nil); code != 404 {
		t.Errorf("stream of an unknown run: %d", code)
	}
}
