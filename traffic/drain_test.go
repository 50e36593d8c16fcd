package traffic_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
)

func pool(t *testing.T, doc string) traffic.Pool {
	t.Helper()
	p, err := traffic.DecodePool([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanDrain(t *testing.T) {
	three := `{"id": "p", "name": "p", "minimum_origins": 1, "origins": [
	  {"name": "a", "address": "x", "weight": 0.5}, {"name": "b", "address": "x", "weight": 0.3},
	  {"name": "c", "address": "x", "weight": 0.2}, {"name": "off", "address": "x", "weight": 1, "enabled": false}]}`
	cases := []struct {
		name, pool, origin string
		wantErr            string
		wantShares         map[string]float64 // after
		noOp               bool
	}{
		{name: "share goes to the others in proportion", pool: three, origin: "a",
			wantShares: map[string]float64{"a": 0, "b": 0.6, "c": 0.4, "off": 0}},
		{name: "already drained", pool: `{"id": "p", "origins": [{"name": "a", "address": "x", "weight": 0}, {"name": "b", "address": "x"}]}`,
			origin: "a", noOp: true, wantShares: map[string]float64{"a": 0, "b": 1}},
		{name: "disabled origin only loses its weight", pool: three, origin: "off",
			wantShares: map[string]float64{"a": 0.5, "b": 0.3, "c": 0.2, "off": 0}},
		{name: "last origin carrying traffic", pool: `{"id": "p", "origins": [{"name": "a", "address": "x", "weight": 1}, {"name": "b", "address": "x", "weight": 0}, {"name": "c", "address": "x", "enabled": false}]}`,
			origin: "a", wantErr: "last origin"},
		{name: "below minimum_origins", pool: strings.Replace(three, `"minimum_origins": 1`, `"minimum_origins": 3`, 1), origin: "b",
			wantErr: "below its minimum_origins 3"},
		{name: "unknown origin", pool: three, origin: "zz", wantErr: `no origin "zz"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan, err := traffic.PlanDrain(pool(t, c.pool), c.origin)
			if c.wantErr != "" {
				if !errors.Is(err, traffic.ErrRefused) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want ErrRefused with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.NoOp() != c.noOp {
				t.Errorf("NoOp = %v, want %v", plan.NoOp(), c.noOp)
			}
			if len(plan.Want) != 1 || plan.Want[c.origin] != 0 {
				t.Errorf("Want = %v, want only %s: 0", plan.Want, c.origin)
			}
			for _, ch := range plan.Changes {
				if diff := ch.ShareAfter - c.wantShares[ch.Name]; diff > 1e-9 || diff < -1e-9 {
					t.Errorf("%s share after = %v, want %v", ch.Name, ch.ShareAfter, c.wantShares[ch.Name])
				}
				if ch.Changed() != (ch.Name == c.origin && !c.noOp) {
					t.Errorf("%s Changed = %v", ch.Name, ch.Changed())
				}
			}
		})
	}
}

func TestPlanRestore(t *testing.T) {
	p := pool(t, `{"id": "p", "origins": [{"name": "a", "address": "x", "weight": 0}, {"name": "b", "address": "x", "weight": 0}, {"name": "c", "address": "x", "weight": 1}]}`)
	rec := traffic.DrainRecord{Pool: "p", Origins: map[string]traffic.DrainedOrigin{"a": {Weight: 0.5}, "b": {Weight: 0.25}}}
	plan, err := traffic.PlanRestore(p, rec, "")
	if err != nil {
		t.Fatal(err)
	}
	if plan.Want["a"] != 0.5 || plan.Want["b"] != 0.25 || plan.Expect["a"] != 0 || plan.Expect["b"] != 0 || len(plan.Want) != 2 {
		t.Errorf("plan want %v expect %v", plan.Want, plan.Expect)
	}
	only, err := traffic.PlanRestore(p, rec, "b")
	if err != nil || len(only.Want) != 1 || only.Want["b"] != 0.25 {
		t.Errorf("only b: %v %v", only.Want, err)
	}
	if _, err := traffic.PlanRestore(p, rec, "c"); !errors.Is(err, traffic.ErrRefused) {
		t.Errorf("restoring an origin never drained: %v", err)
	}
	rec.Origins["gone"] = traffic.DrainedOrigin{Weight: 1}
	if _, err := traffic.PlanRestore(p, rec, ""); !errors.Is(err, traffic.ErrRefused) || !strings.Contains(err.Error(), "no longer in it") {
		t.Errorf("origin removed from the pool: %v", err)
	}
}

func TestDrainRecordStore(t *testing.T) {
	dir := t.TempDir()
	rec, ok, err := traffic.LoadDrainRecord(dir, "pool1")
	if err != nil || ok || rec.Pool != "pool1" || rec.Origins == nil {
		t.Fatalf("empty state: %+v %v %v", rec, ok, err)
	}
	at := time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)
	rec.Origins["a"] = traffic.DrainedOrigin{Weight: 0.45, DrainedAt: at}
	if err := traffic.SaveDrainRecord(dir, rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := traffic.LoadDrainRecord(dir, "pool1")
	if err != nil || !ok || got.Origins["a"].Weight != 0.45 || !got.Origins["a"].DrainedAt.Equal(at) || got.Version != 1 {
		t.Fatalf("reloaded %+v %v %v", got, ok, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "drains"))
	if len(entries) != 1 || entries[0].Name() != "pool1.json" {
		t.Errorf("drains dir holds %v, want only pool1.json (no temporary files)", entries)
	}
	delete(got.Origins, "a")
	if err := traffic.SaveDrainRecord(dir, got); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := traffic.LoadDrainRecord(dir, "pool1"); ok {
		t.Errorf("empty record not removed")
	}
	if _, _, err := traffic.LoadDrainRecord(dir, "../x"); err == nil {
		t.Errorf("path-like pool ID accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "drains", "pool2.json"), []byte(`{"pool": "other"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := traffic.LoadDrainRecord(dir, "pool2"); err == nil {
		t.Errorf("record for another pool accepted")
	}
}

func TestWeightHelpers(t *testing.T) {
	for _, c := range []struct {
		w     float64
		valid bool
		text  string
	}{
		{0, true, "0"}, {1, true, "1"}, {0.05, true, "0.05"}, {0.29, true, "0.29"}, {0.1 + 0.2, true, "0.3"},
		{0.125, false, ""}, {-0.01, false, ""}, {1.01, false, ""},
	} {
		err := traffic.ValidWeight(c.w)
		if (err == nil) != c.valid {
			t.Errorf("ValidWeight(%v) = %v, want valid=%v", c.w, err, c.valid)
		}
		if c.valid && traffic.FormatWeight(c.w) != c.text {
			t.Errorf("FormatWeight(%v) = %q, want %q", c.w, traffic.FormatWeight(c.w), c.text)
		}
	}
	p := pool(t, `{"id": "p", "origins": [{"name": "a", "address": "x", "weight": 0.5, "header": {"Host": ["h"]}, "disabled_at": "2019-08-24T14:15:22Z", "enabled": false}, {"name": "b", "address": "y"}]}`)
	out, err := traffic.ApplyWeights(p, traffic.Weights{"b": 0.07})
	if err != nil {
		t.Fatal(err)
	}
	if string(out[0]) != `{"address":"x","enabled":false,"header":{"Host":["h"]},"name":"a","weight":0.5}` {
		t.Errorf("origin a = %s: want every field but disabled_at, unchanged", out[0])
	}
	if string(out[1]) != `{"address":"y","name":"b","weight":0.07}` {
		t.Errorf("origin b = %s", out[1])
	}
}

// FuzzDecodePool checks DecodePool never panics and that what it accepts round-trips
// through ApplyWeights with weights intact.
func FuzzDecodePool(f *testing.F) {
	seed, err := os.ReadFile("testdata/pool_full.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"origins": [{"name": "a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := traffic.DecodePool(data)
		if err != nil {
			return
		}
		out, err := traffic.ApplyWeights(p, nil)
		if err != nil {
			return
		}
		if len(out) != len(p.Origins) {
			t.Fatalf("ApplyWeights returned %d origins for %d", len(out), len(p.Origins))
		}
	})
}
