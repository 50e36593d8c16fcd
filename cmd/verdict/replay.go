package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics/recorded"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// replayArgs are the parsed arguments of verdict replay.
type replayArgs struct {
	file       string // the experiment
	records    string // the recorded file
	experiment string
	tick       time.Duration
	events     bool
	// keepDir keeps the store there (--state on the command line); empty: a temporary one.
	keepDir string
}

func newReplayCmd(g *globals) *cobra.Command {
	var a replayArgs
	cmd := &cobra.Command{
		Use:   "replay FILE RECORDS.jsonl",
		Short: "Run an experiment on recorded data, on virtual time, without touching anything",
		Long: `Replay feeds per-interval, per-cluster KPI values recorded in a JSON-lines file
(docs/replay.md) through the engine exactly as a live run would read them from Prometheus,
on virtual time from the file's start, with an in-memory load balancer pool: no pool,
Prometheus, notification target or capacity hook is touched. It prints every decision and
then how the run ended as JSON lines, one object per line (--events: every engine event).

Use it to test a KPI design — tolerances, intervals, guardrails — on data you have.

The run is kept in a temporary store, deleted afterwards; with --state DIR on the command
line it is kept there, for verdict report RUN-ID --state DIR.

Exit status: 0 promoted, 3 rolled back, 5 inconclusive (also: the records ended or the
run paused before it ended), 6 a precondition failed, 1 error, 2 invalid input.`,
		Example: "  verdict replay cmd/verdict/testdata/replay-example.yaml cmd/verdict/testdata/replay-example.jsonl | jq -c 'select(.type==\"end\")'",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file, a.records = args[0], args[1]
			// Only an explicit --state keeps the run: a VERDICT_STATE meant for real runs must
			// not collect replays.
			if f := cmd.Flag("state"); f != nil && f.Changed {
				a.keepDir = g.state
			}
			if f := cmd.Flag("store"); f != nil && f.Changed {
				return usageErrorf("replay does not use --store: it keeps the replayed run in a temporary SQLite store, or in --state DIR")
			}
			return runReplay(cmd.Context(), g, a)
		},
	}
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "replay this experiment of a multi-document file")
	cmd.Flags().DurationVar(&a.tick, "tick", 0, "virtual time between engine steps (default: as verdict run, a sixth of the analysis interval, 1s–10s)")
	cmd.Flags().BoolVar(&a.events, "events", false, "also print every other engine event (weights, state changes, no data, ...)")
	return cmd
}

func runReplay(ctx context.Context, g *globals, a replayArgs) error {
	exp, err := loadExperiment(a.file, a.experiment)
	if err != nil {
		return err
	}
	f, err := recorded.ReadFile(a.records)
	if err != nil {
		return badRecords(g, err)
	}
	src, pool, err := bindRecords(exp, f)
	if err != nil {
		return badRecords(g, err)
	}
	for _, n := range src.Notes() {
		fmt.Fprintln(g.stdio.err, "note:", n)
	}
	_, last := f.Span(false)
	if last.IsZero() {
		return usageErrorf("%s: no records after start %s: nothing to replay (records ending at or before start are history)", a.records, f.Header.Start.Format(time.RFC3339))
	}
	if a.tick <= 0 {
		a.tick = defaultTick(exp)
	}

	dir := a.keepDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "verdict-replay-"); err != nil {
			return withCode(exitError, err)
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return withCode(exitError, err)
	}
	st, err := store.OpenSQLite(context.WithoutCancel(ctx), dir)
	if err != nil {
		return withCode(exitError, err)
	}
	defer st.Close()

	clock := &replayClock{now: f.Header.Start}
	steer := newMemorySteerer(pool, clock.Now)
	view := &replayView{out: g.stdout, events: a.events}
	iv := exp.Spec.Analysis.Interval.Std()
	// The engine's own default, set here because the end of the records depends on it.
	settle := min(iv/4, 15*time.Second)
	eng, err := engine.New(engine.Options{Store: st, Steerer: steer, Metrics: src, Observer: view, Logger: g.log,
		Notifier: noNotifier{}, Hooks: noHooks{}, Settle: settle, Who: "verdict replay"})
	if err != nil {
		return withCode(exitError, err)
	}
	res, err := replay(ctx, eng, st, exp, clock, view, replayPlan{tick: a.tick, stop: last.Add(iv).Add(settle), last: last, records: a.records})
	if err != nil {
		return withCode(exitError, err)
	}
	if a.keepDir != "" {
		res.StateDir = a.keepDir
	}
	res.Type, res.Version, res.Decisions = "end", jsonVersion, view.decisions
	res.After = experiments.Duration(res.At.Sub(f.Header.Start)).String()
	view.mu.Lock()
	err = writeJSON(g.stdout, res)
	view.mu.Unlock()
	if err != nil {
		return withCode(exitError, err)
	}
	if res.ExitCode == exitOK {
		return nil
	}
	return silentExit(res.ExitCode)
}

