package traffic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HealthReader is implemented by a Steerer that can read what the provider's health
// monitors say about a pool's origins. It is optional: Cloudflare implements it with the
// pool health endpoint; a Steerer that cannot read health (Route 53 without health
// checks) does not, and callers then assume every enabled origin is healthy.
type HealthReader interface {
	// Health reads the health of every origin of the pool.
	Health(ctx context.Context, ref PoolRef) (PoolHealth, error)
}

var _ HealthReader = (*Cloudflare)(nil)

// PoolHealth is what the provider's monitors report about a pool. An origin the report
// does not mention (no monitor attached, or an origin added after the last check) is
// unknown and treated as healthy, as Cloudflare steers to origins it has no verdict on.
type PoolHealth struct {
	Pool PoolRef
	// Monitored is false when the provider reports no health at all (no monitor attached
	// to the pool): every enabled origin is then taken as healthy.
	Monitored bool
	// Healthy is the pool's own verdict (enough healthy origins for minimum_origins) in
	// most of the regions that check it.
	Healthy bool
	// Origins holds the origins the report mentions, by origin name.
	Origins map[string]OriginHealth
}

// OriginHealth is one origin's health over the regions (Cloudflare "PoPs") that check it.
type OriginHealth struct {
	// Healthy is the verdict of most regions that check the origin, which is what decides
	// whether Cloudflare sends it traffic: an unhealthy origin gets none.
	Healthy bool
	// Regions is how many regions reported on the origin; UnhealthyIn names those that
	// found it unhealthy, sorted.
	Regions     int
	UnhealthyIn []string
	// Reason is the first failure reason reported ("" when healthy everywhere).
	Reason string
}

// OriginHealthy reports whether the provider sends traffic to the named origin as far as
// its health goes: true unless a monitor found it unhealthy.
func (h PoolHealth) OriginHealthy(name string) bool {
	o, ok := h.Origins[name]
	return !ok || o.Healthy
}

