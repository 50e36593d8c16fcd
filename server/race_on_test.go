//go:build race

package server

// raceEnabled skips the tests whose subject is other processes (verdict serve and verdict
// run children, built without the detector): they run in the plain pass, and the race pass
// would only run them again.
const raceEnabled = true
