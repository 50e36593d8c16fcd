package server

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// TestThreeExperimentsOverTheAPI runs three experiments at once, one per pool: a good
// variant that is promoted, a regression that is rolled back, and a long one that is
// aborted through the API, which rolls it back.
func TestThreeExperimentsOverTheAPI(t *testing.T) {
	w := newWorld(t)
	w.setErrors("b1", 0.04) // pool b's canary breaks 4× more requests
	w.write("good.yaml", w.experiment("good", "a", "3m"))
	w.write("bad.yaml", w.experiment("bad", "b", "3m"))
	w.write("long.yaml", w.experiment("long", "c", "3h"))
	s := w.server()
	c := &client{t: t, base: s.URL()}

	good, bad, long := c.waitRun("good"), c.waitRun("bad"), c.waitRun("long")
	eventually(t, "good promoted", func() bool { return c.run(good).State == store.StatePromoted })
	eventually(t, "bad rolled back", func() bool { return c.run(bad).State == store.StateRolledBack })
	eventually(t, "long ramping", func() bool { r := c.run(long); return r.State == store.StateRamping && r.Step >= 1 })

	var list struct {
		Experiments []ExperimentView `json:"experiments"`
	}
	if code := c.do("GET", "/api/v1/experiments", nil, &list); code != 200 || len(list.Experiments) != 3 {
		t.Fatalf("experiments: %d %+v", code, list)
	}
	for _, e := range list.Experiments {
		if e.File == "" || len(e.Runs) != 1 || e.Note == "" {
			t.Errorf("experiment %+v", e)
		}
	}
	var one struct {
		Experiment ExperimentView `json:"experiment"`
	}
	if code := c.do("GET", "/api/v1/experiments/bad", nil, &one); code != 200 || one.Experiment.Runs[0].Verdict != "rolled_back" {
		t.Errorf("experiment bad: %d %+v", code, one)
	}
	if code := c.do("GET", "/api/v1/experiments/nope", nil, nil); code != 404 {
		t.Errorf("unknown experiment: %d", code)
	}
	r := c.run(bad)
	if r.Reason == "" || r.Canary != "b1" || len(r.Baselines) != 2 || r.Steps != 3 || r.ReportURL == "" {
		t.Errorf("run summary %+v", r)
	}
	if !traffic.SameWeight(w.poolWeights("b")["ob1"], 0.33) {
		t.Errorf("bad's pool not restored: %v", w.poolWeights("b"))
	}
	var ds struct {
		Decisions []store.Decision `json:"decisions"`
	}
	if code := c.do("GET", "/api/v1/runs/"+good+"/decisions", nil, &ds); code != 200 || len(ds.Decisions) < 4 || ds.Decisions[len(ds.Decisions)-1].Action != "promote" {
		t.Errorf("decisions of good: %d, %d", code, len(ds.Decisions))
	}
	var obs struct {
		Observations []store.Observation `json:"observations"`
	}
	if code := c.do("GET", "/api/v1/runs/"+good+"/observations", nil, &obs); code != 200 || len(obs.Observations) < 8 {
		t.Errorf("observations of good: %d, %d", code, len(obs.Observations))
	}
	var evs struct {
		Events []store.Event `json:"events"`
	}
	if code := c.do("GET", "/api/v1/runs/"+good+"/events", nil, &evs); code != 200 || evs.Events[0].Type != "run_started" {
		t.Errorf("events of good: %d %+v", code, evs)
	}
	resp, err := http.Get(s.URL() + "/api/v1/runs/" + bad + "/report")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "bad") || !strings.Contains(string(page), "<svg") {
		t.Errorf("report of bad: %d %s %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	var active struct {
		Runs []RunSummary `json:"runs"`
	}
	c.do("GET", "/api/v1/runs", nil, &active)
	if len(active.Runs) != 1 || active.Runs[0].ID != long || !active.Runs[0].Supervised || active.Runs[0].Decision == nil {
		t.Errorf("unfinished runs: %+v", active.Runs)
	}

	// Abort: recorded with who and why, applied at once, rolled back.
	var res ActionResult
	code := c.do("POST", "/api/v1/runs/"+long+"/abort", ActionRequest{Who: "alice", Reason: "pager went off"}, &res)
	if code != http.StatusOK || !res.Applied {
		t.Fatalf("abort: %d %+v", code, res)
	}
	eventually(t, "long aborted", func() bool { return c.run(long).State == store.StateAborted })
	if got := w.poolWeights("c"); !traffic.SameWeight(got["oc1"], 0.33) || !traffic.SameWeight(got["oc3"], 0.34) {
		t.Errorf("aborted run's pool not restored: %v", got)
	}
	r = c.run(long)
	if r.EndedBy != "alice" || !strings.Contains(r.Reason, "pager went off") || r.Verdict != "aborted" {
		t.Errorf("aborted run %+v", r)
	}
	c.do("GET", "/api/v1/runs/"+long+"/events", nil, &evs)
	if !slices.ContainsFunc(evs.Events, func(e store.Event) bool {
		return e.Type == "action" && strings.Contains(e.Message, "alice") && strings.Contains(e.Message, "pager went off")
	}) {
		t.Errorf("no action event naming alice and the reason")
	}
	// An ended run refuses actions.
	if code := c.do("POST", "/api/v1/runs/"+long+"/pause", ActionRequest{Who: "bob"}, nil); code != http.StatusConflict {
		t.Errorf("pause of an ended run: %d, want 409", code)
	}
	if code := c.do("POST", "/api/v1/runs/nope/pause", ActionRequest{Who: "bob"}, nil); code != http.StatusNotFound {
		t.Errorf("pause of an unknown run: %d, want 404", code)
	}

	// The store agrees: nothing is left unfinished.
	st := s.opts.Store
	left, err := st.ListRuns(context.Background(), store.ListOptions{Unfinished: true})
	if err != nil || len(left) != 0 {
		t.Errorf("unfinished runs left: %v %v", left, err)
	}
}
