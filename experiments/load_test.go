package experiments

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func readBase(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func noEnv(string) (string, bool) { return "", false }

func TestLoadValid(t *testing.T) {
	exps, err := Load("valid.yaml", []byte(readBase(t)), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("valid file rejected:\n%v", err)
	}
	if len(exps) != 1 {
		t.Fatalf("got %d experiments, want 1", len(exps))
	}
	e := exps[0]
	s := e.Spec
	if got := s.Traffic.Steps[0].Weight; got != 0.05 {
		t.Errorf("steps[0].weight = %v, want 0.05", got)
	}
	if got := s.Traffic.Steps[1].Weight; got != 0.2 {
		t.Errorf("steps[1].weight = %v, want 0.2", got)
	}
	// Defaults.
	checks := map[string]bool{
		"onPromote keep":         s.Traffic.OnPromote == OnPromoteKeep,
		"onRollback restore":     s.Traffic.OnRollback == OnRollbackRestore,
		"clusterLabel cluster":   s.Prometheus.ClusterLabel == "cluster",
		"harm increase":          s.KPIs[0].Harm == HarmIncrease,
		"latency tolerance 5%":   *s.KPIs[1].Tolerance == 0.05,
		"latency quantile":       s.KPIs[1].Quantile == 0.99,
		"minIntervals 10":        s.Analysis.MinIntervals == 10,
		"maxDuration 2x hold":    s.Analysis.MaxDuration.Std() == 2*s.TotalHold(),
		"noDataTimeout 10m":      s.Analysis.NoDataTimeout.String() == "10m",
		"onInconclusive":         s.Analysis.OnInconclusive == OnInconclusiveRollback,
		"onDrift pause":          s.Analysis.OnDrift == OnDriftPause,
		"variant kept":           s.Canary.Variant["cni"] == "cilium",
		"slowerThan 500ms":       s.KPIs[1].SlowerThan.String() == "500ms",
		"position of tolerance":  e.Pos("spec.kpis[0].tolerance").Line == 27,
		"position of nested key": e.Pos("spec.kpis[1].buckets").Line == 30,
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("%s: not as expected", name)
		}
	}
}

