package traffic

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrRefused marks a drain or restore that Verdict will not do because it would leave the
// pool without enough origins carrying traffic, or because there is nothing saved to
// restore; the CLI reports it as invalid input.
var ErrRefused = errors.New("refused")

// Change is one origin's weight before and after a planned change, with the traffic share
// each weight gives it, for before/after tables.
type Change struct {
	Name        string
	Enabled     bool
	Before      float64
	After       float64
	ShareBefore float64
	ShareAfter  float64
	// Health is the provider's verdict on the origin ("healthy", "UNHEALTHY (...)",
	// "unknown"); empty when health was not read. Unhealthy is true when a monitor found
	// the origin unhealthy: the shares then already count it as carrying nothing.
	Health    string
	Unhealthy bool
}

// Changed reports whether the origin's weight changes.
func (c Change) Changed() bool { return !SameWeight(c.Before, c.After) }

// ChangePlan is a planned weight change on a pool: what to pass to Steerer.SetWeights
// and what it does to every origin.
type ChangePlan struct {
	Pool    Pool
	Want    Weights
	Expect  Weights
	Changes []Change // every origin, in pool order
	// Health is the pool's health the shares account for (WithHealth); nil when it was
	// not read and every enabled origin is assumed healthy.
	Health *PoolHealth
}

// WithHealth returns the plan with every origin's health and the true traffic shares: an
// origin the monitors find unhealthy carries nothing and its weight goes to the healthy
// origins in proportion (HealthyShares). It refuses (ErrRefused) a weight change that
// would leave no healthy origin carrying traffic, or fewer than minimum_origins, because
// the pool would then carry nothing at all.
func (c ChangePlan) WithHealth(h PoolHealth) (ChangePlan, error) {
	c.Health = &h
	before, after := HealthyShares(c.Pool, nil, h), HealthyShares(c.Pool, c.Want, h)
	out := make([]Change, len(c.Changes))
	for i, ch := range c.Changes {
		ch.ShareBefore, ch.ShareAfter = before[ch.Name], after[ch.Name]
		ch.Health = h.Describe(ch.Name)
		ch.Unhealthy = !h.OriginHealthy(ch.Name)
		if !ch.Enabled {
			// Disabled carries nothing anyway; monitors skip (or report) it as down.
			ch.Health, ch.Unhealthy = "-", false
		}
		out[i] = ch
	}
	c.Changes = out
	if c.NoOp() {
		return c, nil
	}
	var left []string
	for _, name := range carrying(c.Pool, c.Want) {
		if h.OriginHealthy(name) {
			left = append(left, name)
		}
	}
	need := max(c.Pool.MinimumOrigins, 1)
	if len(left) < need {
		return c, fmt.Errorf("%w: after this change %d healthy origin(s) of pool %q would carry traffic (%v), below %d: unhealthy origins %v carry nothing, so the pool would serve no traffic",
			ErrRefused, len(left), c.Pool.ID, left, need, h.Unhealthy())
	}
	return c, nil
}

