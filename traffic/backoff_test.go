package traffic

import (
	"testing"
	"time"
)

// Backoff doubles from base, stays within [d/2, d] for jitter, and never exceeds most, even
// for attempt numbers that would overflow the shift.
func TestBackoff(t *testing.T) {
	base, most := 100*time.Millisecond, 2*time.Second
	for n, want := range map[int]time.Duration{0: base, 1: base, 2: 2 * base, 3: 4 * base, 5: 16 * base, 6: most, 100: most} {
		for range 200 {
			got := Backoff(base, most, n)
			if got < want/2 || got > want {
				t.Fatalf("Backoff(%s, %s, %d) = %s, want within [%s, %s]", base, most, n, got, want/2, want)
			}
		}
	}
}