// badRecords prints every problem of a recorded file on its own line, FILE:LINE: field:
// problem, and ends with exit 2.
func badRecords(g *globals, err error) error {
	var lines []string
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			lines = append(lines, e.Error())
		}
	} else {
		lines = append(lines, err.Error())
	}
	for _, l := range lines {
		fmt.Fprintln(g.stdio.err, l)
	}
	fmt.Fprintf(g.stdio.err, "%d problem(s) found\n", len(lines))
	return silentExit(exitInvalid)
}

// replayReadiness names the instant records that answer the experiment's readiness query.
const replayReadiness = "readiness"

// bindRecords checks the recorded file against the experiment and builds what the replay
// serves from it: the KPI source and the pool before the run.
func bindRecords(exp *experiments.Experiment, f *recorded.File) (*recorded.Source, traffic.Pool, error) {
	queries, err := engine.MetricsKPIs(exp)
	if err != nil {
		return nil, traffic.Pool{}, withCode(exitInvalid, err)
	}
	opts := recorded.Options{Clusters: exp.Spec.Clusters(), Interval: exp.Spec.Analysis.Interval.Std(),
		ClusterLabel: exp.Spec.Prometheus.ClusterLabel, Queries: map[string]string{}}
	for i, k := range exp.Spec.KPIs {
		rk := recorded.KPI{KPI: queries[i]}
		if k.SlowerThan != nil {
			rk.SlowerThan = k.SlowerThan.Std()
		}
		opts.KPIs = append(opts.KPIs, rk)
	}
	vars := exp.Vars(exp.Spec.Canary.Cluster)
	for _, pc := range exp.Spec.Preconditions {
		q, err := experiments.RenderQuery(pc.Query, vars)
		if err != nil {
			return nil, traffic.Pool{}, withCode(exitInvalid, fmt.Errorf("precondition %s: %w", pc.Name, err))
		}
		opts.Queries[q] = pc.Name
	}
	// The readiness query (spec.canary.apply.readiness) answers from instant records named
	// "readiness".
	readiness, err := exp.ReadinessQuery()
	if err != nil {
		return nil, traffic.Pool{}, withCode(exitInvalid, err)
	}
	if readiness != "" {
		opts.Queries[readiness] = replayReadiness
	}
	src, err := recorded.New(f, opts)
	if err != nil {
		return nil, traffic.Pool{}, err
	}
	var errs []error
	for _, pc := range exp.Spec.Preconditions {
		if !src.HasInstant(pc.Name) {
			errs = append(errs, &recorded.LineError{File: f.Name, Msg: fmt.Sprintf(
				"no instant record for precondition %s: the engine evaluates it before the first step and before each advance; add a line such as {\"instant\": %q, \"at\": %q, \"value\": 3}",
				pc.Name, pc.Name, f.Header.Start.Format(time.RFC3339))})
		}
	}
	if readiness != "" && !src.HasInstant(replayReadiness) {
		errs = append(errs, &recorded.LineError{File: f.Name, Msg: fmt.Sprintf(
			"no instant record for the readiness query: it must not hold at start (when the baseline is taken) and must hold once the variant is live; add lines such as {\"instant\": %q, \"at\": %q, \"value\": 0} and {\"instant\": %q, \"at\": %q, \"value\": 1}",
			replayReadiness, f.Header.Start.Add(-time.Hour).Format(time.RFC3339), replayReadiness, f.Header.Start.Add(5*time.Minute).Format(time.RFC3339))})
	}
	pool := traffic.Pool{ID: exp.Spec.Traffic.PoolRef().Pool, Name: "replay of " + exp.Metadata.Name, Enabled: true, MinimumOrigins: 1, SteeringPolicy: "random"}
	for _, c := range exp.Spec.Clusters() {
		w := f.Header.Weights[c]
		if err := traffic.ValidWeight(w); err != nil {
			errs = append(errs, &recorded.LineError{File: f.Name, Line: f.HeaderLine, Field: "weights." + c, Msg: err.Error() + " (a pool weight: 0 to 1 in steps of 0.01)"})
		}
		pool.Origins = append(pool.Origins, traffic.Origin{Name: exp.Spec.Traffic.Origins()[c], Address: c, Enabled: true, Weight: w})
	}
	if len(errs) > 0 {
		return nil, traffic.Pool{}, errors.Join(errs...)
	}
	return src, pool, nil
}

