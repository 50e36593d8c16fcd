package engine

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// HookRunner runs a capacity hook command.
type HookRunner interface {
	RunHook(ctx context.Context, args []string, timeout time.Duration) error
}

// ExecHooks runs hooks as processes.
type ExecHooks struct{}

// RunHook implements HookRunner: the command must exit 0 within timeout.
func (ExecHooks) RunHook(ctx context.Context, args []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := strings.TrimSpace(out.String())
		if len(tail) > 300 {
			tail = "…" + tail[len(tail)-300:]
		}
		return fmt.Errorf("%s: %v: %s", args[0], err, tail)
	}
	return nil
}

// scale runs the capacity hook for every cluster whose weight rises (up) or falls (!up)
// between from and to, with the HPA formula's replicas at its new share of the pool. The
// caller decides what a failure means: a step or a promotion waits for it (and rolls back
// after three), a rollback or a scale-down goes on without it.
func (r *Run) scale(ctx context.Context, now time.Time, from, to store.Weights, up bool) error {
	c := r.exp.Spec.Capacity
	if c == nil || c.Hook == nil {
		return nil
	}
	total := r.book.Others
	for _, w := range to {
		total += w
	}
	var evs []store.Event
	for _, cluster := range r.exp.Spec.Clusters() {
		o := r.origin[cluster]
		before, after := from[o], to[o]
		if (up && after <= before) || (!up && after >= before) {
			continue
		}
		pct := 0.0
		if total > 0 {
			pct = after / total * 100
		}
		rep := c.HPA.ReplicasAt(pct)
		args := make([]string, len(c.Hook.Command))
		for i, a := range c.Hook.Command {
			s, err := experiments.RenderHookArg(a, experiments.HookVars{Cluster: cluster, MinReplicas: rep.Min, MaxReplicas: rep.Max, Percent: pct})
			if err != nil {
				return err
			}
			args[i] = s
		}
		if err := r.e.opts.Hooks.RunHook(ctx, args, c.Hook.Timeout.Std()); err != nil {
			return fmt.Errorf("capacity hook for %s: %w", cluster, err)
		}
		evs = append(evs, r.event(EventCapacity, now, fmt.Sprintf("scaled %s to %d–%d replicas for %.1f%% of the traffic", cluster, rep.Min, rep.Max, pct), map[string]any{"cluster": cluster, "min": rep.Min, "max": rep.Max, "percent": pct}))
	}
	if len(evs) > 0 {
		return r.save(ctx, evs...)
	}
	return nil
}
