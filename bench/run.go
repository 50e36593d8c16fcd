package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// Options choose what Run measures. Zero fields take the full mode's defaults.
type Options struct {
	// Quick is the mode `make test` runs (BENCH_QUICK=1): QuickWorlds at two scales, 24
	// runs per cell, and scale worlds of 10 and 100 experiments, about a minute on 2 cores.
	Quick bool
	// Runs per A/A cell (boundary cells six times as many, regression and mismatch cells
	// half); default 300 (quick: 24). At 140 two false rollbacks in a cell already put its
	// upper 95% bound above α = 5%; at 300 it takes eight.
	Runs int
	// Seed for the decision runs; default 1.
	Seed uint64
	// Worlds limits the decision part to these world names (nil: every world; quick:
	// QuickWorlds).
	Worlds []string
	// Scale lists the scale part's world sizes; default 10, 100, 1,000 (quick: 10, 100).
	// Empty with SkipScale set skips the scale part.
	Scale     []int
	SkipScale bool
	// Ticks per scale world; default 16 (quick: 8).
	Ticks int
	// Progress, when set, is told about each finished decision cell.
	Progress func(world, scale string, seconds float64)
	// Micro runs the micro-benchmarks (about 10 s); the quick mode leaves them to
	// `go test -bench` in analysis and experiments.
	Micro bool
}

// QuickWorlds are the worlds of the quick mode, at 12k/1% and 700k/1% where each is run:
// the worst A/A world, the calm one, the boundary in the worst world, the variant that
// arrived before the run, both share checks and a regression.
var QuickWorlds = []string{"poisson", "fleet", "boundary-fleet", "applied-before", "share-99.5%", "share-60%", "errors-x1.5"}

// QuickFromEnv reports whether BENCH_QUICK asks for the quick mode.
func QuickFromEnv() bool {
	v := os.Getenv("BENCH_QUICK")
	return v != "" && v != "0" && v != "false"
}

// Run measures decision quality and scale and returns the results to write.
func Run(ctx context.Context, o Options) (*Results, error) {
	begin := time.Now()
	mode := "full"
	if o.Quick {
		mode = "quick"
	}
	if o.Runs <= 0 {
		o.Runs = 300
		if o.Quick {
			o.Runs = 24
		}
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Scale == nil && !o.SkipScale {
		o.Scale = []int{10, 100, 1000}
		if o.Quick {
			o.Scale = []int{10, 100}
		}
	}
	if o.Ticks <= 0 && o.Quick {
		o.Ticks = 8
	}
	cfg := DecisionConfig{Runs: o.Runs, Seed: o.Seed, Progress: o.Progress}
	names := o.Worlds
	if names == nil && o.Quick {
		names = QuickWorlds
	}
	for _, w := range Worlds() {
		if names == nil || slices.Contains(names, w.Name) {
			cfg.Worlds = append(cfg.Worlds, w)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(cfg.Worlds, func(w World) bool { return w.Name == n }) {
			return nil, fmt.Errorf("no world named %q", n)
		}
	}
	if o.Quick {
		for _, sc := range Scales() {
			if sc.Name == "12k/1%" || sc.Name == "700k/1%" {
				cfg.Scales = append(cfg.Scales, sc)
			}
		}
	}
	res := &Results{Generated: time.Now().UTC(), Machine: ThisMachine(), Mode: mode, Runs: o.Runs, Seed: o.Seed, Worlds: cfg.Worlds, Scale: []ScaleResult{}}
	start := time.Now()
	dec, cells, err := RunDecision(cfg)
	if err != nil {
		return res, err
	}
	res.Decision, res.Cells = dec, cells
	res.DecisionSeconds = time.Since(start).Seconds()
	defer func() { res.TotalSeconds = time.Since(begin).Seconds() }()
	if o.Micro {
		m, err := RunMicro()
		if err != nil {
			return res, err
		}
		res.Micro = m
	}
	if o.SkipScale || len(o.Scale) == 0 {
		return res, nil
	}
	start = time.Now()
	limited := 0
	if !o.Quick {
		limited = slices.Max(o.Scale)
	}
	sc, err := RunScale(ctx, ScaleConfig{Experiments: o.Scale, Ticks: o.Ticks, RateLimited: limited})
	res.Scale = append(res.Scale, sc...)
	res.ScaleSeconds = time.Since(start).Seconds()
	return res, err
}
