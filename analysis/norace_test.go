//go:build !race

package analysis

// raceEnabled is false in the ordinary build: simulations run at full size.
const raceEnabled = false
