// Package analysis holds the statistics behind a Verdict: fixed-horizon tests
// for reports and Kayenta compatibility, anytime-valid confidence sequences for
// live decisions, pre-period calibration, and the decision rule itself.
//
// Everything here is a pure function of numbers: no I/O, no clock, no
// logging, so the engine can rebuild any state after a crash by replaying the
// per-interval observations it persisted, and tests can drive it with
// simulated data. See docs/statistics.md in the shared notes for the formulas
// and why the obvious approaches (peeking at p-values, i.i.d. samples of
// overlapping rates, raw throughput) are wrong here.
//
// The pieces, by file:
//   - fixed.go, rates.go: fixed-horizon tests for reports — Welch's t, the
//     Mann-Whitney U test, the Hodges–Lehmann shift found as Kayenta finds
//     it, the exact conditional test of two rates, Holm and
//     Benjamini–Hochberg.
//   - kayenta.go: the Kayenta-compatible classifier and group score.
//   - sequential.go: live state per KPI, fed one interval at a time in O(grid)
//     or O(1): RatioSequence for counts (errors/requests), GaugeSequence for
//     per-interval values (mean latency), ShareCheck for traffic shares, each
//     with an optional pre-period for difference-in-differences.
//   - decide.go: each KPI's status and the overall recommendation.
//
// The live rule for ratio KPIs is not the plain conditional-binomial
// e-process (kept as RatioSequence.HarmEValue and BinomialInterval): under
// overdispersed or bursty errors that e-process rolls back healthy canaries
// far more often than α. RatioSequence.Interval tests the same conditional
// score against its measured dispersion instead; see its documentation.
//
// Inputs are validated totally: NaN, infinities, empty samples, zero counts and
// huge counts give a defined result or an error wrapping one of the sentinel
// errors below, never a panic and never a NaN verdict.
package analysis

import "errors"

// ErrNotEnoughData reports a sample too small for the requested statistic
// (for example fewer than two values for a variance); callers treat it as "no
// data", never as a pass.
var ErrNotEnoughData = errors.New("not enough data")

// ErrNonFinite reports a NaN or infinite input value where the statistic needs
// finite numbers; callers decide whether to drop or replace such values.
var ErrNonFinite = errors.New("non-finite value")

// ErrInvalidArgument reports a parameter outside its domain, such as a
// confidence level outside (0, 1) or a negative count.
var ErrInvalidArgument = errors.New("invalid argument")