// Unhealthy lists the origins the monitors found unhealthy, sorted.
func (h PoolHealth) Unhealthy() []string {
	var out []string
	for name, o := range h.Origins {
		if !o.Healthy {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Describe renders one origin's health for tables and messages: "healthy",
// "UNHEALTHY (reason; in 2/3 regions)", or "unknown" when no monitor reports on it.
func (h PoolHealth) Describe(name string) string {
	o, ok := h.Origins[name]
	switch {
	case !h.Monitored || !ok:
		return "unknown"
	case o.Healthy && len(o.UnhealthyIn) == 0:
		return "healthy"
	case o.Healthy:
		return fmt.Sprintf("healthy (unhealthy in %s)", strings.Join(o.UnhealthyIn, ", "))
	}
	reason := o.Reason
	if reason == "" {
		reason = "monitor failed"
	}
	return fmt.Sprintf("UNHEALTHY (%s; in %d/%d regions)", reason, len(o.UnhealthyIn), o.Regions)
}

// cfOriginHealth is one origin's entry in a Cloudflare pool health report.
type cfOriginHealth struct {
	Healthy       *bool  `json:"healthy"`
	FailureReason string `json:"failure_reason"`
	ResponseCode  int    `json:"response_code"`
	RTT           string `json:"rtt"`
}

// DecodePoolHealth parses Cloudflare's GET .../pools/{pool_id}/health answer (the
// envelope or its result) for pool p. The report is keyed by region ("Amsterdam, NL")
// and, within a region, by origin address; addresses are mapped back to the pool's origin
// names (every enabled origin with that address; disabled origins carry nothing and are
// left out). An origin is healthy when most regions that
// report on it say so. A report without regions means the pool has no monitor.
func DecodePoolHealth(data []byte, p Pool) (PoolHealth, error) {
	data = bytes.TrimSpace(data)
	var env struct {
		Success *bool           `json:"success"`
		Errors  json.RawMessage `json:"errors"`
		Result  json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return PoolHealth{}, fmt.Errorf("pool health is not valid JSON: %w", err)
	}
	if env.Success != nil || env.Result != nil {
		if env.Success != nil && !*env.Success {
			return PoolHealth{}, fmt.Errorf("pool health is an unsuccessful API response: errors %s", env.Errors)
		}
		data = env.Result
	}
	var res struct {
		PoolID    string `json:"pool_id"`
		PopHealth map[string]struct {
			Healthy *bool                       `json:"healthy"`
			Origins []map[string]cfOriginHealth `json:"origins"`
		} `json:"pop_health"`
	}
	if len(data) > 0 && string(data) != "null" {
		if err := json.Unmarshal(data, &res); err != nil {
			return PoolHealth{}, fmt.Errorf("pool health is not a Cloudflare health report: %w", err)
		}
	}
	h := PoolHealth{Pool: PoolRef{Pool: p.ID}, Monitored: len(res.PopHealth) > 0, Healthy: true, Origins: map[string]OriginHealth{}}
	if !h.Monitored {
		return h, nil
	}
	byAddr := map[string][]string{}
	for _, o := range p.Origins {
		if !o.Enabled {
			continue // not monitored: it carries nothing whatever a report says
		}
		a := strings.ToLower(o.Address)
		byAddr[a] = append(byAddr[a], o.Name)
	}
	regions := make([]string, 0, len(res.PopHealth))
	for r := range res.PopHealth {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	type tally struct {
		regions   int
		unhealthy []string
		reason    string
	}
	tallies := map[string]*tally{}
	poolUnhealthy := 0
	for _, region := range regions {
		pop := res.PopHealth[region]
		if pop.Healthy != nil && !*pop.Healthy {
			poolUnhealthy++
		}
		for _, entry := range pop.Origins {
			for addr, oh := range entry {
				for _, name := range byAddr[strings.ToLower(addr)] {
					t := tallies[name]
					if t == nil {
						t = &tally{}
						tallies[name] = t
					}
					t.regions++
					if oh.Healthy != nil && !*oh.Healthy {
						t.unhealthy = append(t.unhealthy, region)
						if t.reason == "" {
							t.reason = oh.FailureReason
						}
					}
				}
			}
		}
	}
	h.Healthy = 2*poolUnhealthy < len(regions)
	for name, t := range tallies {
		h.Origins[name] = OriginHealth{Healthy: 2*len(t.unhealthy) < t.regions, Regions: t.regions, UnhealthyIn: t.unhealthy, Reason: t.reason}
	}
	return h, nil
}

// HealthyShares is Shares as the provider really splits traffic: an origin its monitors
// find unhealthy carries nothing, and its weight goes to the healthy enabled origins in
// proportion to theirs (Cloudflare balances over the healthy origins only). When fewer
// origins than minimum_origins are healthy the pool itself is unhealthy and carries
// nothing (Cloudflare fails over to the next pool): every share is 0.
func HealthyShares(p Pool, w Weights, h PoolHealth) map[string]float64 {
	q := p
	q.Origins = make([]Origin, len(p.Origins))
	healthy := 0
	for i, o := range p.Origins {
		if !h.OriginHealthy(o.Name) {
			o.Enabled = false
		} else if o.Enabled {
			healthy++
		}
		q.Origins[i] = o
	}
	if healthy < p.MinimumOrigins {
		out := make(map[string]float64, len(p.Origins))
		for _, o := range p.Origins {
			out[o.Name] = 0
		}
		return out
	}
	return Shares(q, w)
}

// ReadHealth reads the pool's health if s can (HealthReader); ok is false when it cannot,
// and every enabled origin is then to be taken as healthy.
func ReadHealth(ctx context.Context, s Steerer, ref PoolRef) (h PoolHealth, ok bool, err error) {
	hr, can := s.(HealthReader)
	if !can {
		return PoolHealth{}, false, nil
	}
	h, err = hr.Health(ctx, ref)
	if errors.Is(err, ErrHealthUnsupported) {
		return PoolHealth{}, false, nil
	}
	if err != nil {
		return PoolHealth{}, false, err
	}
	return h, true, nil
}

// ErrHealthUnsupported is what a wrapping Steerer's Health returns when the Steerer it
// wraps cannot read health; ReadHealth then reports ok false.
var ErrHealthUnsupported = errors.New("the load balancer's origin health cannot be read")

// ErrUnhealthy matches an *UnhealthyError with errors.Is.
var ErrUnhealthy = errors.New("origin unhealthy")

// UnhealthyError says which of the origins a caller depends on the provider's monitors
// find unhealthy.
type UnhealthyError struct {
	Pool    PoolRef
	Origins []string
	Health  PoolHealth
}

func (e *UnhealthyError) Error() string {
	var parts []string
	for _, n := range e.Origins {
		parts = append(parts, fmt.Sprintf("%q %s", n, e.Health.Describe(n)))
	}
	return fmt.Sprintf("pool %s: origin %s: the load balancer sends it no traffic and moves its share to the healthy origins", e.Pool, strings.Join(parts, ", "))
}

// Is makes errors.Is(err, ErrUnhealthy) true.
func (e *UnhealthyError) Is(target error) bool { return target == ErrUnhealthy }

// CheckHealthy returns an *UnhealthyError naming every origin of names that h finds
// unhealthy, or nil.
func CheckHealthy(h PoolHealth, ref PoolRef, names []string) error {
	var bad []string
	for _, n := range names {
		if !h.OriginHealthy(n) {
			bad = append(bad, n)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return &UnhealthyError{Pool: ref, Origins: bad, Health: h}
}
