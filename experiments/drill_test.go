package experiments

import (
	"strings"
	"testing"
	"time"
)

const drillYAML = `apiVersion: verdict.dev/v1alpha1
kind: Drill
metadata:
  name: weekly-drain
spec:
  clusters: [c1, c2, c3]
  drain: [c1, c2]
  traffic:
    cloudflare:
      poolID: 17b5962d775c646f3f9725cbc7a53df4
      origins: {c1: o1, c2: o2, c3: o3}
  hold: 15m
  prometheus:
    address: http://prometheus:9090
  kpis:
    - name: error-rate
      type: ratio
      events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))
      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))
      tolerance: 20%
  guardrails:
    - name: cpu
      type: gauge
      query: avg by (cluster) (rate(container_cpu_usage_seconds_total[{{.Interval}}]))
      guardrail: {max: 0.9}
  blockingAlarms:
    - {name: paging, query: 'sum(ALERTS{alertstate="firing", severity="page"})'}
  outcomeAlarms:
    - {name: slo-burn, query: 'sum(slo:burn_rate:1h) > 14', for: 2m}
  allowedWindows:
    - {days: [Mon, Tue, Wed, Thu], start: "09:00", end: "16:00", timeZone: Europe/Berlin}
  blockedDates: ["2026-12-24", "2026-12-31"]
  timeZone: Europe/Berlin
  schedule: "0 10 * * Tue"
`

func loadDrill(t *testing.T, y string) (*Drill, error) {
	t.Helper()
	ds, err := LoadDrill("drill.yaml", []byte(y), LoadOptions{})
	if len(ds) == 0 {
		return nil, err
	}
	return ds[0], err
}

func TestDrillLoads(t *testing.T) {
	d, err := loadDrill(t, drillYAML)
	if err != nil {
		t.Fatal(err)
	}
	if got := FileKind([]byte(drillYAML)); got != KindDrill {
		t.Errorf("FileKind = %q", got)
	}
	if d.Spec.Interval.Std() != time.Minute || d.Spec.Alpha != DefaultAlpha {
		t.Errorf("defaults: interval %s alpha %v", d.Spec.Interval, d.Spec.Alpha)
	}
	if d.DrainAt(0) != "c1" || d.DrainAt(1) != "c2" || d.DrainAt(2) != "c1" {
		t.Errorf("rotation: %s %s %s", d.DrainAt(0), d.DrainAt(1), d.DrainAt(2))
	}
	e := d.Experiment("c2")
	if e.Kind != KindDrill || e.Spec.Canary.Cluster != "c2" || strings.Join(e.Spec.Baselines, ",") != "c1,c3" {
		t.Errorf("experiment: kind %s canary %s baselines %v", e.Kind, e.Spec.Canary.Cluster, e.Spec.Baselines)
	}
	if len(e.Spec.KPIs) != 2 || e.Spec.KPIs[1].Guardrail == nil || !d.GuardrailOnly(1) || d.GuardrailOnly(0) {
		t.Errorf("KPIs: %+v", e.Spec.KPIs)
	}
	// The experiment's plan drains the canary with the survivors keeping their
	// proportions and the total.
	plan, err := WeightPlan(e, []PoolOrigin{{"o1", 0.26, true}, {"o2", 0.27, true}, {"o3", 0.27, true}, {"x", 0.2, true}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, o := range plan.Steps[1].Origins {
		got[o.Name] = o.Weight
	}
	if got["o2"] != 0 || got["o1"]+got["o3"] < 0.799 || got["o1"]+got["o3"] > 0.801 || got["x"] != 0.2 || got["o1"] != 0.39 || got["o3"] != 0.41 {
		t.Errorf("drained weights %v", got)
	}
	// An experiment file is not a drill, and the experiment loader refuses a drill.
	if _, err := Load("x.yaml", []byte(drillYAML), LoadOptions{}); err == nil {
		t.Error("the experiment loader accepted a drill")
	}
}

func TestDrillScalarDrain(t *testing.T) {
	d, err := loadDrill(t, strings.Replace(drillYAML, "drain: [c1, c2]", "drain: c3", 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Spec.Drain) != 1 || d.Spec.Drain[0] != "c3" {
		t.Errorf("drain %v", d.Spec.Drain)
	}
}

func TestDrillBadInput(t *testing.T) {
	for name, tc := range map[string]struct{ old, new, want string }{
		"unknown field":    {"hold: 15m", "hodl: 15m", `drill.yaml:12:3: spec.hodl: unknown field "hodl"; did you mean "hold"?`},
		"drain not known":  {"drain: [c1, c2]", "drain: [c1, c4]", `drill.yaml:7:15: spec.drain[1]: "c4" is not in spec.clusters`},
		"one cluster":      {"clusters: [c1, c2, c3]", "clusters: [c1]", "spec.clusters: required: at least two clusters"},
		"steps":            {"  hold: 15m", "    steps: [{weight: 5%, hold: 1m}]\n  hold: 15m", "spec.traffic.steps: not used by a drill"},
		"origin missing":   {"origins: {c1: o1, c2: o2, c3: o3}", "origins: {c1: o1, c2: o2}", `spec.traffic.cloudflare.origins: no origin for cluster "c3"`},
		"origin unknown":   {"origins: {c1: o1, c2: o2, c3: o3}", "origins: {c1: o1, c2: o2, c3: o3, c9: o9}", `spec.traffic.cloudflare.origins.c9: cluster "c9" is not in spec.clusters`},
		"bad day":          {"days: [Mon, Tue, Wed, Thu]", "days: [Mon, Tuesday, Wdn]", `spec.allowedWindows[0].days[2]: "Wdn" is not a weekday`},
		"window backwards": {`end: "16:00"`, `end: "08:00"`, "spec.allowedWindows[0].end: 08:00 is not after start 09:00"},
		"window too short": {`end: "16:00"`, `end: "09:10"`, "is shorter than the drill's hold of 15m"},
		"bad zone":         {"timeZone: Europe/Berlin\n  schedule", "timeZone: Mars/Olympus\n  schedule", `drill.yaml:33:3: spec.timeZone: "Mars/Olympus" is not an IANA time zone`},
		"bad date":         {`"2026-12-31"`, `"2026-13-31"`, `spec.blockedDates[1]: "2026-13-31" is not a date`},
		"bad cron":         {`"0 10 * * Tue"`, `"0 25 * * Tue"`, `spec.schedule: "0 25 * * Tue": hour field: "25" is not a number from 0 to 23`},
		"cron fields":      {`"0 10 * * Tue"`, `"0 10 * *"`, "has 4 fields"},
		"alarm no query":   {`{name: paging, query: 'sum(ALERTS{alertstate="firing", severity="page"})'}`, `{name: paging}`, "spec.blockingAlarms[0].query: required"},
		"alarm bad promql": {`query: 'sum(slo:burn_rate:1h) > 14'`, `query: 'sum(slo:burn_rate:1h'`, "spec.outcomeAlarms[0].query:"},
		"blocking for":     {`{name: paging, query:`, `{name: paging, for: 5m, query:`, "spec.blockingAlarms[0].for: not used by a blocking alarm"},
		"guardrail limit":  {"guardrail: {max: 0.9}", "tolerance: 5%", "spec.guardrails[0]: guardrail is required"},
		"kpi query label":  {`events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))`, `events: sum(increase(http_requests_total{code=~"5.."}[{{.Interval}}]))`, "spec.kpis[0].events: must aggregate by the cluster label"},
		"hold zero":        {"hold: 15m", "hold: 0s", "spec.hold: must be positive"},
		"wrong kind":       {"kind: Drill", "kind: Experiment", `kind: must be Drill, not "Experiment"`},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(drillYAML, tc.old) {
				t.Fatalf("test bug: %q not in the drill", tc.old)
			}
			_, err := loadDrill(t, strings.Replace(drillYAML, tc.old, tc.new, 1))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got\n%v\nwant it to contain %q", err, tc.want)
			}
			for _, fe := range err.(ErrorList) {
				if fe.Line == 0 {
					t.Errorf("error without a line: %v", fe)
				}
			}
		})
	}
}

