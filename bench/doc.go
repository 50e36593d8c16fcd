// Package bench measures Verdict against the alternatives and at scale (issue 10).
//
// Three parts, each a plain function so that `go test` (quick mode) and the
// verdict-bench command (full mode) run the same code:
//
//   - Decision quality (decision.go, world.go, rules.go): simulated experiments on
//     virtual time, one-minute intervals, per-interval counts and values drawn from
//     sim.Profile — the profiles the demo fleet's clusters serve requests from —
//     judged by five rules on identical data: Verdict's live decision
//     (analysis.Decide on the sequences the engine builds), the oracle SPRT that
//     knows the true effect, a Kayenta-style Mann-Whitney classifier at each step's
//     end, Flagger-style per-interval thresholds, and naive peeking at fixed-horizon
//     p-values.
//   - Scale (scale.go): many concurrent experiments driven through the real engine,
//     SQLite store, metrics client and Cloudflare client against the Cloudflare
//     emulator and the embedded Prometheus, on compressed virtual time.
//   - Output (report.go, svg.go): results.md, results.json and SVG charts.
//
// Everything is seeded, so a run with the same Config gives the same decision
// figures; the scale figures depend on the machine.
package bench