func TestLoadMultipleDocuments(t *testing.T) {
	base := readBase(t)
	second := strings.Replace(base, "name: base", "name: second", 1)
	exps, err := Load("multi.yaml", []byte(base+"---\n"+second+"---\n"), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if len(exps) != 2 || exps[1].Metadata.Name != "second" {
		t.Fatalf("got %d experiments", len(exps))
	}
	if got := exps[1].Pos("metadata.name").Line; got != 39+4 {
		t.Errorf("second document's metadata.name at line %d, want %d", got, 43)
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"POOL": "abc123", "ACCT": "acct9"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	src := strings.Replace(readBase(t), "poolID: pool1", "poolID: ${POOL}\n      accountID: ${ACCT}", 1)
	src = strings.Replace(src, "address: http://127.0.0.1:9090", "address: ${PROM:-http://127.0.0.1:9090}", 1)
	exps, err := Load("env.yaml", []byte(src), LoadOptions{LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	cf := exps[0].Spec.Traffic.Cloudflare
	if cf.PoolID != "abc123" || cf.AccountID != "acct9" {
		t.Errorf("expansion: poolID %q accountID %q", cf.PoolID, cf.AccountID)
	}
	if got := exps[0].Spec.Prometheus.Address; got != "http://127.0.0.1:9090" {
		t.Errorf("default expansion: %q", got)
	}
}

// TestLoadBadInput is the contract for bad input: every case is rejected with the file, the
// line and the field path, never a panic.
func TestLoadBadInput(t *testing.T) {
	base := readBase(t)
	replace := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("test bug: %q not in base", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	cases := []struct {
		name, src string
		line      int
		path, msg string
	}{
		{"misspelt field", replace("    cluster: c1", "    clustr: c1"), 7, "spec.canary.clustr", `did you mean "cluster"`},
		{"unknown top-level field", replace("kind: Experiment", "kind: Experiment\nstatus: {}"), 3, "status", `unknown field "status"`},
		{"case mistake", replace("poolID: pool1", "poolId: pool1"), 12, "spec.traffic.cloudflare.poolId", `did you mean "poolID"`},
		{"list expected", replace("baselines: [c2, c3]", "baselines: c2"), 9, "spec.baselines", "want a list"},
		{"mapping expected", replace("    variant: {cni: cilium}", "    variant: [cilium]"), 8, "spec.canary.variant", "want a mapping"},
		{"canary among baselines", replace("baselines: [c2, c3]", "baselines: [c1, c3]"), 9, "spec.baselines[0]", "cannot be its own baseline"},
		{"duplicate baseline", replace("baselines: [c2, c3]", "baselines: [c2, c2]"), 9, "spec.baselines[1]", "duplicate cluster"},
		{"missing origin", replace("        c3: o3\n", ""), 13, "spec.traffic.cloudflare.origins", `no origin for cluster "c3"`},
		{"origin for unknown cluster", replace("        c3: o3\n", "        c3: o3\n        c4: o4\n"), 17, "spec.traffic.cloudflare.origins.c4", "neither the canary nor a baseline"},
		{"shared origin", replace("c3: o3", "c3: o2"), 16, "spec.traffic.cloudflare.origins.c3", `already the origin of cluster "c2"`},
		{"steps not increasing", replace("{weight: 0.2, hold: 10m}", "{weight: 0.05, hold: 10m}"), 19, "spec.traffic.steps[1].weight", "increase strictly"},
		{"zero weight", replace("{weight: 5%, hold: 10m}", "{weight: 0%, hold: 10m}"), 18, "spec.traffic.steps[0].weight", "above 0%"},
		{"weight above 100%", replace("{weight: 0.2, hold: 10m}", "{weight: 120%, hold: 10m}"), 19, "spec.traffic.steps[1].weight", "at most 100%"},
		{"ambiguous weight", replace("{weight: 5%, hold: 10m}", "{weight: 5, hold: 10m}"), 18, "spec.traffic.steps[0].weight", "ambiguous"},
		{"weight not a number", replace("{weight: 5%, hold: 10m}", "{weight: lots, hold: 10m}"), 18, "spec.traffic.steps[0].weight", "not a percentage"},
		{"negative hold", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: -5m}"), 18, "spec.traffic.steps[0].hold", "not a duration"},
		{"zero hold", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 0s}"), 18, "spec.traffic.steps[0].hold", "positive"},
		{"hold shorter than interval", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 30s}"), 18, "spec.traffic.steps[0].hold", "shorter than one analysis interval"},
		{"missing hold", replace("{weight: 5%, hold: 10m}", "{weight: 5%}"), 18, "spec.traffic.steps[0]", "hold is required"},
		{"no steps", replace("    steps:\n      - {weight: 5%, hold: 10m}\n      - {weight: 0.2, hold: 10m}\n", "    steps: []\n"), 17, "spec.traffic.steps", "at least one step"},
		{"alpha too large", replace("alpha: 0.05", "alpha: 0.7"), 34, "spec.analysis.alpha", "between 0 and 0.5"},
		{"alpha explicit zero", replace("alpha: 0.05", "alpha: 0"), 34, "spec.analysis.alpha", "must be positive"},
		{"alpha wrong type", replace("alpha: 0.05", "alpha: five percent"), 34, "spec.analysis.alpha", "want a number"},
		{"interval garbage", replace("interval: 1m", "interval: 1 minute"), 33, "spec.analysis.interval", "not a duration"},
		{"broken PromQL", replace(`events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}]))`, `events: sum by (cluster) (increase(http_requests_total{code=~"5.."}[{{.Interval}}])`), 25, "spec.kpis[0].events", "invalid PromQL"},
		{"unknown template variable", replace("total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))", "total: sum by (cluster) (increase(http_requests_total[{{.Intervall}}]))"), 26, "spec.kpis[0].total", "unknown template variable {{.Intervall}}"},
		{"broken template", replace("total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))", "total: sum by (cluster) (increase(http_requests_total[{{.Interval}]))"), 26, "spec.kpis[0].total", "bad template"},
		{"not aggregated by cluster", replace("total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))", "total: sum(increase(http_requests_total[{{.Interval}}]))"), 26, "spec.kpis[0].total", "must aggregate by the cluster label"},
		{"raw selector", replace("total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))", "total: http_requests_total"), 26, "spec.kpis[0].total", "must aggregate by the cluster label"},
		{"buckets without le", replace("sum by (cluster, le) (increase(http_request_duration_seconds_bucket", "sum by (cluster) (increase(http_request_duration_seconds_bucket"), 30, "spec.kpis[1].buckets", "sum by (cluster, le)"},
		{"unknown KPI type", replace("type: ratio", "type: ratoi"), 24, "spec.kpis[0].type", `did you mean "ratio"`},
		{"ratio without total", replace("      total: sum by (cluster) (increase(http_requests_total[{{.Interval}}]))\n", ""), 23, "spec.kpis[0]", "total is required"},
		{"query on a ratio", replace("      tolerance: 10%\n", "      tolerance: 10%\n      query: sum by (cluster) (up)\n"), 28, "spec.kpis[0].query", "not used by a ratio KPI"},
		{"tolerance above 100%", replace("tolerance: 10%", "tolerance: 150%"), 27, "spec.kpis[0].tolerance", "between 0% and 100%"},
		{"duplicate KPI name", replace("    - name: latency", "    - name: errors"), 28, "spec.kpis[1].name", "duplicate KPI name"},
		{"bad harm", replace("      tolerance: 10%\n", "      tolerance: 10%\n      harm: up\n"), 28, "spec.kpis[0].harm", "increase or decrease"},
		{"empty guardrail", replace("      tolerance: 10%\n", "      tolerance: 10%\n      guardrail: {for: 3}\n"), 28, "spec.kpis[0].guardrail", "set max, min or both"},
		{"guardrail min above max", replace("      tolerance: 10%\n", "      tolerance: 10%\n      guardrail: {min: 5%, max: 2%}\n"), 28, "spec.kpis[0].guardrail.min", "not below max"},
		{"guardrail negative on a ratio", replace("      tolerance: 10%\n", "      tolerance: 10%\n      guardrail: {max: -1%}\n"), 28, "spec.kpis[0].guardrail.max", "not a rate"},
		{"guardrail above 100% on a ratio", replace("      tolerance: 10%\n", "      tolerance: 10%\n      guardrail: {max: 2}\n"), 28, "spec.kpis[0].guardrail.max", "not a rate"},
		{"guardrail negative on a latency", replace("      slowerThan: 500ms\n", "      slowerThan: 500ms\n      guardrail: {max: -1}\n"), 32, "spec.kpis[1].guardrail.max", "negative"},
		{"slowerThan on a ratio", replace("      tolerance: 10%\n", "      tolerance: 10%\n      slowerThan: 1s\n"), 28, "spec.kpis[0].slowerThan", "only latency KPIs"},
		{"address without scheme", replace("address: http://127.0.0.1:9090", "address: 127.0.0.1:9090"), 21, "spec.prometheus.address", "http://"},
		{"address with credentials", replace("address: http://127.0.0.1:9090", "address: http://admin:hunter2@127.0.0.1:9090"), 21, "spec.prometheus.address", "credentials in the URL"},
		{"bad cluster label", replace("    address: http://127.0.0.1:9090\n", "    address: http://127.0.0.1:9090\n    clusterLabel: k8s-cluster\n"), 22, "spec.prometheus.clusterLabel", "not a Prometheus label name"},
		{"basic auth without password file", replace("    address: http://127.0.0.1:9090\n", "    address: http://127.0.0.1:9090\n    auth: {basic: {username: u}}\n"), 22, "spec.prometheus.auth.basic.passwordFile", "required"},
		{"wrong apiVersion", replace("verdict.dev/v1alpha1", "verdict.dev/v1"), 1, "apiVersion", "unsupported version"},
		{"wrong kind", replace("kind: Experiment", "kind: Rollout"), 2, "kind", "must be Experiment"},
		{"bad name", replace("name: base", "name: Base_1"), 4, "metadata.name", "lowercase"},
		{"missing name", replace("  name: base\n", "  labels: {a: b}\n"), 3, "metadata.name", "required"},
		{"unset env var", replace("poolID: pool1", "poolID: ${NOPE_POOL}"), 12, "spec.traffic.cloudflare.poolID", "environment variable NOPE_POOL is not set"},
		{"bad env reference", replace("poolID: pool1", "poolID: ${1POOL}"), 12, "spec.traffic.cloudflare.poolID", "not a valid environment variable reference"},
		{"bad expect", replace(`expect: ">= 3"`, `expect: "about 3"`), 38, "spec.preconditions[0].expect", "want an operator"},
		{"expect without number", replace(`expect: ">= 3"`, `expect: "< x"`), 38, "spec.preconditions[0].expect", "is not a finite number"},
		{"precondition bad query", replace(`query: count(kube_pod_info{cluster=~"{{.Clusters}}"})`, `query: count(kube_pod_info{cluster=~"{{.Clusters}}"}`), 37, "spec.preconditions[0].query", "invalid PromQL"},
		{"onRollback typo", replace("    steps:\n", "    onRollback: drian\n    steps:\n"), 17, "spec.traffic.onRollback", "restore or drain"},
		{"minIntervals beyond the steps", replace("alpha: 0.05", "alpha: 0.05\n    minIntervals: 100"), 35, "spec.analysis.minIntervals", "need 1h40m"},
		{"maxDuration shorter than holds", replace("alpha: 0.05", "alpha: 0.05\n    maxDuration: 5m"), 35, "spec.analysis.maxDuration", "shorter than the steps' total hold"},
		{"noDataTimeout below interval", replace("alpha: 0.05", "alpha: 0.05\n    noDataTimeout: 10s"), 35, "spec.analysis.noDataTimeout", "shorter than one interval"},
		{"onDrift typo", replace("alpha: 0.05", "alpha: 0.05\n    onDrift: stop"), 35, "spec.analysis.onDrift", "pause, rollback or ignore"},
		{"duplicate key", replace("kind: Experiment", "kind: Experiment\nkind: Experiment"), 3, "kind", "set more than once"},
		{"merge key", replace("  canary:\n", "  canary:\n    <<: {cluster: c9}\n"), 7, "spec.canary", "merge keys"},
		{"notify without target", replace("  preconditions:\n", "  notify:\n    - on: [start]\n  preconditions:\n"), 36, "spec.notify[0]", "set slack or webhook"},
		{"notify bad event", replace("  preconditions:\n", "  notify:\n    - webhook: {url: https://example.com/hook}\n      on: [begin]\n  preconditions:\n"), 37, "spec.notify[0].on[0]", `unknown event "begin"`},
		{"capacity max below min", replace("  preconditions:\n", "  capacity:\n    hpa: {minReplicas: 10, maxReplicas: 5}\n  preconditions:\n"), 36, "spec.capacity.hpa.maxReplicas", "below minReplicas"},
		{"hook unknown variable", replace("  preconditions:\n", "  capacity:\n    hpa: {minReplicas: 10, maxReplicas: 50}\n    hook: {command: [scale, \"{{.Replicas}}\"]}\n  preconditions:\n"), 37, "spec.capacity.hook.command[1]", "unknown template variable {{.Replicas}}"},
		{"document is a list", "- a\n- b\n", 1, "", "must be a mapping"},
		{"document is a scalar", "hello\n", 1, "", "must be a mapping"},
		{"empty file", "", 1, "", "no experiment in file"},
		{"only comments", "# nothing here\n", 1, "", "no experiment in file"},
		{"malformed YAML", replace("baselines: [c2, c3]", "baselines: [c2, c3"), 9, "", "invalid YAML"},
		{"tab indentation", replace("    cluster: c1", "\tcluster: c1"), 7, "", "invalid YAML"},
		{"binary garbage", "\x7fELF\x02\x01\x01\x00\x00\x00", 1, "", "not a text file"},
		{"invalid UTF-8", "apiVersion: \xff\xfe\n", 1, "", "invalid UTF-8"},
		{"duplicate experiment names", base + "---\n" + base, 43, "metadata.name", "defined more than once"},
	}
	if len(cases) < 30 {
		t.Fatalf("the bad-input contract needs at least 30 cases, have %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("exp.yaml", []byte(tc.src), LoadOptions{LookupEnv: noEnv})
			if err == nil {
				t.Fatal("accepted bad input")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			for _, fe := range list {
				if fe.File != "exp.yaml" || fe.Line < 1 || fe.Column < 1 {
					t.Errorf("error without a full position: %v", fe)
				}
				if !strings.HasPrefix(fe.Error(), "exp.yaml:") {
					t.Errorf("error does not start with the file: %v", fe)
				}
			}
			for _, fe := range list {
				if fe.Path == tc.path && fe.Line == tc.line && strings.Contains(fe.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("want line %d, path %q, message containing %q; got:\n%v", tc.line, tc.path, tc.msg, err)
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"missing":   filepath.Join(dir, "nope.yaml"),
		"directory": dir,
	} {
		_, err := LoadFile(path, LoadOptions{})
		var list ErrorList
		if !errors.As(err, &list) || len(list) != 1 || list[0].File != path {
			t.Errorf("%s: want one error naming %s, got %v", name, path, err)
		}
	}
}

func TestErrorsCollectAll(t *testing.T) {
	src := strings.NewReplacer("alpha: 0.05", "alpha: 0.9", "tolerance: 10%", "tolerance: 200%", "kind: Experiment", "kind: Nope").Replace(readBase(t))
	_, err := Load("exp.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("want 3 errors at once, got %v", err)
	}
	for i := 1; i < len(list); i++ {
		if list[i-1].Line > list[i].Line {
			t.Errorf("errors not in file order: %v", err)
		}
	}
}

func TestSecretsNotInErrors(t *testing.T) {
	secret := "https://hooks.slack.com/services/T0/B0/s3cr3t"
	src := strings.Replace(readBase(t), "  preconditions:\n", "  notify:\n    - slack: {webhookURL: \"ftp:"+secret[6:]+"\"}\n  preconditions:\n", 1)
	_, err := Load("exp.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("want an error that does not repeat the webhook URL, got %v", err)
	}
}

// withApply inserts an apply block (indented as under spec.canary) into the base file, so
// that its first line is line 9.
func withApply(t testing.TB, block string) string {
	t.Helper()
	base := readBase(t)
	const at = "    variant: {cni: cilium}\n"
	if !strings.Contains(base, at) {
		t.Fatalf("test bug: %q not in base", at)
	}
	return strings.Replace(base, at, at+block, 1)
}

func loadOne(t *testing.T, src string) *Experiment {
	t.Helper()
	exps, err := Load("exp.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("valid file rejected:\n%v", err)
	}
	return exps[0]
}

func TestApplyShapes(t *testing.T) {
	applied := time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC)
	cases := []struct {
		name, block string
		phases      []string
		during      string
		check       func(t *testing.T, e *Experiment)
	}{
		{
			name:   "not declared",
			phases: []string{"baseline (variant arrival not declared)", "ramp"},
			check: func(t *testing.T, e *Experiment) {
				if e.Spec.Canary.Apply != nil || e.Spec.Canary.Apply.Declared() {
					t.Error("apply set without being written")
				}
				if w := e.Warnings(); len(w) != 1 || w[0] != WarningApplyNotSet {
					t.Errorf("warnings %q", w)
				}
			},
		},
		{
			name:   "empty value means not set",
			block:  "    apply:\n",
			phases: []string{"baseline (variant arrival not declared)", "ramp"},
		},
		{
			name:   "hook and readiness",
			block:  "    apply:\n      hook:\n        command: [kubectl, --context, \"{{.Cluster}}\", apply, -k, overlays/karpenter]\n      readiness:\n        query: max(argocd_app_info{name=\"{{.Cluster}}-app\", sync_status=\"Synced\"})\n        expect: \"== 1\"\n",
			phases: []string{"baseline", "apply", "ready", "ramp"},
			during: ApplyDuringFirstStep,
			check: func(t *testing.T, e *Experiment) {
				a := e.Spec.Canary.Apply
				if a.Hook.Timeout.Std() != DefaultApplyHookTimeout || a.Readiness.Timeout.Std() != DefaultReadinessTimeout {
					t.Errorf("timeouts %s, %s: want the defaults", a.Hook.Timeout, a.Readiness.Timeout)
				}
				args, err := e.ApplyHookCommand()
				if err != nil || !slices.Equal(args, []string{"kubectl", "--context", "c1", "apply", "-k", "overlays/karpenter"}) {
					t.Errorf("hook command %q, %v", args, err)
				}
				q, err := e.ReadinessQuery()
				if err != nil || q != `max(argocd_app_info{name="c1-app", sync_status="Synced"})` {
					t.Errorf("readiness query %q, %v", q, err)
				}
				if w := e.Warnings(); len(w) != 0 {
					t.Errorf("warnings %q", w)
				}
			},
		},
		{
			name:   "hook only, drained, with timeout",
			block:  "    apply:\n      hook: {command: [./upgrade.sh, \"{{.Cluster}}\", \"{{.Interval}}\"], timeout: 15m}\n      during: drained\n",
			phases: []string{"baseline", "apply", "ramp"},
			during: ApplyDuringDrained,
			check: func(t *testing.T, e *Experiment) {
				if got := e.Spec.Canary.Apply.Hook.Timeout.String(); got != "15m" {
					t.Errorf("timeout %s", got)
				}
				if args, _ := e.ApplyHookCommand(); !slices.Equal(args, []string{"./upgrade.sh", "c1", "1m"}) {
					t.Errorf("hook command %q", args)
				}
			},
		},
		{
			name:   "readiness only",
			block:  "    apply:\n      readiness: {query: 'count(up{cluster=\"{{.Cluster}}\"}) or vector(0)', expect: \">= 1\", timeout: 1h}\n",
			phases: []string{"baseline", "ready", "ramp"},
			during: ApplyDuringFirstStep,
			check: func(t *testing.T, e *Experiment) {
				if got := e.Spec.Canary.Apply.Readiness.Timeout.String(); got != "1h" {
					t.Errorf("timeout %s", got)
				}
				if args, err := e.ApplyHookCommand(); args != nil || err != nil {
					t.Errorf("hook command without a hook: %q, %v", args, err)
				}
			},
		},
		{
			name:   "appliedAt",
			block:  "    apply:\n      appliedAt: 2026-12-05T09:30:00Z\n",
			phases: []string{"baseline (before appliedAt 2026-12-05T09:30:00Z)", "ramp"},
			check: func(t *testing.T, e *Experiment) {
				if at := e.Spec.Canary.Apply.AppliedAt; at == nil || !at.Equal(applied) {
					t.Errorf("appliedAt %v", at)
				}
			},
		},
		{
			name:   "appliedAt with an offset is shown in UTC",
			block:  "    apply: {appliedAt: \"2026-12-05T11:30:00+02:00\"}\n",
			phases: []string{"baseline (before appliedAt 2026-12-05T09:30:00Z)", "ramp"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := loadOne(t, withApply(t, tc.block))
			if got := e.Spec.Phases(); !slices.Equal(got, tc.phases) {
				t.Errorf("phases %q, want %q", got, tc.phases)
			}
			a := e.Spec.Canary.Apply
			if got := ""; a != nil {
				got = a.During
				if got != tc.during {
					t.Errorf("during %q, want %q", got, tc.during)
				}
				if !a.Declared() {
					t.Error("not declared")
				}
			}
			if tc.check != nil {
				tc.check(t, e)
			}
			// The spec round-trips through JSON, as the state store keeps it.
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var back Experiment
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if got := back.Spec.Phases(); !slices.Equal(got, tc.phases) {
				t.Errorf("after a JSON round trip: phases %q, want %q", got, tc.phases)
			}
		})
	}
}

func TestHistoryAndAlias(t *testing.T) {
	base := readBase(t)
	analysis := func(lines string) string {
		return strings.Replace(base, "    alpha: 0.05\n", "    alpha: 0.05\n"+lines, 1)
	}
	cases := []struct {
		name, src string
		want      time.Duration
	}{
		{"default", base, DefaultHistory},
		{"history", analysis("    history: 2h\n"), 2 * time.Hour},
		{"history off", analysis("    history: 0s\n"), 0},
		{"history empty means default", analysis("    history:\n"), DefaultHistory},
		{"deprecated prePeriod", analysis("    prePeriod: 45m\n"), 45 * time.Minute},
		{"deprecated prePeriod off", analysis("    prePeriod: 0s\n"), 0},
		{"seven days", analysis("    history: 7d\n"), 7 * 24 * time.Hour},
		{"two intervals", analysis("    history: 2m\n"), 2 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := loadOne(t, tc.src)
			a := e.Spec.Analysis
			if a.History.Std() != tc.want || a.PrePeriod != a.History {
				t.Errorf("history %s, prePeriod %s; want both %s", a.History, a.PrePeriod, Duration(tc.want))
			}
			// SetDefaults is idempotent.
			e.SetDefaults()
			if e.Spec.Analysis != a {
				t.Errorf("a second SetDefaults changed analysis: %+v, was %+v", e.Spec.Analysis, a)
			}
		})
	}
}

func TestNewAnalysisDefaults(t *testing.T) {
	e := loadOne(t, readBase(t))
	if got := e.Spec.Analysis.ShareTolerance; got != DefaultShareTolerance {
		t.Errorf("shareTolerance %s, want %v", got, DefaultShareTolerance)
	}
	for i, st := range e.Spec.Traffic.Steps {
		if st.MinHold != 0 {
			t.Errorf("steps[%d].minHold %s without being written", i, st.MinHold)
		}
	}
	src := strings.Replace(readBase(t), "{weight: 0.2, hold: 10m}", "{weight: 0.2, hold: 10m, minHold: 4m}", 1)
	src = strings.Replace(src, "    alpha: 0.05\n", "    alpha: 0.05\n    shareTolerance: 12.5%\n", 1)
	e = loadOne(t, src)
	if got := e.Spec.Traffic.Steps[1].MinHold.String(); got != "4m" {
		t.Errorf("minHold %s", got)
	}
	if got := e.Spec.Analysis.ShareTolerance; got != 0.125 {
		t.Errorf("shareTolerance %v", got)
	}
	// A spec built in Go (no positions) gets the same defaults.
	var g Experiment
	g.Spec.Analysis.PrePeriod = Duration(time.Hour)
	g.SetDefaults()
	if g.Spec.Analysis.History.Std() != time.Hour || g.Spec.Analysis.PrePeriod.Std() != time.Hour {
		t.Errorf("Go-built spec: history %s, prePeriod %s", g.Spec.Analysis.History, g.Spec.Analysis.PrePeriod)
	}
}

// TestLoadBadNewFields is TestLoadBadInput for spec.canary.apply, history, shareTolerance
// and minHold: each case names the line and the field path of its error.
func TestLoadBadNewFields(t *testing.T) {
	base := readBase(t)
	replace := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("test bug: %q not in base", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	apply := func(block string) string { return withApply(t, block) }
	analysis := func(lines string) string { return replace("    alpha: 0.05\n", "    alpha: 0.05\n"+lines) }
	const hook = "      hook: {command: [kubectl, apply, -k, overlays/v]}\n"
	cases := []struct {
		name, src string
		line      int
		path, msg string
	}{
		// spec.canary.apply
		{"apply empty", apply("    apply: {}\n"), 9, "spec.canary.apply", "declare appliedAt"},
		{"apply only during", apply("    apply: {during: drained}\n"), 9, "spec.canary.apply", "declare appliedAt"},
		{"apply misspelt field", apply("    apply:\n      applied: 2026-12-05T09:30:00Z\n"), 10, "spec.canary.apply.applied", `did you mean "appliedAt"`},
		{"apply not a mapping", apply("    apply: now\n"), 9, "spec.canary.apply", "want a mapping"},
		{"appliedAt with hook", apply("    apply:\n      appliedAt: 2026-12-05T09:30:00Z\n" + hook), 10, "spec.canary.apply.appliedAt", "needs neither hook nor readiness"},
		{"appliedAt with readiness", apply("    apply:\n      appliedAt: 2026-12-05T09:30:00Z\n      readiness: {query: up, expect: \"== 1\"}\n"), 10, "spec.canary.apply.appliedAt", "needs neither hook nor readiness"},
		{"appliedAt not a time", apply("    apply:\n      appliedAt: yesterday\n"), 10, "spec.canary.apply.appliedAt", "not an RFC 3339 time"},
		{"appliedAt without zone", apply("    apply:\n      appliedAt: 2026-12-05 09:30\n"), 10, "spec.canary.apply.appliedAt", "not an RFC 3339 time"},
		{"appliedAt a list", apply("    apply:\n      appliedAt: [2026-12-05T09:30:00Z]\n"), 10, "spec.canary.apply.appliedAt", "want a time"},
		{"during with appliedAt", apply("    apply:\n      appliedAt: 2026-12-05T09:30:00Z\n      during: drained\n"), 11, "spec.canary.apply.during", "only with hook or readiness"},
		{"during typo", apply("    apply:\n" + hook + "      during: drain\n"), 11, "spec.canary.apply.during", `did you mean "drained"`},
		{"during unknown", apply("    apply:\n" + hook + "      during: lunch\n"), 11, "spec.canary.apply.during", "must be firstStep or drained"},
		{"hook without command", apply("    apply:\n      hook: {timeout: 5m}\n"), 10, "spec.canary.apply.hook.command", "required"},
		{"hook empty command", apply("    apply:\n      hook:\n        command: []\n"), 11, "spec.canary.apply.hook.command", "required"},
		{"hook misspelt field", apply("    apply:\n      hook: {comand: [x]}\n"), 10, "spec.canary.apply.hook.comand", `did you mean "command"`},
		{"hook unknown variable", apply("    apply:\n      hook:\n        command: [kubectl, --context, \"{{.Cluster}}\", apply, -k, \"overlays/{{.Variant}}\"]\n"), 11, "spec.canary.apply.hook.command[5]", "unknown template variable {{.Variant}}"},
		{"hook capacity variable", apply("    apply:\n      hook:\n        command: [scale, \"{{.MinReplicas}}\"]\n"), 11, "spec.canary.apply.hook.command[1]", "unknown template variable {{.MinReplicas}}"},
		{"hook broken template", apply("    apply:\n      hook:\n        command: [kubectl, \"{{.Cluster\"]\n"), 11, "spec.canary.apply.hook.command[1]", "bad template"},
		{"hook zero timeout", apply("    apply:\n      hook:\n        command: [x]\n        timeout: 0s\n"), 12, "spec.canary.apply.hook.timeout", "must be positive"},
		{"hook bad timeout", apply("    apply:\n      hook:\n        command: [x]\n        timeout: soon\n"), 12, "spec.canary.apply.hook.timeout", "not a duration"},
		{"readiness without query", apply("    apply:\n      readiness:\n        expect: \"== 1\"\n"), 10, "spec.canary.apply.readiness.query", "required"},
		{"readiness without expect", apply("    apply:\n      readiness:\n        query: up\n"), 10, "spec.canary.apply.readiness.expect", "required"},
		{"readiness bad expect", apply("    apply:\n      readiness:\n        query: up\n        expect: \"about 1\"\n"), 12, "spec.canary.apply.readiness.expect", "want an operator"},
		{"readiness bad PromQL", apply("    apply:\n      readiness:\n        query: max(argocd_app_info{name=\"{{.Cluster}}\"}\n        expect: \"== 1\"\n"), 11, "spec.canary.apply.readiness.query", "invalid PromQL"},
		{"readiness unknown variable", apply("    apply:\n      readiness:\n        query: max(argocd_app_info{name=\"{{.App}}\"})\n        expect: \"== 1\"\n"), 11, "spec.canary.apply.readiness.query", "unknown template variable {{.App}}"},
		{"readiness zero timeout", apply("    apply:\n      readiness: {query: up, expect: \"== 1\", timeout: 0s}\n"), 10, "spec.canary.apply.readiness.timeout", "must be positive"},
		{"readiness misspelt field", apply("    apply:\n      readiness: {query: up, expected: \"== 1\"}\n"), 10, "spec.canary.apply.readiness.expected", `did you mean "expect"`},

		// spec.analysis.history and its deprecated alias
		{"history and prePeriod", analysis("    history: 6h\n    prePeriod: 1h\n"), 36, "spec.analysis.prePeriod", "prePeriod is the deprecated name of history; keep one"},
		{"prePeriod before history", analysis("    prePeriod: 1h\n    history: 6h\n"), 35, "spec.analysis.prePeriod", "deprecated name of history"},
		{"history shorter than two intervals", analysis("    history: 90s\n"), 35, "spec.analysis.history", "shorter than 2 analysis intervals (2m)"},
		{"prePeriod shorter than two intervals", analysis("    prePeriod: 1m\n"), 35, "spec.analysis.prePeriod", "shorter than 2 analysis intervals"},
		{"history longer than seven days", analysis("    history: 8d\n"), 35, "spec.analysis.history", "longer than 7 days"},
		{"default history with a long interval", replace("interval: 1m", "interval: 13h\n    maxDuration: 3d"), 32, "spec.analysis.history", "the default history of 1d is shorter than 2 analysis intervals"},
		{"history negative", analysis("    history: -1h\n"), 35, "spec.analysis.history", "not a duration"},
		{"history misspelt", analysis("    histroy: 6h\n"), 35, "spec.analysis.histroy", `did you mean "history"`},

		// spec.analysis.shareTolerance
		{"shareTolerance zero", analysis("    shareTolerance: 0%\n"), 35, "spec.analysis.shareTolerance", "must be above 0%"},
		{"shareTolerance above 50%", analysis("    shareTolerance: 60%\n"), 35, "spec.analysis.shareTolerance", "at most 50%, got 60%"},
		{"shareTolerance negative", analysis("    shareTolerance: -5%\n"), 35, "spec.analysis.shareTolerance", "must be above 0%"},
		{"shareTolerance ambiguous", analysis("    shareTolerance: 5\n"), 35, "spec.analysis.shareTolerance", "ambiguous"},

		// spec.traffic.steps[].minHold
		{"minHold longer than hold", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 10m, minHold: 15m}"), 18, "spec.traffic.steps[0].minHold", "longer than the step's hold of 10m"},
		{"minHold shorter than interval", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 10m, minHold: 30s}"), 18, "spec.traffic.steps[0].minHold", "shorter than one analysis interval"},
		{"minHold zero", replace("{weight: 0.2, hold: 10m}", "{weight: 0.2, hold: 10m, minHold: 0s}"), 19, "spec.traffic.steps[1].minHold", "must be a positive duration"},
		{"minHold garbage", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 10m, minHold: early}"), 18, "spec.traffic.steps[0].minHold", "not a duration"},
		{"minHold misspelt", replace("{weight: 5%, hold: 10m}", "{weight: 5%, hold: 10m, minhold: 5m}"), 18, "spec.traffic.steps[0].minhold", `did you mean "minHold"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("exp.yaml", []byte(tc.src), LoadOptions{LookupEnv: noEnv})
			if err == nil {
				t.Fatal("accepted bad input")
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			for _, fe := range list {
				if fe.File != "exp.yaml" || fe.Line < 1 || fe.Column < 1 {
					t.Errorf("error without a full position: %v", fe)
				}
			}
			for _, fe := range list {
				if fe.Path == tc.path && fe.Line == tc.line && strings.Contains(fe.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("want line %d, path %q, message containing %q; got:\n%v", tc.line, tc.path, tc.msg, err)
		})
	}
}

// TestNoFollowOnErrors: a field that is already wrong is reported once; nothing derived from
// it (or from the default that stood in for it) is reported on top.
func TestNoFollowOnErrors(t *testing.T) {
	base := readBase(t)
	for _, tc := range []struct {
		name, old, new string
		want           []string // the paths reported, exactly
	}{
		{"misspelt canary cluster", "    cluster: c1\n", "    clustr: c1\n", []string{"spec.canary.cluster", "spec.canary.clustr"}},
		{"bad interval", "interval: 1m", "interval: soon", []string{"spec.analysis.interval"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("test bug: %q not in base", tc.old)
			}
			_, err := Load("exp.yaml", []byte(strings.Replace(base, tc.old, tc.new, 1)), LoadOptions{LookupEnv: noEnv})
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("want an ErrorList, got %v", err)
			}
			var got []string
			for _, fe := range list {
				got = append(got, fe.Path)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("reported %v, want exactly %v:\n%v", got, tc.want, err)
			}
		})
	}
}

// TestFractionalDurations: people write Go's fractional durations ("0.5s", "1.5m") where a
// threshold or an interval is meant; they are read exactly and shown in Prometheus's form.
func TestFractionalDurations(t *testing.T) {
	base := readBase(t)
	src := strings.Replace(base, "interval: 1m", "interval: 1.5m", 1)
	src = strings.Replace(src, "{weight: 5%, hold: 10m}", "{weight: 5%, hold: 0.5h}", 1)
	exps, err := Load("exp.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	s := exps[0].Spec
	if s.Analysis.Interval.Std() != 90*time.Second || s.Analysis.Interval.String() != "1m30s" {
		t.Errorf("interval 1.5m read as %s (%v)", s.Analysis.Interval, s.Analysis.Interval.Std())
	}
	if s.Traffic.Steps[0].Hold.Std() != 30*time.Minute {
		t.Errorf("hold 0.5h read as %s", s.Traffic.Steps[0].Hold)
	}
	_, err = Load("exp.yaml", []byte(strings.Replace(base, "interval: 1m", "interval: -0.5m", 1)), LoadOptions{LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("a negative fractional duration must be refused, got %v", err)
	}
}

// TestTruncatedFile: a file that ends with a key and no value was cut short; it must not
// validate with the key silently defaulted.
func TestTruncatedFile(t *testing.T) {
	base := readBase(t)
	i := strings.Index(base, "  preconditions:")
	if i < 0 {
		t.Fatal("test bug: base has no preconditions")
	}
	src := base[:i] + "    prePeriod:\n"
	_, err := Load("exp.yaml", []byte(src), LoadOptions{LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "spec.analysis.prePeriod: has no value and the file ends here") {
		t.Fatalf("truncated file: %v", err)
	}
	// The same empty value followed by more keys means "default", as always.
	mid := strings.Replace(base, "    alpha: 0.05\n", "    alpha: 0.05\n    prePeriod:\n", 1)
	if _, err := Load("exp.yaml", []byte(mid), LoadOptions{LookupEnv: noEnv}); err != nil {
		t.Fatalf("an empty value followed by more of the file: %v", err)
	}
}
