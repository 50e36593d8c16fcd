package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// FileStatus is what the watcher made of one experiment file.
type FileStatus struct {
	Path string `json:"path"`
	// Status is valid, invalid or removed.
	Status string `json:"status"`
	// Errors are the file's problems, each naming line, column and field.
	Errors []string `json:"errors,omitempty"`
	// Experiments are the names of the experiments the file declares.
	Experiments []string `json:"experiments,omitempty"`
	// Notes say what happened to each experiment: started, waiting, refused, …
	Notes     map[string]string `json:"notes,omitempty"`
	Hash      string            `json:"hash,omitempty"`
	CheckedAt time.Time         `json:"checkedAt"`
}

// watcher polls a directory of experiment files (a GitOps checkout) and reconciles: a new
// or changed valid experiment starts, a change to a running one is refused, an invalid
// file runs nothing, a removed file leaves its runs running. Polling rather than inotify:
// it works the same on every file system, including the network mounts and symlink swaps
// (git-sync) that GitOps checkouts live on.
type watcher struct {
	s   *Server
	dir string

	mu    sync.Mutex
	files map[string]*FileStatus
	said  map[string]bool // notices already published, so each is said once

	// parsed is what each file held at its last read; only scan touches it.
	parsed map[string]*parsedFile
	// parses counts the files parsed (for tests: an unchanged file is parsed once).
	parses atomic.Int64

	orph orphanWatch // guarded by mu
}

// parsedFile is the outcome of loading one file, kept while the file is unchanged: an
// unchanged file (same size and modification time) is not read again, and a file read again
// with the same content (same hash) is not parsed again. A directory of large invalid files
// then costs a stat per file per scan, not a parse.
type parsedFile struct {
	size   int64
	mod    time.Time
	readAt time.Time // wall clock
	hash   string
	exps   []*experiments.Experiment
	specs  []string // each experiment as the store records it (mustJSON), for reconcile
	errs   []string // the file's problems, as validate gives them; nil when valid
	// drill marks a kind: Drill file: the drill scheduler (drills.go) runs it, not the
	// experiment reconciler.
	drill bool
}

// racyWindow is how long after its modification time a file must have been read for its
// (size, time) to vouch for its content.
const racyWindow = 2 * time.Second

func newWatcher(s *Server, dir string) *watcher {
	return &watcher{s: s, dir: dir, files: map[string]*FileStatus{}, said: map[string]bool{}, parsed: map[string]*parsedFile{},
		orph: orphanWatch{last: map[string]store.Lease{}, orphans: map[string]*Orphan{}}}
}

// parse returns what the file at p holds, through the same guarded reader as verdict
// validate (experiments.ReadFile: at most experiments.MaxFileSize bytes, a larger file is
// refused from its size without being read), reusing the previous result while the file is
// unchanged. It returns nil for a file that is gone.
//
// Modification times are coarse (a few ms on Linux, 2 s on some file systems), so a file
// rewritten with the same size right after it was read may keep its time: like git's "racily
// clean" index entries, a file read within racyWindow of its modification time is read (and
// hashed) again at the next scan, and parsed again only if its content changed.
//
// ${VAR} references are resolved when a file is parsed: an environment change alone does
// not reload an unchanged file.
func (w *watcher) parse(p string) *parsedFile {
	fi, err := os.Stat(p)
	if err != nil {
		return nil
	}
	prev := w.parsed[p]
	if prev != nil && prev.size == fi.Size() && prev.mod.Equal(fi.ModTime()) && prev.readAt.Sub(prev.mod) > racyWindow {
		return prev
	}
	pf := &parsedFile{size: fi.Size(), mod: fi.ModTime(), readAt: time.Now()}
	data, err := experiments.ReadFile(p)
	if err != nil {
		if _, serr := os.Stat(p); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		// Not read (too large, a directory, unreadable): the hash names the size and time,
		// so the notice is said again only when the file changes.
		sum := sha256.Sum256([]byte(fmt.Sprintf("unread:%d:%d", fi.Size(), fi.ModTime().UnixNano())))
		pf.hash, pf.errs = hex.EncodeToString(sum[:8]), errorLines(err)
		w.parsed[p] = pf
		return pf
	}
	sum := sha256.Sum256(data)
	pf.hash = hex.EncodeToString(sum[:8])
	if prev != nil && prev.hash == pf.hash {
		pf.exps, pf.specs, pf.errs, pf.drill = prev.exps, prev.specs, prev.errs, prev.drill
		w.parsed[p] = pf
		return pf
	}
	if experiments.FileKind(data) == experiments.KindDrill {
		pf.drill = true
		w.parsed[p] = pf
		return pf
	}
	w.parses.Add(1)
	exps, err := experiments.Load(p, data, experiments.LoadOptions{LookupEnv: w.s.opts.LookupEnv})
	if err != nil {
		pf.errs = errorLines(err)
	} else {
		pf.exps = exps
		for _, e := range exps {
			pf.specs = append(pf.specs, string(mustJSON(e)))
		}
	}
	w.parsed[p] = pf
	return pf
}

