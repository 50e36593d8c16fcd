// Package engine runs experiments: it is the only package that decides. Each call to
// Run.Step moves a run one phase on from its persisted state, so a process that dies at
// any moment can be restarted and carry on, or roll back.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/common/model"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// KPISource is where KPI values come from; *metrics.Source implements it.
type KPISource interface {
	Fetch(ctx context.Context, kpi metrics.KPI, r metrics.Range, clusters []string) (*metrics.Data, error)
	Instant(ctx context.Context, query string, t time.Time) (model.Value, []string, error)
}

var _ KPISource = (*metrics.Source)(nil)

// Options configure an Engine. Store, Steerer and Metrics are required.
type Options struct {
	Store   store.Store
	Steerer traffic.Steerer
	Metrics KPISource
	// Notifier sends notifications; nil means the experiment's own notify targets over HTTP.
	Notifier Notifier
	// Hooks runs capacity hooks; nil means executing the configured command.
	Hooks HookRunner
	// Observer receives every event; nil means none.
	Observer Observer
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Settle is how long after an interval's end its data is considered complete (scrape
	// and rule lag). Default: a quarter of the analysis interval, at most 15s.
	Settle time.Duration
	// Who is recorded as the actor of automatic decisions and in the run's owner, and is
	// the owner in the run's claim on its pool.
	Who string
	// TakeOverPool takes over a pool another run claims (traffic.Claimer): the claim is
	// replaced and an event says whose it was. Only for a claim whose run is known dead.
	TakeOverPool bool
	// SyncTimeout bounds the write-back of the weights into the declared source of truth
	// at the end of a run; default DefaultSyncTimeout.
	SyncTimeout time.Duration
	// ReportLink names the run's report in write-back commits and pull requests; default
	// "verdict report RUN-ID". serve passes its URL.
	ReportLink func(runID string) string
}

// Engine starts and resumes runs.
type Engine struct {
	opts Options
}

// New checks the options and fills defaults.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil || opts.Steerer == nil || opts.Metrics == nil {
		return nil, errors.New("engine: Store, Steerer and Metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Hooks == nil {
		opts.Hooks = ExecHooks{}
	}
	if opts.Who == "" {
		host, _ := os.Hostname()
		opts.Who = "verdict@" + host
	}
	return &Engine{opts: opts}, nil
}

// NewRunID returns a run ID that sorts by time and names the experiment.
func NewRunID(experiment string, now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", experiment, now.UTC().Format("20060102t150405"), hex.EncodeToString(b[:]))
}

// Start records a new run of exp; nothing is changed until the first Step.
func (e *Engine) Start(ctx context.Context, exp *experiments.Experiment, specFile string, now time.Time) (*Run, error) {
	spec := mustJSON(exp)
	ref := poolRef(exp)
	rec := &store.Run{
		ID:         NewRunID(exp.Metadata.Name, now),
		Experiment: exp.Metadata.Name,
		Spec:       spec,
		SpecFile:   specFile,
		Pool:       ref.String(),
		State:      store.StatePending,
		CreatedAt:  now,
	}
	r, err := e.newRun(exp, rec)
	if err != nil {
		return nil, err
	}
	ev := r.event(EventRunStarted, now, fmt.Sprintf("run %s of %s started by %s", rec.ID, exp.Metadata.Name, e.opts.Who), map[string]any{
		"experiment": exp.Metadata.Name, "canary": exp.Spec.Canary.Cluster, "baselines": exp.Spec.Baselines, "variant": exp.Spec.Canary.Variant,
	})
	if err := e.opts.Store.CreateRun(ctx, rec, ev); err != nil {
		return nil, err
	}
	r.emit(ev)
	r.notify(ctx, "start", fmt.Sprintf("Experiment %s started: canary %s (%s) against %v", exp.Metadata.Name, exp.Spec.Canary.Cluster, variantString(exp.Spec.Canary.Variant), exp.Spec.Baselines))
	return r, nil
}

// ErrSpecChanged means the experiment file no longer matches the run being resumed.
var ErrSpecChanged = errors.New("experiment changed since the run started")

// Resume reloads an unfinished run. exp is the experiment as loaded from its file now (for
// the secrets the store never keeps); it must be the same experiment the run started with.
// With exp nil the stored spec is used, without notification targets.
func (e *Engine) Resume(ctx context.Context, runID string, exp *experiments.Experiment) (*Run, error) {
	rec, err := e.opts.Store.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	if exp == nil {
		exp = &experiments.Experiment{}
		if err := json.Unmarshal(rec.Spec, exp); err != nil {
			return nil, fmt.Errorf("resume %s: stored experiment: %w", rec.ID, err)
		}
	} else if string(mustJSON(exp)) != string(rec.Spec) {
		return nil, fmt.Errorf("resume %s: %w; finish it with the original file, or abort it", rec.ID, ErrSpecChanged)
	}
	r, err := e.newRun(exp, rec)
	if err != nil {
		return nil, err
	}
	if err := r.replay(ctx); err != nil {
		return nil, fmt.Errorf("resume %s: %w", rec.ID, err)
	}
	r.renew = r.book.Claimed && !r.Done() // this process drives the run now
	r.publish()
	return r, nil
}

func poolRef(exp *experiments.Experiment) traffic.PoolRef { return exp.Spec.Traffic.PoolRef() }

func variantString(v map[string]string) string {
	if len(v) == 0 {
		return "no variant recorded"
	}
	s := ""
	for _, k := range sortedKeys(v) {
		if s != "" {
			s += ", "
		}
		s += k + "=" + v[k]
	}
	return s
}
