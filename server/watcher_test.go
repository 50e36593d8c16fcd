package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

func (c *client) files() map[string]FileStatus {
	var out struct {
		Files []FileStatus `json:"files"`
	}
	c.do("GET", "/api/v1/files", nil, &out)
	m := map[string]FileStatus{}
	for _, f := range out.Files {
		m[filepath.Base(f.Path)] = f
	}
	return m
}

// waitFor reads the stream until a message of type typ arrives.
func (s *sse) waitFor(t *testing.T, typ string) Message {
	t.Helper()
	for {
		if e := s.next(t); e.Msg.Type == typ {
			return e.Msg
		}
	}
}

// TestWatchDirectory: an invalid file runs nothing and says why; a new valid file starts;
// a change to a running experiment is refused; once that run is over the changed file
// starts again; a removed file leaves its run running.
func TestWatchDirectory(t *testing.T) {
	w := newWorld(t)
	s := w.server()
	c := &client{t: t, base: s.URL()}
	ev := c.stream("/api/v1/stream", "")

	// Invalid: a KPI without a type, and a bad tolerance.
	bad := strings.Replace(w.experiment("broken", "b", "3h"), "tolerance: 20%", "tolerance: lots", 1)
	w.write("broken.yaml", bad)
	s.Rescan()
	m := ev.waitFor(t, "file_invalid")
	if !strings.Contains(m.Message, "broken.yaml:") || !strings.Contains(m.Message, "tolerance") {
		t.Errorf("invalid file notice: %s", m.Message)
	}
	f := c.files()["broken.yaml"]
	if f.Status != "invalid" || len(f.Errors) == 0 || !strings.Contains(f.Errors[0], "spec.kpis[0].tolerance") {
		t.Errorf("invalid file status: %+v", f)
	}

	// Add.
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	s.Rescan()
	started := ev.waitFor(t, "file_started")
	id := started.RunID
	eventually(t, "long ramping", func() bool { return c.run(id).State == store.StateRamping })

	// Change while running: refused, the run goes on unchanged.
	changed := strings.Replace(w.experiment("long", "a", "3h"), "tolerance: 20%", "tolerance: 25%", 1)
	w.write("long.yaml", changed)
	s.Rescan()
	m = ev.waitFor(t, "spec_refused")
	if m.RunID != id || !strings.Contains(m.Message, "refused") {
		t.Errorf("refusal: %+v", m)
	}
	// The notice is said while the scan reconciles; the file's note follows when it is done.
	eventually(t, "the file note to say the change is refused", func() bool {
		return strings.Contains(c.files()["long.yaml"].Notes["long"], "change refused")
	})
	if r := c.run(id); r.State != store.StateRamping {
		t.Errorf("run after a refused change: %+v", r)
	}

	// Once the run is over, the changed file is a new version and starts.
	c.do("POST", "/api/v1/runs/"+id+"/abort", ActionRequest{Who: "dave", Reason: "apply the new tolerance"}, nil)
	again := ev.waitFor(t, "file_started")
	if again.RunID == id || !strings.HasPrefix(again.RunID, "long-") {
		t.Errorf("second run %+v", again)
	}

	// Remove: the run keeps running and that is said.
	if err := os.Remove(filepath.Join(w.dir, "long.yaml")); err != nil {
		t.Fatal(err)
	}
	s.Rescan()
	m = ev.waitFor(t, "file_removed")
	if m.RunID != again.RunID || !strings.Contains(m.Message, "keeps running") {
		t.Errorf("removal notice %+v", m)
	}
	if r := c.run(again.RunID); r.State.Terminal() {
		t.Errorf("run stopped when its file was removed: %+v", r)
	}
	if f := c.files()["long.yaml"]; f.Status != "removed" {
		t.Errorf("removed file status %+v", f)
	}

	// Fixing the invalid file starts it.
	w.write("broken.yaml", w.experiment("broken", "b", "3h"))
	s.Rescan()
	fixed := ev.waitFor(t, "file_started")
	if !strings.HasPrefix(fixed.RunID, "broken-") {
		t.Errorf("fixed file started %+v", fixed)
	}
	// A second experiment on a busy pool waits for it.
	w.write("rival.yaml", w.experiment("rival", "b", "3h"))
	s.Rescan()
	if m := ev.waitFor(t, "experiment_waiting"); !strings.Contains(m.Message, fixed.RunID) {
		t.Errorf("waiting notice %+v", m)
	}
}

// TestRestartResumes: closing the server leaves the pool as it is; the next server resumes
// the run where it was.
func TestRestartResumes(t *testing.T) {
	w := newWorld(t)
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	s1 := w.server()
	c := &client{t: t, base: s1.URL()}
	id := c.waitRun("long")
	eventually(t, "step 1", func() bool { r := c.run(id); return r.State == store.StateRamping && r.Step == 1 })
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	weights := w.poolWeights("a")
	if !traffic.SameWeight(weights["oa1"], 0.1) {
		t.Fatalf("pool after shutdown: %v (want the canary left at step 1)", weights)
	}

	s2 := w.server()
	c = &client{t: t, base: s2.URL()}
	ev := c.stream("/api/v1/runs/"+id+"/stream", "")
	if r := c.run(id); !r.Supervised || r.State != store.StateRamping {
		t.Fatalf("after restart: %+v", r)
	}
	ev.waitFor(t, "decision") // it steps again
	var res ActionResult
	if code := c.do("POST", "/api/v1/runs/"+id+"/abort", ActionRequest{Who: "erin"}, &res); code != 200 {
		t.Fatalf("abort after restart: %d", code)
	}
	eventually(t, "aborted", func() bool { return c.run(id).State == store.StateAborted })
	if got := w.poolWeights("a"); !traffic.SameWeight(got["oa1"], 0.33) {
		t.Errorf("pool after abort: %v", got)
	}
}

// TestDrillFileIsNotAnInvalidExperiment: a kind: Drill file in serve's directory belongs
// to the drill scheduler; the experiment reconciler lists it as a drill, not as invalid.
func TestDrillFileIsNotAnInvalidExperiment(t *testing.T) {
	w := newWorld(t)
	s := w.server()
	c := &client{t: t, base: s.URL()}
	data, err := os.ReadFile("../examples/drill-weekly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w.write("weekly-drill.yaml", string(data))
	w.write("broken.yaml", "apiVersion: verdict.dev/v1alpha1\nkind: Experiment\n")
	s.Rescan()
	// The scan runs in the server's own goroutine: wait until it has listed both files.
	var files map[string]FileStatus
	eventually(t, "both files scanned", func() bool {
		files = c.files()
		return files["weekly-drill.yaml"].Status != "" && files["broken.yaml"].Status != ""
	})
	if f := files["weekly-drill.yaml"]; f.Status != "drill" || len(f.Errors) != 0 {
		t.Errorf("drill file status: %+v", f)
	}
	if f := files["broken.yaml"]; f.Status != "invalid" {
		t.Errorf("a broken experiment next to it: %+v", f)
	}
}
