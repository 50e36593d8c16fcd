// Command verdict-bench runs Verdict's benchmarks and writes results.md,
// results.json and the SVG charts: `go run ./bench/cmd/verdict-bench -out bench`.
// BENCH_QUICK=1 (or -quick) runs the small version that `make test` runs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/verdict-dev/verdict/bench"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("verdict-bench", flag.ContinueOnError)
	out := fs.String("out", "bench", "directory for results.md, results.json and the SVG charts")
	quick := fs.Bool("quick", bench.QuickFromEnv(), "quick mode (also BENCH_QUICK=1): a few worlds at 12k and 700k requests/min, 24 runs per cell, scale worlds of 10 and 100 experiments")
	runs := fs.Int("runs", 0, "simulated experiments per A/A cell; boundary cells run six times as many, regression cells half (default 300; quick 24)")
	verbose := fs.Bool("v", false, "report each finished world × scale on stderr")
	worlds := fs.String("worlds", "", "comma-separated world names of the decision part (default: all; quick: a few)")
	seed := fs.Uint64("seed", 1, "seed of the decision-quality runs")
	from := fs.String("from", "", "re-render results.md and the charts from this results.json instead of measuring")
	scale := fs.String("scale", "", `comma-separated numbers of concurrent experiments (default "10,100,1000"; quick "10,100"); "none" skips the scale part`)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *from != "" {
		b, err := os.ReadFile(*from)
		if err != nil {
			fmt.Fprintf(os.Stderr, "verdict-bench: -from: %v\n", err)
			return 1
		}
		var res bench.Results
		if err := json.Unmarshal(b, &res); err != nil {
			fmt.Fprintf(os.Stderr, "verdict-bench: -from %s: %v\n", *from, err)
			return 1
		}
		if err := res.Write(*out); err != nil {
			fmt.Fprintf(os.Stderr, "verdict-bench: write results to %s: %v\n", *out, err)
			return 1
		}
		return 0
	}
	o := bench.Options{Quick: *quick, Runs: *runs, Seed: *seed, Micro: !*quick}
	if *verbose {
		o.Progress = func(world, scale string, seconds float64) {
			fmt.Fprintf(os.Stderr, "verdict-bench: %s at %s judged (%.1f s of runs)\n", world, scale, seconds)
		}
	}
	if *worlds != "" {
		for _, w := range strings.Split(*worlds, ",") {
			o.Worlds = append(o.Worlds, strings.TrimSpace(w))
		}
	}
	switch *scale {
	case "":
	case "none":
		o.SkipScale = true
	default:
		for _, f := range strings.Split(*scale, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				fmt.Fprintf(os.Stderr, "verdict-bench: -scale %q: %q is not a positive number\n", *scale, f)
				return 2
			}
			o.Scale = append(o.Scale, n)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "verdict-bench: %v\n", err)
		return 1
	}
	if err := res.Write(*out); err != nil {
		fmt.Fprintf(os.Stderr, "verdict-bench: write results to %s: %v\n", *out, err)
		return 1
	}
	fmt.Print(res.Headline())
	for _, g := range res.Goals() {
		fmt.Println("- " + g)
	}
	fmt.Printf("wrote %s/results.md, results.json and SVG charts (decision %.0fs, scale %.0fs, total %.0fs)\n", *out, res.DecisionSeconds, res.ScaleSeconds, res.TotalSeconds)
	return 0
}
