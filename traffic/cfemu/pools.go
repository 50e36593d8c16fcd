package cfemu

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pool is one stored pool: every field as the client sent it (so unknown fields survive a
// round trip, as they would need to for Verdict's writes to be checked for preservation),
// with origins kept as separate objects.
type pool struct {
	id      string
	fields  map[string]json.RawMessage // all but "origins"
	origins []map[string]json.RawMessage
	// unhealthy marks origins the emulator's user declared down (SetOriginHealth); there
	// are no monitors.
	unhealthy map[string]bool
}

// view is the typed subset of a pool the data plane and health endpoint need.
type view struct {
	ID             string
	Name           string
	Enabled        bool
	MinimumOrigins int
	Policy         string
	Origins        []originView
}

type originView struct {
	Name    string
	Address string
	Port    int
	Host    string // Host header override, from header.Host[0]
	Enabled bool
	Weight  float64
	Healthy bool
}

// readOnly are fields Cloudflare computes; values clients send are ignored.
var readOnlyPool = []string{"id", "created_on", "modified_on", "disabled_at"}

var poolNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

var steeringPolicies = []string{"", "random", "hash", "least_outstanding_requests", "least_connections"}

// validationError collects Cloudflare-style "...: validation failed" messages.
type validationError struct{ problems []string }

func (v *validationError) add(format string, a ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, a...)+": validation failed")
}

// Error joins the problems as one message.
func (v *validationError) Error() string { return strings.Join(v.problems, "; ") }

func (v *validationError) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return v
}

// decodeObject parses a JSON object keeping every member raw.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// splitPool turns a pool object into fields and origins, validating shape only.
func splitPool(obj map[string]json.RawMessage) (fields map[string]json.RawMessage, origins []map[string]json.RawMessage, hasOrigins bool, err error) {
	fields = make(map[string]json.RawMessage, len(obj))
	for k, v := range obj {
		if k == "origins" {
			continue
		}
		fields[k] = v
	}
	raw, ok := obj["origins"]
	if !ok {
		return fields, nil, false, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, nil, true, fmt.Errorf("origins must be a list of objects")
	}
	for i, o := range list {
		m, err := decodeObject(o)
		if err != nil {
			return nil, nil, true, fmt.Errorf("origins[%d] must be an object", i)
		}
		origins = append(origins, m)
	}
	return fields, origins, true, nil
}

// validate checks a pool the way Cloudflare's API does for the fields Verdict relies on:
// name characters, at least one origin, unique non-empty origin names, an address, weights
// 0–1 in steps of 0.01, types of enabled/port/minimum_origins, and the steering policy.
func validate(fields map[string]json.RawMessage, origins []map[string]json.RawMessage) error {
	var v validationError
	var name string
	if raw, ok := fields["name"]; !ok || json.Unmarshal(raw, &name) != nil || name == "" {
		v.add("name is required")
	} else if !poolNamePattern.MatchString(name) {
		v.add("pool name %q may only contain alphanumeric characters, hyphens and underscores", name)
	}
	if raw, ok := fields["enabled"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			v.add("enabled must be a boolean")
		}
	}
	if raw, ok := fields["minimum_origins"]; ok {
		var n int
		if json.Unmarshal(raw, &n) != nil || n < 1 {
			v.add("minimum_origins must be a positive integer")
		}
	}
	if raw, ok := fields["origin_steering"]; ok && string(raw) != "null" {
		var s struct {
			Policy string `json:"policy"`
		}
		if json.Unmarshal(raw, &s) != nil || !slices.Contains(steeringPolicies, s.Policy) {
			v.add("origin_steering.policy must be one of random, hash, least_outstanding_requests, least_connections")
		}
	}
	if len(origins) < 1 {
		v.add("the origin list length must be at least 1")
	}
	seen := map[string]bool{}
	for i, o := range origins {
		var oname string
		if raw, ok := o["name"]; !ok || json.Unmarshal(raw, &oname) != nil || oname == "" {
			v.add("origins[%d].name is required", i)
		} else if seen[oname] {
			v.add("origins[%d].name %q is used by another origin in the pool", i, oname)
		} else {
			seen[oname] = true
		}
		var addr string
		if raw, ok := o["address"]; !ok || json.Unmarshal(raw, &addr) != nil || addr == "" {
			v.add("origins[%d].address is required", i)
		}
		if raw, ok := o["weight"]; ok {
			var w float64
			if json.Unmarshal(raw, &w) != nil {
				v.add("origins[%d].weight must be a number", i)
			} else if w < 0 || w > 1 || math.Abs(w*100-math.Round(w*100)) > 1e-6 {
				v.add("origins[%d].weight %s must be between 0 and 1 in steps of 0.01", i, raw)
			}
		}
		if raw, ok := o["enabled"]; ok {
			var b bool
			if json.Unmarshal(raw, &b) != nil {
				v.add("origins[%d].enabled must be a boolean", i)
			}
		}
		if raw, ok := o["port"]; ok {
			var p int
			if json.Unmarshal(raw, &p) != nil || p < 0 || p > 65535 {
				v.add("origins[%d].port must be an integer 0-65535", i)
			}
		}
	}
	return v.err()
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func stamp(t time.Time) json.RawMessage {
	b, _ := json.Marshal(t.UTC().Format("2006-01-02T15:04:05.000000Z"))
	return b
}

