package experiments

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func loadFleet(t *testing.T, text string) *Experiment {
	t.Helper()
	exps, err := Load("fleet.yaml", []byte(text), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("base rejected: %v", err)
	}
	return exps[0]
}

func TestSwitchoverDerivesTheExperiment(t *testing.T) {
	e := loadFleet(t, readBase(t))
	d, err := Switchover(e, SwitchoverOptions{From: "c2", To: "c3"})
	if err != nil {
		t.Fatalf("derived experiment rejected: %v", err)
	}
	s := &d.Spec
	if d.Metadata.Name != "base-switchover-c2-to-c3" {
		t.Errorf("name %q", d.Metadata.Name)
	}
	if s.Canary.Cluster != "c3" || len(s.Baselines) != 1 || s.Baselines[0] != "c2" || s.Canary.Apply != nil {
		t.Errorf("canary %+v, baselines %v", s.Canary, s.Baselines)
	}
	if s.Canary.Variant[SwitchoverVariant] != "c2" || len(s.Canary.Variant) != 1 {
		t.Errorf("variant %v", s.Canary.Variant)
	}
	if got := s.Traffic.Origins(); len(got) != 2 || got["c2"] != "o2" || got["c3"] != "o3" {
		t.Errorf("origins %v: c1 must be left out of the experiment", got)
	}
	if !s.Traffic.Migration() || s.Traffic.OnPromote != OnPromoteKeep || s.Traffic.OnRollback != OnRollbackRestore {
		t.Errorf("traffic %+v: want a migration kept on promotion and restored on rollback", s.Traffic)
	}
	var got []string
	for _, st := range s.Traffic.Steps {
		got = append(got, st.Weight.String()+"/"+st.Hold.String())
	}
	if strings.Join(got, " ") != "25%/10m 50%/10m 100%/0s" {
		t.Errorf("steps %v", got)
	}
	// The file's default maxDuration was twice its own 20m; this ramp also holds 20m.
	if s.Analysis.MaxDuration.Std() != 40*time.Minute {
		t.Errorf("maxDuration %s", s.Analysis.MaxDuration)
	}
	// The file is untouched.
	if e.Spec.Canary.Cluster != "c1" || len(e.Spec.Traffic.Origins()) != 3 || len(e.Spec.Traffic.Steps) != 2 {
		t.Errorf("the file's experiment changed: %+v", e.Spec)
	}
	// Resuming derives the same experiment: the stored spec must match byte for byte.
	d2, err := Switchover(loadFleet(t, readBase(t)), SwitchoverOptions{From: "c2", To: "c3"})
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := json.Marshal(d)
	b2, _ := json.Marshal(d2)
	if string(b1) != string(b2) {
		t.Errorf("two derivations differ:\n%s\n%s", b1, b2)
	}
}