// replayPlan is how far a replay may go.
type replayPlan struct {
	tick time.Duration
	// stop is the first time at which the engine would read an interval past the last
	// record (its end plus the settle time): the replay stops before stepping at it.
	stop    time.Time
	last    time.Time
	records string
}

// replayEnd is the replay's last JSON line.
type replayEnd struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	Run     string `json:"run"`
	// Ended is false when the records ran out, or the run paused, before it ended.
	Ended   bool          `json:"ended"`
	State   store.State   `json:"state"`
	Verdict string        `json:"verdict"`
	Reason  string        `json:"reason"`
	At      time.Time     `json:"at"`
	After   string        `json:"after"`
	Step    int           `json:"step"`
	Weights store.Weights `json:"weights,omitempty"`
	// Decisions counts the decision lines printed.
	Decisions int       `json:"decisions"`
	RecordsTo time.Time `json:"recordsEnd"`
	ExitCode  int       `json:"exitCode"`
	// StateDir is where the run was kept (--state), for verdict report.
	StateDir string `json:"stateDir,omitempty"`
}

// replay drives the run on virtual time, one engine step per tick, as Run.Drive does, until
// it ends, pauses (a paused run waits for a person) or the records run out. Ctrl-C (ctx)
// stops it between steps.
func replay(ctx context.Context, eng *engine.Engine, st store.Store, exp *experiments.Experiment, clock *replayClock, view *replayView, p replayPlan) (replayEnd, error) {
	// A step is never cut in the middle: ctx is only checked between steps.
	base := context.WithoutCancel(ctx)
	r, err := eng.Start(base, exp, "", clock.Now())
	if err != nil {
		return replayEnd{}, err
	}
	end := replayEnd{Run: r.ID(), RecordsTo: p.last}
	var open string // why the run did not end
	var stopErr error
	for !r.Done() {
		now := clock.Now()
		if ctx.Err() != nil {
			open = "interrupted"
			stopErr = fmt.Errorf("replay of run %s interrupted at %s", r.ID(), now.Format(time.RFC3339))
			break
		}
		if !now.Before(p.stop) {
			open = fmt.Sprintf("records ended at %s (the last interval end in %s) while the run was %s at step %d",
				p.last.Format(time.RFC3339), p.records, strings.ToLower(string(r.Record().State)), r.Record().Step)
			break
		}
		if err := r.Step(base, now); err != nil {
			return end, fmt.Errorf("replay of run %s stopped at %s: %w", r.ID(), now.Format(time.RFC3339), err)
		}
		if r.Record().State == store.StatePaused {
			open = "the run paused: " + r.Snapshot().PauseNote + " (a live run would wait for promote or abort by hand)"
			break
		}
		if r.Done() {
			break
		}
		clock.Advance(p.tick)
	}
	rec := r.Record()
	end.State, end.Step, end.Weights, end.At = rec.State, rec.Step, rec.Current, clock.Now()
	if open == "" {
		end.Ended, end.Verdict, end.Reason, end.At = true, rec.Verdict, rec.Reason, rec.EndedAt
		end.ExitCode = exitCode(rec)
		return end, nil
	}
	end.Reason, end.ExitCode = open, exitInconclusive
	// Leave no unfinished run behind in a kept store: one would hold the pool's name there.
	view.mute()
	if err := st.PostCommand(base, &store.Command{RunID: r.ID(), Action: engine.ActionAbort, Who: "verdict replay", Reason: open, CreatedAt: clock.Now()}); err != nil {
		return end, err
	}
	if err := r.Step(base, clock.Now()); err != nil {
		return end, err
	}
	return end, stopErr
}

