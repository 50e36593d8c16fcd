package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// Drills: serve runs every drill file (kind: Drill) of its directory on the drill's
// spec.schedule. A scheduled drill is recorded and driven like any run (the API, the
// dashboard, /metrics and `verdict report` show it), through its own engine.DrillRun; an
// unfinished drill found at start (a killed serve) is resumed by the watcher like other
// runs, which the supervisor hands here: the hold goes on when the file still holds the
// same drill, otherwise the pool is restored. A drill is first due at its schedule's next
// time after serve starts, never at once.

// StartDrills starts the drill scheduler; it stops with the server. Without a directory
// it does nothing.
func (s *Server) StartDrills() {
	sv := s.sup
	if s.opts.Dir == "" {
		return
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.stopping() {
		return
	}
	sv.wg.Add(1)
	go sv.drillLoop()
}

// drillLoop checks the directory's drills every Poll and starts those due.
func (sv *supervisor) drillLoop() {
	defer sv.wg.Done()
	o := &sv.s.opts
	next := map[string]time.Time{} // file/drill → when it is due
	for {
		now := o.Clock.Now()
		seen := map[string]bool{}
		for _, df := range sv.drillFiles() {
			key := df.file + "#" + df.d.Metadata.Name
			seen[key] = true
			due, ok := next[key]
			if !ok || due.IsZero() {
				next[key] = df.d.NextRun(now)
				continue
			}
			if now.Before(due) {
				continue
			}
			next[key] = df.d.NextRun(now)
			sv.startDrill(df.d, df.file)
		}
		for k := range next {
			if !seen[k] {
				delete(next, k) // the file or the drill is gone, or its schedule
			}
		}
		select {
		case <-sv.stop:
			return
		case <-o.Clock.After(o.Poll):
		}
	}
}

type drillFile struct {
	file string
	d    *experiments.Drill
}

// drillFiles reads the scheduled drills of the watched directory, listed as the watcher
// lists experiment files (subdirectories too, hidden ones skipped). A drill file that does
// not load is logged; its drills are not scheduled until it is fixed.
func (sv *supervisor) drillFiles() []drillFile {
	if sv.s.watch == nil {
		return nil
	}
	files, err := sv.s.watch.list()
	if err != nil {
		sv.s.opts.Logger.Warn("list drill files", "err", err)
	}
	var out []drillFile
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || experiments.FileKind(data) != experiments.KindDrill {
			continue
		}
		ds, err := experiments.LoadDrill(f, data, experiments.LoadOptions{LookupEnv: sv.s.opts.LookupEnv})
		if err != nil {
			sv.s.opts.Logger.Warn("drill file not loaded; its drills are not scheduled", "file", f, "err", err)
			continue
		}
		for _, d := range ds {
			if d.Spec.Schedule != "" {
				out = append(out, drillFile{file: f, d: d})
			}
		}
	}
	return out
}

// startDrill records and drives one scheduled drill. A pool busy with another run skips
// this time, with a notice: the one-run-per-pool rule also keeps two replicas from running
// the same drill twice.
func (sv *supervisor) startDrill(d *experiments.Drill, file string) {
	ctx, cancel := context.WithTimeout(context.Background(), sv.s.opts.StepTimeout)
	defer cancel()
	o := &sv.s.opts
	drain, err := engine.NextDrain(ctx, o.Store, d)
	if err != nil {
		sv.s.notice("drill_skipped", "", fmt.Sprintf("drill %s not started: %v", d.Metadata.Name, err), map[string]any{"drill": d.Metadata.Name})
		return
	}
	eng, closeSrc, setRun, err := sv.engineFor(d.Experiment(drain))
	if err != nil {
		sv.s.notice("drill_skipped", "", fmt.Sprintf("drill %s not started: %v", d.Metadata.Name, err), map[string]any{"drill": d.Metadata.Name})
		return
	}
	dr, err := eng.StartDrill(ctx, d, drain, file, o.Clock.Now())
	if err != nil {
		closeSrc()
		if errors.Is(err, store.ErrPoolBusy) {
			sv.s.notice("drill_skipped", "", fmt.Sprintf("drill %s skipped this time: %v", d.Metadata.Name, err), map[string]any{"drill": d.Metadata.Name})
			return
		}
		sv.s.notice("drill_skipped", "", fmt.Sprintf("drill %s not started: %v", d.Metadata.Name, err), map[string]any{"drill": d.Metadata.Name})
		return
	}
	setRun(dr.ID())
	hold, err := sv.acquire(ctx, dr.ID())
	if err != nil {
		closeSrc() // recorded: whichever replica gets its lease drives it
		return
	}
	sv.launch(dr.Run(), dr, file, closeSrc, hold)
	sv.s.notice("drill_started", dr.ID(), fmt.Sprintf("scheduled drill %s started (run %s): drain %s for %s", d.Metadata.Name, dr.ID(), drain, d.Spec.Hold), map[string]any{"drill": d.Metadata.Name, "drain": drain})
}

// resumeDrill reloads an unfinished drill run: with the drill from its file when the
// file still holds it unchanged (the hold goes on), else from its stored spec alone (the
// pool is restored).
func (sv *supervisor) resumeDrill(ctx context.Context, rec *store.Run) (*runner, error) {
	drain, _ := engine.IsDrill(rec)
	var d *experiments.Drill
	if ds, err := experiments.LoadDrillFile(rec.SpecFile, experiments.LoadOptions{LookupEnv: sv.s.opts.LookupEnv}); err == nil {
		if i := slices.IndexFunc(ds, func(x *experiments.Drill) bool { return x.Metadata.Name == rec.Experiment }); i >= 0 {
			d = ds[i]
			if string(mustJSON(d.Experiment(drain))) != string(rec.Spec) {
				d = nil
			}
		}
	}
	exp := &experiments.Experiment{}
	if d != nil {
		exp = d.Experiment(drain)
	} else if err := json.Unmarshal(rec.Spec, exp); err != nil {
		return nil, fmt.Errorf("resume %s: stored drill: %w", rec.ID, err)
	}
	return sv.resumeWith(ctx, rec, exp, func(eng *engine.Engine) (*engine.Run, *engine.DrillRun, error) {
		dr, err := eng.ResumeDrill(ctx, rec.ID, d)
		if err != nil {
			return nil, nil, err
		}
		return dr.Run(), dr, nil
	})
}

// step moves the runner's run on: a drill through its own state machine.
func (r *runner) step(ctx context.Context, now time.Time) error {
	if r.drill != nil {
		return r.drill.Step(ctx, now)
	}
	return r.run.Step(ctx, now)
}

// reloadDrill rebuilds a drill after a failed step, as a restart would.
func (sv *supervisor) reloadDrill(r *runner, log interface{ Error(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), sv.s.opts.StepTimeout)
	defer cancel()
	eng, closeSrc, setRun, err := sv.engineFor(r.exp)
	if err != nil {
		log.Error("reload failed", "err", err)
		return
	}
	setRun(r.id)
	dr, err := eng.ResumeDrill(ctx, r.id, r.drill.Drill())
	if err != nil {
		closeSrc()
		log.Error("reload failed", "err", err)
		return
	}
	if r.hold != nil {
		dr.Run().SetFence(r.hold)
	}
	r.mu.Lock()
	r.run, r.drill = dr.Run(), dr
	r.mu.Unlock()
	old := r.close
	r.close = closeSrc
	old()
}

// isDrillRun reports whether a stored run is a drill's, which resumeDrill resumes.
func isDrillRun(rec *store.Run) bool {
	_, ok := engine.IsDrill(rec)
	return ok
}
