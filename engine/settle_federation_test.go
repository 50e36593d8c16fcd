package engine

import (
	"fmt"
	"testing"
	"time"
)

// TestSettleWaitsOutAFederationScrape: a federation server stores its leaves' samples in
// batches, one per federation scrape, so two reads of an interval can agree while its
// last samples are still on the leaf. Here the federation scrapes every 60 s (the issue's
// 60 s/60 s chain, analysis interval 2m, the default settle of 15 s): c3's last sample of
// the interval reaches the federation server at each offset from 16 s to 60 s after the
// interval's end, with the engine reading every second from the settle time on. The
// interval must be judged on c3's complete count whatever the offset. (Judging when two
// reads a settle time apart agreed took c3's partial count for every offset from 31 s on:
// c3 at 61% of its requests.)
func TestSettleWaitsOutAFederationScrape(t *testing.T) {
	for _, arrival := range []time.Duration{16 * time.Second, 29 * time.Second, 31 * time.Second, 45 * time.Second, 59 * time.Second, 60 * time.Second} {
		t.Run(fmt.Sprint(arrival), func(t *testing.T) {
			w := newWorld(t)
			r := start(t, w, w.engine(func(o *Options) { o.Settle = 0 }), "interval: 1m", "interval: 2m")
			if got := r.settle(); got != 15*time.Second {
				t.Fatalf("default settle %s, want 15s", got)
			}
			end := t0.Add(10 * time.Minute)
			partial, complete := 5500.0, 9000.0 // c3's requests before and after the last federation scrape
			obs := func(c3 float64) map[string]Observation {
				return map[string]Observation{"requests": {Clusters: map[string]ClusterValues{
					"c1": {Total: 2000}, "c2": {Total: 9000}, "c3": {Total: c3},
				}}}
			}
			for now := end.Add(r.settle()); now.Before(end.Add(5 * time.Minute)); now = now.Add(time.Second) {
				c3 := partial
				if now.Sub(end) >= arrival {
					c3 = complete
				}
				ok, note := r.settled(now, end, obs(c3))
				if !ok {
					continue
				}
				if c3 != complete {
					t.Fatalf("judged %s after the end on c3's partial count (%.0f of %.0f requests)", now.Sub(end), c3, complete)
				}
				if note != "" {
					t.Errorf("judged with a note although the counts had settled: %s", note)
				}
				if lag := now.Sub(end); lag > arrival+r.interval() {
					t.Errorf("judged %s after the end, more than an interval after the data was complete", lag)
				}
				return
			}
			t.Fatal("never judged")
		})
	}
}