// store writes validated fields and origins into p, applying Cloudflare's defaults and
// computing the read-only fields.
func (p *pool) store(fields map[string]json.RawMessage, origins []map[string]json.RawMessage, now time.Time) {
	prev := p.fields
	prevOrigins := map[string]map[string]json.RawMessage{}
	for _, o := range p.origins {
		var n string
		_ = json.Unmarshal(o["name"], &n)
		prevOrigins[n] = o
	}
	for _, k := range readOnlyPool {
		delete(fields, k)
	}
	fields["id"], _ = json.Marshal(p.id)
	if c, ok := prev["created_on"]; ok {
		fields["created_on"] = c
	} else {
		fields["created_on"] = stamp(now)
	}
	fields["modified_on"] = stamp(now)
	if _, ok := fields["enabled"]; !ok {
		fields["enabled"] = json.RawMessage("true")
	}
	if _, ok := fields["minimum_origins"]; !ok {
		fields["minimum_origins"] = json.RawMessage("1")
	}
	if string(fields["enabled"]) == "false" {
		if d, ok := prev["disabled_at"]; ok && string(prev["enabled"]) == "false" {
			fields["disabled_at"] = d
		} else {
			fields["disabled_at"] = stamp(now)
		}
	}
	for _, o := range origins {
		delete(o, "disabled_at")
		if _, ok := o["enabled"]; !ok {
			o["enabled"] = json.RawMessage("true")
		}
		if raw, ok := o["weight"]; !ok {
			o["weight"] = json.RawMessage("1")
		} else {
			// Cloudflare stores a number, not the client's spelling of it ("0.50", 5e-1).
			var w float64
			_ = json.Unmarshal(raw, &w)
			o["weight"] = json.RawMessage(strconv.FormatFloat(math.Round(w*100)/100, 'f', -1, 64))
		}
		if string(o["enabled"]) == "false" {
			var n string
			_ = json.Unmarshal(o["name"], &n)
			if old, ok := prevOrigins[n]; ok && string(old["enabled"]) == "false" && old["disabled_at"] != nil {
				o["disabled_at"] = old["disabled_at"]
			} else {
				o["disabled_at"] = stamp(now)
			}
		}
	}
	p.fields, p.origins = fields, origins
}

// patched merges a PATCH into a copy of the pool's fields: the fields given replace the
// stored ones, and the origins list is kept (copied) unless the PATCH sends one.
func (p *pool) patched(fields map[string]json.RawMessage, origins []map[string]json.RawMessage, hasOrigins bool) (map[string]json.RawMessage, []map[string]json.RawMessage) {
	merged := make(map[string]json.RawMessage, len(p.fields)+len(fields))
	for k, v := range p.fields {
		merged[k] = v
	}
	for k, v := range fields {
		merged[k] = v
	}
	if !hasOrigins {
		origins = make([]map[string]json.RawMessage, 0, len(p.origins))
		for _, o := range p.origins {
			c := make(map[string]json.RawMessage, len(o))
			for k, v := range o {
				c[k] = v
			}
			origins = append(origins, c)
		}
	}
	return merged, origins
}

// marshal renders the pool as Cloudflare returns it.
func (p *pool) marshal() json.RawMessage {
	m := make(map[string]any, len(p.fields)+1)
	for k, v := range p.fields {
		m[k] = v
	}
	origins := make([]map[string]json.RawMessage, len(p.origins))
	copy(origins, p.origins)
	m["origins"] = origins
	b, err := json.Marshal(m)
	if err != nil {
		// Every member was validated JSON when stored.
		panic(fmt.Sprintf("cfemu: marshal pool %s: %v", p.id, err))
	}
	return b
}

func (p *pool) view() view {
	v := view{ID: p.id, Enabled: true, MinimumOrigins: 1, Policy: "random"}
	_ = json.Unmarshal(p.fields["name"], &v.Name)
	if raw, ok := p.fields["enabled"]; ok {
		_ = json.Unmarshal(raw, &v.Enabled)
	}
	if raw, ok := p.fields["minimum_origins"]; ok {
		_ = json.Unmarshal(raw, &v.MinimumOrigins)
	}
	if raw, ok := p.fields["origin_steering"]; ok {
		var s struct {
			Policy string `json:"policy"`
		}
		if json.Unmarshal(raw, &s) == nil && s.Policy != "" {
			v.Policy = s.Policy
		}
	}
	for _, o := range p.origins {
		ov := originView{Enabled: true, Weight: 1}
		_ = json.Unmarshal(o["name"], &ov.Name)
		_ = json.Unmarshal(o["address"], &ov.Address)
		_ = json.Unmarshal(o["port"], &ov.Port)
		_ = json.Unmarshal(o["enabled"], &ov.Enabled)
		_ = json.Unmarshal(o["weight"], &ov.Weight)
		var h struct {
			Host []string `json:"Host"`
		}
		if json.Unmarshal(o["header"], &h) == nil && len(h.Host) > 0 {
			ov.Host = h.Host[0]
		}
		ov.Healthy = ov.Enabled && !p.unhealthy[ov.Name]
		v.Origins = append(v.Origins, ov)
	}
	return v
}

// parsePoolDocuments accepts what LoadPools documents: a bare pool object, a GET envelope,
// a list of pools, or a list envelope.
func parsePoolDocuments(data []byte) ([]map[string]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, errors.New("empty pool document")
	}
	if data[0] == '[' {
		var list []json.RawMessage
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, fmt.Errorf("pool list is not valid JSON: %w", err)
		}
		var out []map[string]json.RawMessage
		for i, raw := range list {
			m, err := decodeObject(raw)
			if err != nil {
				return nil, fmt.Errorf("pools[%d]: %w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	}
	m, err := decodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("pool document is not a JSON object or list: %w", err)
	}
	if res, ok := m["result"]; ok {
		if _, hasSuccess := m["success"]; hasSuccess {
			if string(m["success"]) == "false" {
				return nil, fmt.Errorf("pool document is an unsuccessful API response: %s", m["errors"])
			}
			return parsePoolDocuments(res)
		}
	}
	return []map[string]json.RawMessage{m}, nil
}
