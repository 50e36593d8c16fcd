package report

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
)

const reportDrillYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: report-drill
spec:
  clusters: [c1, c2, c3]
  drain: c1
  traffic:
    cloudflare:
      accountID: ACCOUNT
      poolID: POOL
      origins: {c1: o1, c2: o2, c3: o3}
  hold: 10m
  prometheus:
    address: PROM
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
      guardrail: {max: 20%}
`

// TestDrillReport records a real drill on the virtual-time world and reports it: one KPI
// per survivor with the drill's own evidence, and no "no canary data" note for the drained
// cluster.
func TestDrillReport(t *testing.T) {
	w := newWorld(t)
	y := strings.NewReplacer("ACCOUNT", w.Emu.AccountID(), "POOL", w.PoolID, "PROM", w.Prom.URL()).Replace(reportDrillYAML)
	ds, err := experiments.LoadDrill("drill.yaml", []byte(y), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dr, err := w.engine().StartDrill(context.Background(), ds[0], "c1", "drill.yaml", w.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Drive(dr, 30*time.Minute, nil)
	rep, err := FromStore(context.Background(), w.St, dr.ID())
	if err != nil {
		t.Fatal(err)
	}
	var exp experiments.Experiment
	if err := json.Unmarshal(dr.Run().Record().Spec, &exp); err != nil || !isDrill(&exp) {
		t.Fatalf("stored spec is not a drill's: %v", err)
	}
	decs, err := w.St.Decisions(context.Background(), dr.ID())
	if err != nil {
		t.Fatal(err)
	}
	drillKPIs(rep, &exp, decs)
	if rep.Verdict != engine.VerdictDrillPassed {
		t.Errorf("verdict %s: %s", rep.Verdict, rep.Reason)
	}
	var names []string
	for _, k := range rep.KPIs {
		names = append(names, k.Name)
		if k.Effect.Intervals == 0 || k.Status == "" {
			t.Errorf("KPI %s without evidence: %+v", k.Name, k)
		}
	}
	if strings.Join(names, ",") != "error-rate on c2,error-rate on c3" {
		t.Errorf("KPIs %v", names)
	}
	notes := strings.Join(rep.Notes, "\n")
	if strings.Contains(notes, "no canary data") || !strings.Contains(notes, "A drill: c1 was drained") {
		t.Errorf("notes:\n%s", notes)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, rep, MarkdownOptions{}); err != nil || !strings.Contains(md.String(), "error-rate on c2") {
		t.Errorf("markdown (%v):\n%s", err, md.String())
	}
}
