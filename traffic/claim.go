package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Claim is a run's mark on the pool it steers. It lives in the pool itself (for Cloudflare,
// in the pool's description) so that every Verdict, whatever store it uses, and every
// operator looking at the dashboard sees that the pool is mid-experiment.
type Claim struct {
	// Run is the run ID that steers the pool.
	Run string
	// Owner names who drives it ("verdict-run@host", a serve replica).
	Owner string
	Since time.Time
}

// LastRun is what a finished run leaves in the pool in place of its claim, so the next
// run (from any store) can warn that the pool was just promoted or rolled back.
type LastRun struct {
	Run     string
	Verdict string
	Ended   time.Time
}

// ErrClaimed matches every *ClaimedError.
var ErrClaimed = errors.New("pool is claimed by another run")

// ClaimedError reports that another run's claim is on the pool.
type ClaimedError struct {
	Pool  PoolRef
	Claim Claim
}

// Error names the run, who drives it and since when, so the operator knows whom to ask.
func (e *ClaimedError) Error() string {
	return fmt.Sprintf("pool %s is claimed by run %s (driven by %s since %s)", e.Pool, e.Claim.Run, e.Claim.Owner, e.Claim.Since.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrClaimed) true.
func (e *ClaimedError) Is(target error) bool { return target == ErrClaimed }

// Claimer is implemented by Steerers that can mark a pool as owned by a run.
type Claimer interface {
	// Claim marks the pool as driven by c.Run and reads it back. A pool with no claim, or
	// with c.Run's own (then renewed with c's owner), is claimed; another run's claim fails
	// with *ClaimedError unless force, which replaces it.
	Claim(ctx context.Context, ref PoolRef, c Claim, force bool) error
	// Release replaces last.Run's claim with a LastRun note. A pool claimed by another run
	// (taken over by force) is left alone and Release returns its *ClaimedError.
	Release(ctx context.Context, ref PoolRef, last LastRun) error
}

var (
	claimPattern = regexp.MustCompile(`\s*\[verdict: ([^\]]*)\]`)
	lastPattern  = regexp.MustCompile(`\s*\[verdict-last: ([^\]]*)\]`)
)

// String renders the claim as it is stored: "[verdict: run=… owner=… since=…]".
func (c Claim) String() string {
	return fmt.Sprintf("[verdict: run=%s owner=%s since=%s]", url.QueryEscape(c.Run), url.QueryEscape(c.Owner), c.Since.UTC().Format(time.RFC3339))
}

// String renders the note as it is stored: "[verdict-last: run=… verdict=… ended=…]".
func (l LastRun) String() string {
	return fmt.Sprintf("[verdict-last: run=%s verdict=%s ended=%s]", url.QueryEscape(l.Run), url.QueryEscape(l.Verdict), l.Ended.UTC().Format(time.RFC3339))
}

func markerFields(s string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if u, err := url.QueryUnescape(v); err == nil {
			v = u
		}
		out[k] = v
	}
	return out
}

// ParseClaim finds a claim in a pool description.
func ParseClaim(description string) (Claim, bool) {
	m := claimPattern.FindStringSubmatch(description)
	if m == nil {
		return Claim{}, false
	}
	f := markerFields(m[1])
	if f["run"] == "" {
		return Claim{}, false
	}
	since, _ := time.Parse(time.RFC3339, f["since"])
	return Claim{Run: f["run"], Owner: f["owner"], Since: since}, true
}

// ParseLastRun finds a finished run's note in a pool description.
func ParseLastRun(description string) (LastRun, bool) {
	m := lastPattern.FindStringSubmatch(description)
	if m == nil {
		return LastRun{}, false
	}
	f := markerFields(m[1])
	if f["run"] == "" {
		return LastRun{}, false
	}
	ended, _ := time.Parse(time.RFC3339, f["ended"])
	return LastRun{Run: f["run"], Verdict: f["verdict"], Ended: ended}, true
}

// WithClaim returns description with any claim or last-run note replaced by marker (a
// Claim or LastRun rendered with String; empty removes both), keeping the human text.
func WithClaim(description, marker string) string {
	d := claimPattern.ReplaceAllString(description, "")
	d = strings.TrimSpace(lastPattern.ReplaceAllString(d, ""))
	switch {
	case marker == "":
		return d
	case d == "":
		return marker
	}
	return d + " " + marker
}
