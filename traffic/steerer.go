package traffic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Steerer reads and changes the weights of a load balancer pool's origins. It is the only
// way Verdict moves traffic, so every implementation must change only the weights it is
// asked to change, refuse to write over a pool that is not in the state the caller
// believes, and prove by reading back that what it wrote is what the provider now holds.
// The conformance suite in traffic/traffictest checks exactly that.
type Steerer interface {
	// Pool reads the pool with every origin and every field the provider reports.
	Pool(ctx context.Context, ref PoolRef) (Pool, error)
	// SetWeights sets the weights of the origins named in want. expect holds the weights
	// the caller believes those origins have now; it must name every origin in want and
	// may name more (origins the caller owns but does not change). If the pool disagrees
	// with expect (including an expected origin that is gone), SetWeights writes nothing
	// and returns a *DriftError; that check comes before any validation of want. After
	// writing it reads the pool back and returns a *DriftError (phase "after write") if
	// any origin's weight is not what was written or kept.
	SetWeights(ctx context.Context, ref PoolRef, want, expect Weights) error
}

// PoolRef names a pool at a provider. For Cloudflare, Account is the account ID (empty
// means the Steerer's default account) and Pool is the pool ID.
type PoolRef struct {
	Account string
	Pool    string
}

// String renders the reference for messages: "account/pool", or just the pool ID when
// no account is set.
func (r PoolRef) String() string {
	if r.Account == "" {
		return r.Pool
	}
	return r.Account + "/" + r.Pool
}

// ErrDrift matches every *DriftError with errors.Is, for callers that only need to know
// that the pool changed under them.
var ErrDrift = errors.New("pool weights drifted")

// ErrNotFound reports that the provider has no such pool (or the credentials cannot see
// it); callers branch on it with errors.Is.
var ErrNotFound = errors.New("pool not found")

// DriftError reports that the pool's weights are not what Verdict expected: someone or
// something else (a Terraform apply, a person in the dashboard) changed the pool. Verdict
// never writes over such a change; the caller must re-read and decide.
type DriftError struct {
	Pool PoolRef
	// Phase is "before write" when the pool differed from the caller's expectation and
	// nothing was written, or "after write" when the read-back differed from what was just
	// written.
	Phase string
	// Origins lists every origin whose weight differed, sorted by name.
	Origins []OriginDrift
}

// OriginDrift is one origin whose weight is not the one expected.
type OriginDrift struct {
	Name   string
	Expect float64
	Actual float64
	// Missing is true when the origin is no longer in the pool at all.
	Missing bool
}

