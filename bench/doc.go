// Package bench measures Verdict's decisions against the truth, and the engine at scale.
//
// Three parts, each a plain function so that `go test` (quick mode) and the
// verdict-bench command (full mode) run the same code:
//
//   - Decision quality (world.go, truth.go, experiment.go, rules.go, decision.go): an
//     independent generator of one-minute intervals for a canary and two baselines —
//     Poisson requests under a daily load wave, and per cluster Gamma noise, multi-minute
//     bursts, AR(1) drift, a standing cluster offset, rebalancing, a load balancer that
//     does not honour the weights, a variant that arrived before the run — at 1k, 12k and
//     700k requests/min and 0.1% and 1% errors. Verdict is judged through the exact live
//     decision path: the experiment is loaded from YAML with the engine's defaults and
//     fed to engine.Evidence (history, then AddInterval and Decide every interval, its
//     Advance, Rollback and Promote followed). Beside it, on the same latent worlds: a
//     valid oracle that knows the true noise model (its long-run variance and third
//     cumulant, for the same Bernstein term Verdict learns), Kayenta at each step's end and at
//     every interval, Flagger at several thresholds, naive peeking; and the fixed-sample
//     non-inferiority sample size as the physical limit.
//   - Scale (scale.go): many concurrent experiments driven through the real engine,
//     SQLite store, metrics client and Cloudflare client against the Cloudflare
//     emulator and the embedded Prometheus, on compressed virtual time.
//   - Output (report.go, svg.go): results.md, results.json and SVG charts.
//
// Everything is seeded, so a run with the same Options gives the same decision
// figures; the scale figures and the timings depend on the machine.
package bench
