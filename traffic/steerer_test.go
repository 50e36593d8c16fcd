package traffic_test

import (
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/traffic"
)

// TestDiffPoolsAndDriftMessage: every kind of change between two reads is found and
// reads clearly in the error an operator sees.
func TestDiffPoolsAndDriftMessage(t *testing.T) {
	before, err := traffic.DecodePool([]byte(`{"id": "p", "name": "p", "origins": [
	  {"name": "a", "address": "10.0.0.1", "weight": 0.5, "port": 80},
	  {"name": "b", "address": "10.0.0.2", "weight": 0.5},
	  {"name": "c", "address": "10.0.0.3", "weight": 0},
	  {"name": "d", "address": "10.0.0.4", "weight": 1, "enabled": false, "disabled_at": "2026-01-01T00:00:00Z"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := traffic.DecodePool([]byte(`{"id": "p", "name": "p", "origins": [
	  {"name": "a", "address": "10.0.0.1", "weight": 0.3, "port": 8080},
	  {"name": "b", "address": "10.0.0.9", "weight": 0.5, "header": {"Host": ["x"]}},
	  {"name": "d", "address": "10.0.0.4", "weight": 1, "enabled": false, "disabled_at": "2026-02-02T00:00:00Z"},
	  {"name": "e", "address": "10.0.0.5", "weight": 0.2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	diff := traffic.DiffPools(before, after)
	var names []string
	for _, d := range diff {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != "a,b,c,e" {
		t.Fatalf("changed origins = %v, want a,b,c,e (d differs only in the read-only disabled_at)", names)
	}
	if len(traffic.DiffPools(before, before)) != 0 {
		t.Errorf("a pool differs from itself")
	}
	msg := (&traffic.DriftError{Pool: traffic.PoolRef{Pool: "p"}, Phase: traffic.PhaseBetweenAttempts, Origins: diff}).Error()
	for _, want := range []string{
		"pool p changed outside Verdict (between attempts):",
		`origin "a" expected weight 0.5, found 0.3, and changed port`,
		`origin "b" changed address, header`,
		`origin "c" expected weight 0 but is gone`,
		`origin "e" was added with weight 0.2`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}
