package traffic_test

import (
	"context"
	"errors"
	"testing"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
	"github.com/verdict-dev/verdict/traffic/traffictest"
)

func TestDecodePoolHealthMajorityOfRegions(t *testing.T) {
	p := pool(t, `{"id": "p", "minimum_origins": 1, "origins": [
	  {"name": "a", "address": "10.0.0.1", "weight": 0.5}, {"name": "b", "address": "10.0.0.2", "weight": 0.5},
	  {"name": "c", "address": "10.0.0.3", "weight": 0.5}]}`)
	doc := `{"success": true, "errors": [], "result": {"pool_id": "p", "pop_health": {
	  "Amsterdam, NL": {"healthy": true, "origins": [
	    {"10.0.0.1": {"healthy": true, "failure_reason": "No failures", "response_code": 200, "rtt": "1ms"}},
	    {"10.0.0.2": {"healthy": false, "failure_reason": "HTTP timeout occurred", "response_code": 0, "rtt": "0ms"}}]},
	  "Frankfurt, DE": {"healthy": true, "origins": [
	    {"10.0.0.1": {"healthy": false, "failure_reason": "TCP connection failed", "response_code": 0, "rtt": "0ms"}},
	    {"10.0.0.2": {"healthy": false, "failure_reason": "HTTP timeout occurred", "response_code": 0, "rtt": "0ms"}}]},
	  "Paris, FR": {"healthy": true, "origins": [
	    {"10.0.0.1": {"healthy": true, "failure_reason": "No failures", "response_code": 200, "rtt": "1ms"}},
	    {"10.0.0.2": {"healthy": true, "failure_reason": "No failures", "response_code": 200, "rtt": "1ms"}}]}}}}`
	h, err := traffic.DecodePoolHealth([]byte(doc), p)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Monitored || !h.Healthy {
		t.Errorf("monitored %v healthy %v, want both", h.Monitored, h.Healthy)
	}
	if got := h.Unhealthy(); len(got) != 1 || got[0] != "b" {
		t.Errorf("unhealthy = %v, want [b] (a is down in 1 of 3 regions only)", got)
	}
	if !h.OriginHealthy("c") || h.Describe("c") != "unknown" {
		t.Errorf("c, not in the report: healthy %v, %q; want true, unknown", h.OriginHealthy("c"), h.Describe("c"))
	}
	if d := h.Describe("b"); d != "UNHEALTHY (HTTP timeout occurred; in 2/3 regions)" {
		t.Errorf("describe b = %q", d)
	}
	shares := traffic.HealthyShares(p, nil, h)
	if shares["b"] != 0 || shares["a"] != 0.5 || shares["c"] != 0.5 {
		t.Errorf("shares = %v, want a 0.5 b 0 c 0.5", shares)
	}

	none, err := traffic.DecodePoolHealth([]byte(`{"success": true, "result": {"pool_id": "p", "pop_health": {}}}`), p)
	if err != nil || none.Monitored || len(none.Unhealthy()) != 0 {
		t.Errorf("no monitor: %+v, %v", none, err)
	}
}

func TestCloudflareHealthFromEmulator(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", nil)
	p, err := s.client.Pool(context.Background(), s.ref)
	if err != nil {
		t.Fatal(err)
	}
	name := p.Origins[0].Name
	if err := s.emu.SetOriginHealth(s.ref.Pool, name, false); err != nil {
		t.Fatal(err)
	}
	h, ok, err := traffic.ReadHealth(context.Background(), s.client, s.ref)
	if err != nil || !ok {
		t.Fatalf("ReadHealth: %v, %v", ok, err)
	}
	if got := h.Unhealthy(); len(got) != 1 || got[0] != name {
		t.Fatalf("unhealthy = %v, want [%s]", got, name)
	}
	err = traffic.CheckHealthy(h, s.ref, []string{name})
	if !errors.Is(err, traffic.ErrUnhealthy) {
		t.Errorf("CheckHealthy = %v, want ErrUnhealthy", err)
	}
	_ = traffictest.PoolJSON
}

// TestPoolCacheViewReadsHealth: serve's cached view of a Steerer reads health through the
// Steerer it wraps, and says it cannot when that Steerer cannot.
func TestPoolCacheViewReadsHealth(t *testing.T) {
	s := startEmu(t, cfemu.Options{}, "", nil)
	cache := traffic.NewPoolCache(s.client, traffic.PoolCacheOptions{})
	if _, ok, err := traffic.ReadHealth(context.Background(), cache.Steerer(s.client), s.ref); !ok || err != nil {
		t.Errorf("through the cache over Cloudflare: ok %v, err %v; want health", ok, err)
	}
	type plain struct{ traffic.Steerer }
	if _, ok, err := traffic.ReadHealth(context.Background(), cache.Steerer(plain{s.client}), s.ref); ok || err != nil {
		t.Errorf("through the cache over a Steerer without health: ok %v, err %v; want neither", ok, err)
	}
}