func TestSwitchoverStepsAndHolds(t *testing.T) {
	e := loadFleet(t, readBase(t))
	d, err := Switchover(e, SwitchoverOptions{From: "c1", To: "c2", Steps: "10%:5m, 60%", Hold: Duration(20 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range d.Spec.Traffic.Steps {
		got = append(got, st.Weight.String()+"/"+st.Hold.String())
	}
	if strings.Join(got, " ") != "10%/5m 60%/20m 100%/0s" {
		t.Errorf("steps %v: want the cut-over added and --hold where a step has none", got)
	}
}

func TestSwitchoverRoute53(t *testing.T) {
	d, err := Switchover(loadFleet(t, route53Base(t)), SwitchoverOptions{From: "c3", To: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Traffic.Cloudflare != nil || len(d.Spec.Traffic.Route53.SetIdentifiers) != 2 || d.Spec.Traffic.Origins()["c1"] != "canary" {
		t.Errorf("traffic %+v", d.Spec.Traffic.Route53)
	}
}

func TestSwitchoverLongNames(t *testing.T) {
	text := strings.NewReplacer("c1", "prod-use1-monday-snorlax", "c2", "prod-use1-monday-squirtle", "c3", "prod-use1-monday-staryu",
		"name: base", "name: fleet-use1").Replace(readBase(t))
	e := loadFleet(t, text)
	a, err := Switchover(e, SwitchoverOptions{From: "prod-use1-monday-squirtle", To: "prod-use1-monday-snorlax"})
	if err != nil {
		t.Fatalf("long cluster names: %v", err)
	}
	b, err := Switchover(e, SwitchoverOptions{From: "prod-use1-monday-staryu", To: "prod-use1-monday-snorlax"})
	if err != nil {
		t.Fatal(err)
	}
	if n := a.Metadata.Name; len(n) > 63 || !dnsLabel.MatchString(n) || !strings.HasPrefix(n, "fleet-use1-switchover-") {
		t.Errorf("name %q is not a valid metadata.name", n)
	}
	if a.Metadata.Name == b.Metadata.Name {
		t.Errorf("two switchovers share the name %q", a.Metadata.Name)
	}
}

// TestSwitchoverErrors: problems with the flags name the flag; problems the derived spec
// has are reported by the normal validation, at the flag or at the file's line.
func TestSwitchoverErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		opts SwitchoverOptions
		edit [2]string
		want []string
	}{
		"unknown cluster":  {opts: SwitchoverOptions{From: "c2", To: "c4"}, want: []string{`--to: cluster "c4" is not in base's spec.traffic.cloudflare.origins (clusters: c1, c2, c3); did you mean "c1"?`}},
		"missing from":     {opts: SwitchoverOptions{To: "c1"}, want: []string{"--from: required: a cluster of base (c1, c2, c3)"}},
		"same cluster":     {opts: SwitchoverOptions{From: "c1", To: "c1"}, want: []string{`--to: "c1" is also --from`}},
		"not a share":      {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "25%,half"}, want: []string{`--steps: step 2: "half" is not a share like 25%`}},
		"decreasing":       {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "50%,25%"}, want: []string{"--steps: step 2: steps must increase strictly: 25% does not exceed 50%"}},
		"cut-over only":    {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "100%"}, want: []string{"--steps: \"100%\" has no step before the cut-over"}},
		"cut-over hold":    {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "50%,100%:5m"}, want: []string{"--steps: step 2: 100% is the cut-over"}},
		"bad hold":         {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "50%:soon"}, want: []string{`--steps: step 1: hold "soon" is not a positive duration`}},
		"hold too short":   {opts: SwitchoverOptions{From: "c1", To: "c2", Hold: Duration(30 * time.Second)}, want: []string{"--hold: spec.traffic.steps[0].hold: 30s is shorter than one analysis interval (1m)"}},
		"too few interval": {opts: SwitchoverOptions{From: "c1", To: "c2", Steps: "50%:2m"}, edit: [2]string{"alpha: 0.05", "alpha: 0.05\n    minIntervals: 5"}, want: []string{"fleet.yaml:35:5: spec.analysis.minIntervals: 5 intervals of 1m need 5m, but the steps hold for only 2m in all"}},
		"maxDuration written": {opts: SwitchoverOptions{From: "c1", To: "c2", Hold: Duration(time.Hour)}, edit: [2]string{"alpha: 0.05", "alpha: 0.05\n    maxDuration: 1h"},
			want: []string{"fleet.yaml:35:5: spec.analysis.maxDuration: 1h is shorter than the steps' total hold of 2h"}},
	} {
		t.Run(name, func(t *testing.T) {
			text := readBase(t)
			if tc.edit[0] != "" {
				text = strings.Replace(text, tc.edit[0], tc.edit[1], 1)
			}
			_, err := Switchover(loadFleet(t, text), tc.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not say\n%s", err, w)
				}
			}
		})
	}
}

func TestSwitchoverNote(t *testing.T) {
	e := loadFleet(t, readBase(t))
	if n := e.Spec.SwitchoverNote(); n != "" {
		t.Errorf("an ordinary experiment has a switchover note %q", n)
	}
	d, err := Switchover(e, SwitchoverOptions{From: "c2", To: "c3"})
	if err != nil {
		t.Fatal(err)
	}
	const want = "switchover: after promotion c2 (o2) carries no traffic and stands by at weight 0; switch back with --from c3 --to c2"
	if n := d.Spec.SwitchoverNote(); n != want {
		t.Errorf("note %q, want %q", n, want)
	}
}