// errorLines is a load error as the file's list of problems.
func errorLines(err error) []string {
	var el experiments.ErrorList
	if errors.As(err, &el) {
		out := make([]string, 0, len(el))
		for _, e := range el {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

func (w *watcher) status() []FileStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]FileStatus, 0, len(w.files))
	for _, f := range w.files {
		c := *f
		c.Notes = map[string]string{}
		for k, v := range f.Notes {
			c.Notes[k] = v
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// once publishes a notice the first time key is seen.
func (w *watcher) once(key, typ, run, msg string, data map[string]any) {
	w.mu.Lock()
	seen := w.said[key]
	w.said[key] = true
	w.mu.Unlock()
	if !seen {
		w.s.notice(typ, run, msg, data)
	}
}

func isExperimentFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// list returns the experiment files under dir, skipping hidden directories (.git).
func (w *watcher) list() ([]string, error) {
	var out []string
	err := filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != w.dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && isExperimentFile(d.Name()) && !strings.HasPrefix(d.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// scan reads every file once and reconciles the experiments they declare with the runs.
func (w *watcher) scan(ctx context.Context) error {
	paths, err := w.list()
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.dir, err)
	}
	now := w.s.opts.Clock.Now()
	seen := map[string]bool{}
	owner := map[string]string{} // experiment name -> file declaring it first
	for _, p := range paths {
		seen[p] = true
		pf := w.parse(p)
		if pf == nil {
			continue // removed between listing and reading: the next scan sees it gone
		}
		hash := pf.hash
		fst := &FileStatus{Path: p, Hash: hash, CheckedAt: now, Notes: map[string]string{}}
		if pf.drill {
			fst.Status = "drill"
			w.put(fst)
			continue
		}
		if pf.errs != nil {
			fst.Status = "invalid"
			fst.Errors = pf.errs
			w.put(fst)
			w.once("invalid:"+p+":"+hash, "file_invalid", "", fmt.Sprintf("%s is invalid; nothing in it runs until it is fixed:\n%s", p, strings.Join(fst.Errors, "\n")),
				map[string]any{"file": p, "errors": fst.Errors})
			continue
		}
		fst.Status = "valid"
		for i, exp := range pf.exps {
			name := exp.Metadata.Name
			fst.Experiments = append(fst.Experiments, name)
			if first, dup := owner[name]; dup {
				fst.Notes[name] = "ignored: " + first + " already declares " + name
				w.once("dup:"+p+":"+name+":"+hash, "file_invalid", "", fmt.Sprintf("%s: experiment %s is also declared in %s; this one is ignored", p, name, first), map[string]any{"file": p, "experiment": name})
				continue
			}
			owner[name] = p
			fst.Notes[name] = w.reconcile(ctx, p, hash, exp, pf.specs[i])
		}
		w.put(fst)
	}
	for p := range w.parsed {
		if !seen[p] {
			delete(w.parsed, p)
		}
	}
	w.mu.Lock()
	var gone []*FileStatus
	for p, f := range w.files {
		if !seen[p] && f.Status != "removed" {
			f.Status = "removed"
			f.CheckedAt = now
			gone = append(gone, f)
		}
	}
	w.mu.Unlock()
	for _, f := range gone {
		w.removed(ctx, f)
	}
	invalid := 0
	for _, f := range w.status() {
		if f.Status == "invalid" {
			invalid++
		}
	}
	w.s.tel.fileErrors.Set(float64(invalid))
	return nil
}

func (w *watcher) put(f *FileStatus) {
	w.mu.Lock()
	w.files[f.Path] = f
	w.mu.Unlock()
}

// reconcile decides what a valid experiment declaration means now, and says it.
func (w *watcher) reconcile(ctx context.Context, file, hash string, exp *experiments.Experiment, spec string) string {
	name := exp.Metadata.Name
	latest, err := w.s.opts.Store.Run(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "not checked: " + err.Error()
	}
	if latest != nil && !latest.State.Terminal() {
		if spec != string(latest.Spec) {
			msg := fmt.Sprintf("%s changed %s while run %s is %s: the change is refused and not applied; the run goes on as it started. Abort it (or let it finish) for the new version to start.", file, name, latest.ID, latest.State)
			w.once("refused:"+latest.ID+":"+hash, "spec_refused", latest.ID, msg, map[string]any{"file": file, "experiment": name})
			return "change refused: run " + latest.ID + " is running the previous version"
		}
		if _, ok := w.s.sup.get(latest.ID); !ok {
			return "run " + latest.ID + " is " + string(latest.State) + " in another process"
		}
		return "running as " + latest.ID
	}
	if latest != nil && spec == string(latest.Spec) {
		return "ran as " + latest.ID + " (" + latest.Verdict + "); change the file to run it again"
	}
	r, err := w.s.sup.start(ctx, exp, file)
	var busy *store.PoolBusyError
	if errors.As(err, &busy) {
		w.once("busy:"+file+":"+name+":"+hash+":"+busy.RunID, "experiment_waiting", "", fmt.Sprintf("%s waits: pool %s is owned by run %s; it starts when that run ends", name, busy.Pool, busy.RunID), map[string]any{"file": file, "experiment": name, "blockedBy": busy.RunID})
		return "waiting for pool " + busy.Pool + " (owned by " + busy.RunID + ")"
	}
	if errors.Is(err, store.ErrLeaseHeld) {
		return "started; driven by another replica (" + err.Error() + ")"
	}
	if err != nil {
		w.once("startfail:"+file+":"+name+":"+hash+":"+err.Error(), "experiment_not_started", "", fmt.Sprintf("%s: %s could not start: %v", file, name, err), map[string]any{"file": file, "experiment": name})
		return "not started: " + err.Error()
	}
	w.s.notice("file_started", r.id, fmt.Sprintf("%s: started %s as run %s", file, name, r.id), map[string]any{"file": file, "experiment": name})
	return "started as " + r.id
}

// removed says what a deleted file means: nothing stops.
func (w *watcher) removed(ctx context.Context, f *FileStatus) {
	for _, name := range f.Experiments {
		latest, err := w.s.opts.Store.Run(ctx, name)
		if err != nil || latest.State.Terminal() {
			continue
		}
		w.once("removed:"+f.Path+":"+latest.ID, "file_removed", latest.ID,
			fmt.Sprintf("%s was removed; run %s of %s keeps running (removing a file never moves traffic). Abort it to roll back.", f.Path, latest.ID, name),
			map[string]any{"file": f.Path, "experiment": name})
		w.mu.Lock()
		f.Notes[name] = "file removed; run " + latest.ID + " keeps running"
		w.mu.Unlock()
	}
}

// resumeOwned resumes the unfinished runs whose files are in the watched directory: the
// ones a previous `verdict serve` started. With leases it runs at every scan, and resumes
// only the runs whose lease it gets: that is how a replica takes over the runs of one
// that died.
func (w *watcher) resumeOwned(ctx context.Context) error {
	runs, err := w.s.opts.Store.ListRuns(ctx, store.ListOptions{Unfinished: true})
	if err != nil {
		return fmt.Errorf("list unfinished runs: %w", err)
	}
	for _, rec := range runs {
		if !w.owns(rec.SpecFile) {
			continue
		}
		if _, ok := w.s.sup.get(rec.ID); ok {
			continue
		}
		var exp *experiments.Experiment
		note := ""
		if exps, err := experiments.LoadFile(rec.SpecFile, experiments.LoadOptions{LookupEnv: w.s.opts.LookupEnv}); err == nil {
			if i := slices.IndexFunc(exps, func(e *experiments.Experiment) bool { return e.Metadata.Name == rec.Experiment }); i >= 0 {
				exp = exps[i]
			}
		}
		if exp == nil || string(mustJSON(exp)) != string(rec.Spec) {
			exp = nil
			note = " from its stored spec (the file changed or is gone; notifications are off)"
		}
		r, err := w.s.sup.resume(ctx, rec, exp)
		if errors.Is(err, store.ErrLeaseHeld) {
			continue // another replica drives it
		}
		if err != nil {
			w.once("resumefail:"+rec.ID+":"+err.Error(), "run_stalled", rec.ID, fmt.Sprintf("could not resume run %s: %v", rec.ID, err), map[string]any{"error": err.Error()})
			continue
		}
		if r.hold != nil {
			note += fmt.Sprintf("; replica %s holds its lease (token %d)", w.s.opts.Replica, r.hold.Token())
		}
		w.s.notice("run_resumed", r.id, fmt.Sprintf("resumed run %s of %s (%s, step %d)%s", rec.ID, rec.Experiment, rec.State, rec.Step, note), nil)
	}
	return nil
}

func (w *watcher) owns(file string) bool {
	if file == "" {
		return false
	}
	rel, err := filepath.Rel(w.dir, file)
	return err == nil && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel)
}

// loop scans every interval (or when kicked) until ctx ends.
func (w *watcher) loop(ctx context.Context, every time.Duration, kick <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	scanLog := newFailureLog(w.s.opts.Logger.With("dir", w.dir), slog.LevelError, "scan")
	takeLog := newFailureLog(w.s.opts.Logger, slog.LevelError, "take over runs")
	orphanLog := newFailureLog(w.s.opts.Logger, slog.LevelError, "check orphaned runs")
	for {
		scanLog.report(w.scan(ctx))
		if w.s.leaser != nil && !w.s.sup.stopping() && ctx.Err() == nil {
			takeLog.report(w.resumeOwned(ctx))
			orphanLog.report(w.checkOrphans(ctx))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}
