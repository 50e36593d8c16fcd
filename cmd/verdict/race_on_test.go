//go:build race

package main

// raceEnabled skips the tests that start fleets and signal child processes under the race
// detector: the children are not built with it, and the plain pass runs them. The live view
// with a running run has its own test under -race (TestLiveViewRace).
const raceEnabled = true
