// Package traffic reads and changes how a load balancer pool splits traffic between the
// clusters of an experiment.
package traffic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Pool is a load balancer pool as the provider reports it. Raw keeps the provider's whole
// object so that a write can send back every field Verdict does not model.
type Pool struct {
	ID             string
	Name           string
	Description    string
	Enabled        bool
	MinimumOrigins int
	SteeringPolicy string // Cloudflare origin_steering.policy: random, hash, least_outstanding_requests, ...
	ModifiedOn     time.Time
	Origins        []Origin
	Raw            json.RawMessage
}

// Origin is one member of a pool; in Verdict, one cluster's ingress.
type Origin struct {
	Name    string
	Address string
	Enabled bool
	Weight  float64
	// Raw is the origin's whole object as read, for writes that must keep every field.
	Raw json.RawMessage
}

// Weights maps origin names to weights.
type Weights map[string]float64

// Weights returns the weight of every origin in the pool.
func (p Pool) Weights() Weights {
	w := make(Weights, len(p.Origins))
	for _, o := range p.Origins {
		w[o.Name] = o.Weight
	}
	return w
}

// Origin returns the named origin.
func (p Pool) Origin(name string) (Origin, bool) {
	for _, o := range p.Origins {
		if o.Name == name {
			return o, true
		}
	}
	return Origin{}, false
}

// cfPool is the subset of Cloudflare's pool object that Verdict reads.
type cfPool struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Description    string `json:"description"`
	Enabled        *bool  `json:"enabled"`
	MinimumOrigins *int   `json:"minimum_origins"`
	OriginSteering *struct {
		Policy string `json:"policy"`
	} `json:"origin_steering"`
	ModifiedOn string            `json:"modified_on"`
	Origins    []json.RawMessage `json:"origins"`
}

type cfOrigin struct {
	Name    string   `json:"name"`
	Address string   `json:"address"`
	Enabled *bool    `json:"enabled"`
	Weight  *float64 `json:"weight"`
}

// DecodePool parses a pool in Cloudflare's JSON shape, either the bare pool object or the
// API envelope that GET /accounts/{account_id}/load_balancers/pools/{pool_id} returns.
// Cloudflare's defaults apply to omitted fields: enabled true, weight 1, minimum_origins 1.
func DecodePool(data []byte) (Pool, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return Pool{}, errors.New("empty pool document")
	}
	var env struct {
		Success *bool           `json:"success"`
		Errors  json.RawMessage `json:"errors"`
		Result  json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return Pool{}, fmt.Errorf("pool is not valid JSON: %w", err)
	}
	if env.Success != nil || env.Result != nil {
		if env.Success != nil && !*env.Success {
			return Pool{}, fmt.Errorf("pool document is an unsuccessful API response: errors %s", env.Errors)
		}
		if len(env.Result) == 0 || string(env.Result) == "null" {
			return Pool{}, errors.New("pool envelope has no result")
		}
		data = env.Result
	}
	var cp cfPool
	if err := json.Unmarshal(data, &cp); err != nil {
		return Pool{}, fmt.Errorf("pool is not a Cloudflare pool object: %w", err)
	}
	p := Pool{ID: cp.ID, Name: cp.Name, Description: cp.Description, Enabled: true, MinimumOrigins: 1, Raw: append(json.RawMessage(nil), data...)}
	if cp.Enabled != nil {
		p.Enabled = *cp.Enabled
	}
	if cp.MinimumOrigins != nil {
		p.MinimumOrigins = *cp.MinimumOrigins
	}
	p.SteeringPolicy = "random"
	if cp.OriginSteering != nil && cp.OriginSteering.Policy != "" {
		p.SteeringPolicy = cp.OriginSteering.Policy
	}
	if cp.ModifiedOn != "" {
		t, err := time.Parse(time.RFC3339Nano, cp.ModifiedOn)
		if err != nil {
			return Pool{}, fmt.Errorf("pool modified_on %q: %w", cp.ModifiedOn, err)
		}
		p.ModifiedOn = t
	}
	if len(cp.Origins) == 0 {
		return Pool{}, errors.New("pool has no origins")
	}
	seen := make(map[string]bool, len(cp.Origins))
	for i, raw := range cp.Origins {
		var co cfOrigin
		if err := json.Unmarshal(raw, &co); err != nil {
			return Pool{}, fmt.Errorf("origins[%d]: %w", i, err)
		}
		if co.Name == "" {
			return Pool{}, fmt.Errorf("origins[%d]: no name", i)
		}
		if seen[co.Name] {
			return Pool{}, fmt.Errorf("origins[%d]: duplicate origin name %q", i, co.Name)
		}
		seen[co.Name] = true
		o := Origin{Name: co.Name, Address: co.Address, Enabled: true, Weight: 1, Raw: append(json.RawMessage(nil), raw...)}
		if co.Enabled != nil {
			o.Enabled = *co.Enabled
		}
		if co.Weight != nil {
			o.Weight = *co.Weight
		}
		if o.Weight < 0 || o.Weight > 1 {
			return Pool{}, fmt.Errorf("origins[%d] %q: weight %v outside 0..1", i, co.Name, o.Weight)
		}
		p.Origins = append(p.Origins, o)
	}
	return p, nil
}

// Claim returns the run claim the pool carries, if any.
func (p Pool) Claim() (Claim, bool) { return ParseClaim(p.Description) }

// LastRun returns the note the last finished run left on the pool, if any.
func (p Pool) LastRun() (LastRun, bool) { return ParseLastRun(p.Description) }
