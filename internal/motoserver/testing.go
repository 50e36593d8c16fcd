package motoserver

import (
	"context"
	"sync"

	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
)

// TB is the part of testing.TB the helpers use. Taking it instead of testing.TB keeps the
// testing package out of the verdict binary, which links this package for the demo.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// Require skips the test when moto_server is not on PATH, or fails it under
// VERDICT_REQUIRE_MOTO=1. Call it in a parent process that re-runs the test binary, so the
// decision is made once.
func Require(t TB) {
	t.Helper()
	if installed() {
		return
	}
	if required() {
		t.Fatalf("%v, and %s=1 requires the emulator tests", ErrNotInstalled, EnvRequire)
	}
	t.Skip(ErrNotInstalled.Error() + "; the Route 53 emulator tests need it")
}

// Start starts a moto_server for the test and stops it when the test ends. Without
// moto_server the test is skipped, or fails under VERDICT_REQUIRE_MOTO=1.
func Start(t TB) *Server {
	t.Helper()
	Require(t)
	s, err := Run(context.Background())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// shared is the server Shared hands out: moto takes seconds to start, so a package's
// tests share one and isolate themselves by hosted zone.
var shared struct {
	mu  sync.Mutex
	s   *Server
	err error
}

// Shared is Start for a whole test binary: the first call starts a server, later calls
// return it (or the first call's error), and StopShared, called from TestMain, stops it.
func Shared(t TB) *Server {
	t.Helper()
	Require(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = Run(context.Background())
	}
	if shared.err != nil {
		t.Fatalf("%v", shared.err)
	}
	return shared.s
}

// StopShared stops the server Shared started, if any.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s != nil {
		shared.s.Close()
	}
}

// NewZone is CreateZone for tests: it fails the test on error.
func NewZone(t TB, c *r53.Client, prefix string) (id, name string) {
	t.Helper()
	id, name, err := CreateZone(context.Background(), c, prefix)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return id, name
}

// MustUpsert is Upsert for tests: it fails the test on error.
func MustUpsert(t TB, c *r53.Client, zone string, recs ...types.ResourceRecordSet) {
	t.Helper()
	if err := Upsert(context.Background(), c, zone, recs...); err != nil {
		t.Fatalf("seed records: %v", err)
	}
}

// MustRecords is Records for tests: it fails the test on error.
func MustRecords(t TB, c *r53.Client, zone string) map[string]types.ResourceRecordSet {
	t.Helper()
	m, err := Records(context.Background(), c, zone)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return m
}
