package engine

import (
	"fmt"
	"math"
	"time"
)

// Late data. An interval's samples can arrive well after it ends: a federation server
// scrapes its leaves every scrape interval and stores their samples with their own
// timestamps, so an interval read too early lacks part of some clusters' requests, and
// the traffic-share check then sees a mismatch that is not there (issue 20: 11.5/37.6/
// 50.9% read at once, 44.5/45.3/10.2% read later, against weights of 45/45/10).
//
// The engine therefore reads an interval no earlier than settle after its end, and judges
// the newest interval of a read only once it is complete: its counts (within
// settleTolerance) have not changed over reads spanning at least quiet, each read at
// least settle after the one before. Two reads a settle apart are not enough: a
// federation server stores its leaves' samples in batches, one per federation scrape, so
// reads between two scrapes agree while the interval's last samples are still on the
// leaf (60 s federation, reads 15 s and 30 s after the end: one cluster short of its last
// samples, a share mismatch that is not there). A span without change that holds a federation scrape, begun after the
// interval's end, proves the interval complete; quiet is at least the federation interval
// wherever increase() works at all, since that needs two samples per interval. The engine
// waits for at most maxSettleReads changes or settleLimit after the interval's end, then
// judges the interval as read and says so. Intervals older than the newest one read are
// complete.

// settleTolerance is the relative difference between two reads of an interval's counts
// below which the interval counts as complete.
const settleTolerance = 1e-3

// maxSettleReads bounds how often an interval's counts may change while it is waited for.
const maxSettleReads = 3

// maxFederationInterval bounds quiet for long analysis intervals: federation scrapes
// every minute or two, never every half hour.
const maxFederationInterval = 2 * time.Minute

// pendingInterval is the newest interval read but not yet judged: its counts as last read,
// first read at Since (zero in state written before Since existed: ReadAt then).
type pendingInterval struct {
	End    time.Time          `json:"end"`
	ReadAt time.Time          `json:"readAt"`
	Since  time.Time          `json:"since,omitzero"`
	Reads  int                `json:"reads"`
	Counts map[string]float64 `json:"counts,omitempty"`
}

func (p *pendingInterval) since() time.Time {
	if p.Since.IsZero() {
		return p.ReadAt
	}
	return p.Since
}

// quiet is how long an interval's counts must stay unchanged to count as complete: half
// the analysis interval (at least the sample spacing where increase() works), at most
// maxFederationInterval, and at least the settle time.
func (r *Run) quiet() time.Duration {
	return max(r.settle(), min(r.interval()/2, maxFederationInterval))
}

// settleLimit is how long after an interval's end the engine stops waiting for its counts
// to settle: room for the last federation scrape and one quiet span after it, and for
// three re-reads.
func (r *Run) settleLimit() time.Duration {
	return r.settle() + max(2*r.quiet(), 3*r.settle())
}

// intervalCounts is the fingerprint of one interval's observations: every KPI's counts
// and values per cluster.
func intervalCounts(obs map[string]Observation) map[string]float64 {
	out := map[string]float64{}
	for name, o := range obs {
		for c, v := range o.Clusters {
			k := name + "\x00" + c + "\x00"
			out[k+"events"], out[k+"total"] = v.Events, v.Total
			if v.Sum != nil {
				out[k+"sum"] = *v.Sum
			}
			if v.Value != nil {
				out[k+"value"] = *v.Value
			}
		}
	}
	return out
}

func sameCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			return false
		}
		if d := math.Abs(x - y); d > settleTolerance*max(math.Abs(x), math.Abs(y)) && d > 1e-9 {
			return false
		}
	}
	return true
}

// settled says whether the newest interval read, ending at end with observations obs,
// may be judged now. note is set when it is judged without having settled.
func (r *Run) settled(now, end time.Time, obs map[string]Observation) (ok bool, note string) {
	counts := intervalCounts(obs)
	p := r.book.Pending
	if p != nil && !p.End.Equal(end) {
		p = nil
	}
	switch {
	case p == nil && now.Sub(end) >= r.settleLimit():
		return true, "" // read late enough (catching up): complete
	case p == nil:
		r.book.Pending = &pendingInterval{End: end, ReadAt: now, Since: now, Reads: 1, Counts: counts}
		return false, ""
	case now.Sub(p.ReadAt) < r.settle():
		return false, "" // too soon after the last read to tell anything
	case sameCounts(p.Counts, counts):
		if now.Sub(p.since()) < r.quiet() && now.Sub(end) < r.settleLimit() {
			p.ReadAt = now // unchanged, but perhaps only between two federation scrapes
			return false, ""
		}
		r.book.Pending = nil
		return true, ""
	case p.Reads >= maxSettleReads || now.Sub(end) >= r.settleLimit():
		r.book.Pending = nil
		return true, fmt.Sprintf("the interval ending %s still changed after %d reads over %s; judged as last read (late samples: raise --settle)",
			end.UTC().Format(time.TimeOnly), p.Reads+1, now.Sub(end).Round(time.Second))
	}
	p.Reads++
	p.ReadAt, p.Since, p.Counts = now, now, counts
	return false, ""
}