// UnhealthyNote says, for a person reading a preview, which origins carry nothing because
// their monitors find them unhealthy; empty when none.
func (c ChangePlan) UnhealthyNote() string {
	var bad []string
	for _, ch := range c.Changes {
		if ch.Unhealthy {
			bad = append(bad, strconv.Quote(ch.Name)+" "+ch.Health)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return "Unhealthy at the load balancer: " + strings.Join(bad, ", ") + ". An unhealthy origin gets no traffic whatever its weight; its share goes to the healthy origins in proportion to their weights, and the shares above count that."
}

// NoOp reports whether the plan changes nothing.
func (c ChangePlan) NoOp() bool { return !Changes(c.Pool, c.Want) }

// Shares returns each origin's share of the pool's traffic under weights w (origins not
// in w keep their current weight): weight over the sum of enabled origins' weights, 0 for
// disabled origins. It assumes every enabled origin is healthy.
func Shares(p Pool, w Weights) map[string]float64 {
	total := 0.0
	eff := make(map[string]float64, len(p.Origins))
	for _, o := range p.Origins {
		v := o.Weight
		if nw, ok := w[o.Name]; ok {
			v = nw
		}
		if o.Enabled {
			eff[o.Name] = v
			total += v
		}
	}
	out := make(map[string]float64, len(p.Origins))
	for _, o := range p.Origins {
		if total > 0 {
			out[o.Name] = eff[o.Name] / total
		} else {
			out[o.Name] = 0
		}
	}
	return out
}

// NewChangePlan describes applying want to p, with expect as the weights want's origins
// have now.
func NewChangePlan(p Pool, want Weights) ChangePlan {
	expect := Weights{}
	for name := range want {
		if o, ok := p.Origin(name); ok {
			expect[name] = o.Weight
		}
	}
	before, after := Shares(p, nil), Shares(p, want)
	plan := ChangePlan{Pool: p, Want: want, Expect: expect}
	for _, o := range p.Origins {
		c := Change{Name: o.Name, Enabled: o.Enabled, Before: o.Weight, After: o.Weight, ShareBefore: before[o.Name], ShareAfter: after[o.Name]}
		if w, ok := want[o.Name]; ok {
			c.After = w
		}
		plan.Changes = append(plan.Changes, c)
	}
	return plan
}

func carrying(p Pool, w Weights) []string {
	var names []string
	for _, o := range p.Origins {
		v := o.Weight
		if nw, ok := w[o.Name]; ok {
			v = nw
		}
		if o.Enabled && v >= WeightStep/2 {
			names = append(names, o.Name)
		}
	}
	return names
}

// PlanDrain plans taking origin out of traffic: its weight goes to 0 and every other
// origin keeps its weight, so its share goes to the other enabled origins in proportion to
// their weights (Cloudflare weights are relative). It refuses (ErrRefused) when origin is
// the last one carrying traffic, or when fewer than the pool's minimum_origins would still
// carry traffic. An origin already at weight 0 gives a no-op plan.
func PlanDrain(p Pool, origin string) (ChangePlan, error) {
	o, ok := p.Origin(origin)
	if !ok {
		return ChangePlan{}, fmt.Errorf("%w: pool %q has no origin %q (origins: %s)", ErrRefused, p.ID, origin, originNames(p))
	}
	want := Weights{origin: 0}
	if SameWeight(o.Weight, 0) {
		return NewChangePlan(p, want), nil
	}
	left := carrying(p, want)
	if len(left) == 0 {
		return ChangePlan{}, fmt.Errorf("%w: origin %q is the last origin of pool %q carrying traffic; draining it would leave the pool with none", ErrRefused, origin, p.ID)
	}
	if len(left) < p.MinimumOrigins {
		return ChangePlan{}, fmt.Errorf("%w: draining %q would leave %d origin(s) carrying traffic in pool %q (%v), below its minimum_origins %d",
			ErrRefused, origin, len(left), p.ID, left, p.MinimumOrigins)
	}
	return NewChangePlan(p, want), nil
}

// RefuseClaimed refuses (ErrRefused, and a *ClaimedError naming the run, its owner and
// since when) a manual change to a pool that carries a run's claim: weights moved under a
// running experiment skew its comparison, and the run would meet them as drift. Callers
// let an operator override it on purpose.
func RefuseClaimed(p Pool, ref PoolRef) error {
	c, ok := p.Claim()
	if !ok {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrRefused, &ClaimedError{Pool: ref, Claim: c})
}

// PlanRestore plans putting back the weights saved when origins were drained: each
// drained origin (or only the one named, if only is not empty) gets its saved weight back,
// expected to be at 0 now. An origin no longer at 0 means someone changed it since the
// drain: the plan's Expect still says 0, so SetWeights refuses with a *DriftError.
func PlanRestore(p Pool, rec DrainRecord, only string) (ChangePlan, error) {
	want := Weights{}
	for name, d := range rec.Origins {
		if only != "" && name != only {
			continue
		}
		if _, ok := p.Origin(name); !ok {
			return ChangePlan{}, fmt.Errorf("%w: origin %q was drained from pool %q but is no longer in it; edit or delete the drain record", ErrRefused, name, p.ID)
		}
		want[name] = d.Weight
	}
	if len(want) == 0 {
		if only != "" {
			return ChangePlan{}, fmt.Errorf("%w: origin %q of pool %q has no saved weight; drained origins: %v", ErrRefused, only, p.ID, rec.Names())
		}
		return ChangePlan{}, fmt.Errorf("%w: nothing to restore in pool %q", ErrRefused, p.ID)
	}
	plan := NewChangePlan(p, want)
	for name := range want {
		plan.Expect[name] = 0
	}
	return plan, nil
}

func originNames(p Pool) string {
	names := make([]string, 0, len(p.Origins))
	for _, o := range p.Origins {
		names = append(names, o.Name)
	}
	return fmt.Sprint(names)
}

// DrainRecord is what `verdict drain` saves so `verdict restore` can put weights back:
// the weight each drained origin had before. One file per pool.
type DrainRecord struct {
	Version int                      `json:"version"`
	Account string                   `json:"account,omitempty"`
	Pool    string                   `json:"pool"`
	Origins map[string]DrainedOrigin `json:"origins"`
}

// DrainedOrigin is one drained origin's saved weight.
type DrainedOrigin struct {
	Weight    float64   `json:"weight"`
	DrainedAt time.Time `json:"drained_at"`
}

// Names lists the drained origins, sorted.
func (r DrainRecord) Names() []string {
	names := make([]string, 0, len(r.Origins))
	for n := range r.Origins {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DrainRecordPath is where the record for a pool lives: <stateDir>/drains/<pool>.json.
func DrainRecordPath(stateDir, pool string) (string, error) {
	if !idPattern.MatchString(pool) {
		return "", fmt.Errorf("pool ID %q is not a valid identifier", pool)
	}
	return filepath.Join(stateDir, "drains", pool+".json"), nil
}

// LoadDrainRecord reads the pool's record; ok is false when there is none.
func LoadDrainRecord(stateDir, pool string) (rec DrainRecord, ok bool, err error) {
	path, err := DrainRecordPath(stateDir, pool)
	if err != nil {
		return DrainRecord{}, false, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return DrainRecord{Version: 1, Pool: pool, Origins: map[string]DrainedOrigin{}}, false, nil
	}
	if err != nil {
		return DrainRecord{}, false, fmt.Errorf("read drain record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return DrainRecord{}, false, fmt.Errorf("drain record %s is not valid JSON: %w", path, err)
	}
	if rec.Pool != pool {
		return DrainRecord{}, false, fmt.Errorf("drain record %s is for pool %q, not %q", path, rec.Pool, pool)
	}
	if rec.Origins == nil {
		rec.Origins = map[string]DrainedOrigin{}
	}
	return rec, true, nil
}

// SaveDrainRecord writes the record atomically (temporary file, fsync, rename), so a crash
// never leaves a half-written record; a record without origins deletes the file.
func SaveDrainRecord(stateDir string, rec DrainRecord) error {
	path, err := DrainRecordPath(stateDir, rec.Pool)
	if err != nil {
		return err
	}
	if len(rec.Origins) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove drain record: %w", err)
		}
		return nil
	}
	rec.Version = 1
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode drain record: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create drain record directory: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+rec.Pool+"-*.json")
	if err != nil {
		return fmt.Errorf("save drain record: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save drain record %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save drain record %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save drain record %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save drain record %s: %w", path, err)
	}
	return nil
}