// Error lists the drifted origins so an operator can see what changed.
func (e *DriftError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pool %s changed outside Verdict (%s):", e.Pool, e.Phase)
	for i, d := range e.Origins {
		if i > 0 {
			b.WriteString(",")
		}
		if d.Missing {
			fmt.Fprintf(&b, " origin %q expected weight %s but is gone", d.Name, FormatWeight(d.Expect))
			continue
		}
		fmt.Fprintf(&b, " origin %q expected weight %s, found %s", d.Name, FormatWeight(d.Expect), FormatWeight(d.Actual))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrDrift) true for every DriftError.
func (e *DriftError) Is(target error) bool { return target == ErrDrift }

// WeightStep is the granularity of Cloudflare origin weights: 0 to 1 in steps of 0.01.
const WeightStep = 0.01

// SameWeight reports whether two weights are equal at Cloudflare's granularity. Weights
// travel as decimal JSON numbers, so exact float comparison would flag 0.29 read back as
// 0.29000000000000004 computed.
func SameWeight(a, b float64) bool { return math.Abs(a-b) < WeightStep/2 }

// RoundWeight rounds w to the nearest multiple of WeightStep.
func RoundWeight(w float64) float64 { return math.Round(w/WeightStep) * WeightStep }

// FormatWeight renders a weight the way Cloudflare's API does: shortest decimal, at most
// two places ("0.5", "0.05", "1", "0").
func FormatWeight(w float64) string {
	return strconv.FormatFloat(math.Round(w*100)/100, 'f', -1, 64)
}

// ValidWeight reports why w is not a weight Cloudflare accepts, or nil.
func ValidWeight(w float64) error {
	if math.IsNaN(w) || w < 0 || w > 1 {
		return fmt.Errorf("weight %v outside 0..1", w)
	}
	if math.Abs(w-RoundWeight(w)) > 1e-9 {
		return fmt.Errorf("weight %v is not a multiple of %v", w, WeightStep)
	}
	return nil
}

// CheckDrift compares the pool's weights with expect and returns a *DriftError naming
// every origin that differs, or nil. It is the check every Steerer runs before writing.
func CheckDrift(p Pool, ref PoolRef, phase string, expect Weights) error {
	var drift []OriginDrift
	for _, name := range sortedNames(expect) {
		o, ok := p.Origin(name)
		switch {
		case !ok:
			drift = append(drift, OriginDrift{Name: name, Expect: expect[name], Missing: true})
		case !SameWeight(o.Weight, expect[name]):
			drift = append(drift, OriginDrift{Name: name, Expect: expect[name], Actual: o.Weight})
		}
	}
	if len(drift) == 0 {
		return nil
	}
	return &DriftError{Pool: ref, Phase: phase, Origins: drift}
}

// CheckRequest validates a SetWeights request against the pool it will change: every
// origin in want exists, every weight is one Cloudflare accepts, every origin in want has
// an expected weight, and the result still sends traffic somewhere. Errors name the
// origin; all problems are reported at once.
func CheckRequest(p Pool, want, expect Weights) error {
	var errs []error
	if len(want) == 0 {
		errs = append(errs, errors.New("no weights to set"))
	}
	for _, name := range sortedNames(want) {
		if _, ok := p.Origin(name); !ok {
			errs = append(errs, fmt.Errorf("origin %q is not in pool %q", name, p.ID))
			continue
		}
		if err := ValidWeight(want[name]); err != nil {
			errs = append(errs, fmt.Errorf("origin %q: %w", name, err))
		}
		if _, ok := expect[name]; !ok {
			errs = append(errs, fmt.Errorf("origin %q: no expected current weight given; Verdict only changes weights it knows", name))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	total := 0.0
	for _, o := range p.Origins {
		w := o.Weight
		if nw, ok := want[o.Name]; ok {
			w = nw
		}
		if o.Enabled {
			total += w
		}
	}
	if total < WeightStep/2 {
		return fmt.Errorf("refusing to set weights on pool %q: no enabled origin would keep any weight, so the pool would carry no traffic", p.ID)
	}
	return nil
}

// ApplyWeights returns the pool's full origins list as JSON objects with the weights in
// want applied and every other field kept exactly as read. Read-only fields the provider
// computes (disabled_at) are dropped because writes must not carry them. The result is
// what a Cloudflare PATCH or PUT sends as "origins", since the API has no per-origin
// endpoint and replaces the whole list.
func ApplyWeights(p Pool, want Weights) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(p.Origins))
	for _, o := range p.Origins {
		raw := o.Raw
		if len(raw) == 0 {
			raw = json.RawMessage(`{}`)
		}
		fields := map[string]json.RawMessage{}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&fields); err != nil {
			return nil, fmt.Errorf("origin %q: decode its fields: %w", o.Name, err)
		}
		delete(fields, "disabled_at")
		if _, ok := fields["name"]; !ok {
			fields["name"], _ = json.Marshal(o.Name)
		}
		if w, ok := want[o.Name]; ok {
			fields["weight"] = json.RawMessage(FormatWeight(w))
		}
		b, err := json.Marshal(fields)
		if err != nil {
			return nil, fmt.Errorf("origin %q: encode: %w", o.Name, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// Changes reports whether applying want would change any weight in the pool.
func Changes(p Pool, want Weights) bool {
	for name, w := range want {
		if o, ok := p.Origin(name); !ok || !SameWeight(o.Weight, w) {
			return true
		}
	}
	return false
}

// Intended returns the weight every origin should have after want is applied to p: want
// for the named origins, the current weight for the rest. Read-back verification compares
// the whole pool against it, so a concurrent change to an origin Verdict does not own is
// caught as well.
func Intended(p Pool, want Weights) Weights {
	w := p.Weights()
	for name, v := range want {
		w[name] = RoundWeight(v)
	}
	return w
}

func sortedNames(w Weights) []string {
	names := make([]string, 0, len(w))
	for n := range w {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
