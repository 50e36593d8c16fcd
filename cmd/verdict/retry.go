package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
)

// retryArgs are the parsed arguments of verdict retry.
type retryArgs struct {
	run    runArgs
	old    string
	who    string
	server string
}

func newRetryCmd(g *globals) *cobra.Command {
	var a retryArgs
	cmd := &cobra.Command{
		Use:   "retry RUN-ID|EXPERIMENT",
		Short: "Start a new run of an ended run's experiment, as it was stored with the run",
		Long: `Retry starts a new run of the experiment an ended run ran, from the experiment stored with
that run (the file may have changed or be gone since), and records the link both ways: the new
run shows "retry of RUN-ID" and the old one a "retried" event.

Locally it drives the new run here as verdict run does (live view, --on-interrupt, exit status
0 promoted, 3 rolled back, 4 aborted, 5 inconclusive, 6 a precondition failed). With --server
the server starts and drives it, and the command prints the new run's ID (follow it with
verdict status --watch RUN-ID --server URL).

The stored experiment keeps no secrets: notification targets that needed them stay silent.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.old = args[0]
			if a.run.resume != "" {
				return usageErrorf("retry starts a new run; to resume one use verdict run FILE --resume RUN-ID")
			}
			if a.server != "" {
				return remoteRetry(cmd.Context(), g, a)
			}
			return runRetry(cmd.Context(), g, a)
		},
	}
	addRunFlags(cmd, &a.run)
	cmd.Flags().MarkHidden("resume")
	cmd.Flags().StringVar(&a.who, "who", "", "who asks (default: your login name)")
	addServerFlag(cmd, &a.server)
	return cmd
}

func remoteRetry(ctx context.Context, g *globals, a retryArgs) error {
	c, err := remoteClient(a.server)
	if err != nil {
		return err
	}
	res, err := c.Retry(ctx, a.old, actor(a.who), "")
	if err != nil {
		return remoteError("run or experiment "+a.old, err)
	}
	if g.json() {
		return writeJSON(g.stdout, res)
	}
	fmt.Fprintf(g.stdout, "Run %s started on %s as a retry of run %s (by %s).\nFollow it: verdict status --watch %s%s\n",
		safeText(res.Run), a.server, safeText(res.RetryOf), safeText(res.Who), safeText(res.Run), hintFlags(g, a.server))
	return nil
}

// runRetry drives a new run of the old run's stored experiment here. The store is wrapped
// so that the new run is created with its retry_of event, in the same write.
func runRetry(ctx context.Context, g *globals, a retryArgs) error {
	switch a.run.onInterrupt {
	case onInterruptRollback, onInterruptLeave, onInterruptAsk:
	default:
		return usageErrorf("--on-interrupt must be rollback, leave or ask, not %q", a.run.onInterrupt)
	}
	if a.run.leaseTTL <= 0 {
		return usageErrorf("--lease-ttl must be positive")
	}
	if a.run.settle < 0 {
		return usageErrorf("--settle must not be negative")
	}
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	old, err := st.Run(ctx, a.old)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store (verdict list --all lists them)", safeText(a.old))
	}
	if err != nil {
		return withCode(exitError, err)
	}
	if !old.State.Terminal() {
		return usageErrorf("run %s has not ended (%s): only an ended run can be retried (verdict abort %s%s ends it)", safeText(old.ID), old.State, safeText(old.ID), storeFlags(g))
	}
	exp := &experiments.Experiment{}
	if err := json.Unmarshal(old.Spec, exp); err != nil {
		return withCode(exitError, fmt.Errorf("run %s: stored experiment: %w", old.ID, err))
	}
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return err
	}
	src, err := metricsSource(exp)
	if err != nil {
		return err
	}
	defer src.Close()
	if a.run.tick <= 0 {
		a.run.tick = defaultTick(exp)
	}
	who := actor(a.who)
	rs := &retryStore{Store: st, old: old.ID, who: who}
	var wrapped store.Store = rs
	if l, ok := st.(store.Leaser); ok {
		wrapped = retryLeaserStore{rs, l}
	}
	return driveRun(ctx, g, runSetup{exp: exp, file: old.SpecFile, tick: a.run.tick, noUI: a.run.noUI,
		owner: runOwner(), leaseTTL: a.run.leaseTTL, onInterrupt: a.run.onInterrupt,
		opts: engine.Options{Store: wrapped, Steerer: steer, Metrics: src, Logger: g.log, TakeOverPool: a.run.takeOverPool, Settle: a.run.settle}})
}

// retryStore creates the retry's run with a retry_of event naming the old run, then
// records a retried event on the old run (which nobody drives: it has ended).
type retryStore struct {
	store.Store
	old, who string
	created  bool
}

// CreateRun implements store.Store.
func (s *retryStore) CreateRun(ctx context.Context, r *store.Run, events ...store.Event) error {
	if s.created {
		return s.Store.CreateRun(ctx, r, events...)
	}
	at := r.CreatedAt
	if at.IsZero() && len(events) > 0 {
		at = events[0].At
	}
	data, _ := json.Marshal(server.RetryData{Run: s.old, Who: s.who})
	events = append(events, store.Event{RunID: r.ID, At: at, Type: server.EventRetryOf, Message: fmt.Sprintf("retry of run %s (by %s)", s.old, s.who), Data: data})
	if err := s.Store.CreateRun(ctx, r, events...); err != nil {
		return err
	}
	s.created = true
	back, _ := json.Marshal(server.RetryData{Run: r.ID, Who: s.who})
	if old, err := s.Store.Run(ctx, s.old); err == nil {
		// The link from the new run is already stored; this one is for readers of the old.
		_ = s.Store.SaveRun(ctx, old, store.Event{RunID: old.ID, At: at, Type: server.EventRetried, Message: fmt.Sprintf("retried as run %s (by %s)", r.ID, s.who), Data: back})
	}
	return nil
}

// retryLeaserStore is a retryStore over a store with leases, so that the run is leased.
type retryLeaserStore struct {
	*retryStore
	store.Leaser
}
