//go:build !unix

package main

// lockFile is a no-op where flock is missing: one serve per state directory is then the
// operator's to keep.
func lockFile(string) (func(), error) { return func() {}, nil }
