package embedded

import (
	"context"
	"testing"
	"time"
)

// TestRetention loads ten hours of samples into a server that keeps three, compacts the
// head as the TSDB's background loop would, and checks that old data went and recent data
// stayed.
func TestRetention(t *testing.T) {
	s, err := New(Options{Retention: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	end := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	var samples []Sample
	for ts := end.Add(-10 * time.Hour); ts.Before(end); ts = ts.Add(time.Minute) {
		samples = append(samples, Sample{Metric: "x", Labels: map[string]string{"cluster": "a"}, Time: ts, Value: 1})
	}
	if err := s.Append(samples...); err != nil {
		t.Fatal(err)
	}
	count := func() float64 {
		t.Helper()
		q, err := s.engine.NewInstantQuery(context.Background(), s.db, s.queryOpts(), `count_over_time(x[11h])`, end)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		res := q.Exec(context.Background())
		v, err := res.Vector()
		if err != nil || len(v) != 1 {
			t.Fatalf("%v %v", v, err)
		}
		return v[0].F
	}
	if n := count(); n != 600 {
		t.Fatalf("before compaction: %v samples", n)
	}
	if err := s.db.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := count()
	if n >= 600 || n < 180 {
		t.Errorf("after compaction with 3h retention: %v samples, want fewer than 600 and at least the last 3h (180)", n)
	}
	t.Logf("kept %v of 600 one-minute samples (retention 3h, deleted a 2h block at a time)", n)
}
