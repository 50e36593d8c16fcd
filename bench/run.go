package bench

import (
	"context"
	"os"
	"slices"
	"time"
)

// Options choose what Run measures. Zero fields take the full mode's defaults.
type Options struct {
	// Quick is the mode `make test` runs (BENCH_QUICK=1): 100 runs per scenario and
	// worlds of 10 and 100 experiments, well under a minute on 2 cores.
	Quick bool
	// Runs per scenario; default 2,000 (quick: 100).
	Runs int
	// Seed for the decision runs; default 1.
	Seed uint64
	// Scale lists the world sizes; default 10, 100, 1,000 (quick: 10, 100). Empty with
	// SkipScale set skips the scale part.
	Scale     []int
	SkipScale bool
	// Ticks per scale world; default 16 (quick: 8).
	Ticks int
	// Micro runs the micro-benchmarks (about 10 s); the quick mode leaves them to
	// `go test -bench` in analysis and experiments.
	Micro bool
}

// QuickFromEnv reports whether BENCH_QUICK asks for the quick mode.
func QuickFromEnv() bool {
	v := os.Getenv("BENCH_QUICK")
	return v != "" && v != "0" && v != "false"
}

// Run measures decision quality and scale and returns the results to write.
func Run(ctx context.Context, o Options) (*Results, error) {
	mode := "full"
	if o.Quick {
		mode = "quick"
	}
	if o.Runs <= 0 {
		o.Runs = 2000
		if o.Quick {
			o.Runs = 100
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
	res := &Results{Generated: time.Now().UTC(), Machine: ThisMachine(), Mode: mode, Runs: o.Runs, Seed: o.Seed, Scale: []ScaleResult{}}
	start := time.Now()
	res.Decision = RunDecision(DecisionConfig{Runs: o.Runs, Seed: o.Seed})
	res.DecisionSeconds = time.Since(start).Seconds()
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
