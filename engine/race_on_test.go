//go:build race

package engine_test

// raceEnabled skips the real-time fleet scenarios under the race detector: they run in the
// plain pass, and the detector's slowdown would only distort their timing.
const raceEnabled = true
