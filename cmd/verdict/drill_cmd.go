package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// drillArgs are the parsed arguments of verdict drill.
type drillArgs struct {
	file, name, drain, resume string
	dryRun, now, takeOverPool bool
	tick, settle, leaseTTL    time.Duration
}

func newDrillCmd(g *globals) *cobra.Command {
	var a drillArgs
	cmd := &cobra.Command{
		Use:   "drill FILE",
		Short: "Run a practice drain: take a cluster out, check the others absorb it, put it back",
		Long: `Drill runs a drill file (kind: Drill): it checks the allowed windows, the blocked dates
and the blocking alarms, claims the pool, drains one cluster (its origin to weight 0, the
survivors keep their proportions and the pool's total), holds for spec.hold while the outcome
alarms, the guardrails and every survivor's KPIs (against its own window just before the
drain) are judged each interval, and restores the weights it found. A guardrail breach, an
outcome alarm or a KPI beyond its tolerance restores at once.

With a schedule in the file it waits for the next scheduled time, unless --now. Each drill
drains the next cluster of spec.drain in turn (--drain picks one). --dry-run shows the
checks and the weights the drill would set, and changes nothing.

Every weight change is written to the store before it is made: a drill killed mid-way is
finished with --resume RUN-ID (the hold goes on) or restored by 'verdict abort RUN-ID'.
SIGINT or SIGTERM restores the pool before exiting.

Exit status: 0 passed, 3 failed (restored early), 4 aborted, 6 blocked (nothing changed;
with --dry-run: it would be blocked now), 1 error, 2 invalid input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file = args[0]
			return runDrillCmd(cmd.Context(), g, a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.name, "drill", "", "run this drill of a multi-document file")
	f.StringVar(&a.drain, "drain", "", "drain this cluster instead of the next one of spec.drain in turn")
	f.StringVar(&a.resume, "resume", "", "resume the unfinished drill RUN-ID")
	f.BoolVar(&a.dryRun, "dry-run", false, "show the checks and the weights the drill would set; change nothing")
	f.BoolVar(&a.now, "now", false, "start now instead of waiting for spec.schedule's next time")
	f.BoolVar(&a.takeOverPool, "take-over-pool", false, "run even though another run claims the pool (only when that run is known to be dead)")
	f.DurationVar(&a.tick, "tick", 0, "how often the engine steps (default: a sixth of the interval, 1s–10s)")
	f.DurationVar(&a.settle, "settle", 0, "how long after an interval ends its data counts as complete (default: a quarter of the interval, at most 15s)")
	f.DurationVar(&a.leaseTTL, "lease-ttl", 30*time.Second, "how long the drill's lease lasts without renewal")
	return cmd
}

// loadDrill reads the drill named name (or the only one) from file.
func loadDrill(file, name string) (*experiments.Drill, error) {
	ds, err := experiments.LoadDrillFile(file, experiments.LoadOptions{})
	if err != nil {
		return nil, withCode(exitInvalid, err)
	}
	if name == "" {
		if len(ds) > 1 {
			return nil, usageErrorf("%s holds %d drills: pick one with --drill", file, len(ds))
		}
		return ds[0], nil
	}
	for _, d := range ds {
		if d.Metadata.Name == name {
			return d, nil
		}
	}
	return nil, usageErrorf("%s: no drill named %q", file, name)
}

func runDrillCmd(ctx context.Context, g *globals, a drillArgs) error {
	if a.leaseTTL <= 0 || a.settle < 0 || a.tick < 0 {
		return usageErrorf("--lease-ttl must be positive, --settle and --tick not negative")
	}
	d, err := loadDrill(a.file, a.name)
	if err != nil {
		return err
	}
	if a.drain != "" && !containsString(d.Spec.Clusters, a.drain) {
		return usageErrorf("--drain %s: not one of the drill's clusters (%s)", a.drain, strings.Join(d.Spec.Clusters, ", "))
	}
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	drain := a.drain
	if a.resume != "" {
		rec, err := st.Run(ctx, a.resume)
		if err != nil {
			return withCode(exitError, fmt.Errorf("resume %s: %w", a.resume, err))
		}
		var ok bool
		if drain, ok = engine.IsDrill(rec); !ok {
			return usageErrorf("%s is an experiment's run, not a drill's: resume it with verdict run FILE --resume %s", rec.ID, rec.ID)
		}
	} else if drain == "" {
		if drain, err = engine.NextDrain(ctx, st, d); err != nil {
			return withCode(exitError, err)
		}
	}
	exp := d.Experiment(drain)
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return err
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	if a.dryRun {
		return drillDryRun(ctx, g, d, drain, steer, src)
	}
	if a.resume == "" && !a.now && d.Spec.Schedule != "" {
		next := d.NextRun(time.Now())
		if next.IsZero() {
			return usageErrorf("%s: spec.schedule %q never fires; use --now", a.file, d.Spec.Schedule)
		}
		fmt.Fprintf(g.stdio.err, "Next drill of %s (drain %s) at %s; waiting (--now starts at once).\n", d.Metadata.Name, drain, next.Local().Format(time.RFC1123))
		select {
		case <-ctx.Done():
			return withCode(exitError, errors.New("interrupted while waiting for the schedule; nothing was changed"))
		case <-time.After(time.Until(next)):
		}
	}
	view := &drillView{out: g.stdout, json: g.json() || !isTerminal(g.stdout)}
	opts := engine.Options{Store: st, Steerer: steer, Metrics: src, Logger: g.log, Observer: view, TakeOverPool: a.takeOverPool, Settle: a.settle}
	eng, err := engine.New(opts)
	if err != nil {
		return withCode(exitError, err)
	}
	base := context.WithoutCancel(ctx)
	ls := &runLease{g: g, s: &runSetup{opts: opts, owner: cliOwner("drill"), leaseTTL: a.leaseTTL}, base: base}
	defer ls.release()
	var dr *engine.DrillRun
	if a.resume != "" {
		if err := ls.acquire(a.resume); err != nil {
			return withCode(exitError, err)
		}
		dr, err = eng.ResumeDrill(base, a.resume, d)
	} else {
		file := a.file
		if abs, aerr := filepath.Abs(file); aerr == nil {
			file = abs
		}
		dr, err = eng.StartDrill(base, d, drain, file, time.Now())
		if err == nil {
			err = ls.acquire(dr.ID())
		}
	}
	if errors.Is(err, store.ErrPoolBusy) || errors.Is(err, engine.ErrSpecChanged) {
		return withCode(exitInvalid, err)
	}
	if err != nil {
		return withCode(exitError, err)
	}
	ls.fence(dr.Run())
	tick := a.tick
	if tick <= 0 {
		tick = min(max(d.Spec.Interval.Std()/6, time.Second), 10*time.Second)
	}
	interrupted := ctx.Done()
	for !dr.Done() {
		if err := dr.Step(base, time.Now()); err != nil {
			return withCode(exitError, fmt.Errorf("drill %s stopped: %w; finish it with: verdict%s drill %s --resume %s, or restore the pool with: verdict abort %s",
				dr.ID(), err, storeFlags(g), shellQuote(a.file), dr.ID(), dr.ID()))
		}
		if dr.Done() {
			break
		}
		select {
		case <-interrupted:
			interrupted = nil
			sig := interruptedBy(ctx)
			c := &store.Command{RunID: dr.ID(), Action: engine.ActionAbort, Who: actor(""), Reason: "interrupted by " + sig}
			if err := st.PostCommand(base, c); err != nil {
				return withCode(exitError, fmt.Errorf("%s: could not queue the restore: %w; restore with verdict abort %s", sig, err, dr.ID()))
			}
			fmt.Fprintf(g.stdio.err, "\n%s: restoring the pool…\n", sig)
		case <-time.After(tick):
		}
	}
	return view.finish(dr.Run().Record())
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// drillExitCode maps a finished drill to the exit status.
func drillExitCode(rec store.Run) int {
	switch {
	case rec.Verdict == engine.VerdictDrillPassed:
		return exitOK
	case rec.Verdict == engine.VerdictDrillBlocked, rec.Verdict == engine.VerdictCheckFailed:
		return exitCheckFailed
	case rec.State == store.StateRolledBack:
		return exitRolledBack
	case rec.State == store.StateAborted:
		return exitAborted
	}
	return exitError
}

// drillView prints a drill's events: JSON lines, or one line per event.
type drillView struct {
	mu   sync.Mutex
	out  io.Writer
	json bool
}

// Observe implements engine.Observer.
func (v *drillView) Observe(e engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.json {
		writeJSON(v.out, newEventJSON(e))
		return
	}
	fmt.Fprintf(v.out, "%s  %-18s %s\n", e.At.Local().Format(time.TimeOnly), e.Type, safeText(e.Message))
}

func (v *drillView) finish(rec store.Run) error {
	code := drillExitCode(rec)
	v.mu.Lock()
	if v.json {
		writeJSON(v.out, newResultJSON("drill_result", rec, code))
	} else {
		fmt.Fprintf(v.out, "\n%s: %s — %s\nRun %s; report: verdict report %s\n", safeText(rec.Experiment), strings.ToUpper(safeText(rec.Verdict)), safeText(rec.Reason), safeText(rec.ID), safeText(rec.ID))
	}
	v.mu.Unlock()
	if code == exitOK {
		return nil
	}
	return &exitErr{code: code, silent: true}
}

// drillDryRun shows what the drill would check and set now, and changes nothing.
func drillDryRun(ctx context.Context, g *globals, d *experiments.Drill, drain string, steer traffic.Steerer, src engine.KPISource) error {
	now := time.Now()
	exp := d.Experiment(drain)
	var blocked []string
	if ok, why := d.Allowed(now); !ok {
		blocked = append(blocked, why)
	}
	type alarmState struct {
		Name   string `json:"name"`
		Firing bool   `json:"firing"`
		Error  string `json:"error,omitempty"`
	}
	var alarms []alarmState
	for _, al := range d.Spec.BlockingAlarms {
		s := alarmState{Name: al.Name}
		var err error
		s.Firing, _, err = engine.AlarmFiring(ctx, src, exp, al, now)
		if err != nil {
			s.Error = err.Error()
			blocked = append(blocked, fmt.Sprintf("blocking alarm %s could not be evaluated: %v", al.Name, err))
		} else if s.Firing {
			blocked = append(blocked, "blocking alarm "+al.Name+" is firing")
		}
		alarms = append(alarms, s)
	}
	pool, err := steer.Pool(ctx, exp.Spec.Traffic.PoolRef())
	if err != nil {
		return withCode(exitError, fmt.Errorf("read pool %s: %w", exp.Spec.Traffic.PoolRef(), err))
	}
	var origins []experiments.PoolOrigin
	for _, o := range pool.Origins {
		origins = append(origins, experiments.PoolOrigin{Name: o.Name, Weight: o.Weight, Enabled: o.Enabled})
	}
	plan, err := experiments.WeightPlan(exp, origins)
	if err != nil {
		blocked = append(blocked, "the pool cannot be drained: "+err.Error())
	}
	code := exitOK
	if len(blocked) > 0 {
		code = exitCheckFailed
	}
	if g.json() {
		msg := map[string]any{"type": "drill_plan", "version": jsonVersion, "drill": d.Metadata.Name, "drain": drain, "survivors": d.Survivors(drain),
			"hold": d.Spec.Hold, "blocked": blocked, "blockingAlarms": alarms}
		if plan != nil {
			msg["now"], msg["drained"] = plan.Steps[0].Origins, plan.Steps[1].Origins
		}
		writeJSON(g.stdout, msg)
	} else {
		w := g.stdout
		fmt.Fprintf(w, "drill %s: drain %s for %s; %s take its traffic\n", d.Metadata.Name, drain, d.Spec.Hold, strings.Join(d.Survivors(drain), ", "))
		if next := d.NextRun(now); !next.IsZero() {
			fmt.Fprintf(w, "next scheduled: %s\n", next.Local().Format(time.RFC1123))
		}
		for _, al := range alarms {
			state := "quiet"
			switch {
			case al.Error != "":
				state = "error: " + al.Error
			case al.Firing:
				state = "FIRING"
			}
			fmt.Fprintf(w, "blocking alarm %s: %s\n", al.Name, safeText(state))
		}
		if plan != nil {
			fmt.Fprintf(w, "\n%-32s %-28s %-13s %s\n", "ORIGIN", "CLUSTER", "NOW", "DRAINED")
			for i, o := range plan.Steps[0].Origins {
				dr := plan.Steps[1].Origins[i]
				fmt.Fprintf(w, "%-32s %-28s %6s (%3.0f%%) %6s (%3.0f%%)\n", safeText(o.Name), safeText(o.Cluster), traffic.FormatWeight(o.Weight), o.Share*100, traffic.FormatWeight(dr.Weight), dr.Share*100)
			}
		}
		if len(blocked) > 0 {
			fmt.Fprintf(w, "\nblocked now: %s\n", safeText(strings.Join(blocked, "; ")))
		} else {
			fmt.Fprintln(w, "\nthe drill could start now; nothing was changed")
		}
	}
	if code != exitOK {
		return &exitErr{code: code, silent: true}
	}
	return nil
}
