//go:build race

package analysis

// raceEnabled shrinks the simulations under the race detector, which slows
// them about tenfold; the full-size figures run in the ordinary go test.
const raceEnabled = true
