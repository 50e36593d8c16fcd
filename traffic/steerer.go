package traffic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Steerer reads and changes the weights of a load balancer pool's origins. It is the only
// way Verdict moves traffic, so every implementation must change only the weights it is
// asked to change, refuse to write over a pool that is not in the state the caller
// believes, and prove by reading back that what it wrote is what the provider now holds.
// The conformance suite in traffic/traffictest checks exactly that.
//
// A provider without conditional writes (Cloudflare has no ETag or If-Match for pools)
// leaves one window no client can close: a change made between the last read and the
// write arriving is overwritten. Implementations keep it to one request's round trip by
// reading the pool again right before every write attempt, retries included, and report
// what they could not prevent through the read-back.
type Steerer interface {
	// Pool reads the pool with every origin and every field the provider reports.
	Pool(ctx context.Context, ref PoolRef) (Pool, error)
	// SetWeights sets the weights of the origins named in want. expect holds the weights
	// the caller believes those origins have now; it must name every origin in want and
	// may name more (origins the caller owns but does not change). If the pool disagrees
	// with expect (including an expected origin that is gone), SetWeights writes nothing
	// and returns a *DriftError (phase PhaseBeforeWrite); that check comes before any
	// validation of want. A write that has to be retried (rate limit, 5xx) re-reads the
	// pool before each new attempt; if anything the write would send differs from the
	// first read (any origin's weight, the set of origins, any other origin field), it
	// stops with a *DriftError (phase PhaseBetweenAttempts) rather than revert that
	// change. Every phase but PhaseAfterWrite means this call left the pool's weights as
	// they were. After writing it reads the pool back and returns a *DriftError (phase
	// PhaseAfterWrite) if any origin's weight is not what was written or kept; that phase
	// also reports a change found before a retry when an earlier attempt, failed without
	// a clear answer (5xx, network error), may have been applied after all.
	SetWeights(ctx context.Context, ref PoolRef, want, expect Weights) error
}

// Phases of a DriftError. Callers branch only on PhaseAfterWrite ("did this call write
// anything?"); the other phases say when the change was seen.
const (
	// PhaseBeforeWrite: the first read disagreed with the caller's expectation; nothing
	// was written.
	PhaseBeforeWrite = "before write"
	// PhaseBetweenAttempts: a write attempt failed (rate limit, 5xx) and the pool read
	// again before retrying had changed since the first read; nothing was written.
	PhaseBetweenAttempts = "between attempts"
	// PhaseAfterWrite: the pool may hold this call's write and differs from it.
	PhaseAfterWrite = "after write"
)

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

// DriftError reports that the pool is not what Verdict expected: someone or something
// else (a Terraform apply, a person in the dashboard) changed the pool. Verdict never
// writes over such a change; the caller must re-read and decide.
type DriftError struct {
	Pool PoolRef
	// Phase is PhaseBeforeWrite or PhaseBetweenAttempts when nothing was written, or
	// PhaseAfterWrite when the pool may hold this call's write.
	Phase string
	// Origins lists every origin that differed, sorted by name.
	Origins []OriginDrift
}

// OriginDrift is one origin that is not as expected: its weight, its presence, or one of
// its other fields.
type OriginDrift struct {
	Name   string
	Expect float64
	Actual float64
	// Missing is true when the origin is no longer in the pool at all.
	Missing bool
	// Added is true when the origin was not in the pool when it was first read; Actual is
	// its weight.
	Added bool
	// Fields names the origin's other fields that changed ("address", "enabled"), sorted;
	// a write would have sent them back as they were.
	Fields []string
}

// Error lists the drifted origins so an operator can see what changed.
func (e *DriftError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pool %s changed outside Verdict (%s):", e.Pool, e.Phase)
	for i, d := range e.Origins {
		if i > 0 {
			b.WriteString(",")
		}
		switch {
		case d.Missing:
			fmt.Fprintf(&b, " origin %q expected weight %s but is gone", d.Name, FormatWeight(d.Expect))
			continue
		case d.Added:
			fmt.Fprintf(&b, " origin %q was added with weight %s", d.Name, FormatWeight(d.Actual))
			continue
		case !SameWeight(d.Expect, d.Actual):
			fmt.Fprintf(&b, " origin %q expected weight %s, found %s", d.Name, FormatWeight(d.Expect), FormatWeight(d.Actual))
			if len(d.Fields) > 0 {
				b.WriteString(", and")
			}
		default:
			fmt.Fprintf(&b, " origin %q", d.Name)
		}
		if len(d.Fields) > 0 {
			fmt.Fprintf(&b, " changed %s", strings.Join(d.Fields, ", "))
		}
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
// every origin that differs, or nil. It is the check every Steerer runs before writing
// (phase PhaseBeforeWrite) and after (PhaseAfterWrite).
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

// DiffPools lists every origin that differs between two reads of a pool, sorted by name:
// a weight changed (Expect is before's weight, Actual after's), an origin removed
// (Missing) or added (Added), or any other field changed (Fields). Read-only fields the
// provider computes (disabled_at) are ignored, as writes do not send them. A Steerer that
// retries a write compares its first read with the latest one through it: any difference
// is a change the retry would revert.
func DiffPools(before, after Pool) []OriginDrift {
	var out []OriginDrift
	for _, b := range before.Origins {
		a, ok := after.Origin(b.Name)
		if !ok {
			out = append(out, OriginDrift{Name: b.Name, Expect: b.Weight, Missing: true})
			continue
		}
		d := OriginDrift{Name: b.Name, Expect: b.Weight, Actual: a.Weight, Fields: changedFields(b, a)}
		if !SameWeight(b.Weight, a.Weight) || len(d.Fields) > 0 {
			out = append(out, d)
		}
	}
	for _, a := range after.Origins {
		if _, ok := before.Origin(a.Name); !ok {
			out = append(out, OriginDrift{Name: a.Name, Actual: a.Weight, Added: true})
		}
	}
	slices.SortFunc(out, func(x, y OriginDrift) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// changedFields names the fields other than weight and disabled_at whose values differ
// between two reads of one origin. Origins without raw JSON (a Steerer that models only
// the typed fields) are compared on address and enabled.
func changedFields(b, a Origin) []string {
	if len(b.Raw) == 0 || len(a.Raw) == 0 {
		var f []string
		if b.Address != a.Address {
			f = append(f, "address")
		}
		if b.Enabled != a.Enabled {
			f = append(f, "enabled")
		}
		return f
	}
	fb, errB := decodeFields(b.Raw)
	fa, errA := decodeFields(a.Raw)
	if errB != nil || errA != nil {
		if bytes.Equal(b.Raw, a.Raw) {
			return nil
		}
		return []string{"(unreadable origin object)"}
	}
	var f []string
	for k, vb := range fb {
		if k == "weight" || k == "disabled_at" {
			continue
		}
		if va, ok := fa[k]; !ok || !reflect.DeepEqual(vb, va) {
			f = append(f, k)
		}
	}
	for k := range fa {
		if _, ok := fb[k]; !ok && k != "weight" && k != "disabled_at" {
			f = append(f, k)
		}
	}
	slices.Sort(f)
	return f
}

func decodeFields(raw json.RawMessage) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