// replayClock is the replay's virtual time: it moves only when the replay advances it.
type replayClock struct {
	mu  sync.Mutex
	now time.Time
}

// Now implements engine.Clock.
func (c *replayClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After implements engine.Clock: virtual time jumps d ahead at once.
func (c *replayClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- c.Advance(d)
	return ch
}

// Advance moves virtual time d ahead and returns the new time.
func (c *replayClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

var (
	_ engine.Clock     = (*replayClock)(nil)
	_ engine.KPISource = (*recorded.Source)(nil)
)

// replayView prints decisions (and with --events every other event) as JSON lines.
type replayView struct {
	mu        sync.Mutex
	out       io.Writer
	events    bool
	muted     bool
	decisions int
}

func (v *replayView) mute() {
	v.mu.Lock()
	v.muted = true
	v.mu.Unlock()
}

// Observe implements engine.Observer.
func (v *replayView) Observe(e engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.muted {
		return
	}
	if e.Type == engine.EventDecision {
		v.decisions++
		writeJSON(v.out, decisionLine(e))
		return
	}
	if v.events {
		writeJSON(v.out, newEventJSON(e))
	}
}

// replayDecision is one decision line: the engine's decision, flattened for jq.
type replayDecision struct {
	Type          string          `json:"type"`
	Version       int             `json:"version"`
	At            time.Time       `json:"at"`
	Step          int             `json:"step"`
	Action        string          `json:"action"`
	Reason        string          `json:"reason"`
	StepElapsed   string          `json:"stepElapsed"`
	Through       time.Time       `json:"through,omitzero"`
	ShareMismatch bool            `json:"shareMismatch"`
	KPIs          []replayKPI     `json:"kpis"`
	Values        json.RawMessage `json:"values,omitempty"`
}

type replayKPI struct {
	Name      string  `json:"name"`
	Status    string  `json:"status"`
	Estimate  float64 `json:"estimate"`
	Lower     float64 `json:"lower"`
	Upper     float64 `json:"upper"`
	Relative  bool    `json:"relative"`
	Tolerance float64 `json:"tolerance"`
	Intervals int     `json:"intervals"`
	Reason    string  `json:"reason"`
}

// decisionLine reads the decision event's data as the engine records it (engine.Run's
// decision details) into the replay's line.
func decisionLine(e engine.Event) replayDecision {
	var det struct {
		Decision struct {
			Action string `json:"action"`
			Reason string `json:"reason"`
			KPIs   []struct {
				Name     string `json:"name"`
				Status   string `json:"status"`
				Interval struct {
					Estimate  float64 `json:"estimate"`
					Lower     float64 `json:"lower"`
					Upper     float64 `json:"upper"`
					Relative  bool    `json:"relative"`
					Intervals int     `json:"intervals"`
				} `json:"interval"`
				Tolerance float64 `json:"tolerance"`
				Reason    string  `json:"reason"`
			} `json:"kpis"`
			ShareMismatch bool `json:"share_mismatch"`
		} `json:"decision"`
		Step           int             `json:"step"`
		StepElapsed    string          `json:"stepElapsed"`
		Values         json.RawMessage `json:"values"`
		DecidedThrough time.Time       `json:"decidedThrough"`
	}
	_ = json.Unmarshal(e.Data, &det)
	d := replayDecision{Type: "decision", Version: jsonVersion, At: e.At, Step: det.Step, Action: det.Decision.Action, Reason: det.Decision.Reason,
		StepElapsed: det.StepElapsed, Through: det.DecidedThrough, ShareMismatch: det.Decision.ShareMismatch, KPIs: []replayKPI{}, Values: det.Values}
	for _, k := range det.Decision.KPIs {
		d.KPIs = append(d.KPIs, replayKPI{Name: k.Name, Status: k.Status, Estimate: k.Interval.Estimate, Lower: k.Interval.Lower, Upper: k.Interval.Upper,
			Relative: k.Interval.Relative, Tolerance: k.Tolerance, Intervals: k.Interval.Intervals, Reason: k.Reason})
	}
	return d
}

// memorySteerer is a traffic.Steerer over one pool held in memory: the replay's load
// balancer. It keeps every guarantee of the interface (drift refused before any write,
// requests validated, only the named origins changed); reading back is trivially exact.
type memorySteerer struct {
	mu   sync.Mutex
	pool traffic.Pool
	now  func() time.Time
}

var _ traffic.Steerer = (*memorySteerer)(nil)

func newMemorySteerer(p traffic.Pool, now func() time.Time) *memorySteerer {
	if now == nil {
		now = time.Now
	}
	p = clonePool(p)
	if p.ModifiedOn.IsZero() {
		p.ModifiedOn = now()
	}
	return &memorySteerer{pool: p, now: now}
}

func clonePool(p traffic.Pool) traffic.Pool {
	p.Origins = append([]traffic.Origin(nil), p.Origins...)
	return p
}

// Pool implements traffic.Steerer.
func (m *memorySteerer) Pool(_ context.Context, ref traffic.PoolRef) (traffic.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ref.Pool != m.pool.ID {
		return traffic.Pool{}, fmt.Errorf("pool %s: %w", ref, traffic.ErrNotFound)
	}
	return clonePool(m.pool), nil
}

// SetWeights implements traffic.Steerer.
func (m *memorySteerer) SetWeights(_ context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ref.Pool != m.pool.ID {
		return fmt.Errorf("pool %s: %w", ref, traffic.ErrNotFound)
	}
	if err := traffic.CheckDrift(m.pool, ref, "before write", expect); err != nil {
		return err
	}
	if err := traffic.CheckRequest(m.pool, want, expect); err != nil {
		return fmt.Errorf("set weights on pool %s: %w", ref, err)
	}
	if !traffic.Changes(m.pool, want) {
		return nil
	}
	p := clonePool(m.pool)
	for i, o := range p.Origins {
		if w, ok := want[o.Name]; ok {
			p.Origins[i].Weight = traffic.RoundWeight(w)
		}
	}
	p.ModifiedOn = m.now()
	m.pool = p
	return nil
}

// setExternally changes an origin's weight behind the engine's back (tests: drift).
func (m *memorySteerer) setExternally(origin string, w float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, o := range m.pool.Origins {
		if o.Name == origin {
			m.pool.Origins[i].Weight = w
			return nil
		}
	}
	return fmt.Errorf("no origin %q", origin)
}

// noNotifier drops notifications: a replay must not message anyone.
type noNotifier struct{}

// Notify implements engine.Notifier.
func (noNotifier) Notify(context.Context, []experiments.Notify, engine.Notification) {}

// noHooks runs no capacity hook: a replay must not scale real clusters. The engine still
// records what it would have asked for (capacity events).
type noHooks struct{}

// RunHook implements engine.HookRunner.
func (noHooks) RunHook(context.Context, []string, time.Duration) error { return nil }
