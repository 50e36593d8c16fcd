package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// Orphan is an unfinished run that no live process drives: its lease has expired (or was
// given up) and this server does not drive it either, because its file is not in the
// watched directory. Its pool stays as the run left it until someone acts.
type Orphan struct {
	Run        string      `json:"run"`
	Experiment string      `json:"experiment"`
	State      store.State `json:"state"`
	Step       int         `json:"step"`
	File       string      `json:"file,omitempty"`
	// LastOwner is the last holder of its lease this server saw; empty when its lease had
	// already expired when this server first looked.
	LastOwner string `json:"lastOwner,omitempty"`
	// Since is when it was orphaned: when its last lease expired, or when this server
	// first saw it without one (SinceExact false).
	Since      time.Time `json:"since"`
	SinceExact bool      `json:"sinceExact"`
	// AdoptAt is when this server takes it over (with --adopt-orphans), unless its driver
	// comes back first.
	AdoptAt time.Time `json:"adoptAt,omitzero"`
	// Hint says how to finish it.
	Hint string `json:"hint"`
}

// orphanWatch follows the leases of the runs this server does not drive, to tell when each
// was orphaned and by whom. Only the watcher loop calls check; the API reads list.
type orphanWatch struct {
	last    map[string]store.Lease // run -> the last live lease seen on it
	orphans map[string]*Orphan
}

// orphansNow returns the orphaned runs, oldest first.
func (w *watcher) orphansNow() []Orphan {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Orphan, 0, len(w.orph.orphans))
	for _, o := range w.orph.orphans {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

func (w *watcher) orphan(id string) *Orphan {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o, ok := w.orph.orphans[id]; ok {
		c := *o
		return &c
	}
	return nil
}

// leaseNow is the time leases are measured by.
func (s *Server) leaseNow() time.Time {
	if s.opts.LeaseClock != nil {
		return s.opts.LeaseClock.Now()
	}
	return time.Now()
}

// checkOrphans finds the unfinished runs nobody drives among those resumeOwned leaves alone
// (files outside the watched directory, or gone), lists them, and with AdoptOrphans takes
// over each one whose lease has been expired for OrphanGrace, from its stored spec.
func (w *watcher) checkOrphans(ctx context.Context) error {
	s := w.s
	if s.leaser == nil {
		return nil
	}
	held, err := s.leaser.Leases(ctx)
	if err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	runs, err := s.opts.Store.ListRuns(ctx, store.ListOptions{Unfinished: true})
	if err != nil {
		return fmt.Errorf("list unfinished runs: %w", err)
	}
	now := s.leaseNow()
	live := map[string]bool{}
	w.mu.Lock()
	for _, l := range held {
		live[l.RunID] = true
		w.orph.last[l.RunID] = l
	}
	current := map[string]bool{}
	var adopt []*store.Run
	var freshIDs []string
	for _, rec := range runs {
		if rec.State.Terminal() || live[rec.ID] || w.owns(rec.SpecFile) {
			continue
		}
		if r, ok := s.sup.get(rec.ID); ok && !r.isDone() {
			continue
		}
		current[rec.ID] = true
		o := w.orph.orphans[rec.ID]
		if o == nil {
			o = &Orphan{Run: rec.ID, Since: now}
			if l, ok := w.orph.last[rec.ID]; ok {
				o.LastOwner = l.Owner
				if l.Expires.Before(now) {
					o.Since, o.SinceExact = l.Expires, true
				}
			}
			w.orph.orphans[rec.ID] = o
			freshIDs = append(freshIDs, rec.ID)
		}
		o.Experiment, o.State, o.Step, o.File = rec.Experiment, rec.State, rec.Step, rec.SpecFile
		if s.opts.AdoptOrphans {
			o.AdoptAt = o.Since.Add(s.opts.OrphanGrace)
		}
		o.Hint = orphanHint(o, s.opts.AdoptOrphans)
		if s.opts.AdoptOrphans && !now.Before(o.AdoptAt) && !s.sup.stopping() {
			adopt = append(adopt, rec)
		}
	}
	for id := range w.orph.orphans {
		if !current[id] {
			delete(w.orph.orphans, id)
		}
	}
	for id := range w.orph.last {
		if !live[id] && !current[id] {
			delete(w.orph.last, id) // ended, or driven again by someone
		}
	}
	fresh := make([]Orphan, 0, len(freshIDs))
	for _, id := range freshIDs {
		fresh = append(fresh, *w.orph.orphans[id])
	}
	w.mu.Unlock()
	for _, o := range fresh {
		data := map[string]any{"lastOwner": o.LastOwner, "since": o.Since, "sinceExact": o.SinceExact}
		if !o.AdoptAt.IsZero() {
			data["adoptAt"] = o.AdoptAt
		}
		w.once("orphan:"+o.Run+":"+o.Since.String(), "run_orphaned", o.Run, o.Hint, data)
	}
	for _, rec := range adopt {
		w.adopt(ctx, rec)
	}
	return nil
}

// adopt takes an orphaned run over from its stored spec, and says so.
func (w *watcher) adopt(ctx context.Context, rec *store.Run) {
	o := w.orphan(rec.ID)
	if o == nil {
		return
	}
	r, err := w.s.sup.resume(ctx, rec, nil)
	if errors.Is(err, store.ErrLeaseHeld) {
		return // its driver came back (verdict run --resume) or another replica was faster
	}
	if err != nil {
		w.once("adoptfail:"+rec.ID+":"+err.Error(), "run_stalled", rec.ID, fmt.Sprintf("could not adopt orphaned run %s: %v", rec.ID, err), map[string]any{"error": err.Error()})
		return
	}
	w.mu.Lock()
	delete(w.orph.orphans, rec.ID)
	w.mu.Unlock()
	last := o.LastOwner
	if last == "" {
		last = "unknown (its lease had expired before this server first looked)"
	}
	token := int64(0)
	if r.hold != nil {
		token = r.hold.Token()
	}
	w.s.notice("run_adopted", rec.ID, fmt.Sprintf("adopted orphaned run %s of %s (%s, step %d) from its stored spec: nobody had driven it since %s; last driven by %s. Replica %s drives it now (lease token %d); notifications are off.",
		rec.ID, rec.Experiment, rec.State, rec.Step, sinceText(o), last, w.s.opts.Replica, token),
		map[string]any{"lastOwner": o.LastOwner, "since": o.Since, "sinceExact": o.SinceExact, "replica": w.s.opts.Replica, "file": rec.SpecFile})
}

func sinceText(o *Orphan) string {
	t := o.Since.UTC().Format(time.RFC3339)
	if !o.SinceExact {
		return "at least " + t
	}
	return t
}

func orphanHint(o *Orphan, adopting bool) string {
	file := o.File
	if file == "" {
		file = "FILE"
	}
	who := ""
	if o.LastOwner != "" {
		who = " (last driven by " + o.LastOwner + ")"
	}
	msg := fmt.Sprintf("run %s of %s is orphaned: %s at step %d, and no process has driven it since %s%s; its pool stays as it is until someone acts. ",
		o.Run, o.Experiment, o.State, o.Step, sinceText(o), who)
	if adopting {
		return msg + fmt.Sprintf("This server adopts it at %s unless its driver comes back first (verdict run %s --resume %s); or end it now with: verdict abort %s", o.AdoptAt.UTC().Format(time.RFC3339), file, o.Run, o.Run)
	}
	return msg + fmt.Sprintf("Roll it back with: verdict abort %s; or resume it with: verdict run %s --resume %s; or let this server take it over: verdict serve --adopt-orphans", o.Run, file, o.Run)
}
