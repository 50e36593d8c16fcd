package engine

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/store"
)

const dnsDrillYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: dns-drill
spec:
  clusters: [c2, c3]
  drain: c3
  traffic:
    route53:
      hostedZoneID: ZONE
      record: NAME
      setIdentifiers: {c2: eu-west, c3: eu-central}
  hold: 10m
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
      guardrail: {max: 10%, for: 2}
`

// TestRoute53Drill drains a cluster's weighted record in moto_server and restores it: a
// healthy drill passes with every record's weight back as it was, and one whose survivor
// breaks its guardrail is restored at once.
func TestRoute53Drill(t *testing.T) {
	url := motoserver.Start(t).URL
	for _, harmful := range []bool{false, true} {
		name := "passes"
		if harmful {
			name = "guardrail breach restores"
		}
		t.Run(name, func(t *testing.T) {
			w := newDNSWorld(t, url)
			y := strings.NewReplacer("ZONE", w.zone, "NAME", strings.TrimSuffix(w.name, "."), "PROM", w.prom.URL()).Replace(dnsDrillYAML)
			ds, err := experiments.LoadDrill("dns-drill.yaml", []byte(y), experiments.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			before := w.units()
			dr, err := w.engine().StartDrill(context.Background(), ds[0], "c3", "dns-drill.yaml", w.Now())
			if err != nil {
				t.Fatal(err)
			}
			var drained map[string]int64
			end := w.Now().Add(40 * time.Minute)
			for !dr.Done() && w.Now().Before(end) {
				w.Advance(w.Now().Add(30 * time.Second))
				if err := dr.Step(context.Background(), w.Now()); err != nil {
					t.Fatal(err)
				}
				if drained == nil && dr.Run().Record().State == store.StateRamping {
					drained = w.units()
					if harmful {
						w.errP["c2"] = 0.5
					}
				}
			}
			rec := dr.Run().Record()
			if drained == nil || drained["eu-central"] != 0 || drained["standby"] != before["standby"] || drained["canary"] != before["canary"] {
				t.Errorf("drained set %v from %v", drained, before)
			}
			if got := w.units(); !maps.Equal(got, before) {
				t.Errorf("after the drill the set is %v, want %v", got, before)
			}
			w.checkUntouched()
			took := rec.EndedAt.Sub(rec.StartedAt)
			if harmful {
				if rec.State != store.StateRolledBack || rec.Verdict != VerdictFailed || !strings.Contains(rec.Reason, "guardrail") {
					t.Fatalf("ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
				}
				if took > 6*time.Minute {
					t.Errorf("restored %s after the start, want within the TTL plus a few intervals", took)
				}
			} else if rec.State != store.StatePromoted || rec.Verdict != VerdictDrillPassed {
				t.Fatalf("ended %s (%s): %s", rec.State, rec.Verdict, rec.Reason)
			}
			t.Logf("%s in %s (drained %v): %s", rec.Verdict, took, drained, rec.Reason)
		})
	}
}