func TestDrillAllowed(t *testing.T) {
	d, err := loadDrill(t, drillYAML)
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for name, tc := range map[string]struct {
		at   time.Time
		ok   bool
		want string
	}{
		"inside":         {time.Date(2026, 12, 1, 10, 0, 0, 0, berlin), true, ""}, // a Tuesday
		"hold overruns":  {time.Date(2026, 12, 1, 15, 50, 0, 0, berlin), false, "outside every allowed window"},
		"before opening": {time.Date(2026, 12, 1, 8, 59, 0, 0, berlin), false, "outside every allowed window"},
		"friday":         {time.Date(2026, 12, 4, 10, 0, 0, 0, berlin), false, "Fri 2026-12-04"},
		"blocked date":   {time.Date(2026, 12, 24, 10, 0, 0, 0, berlin), false, "2026-12-24 is a blocked date"},
		"utc input":      {time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), true, ""}, // 10:00 in Berlin
	} {
		ok, why := d.Allowed(tc.at)
		if ok != tc.ok || !strings.Contains(why, tc.want) {
			t.Errorf("%s: Allowed = %v, %q; want %v, %q", name, ok, why, tc.ok, tc.want)
		}
	}
}

func TestSchedule(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, tc := range []struct {
		expr string
		from time.Time
		want time.Time
	}{
		{"0 10 * * Tue", time.Date(2026, 12, 1, 10, 0, 0, 0, berlin), time.Date(2026, 12, 8, 10, 0, 0, 0, berlin)},
		{"*/15 * * * *", time.Date(2026, 12, 1, 10, 7, 30, 0, berlin), time.Date(2026, 12, 1, 10, 15, 0, 0, berlin)},
		{"@daily", time.Date(2026, 12, 1, 10, 0, 0, 0, berlin), time.Date(2026, 12, 2, 0, 0, 0, 0, berlin)},
		{"30 9 1,15 * *", time.Date(2026, 12, 2, 0, 0, 0, 0, berlin), time.Date(2026, 12, 15, 9, 30, 0, 0, berlin)},
		{"0 9 * Jan mon-fri", time.Date(2026, 12, 2, 0, 0, 0, 0, berlin), time.Date(2027, 1, 1, 9, 0, 0, 0, berlin)},
		{"0 0 30 2 *", time.Date(2026, 12, 2, 0, 0, 0, 0, berlin), time.Time{}},
		{"0 3 * * 7", time.Date(2026, 12, 2, 0, 0, 0, 0, berlin), time.Date(2026, 12, 6, 3, 0, 0, 0, berlin)},
	} {
		s, err := ParseSchedule(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Next(tc.from, berlin); !got.Equal(tc.want) {
			t.Errorf("%s after %s: %s, want %s", tc.expr, tc.from, got, tc.want)
		}
	}
}
