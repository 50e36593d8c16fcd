package sim

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFleet measures what a running fleet costs the machine: the whole process's CPU
// (clusters, emulator data plane, load generator, scrapes, TSDB) in cores and per request,
// at the demo's default rate and at five times it, with clusters really waiting out their
// latency and in Fast mode. Each iteration observes 10 s after a 2 s warm-up:
//
//	go test ./sim -run '^$' -bench Fleet -benchtime 1x
func BenchmarkFleet(b *testing.B) {
	for _, rate := range []float64{200, 1000} {
		for _, fast := range []bool{false, true} {
			b.Run(fmt.Sprintf("rate=%g/fast=%v", rate, fast), func(b *testing.B) {
				sc := flat(b, "regression")
				f := startFleet(b, "", Options{Scenario: sc, Rate: rate, Fast: fast})
				time.Sleep(2 * time.Second)
				var cpu, wall time.Duration
				var reqs int64
				for b.Loop() {
					s0, c0, t0 := f.Stats(), cpuTime(), time.Now()
					time.Sleep(10 * time.Second)
					s1 := f.Stats()
					cpu += cpuTime() - c0
					wall += time.Since(t0)
					reqs += s1.Completed - s0.Completed
					if s1.Failed > 0 || s1.Dropped > 0 {
						b.Errorf("failed %d, dropped %d", s1.Failed, s1.Dropped)
					}
				}
				b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
				b.ReportMetric(float64(cpu.Microseconds())/float64(reqs), "µs-cpu/req")
				b.ReportMetric(float64(reqs)/wall.Seconds(), "req/s")
			})
		}
	}
}
