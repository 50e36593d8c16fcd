package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/report/reporttest"
	"github.com/verdict-dev/verdict/store"
)

// BenchmarkThreeHourRun times report generation for a 3-hour run with 1-minute intervals
// and 3 KPIs (4 judged quantities): reading the store, replaying the analysis, and
// rendering each format.
func BenchmarkThreeHourRun(b *testing.B) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	id, err := reporttest.Record(ctx, st, reporttest.Options{Intervals: 180, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			if _, err := report.FromStore(ctx, st, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	r, err := report.FromStore(ctx, st, id)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := report.WriteJSON(&buf, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("markdown", func(b *testing.B) {
		dir := b.TempDir()
		for b.Loop() {
			buf.Reset()
			if err := report.WriteMarkdown(&buf, r, report.MarkdownOptions{ChartDir: dir}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("html", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := report.WriteHTML(&buf, r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len())/1024, "KiB")
	})
	b.Run("build+html", func(b *testing.B) {
		for b.Loop() {
			r, err := report.FromStore(ctx, st, id)
			if err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			if err := report.WriteHTML(&buf, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSyntheticRunReports keeps the benchmark's input honest: the synthetic run gives a
// complete report.
func TestSyntheticRunReports(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, err := reporttest.Record(ctx, st, reporttest.Options{Intervals: 180, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.FromStore(ctx, st, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.KPIs) != 4 || len(r.Steps) != 3 || r.KPIs[0].Canary.N != 180 || len(r.KPIs[0].Sequence) != 180 {
		t.Fatalf("synthetic report: %d KPIs, %d steps, %d canary intervals", len(r.KPIs), len(r.Steps), r.KPIs[0].Canary.N)
	}
	for _, k := range r.KPIs {
		if k.Status == "no data" {
			t.Errorf("%s: %s", k.Name, k.StatusReason)
		}
	}
}

// TestRunWithoutData: a run that failed before any interval still gives a readable report
// in every format, with no data shown as such and never as zero.
func TestRunWithoutData(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	exps, err := experiments.Load("synthetic.yaml", []byte(reporttest.ExperimentYAML), experiments.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(exps[0])
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	run := &store.Run{ID: "failed-run", Experiment: "synthetic", Spec: spec, Pool: "p", State: store.StatePending, CreatedAt: at}
	if err := st.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	run.State, run.Verdict, run.Reason, run.EndedBy, run.EndedAt = store.StateFailed, "failed", "the pool could not be read for 10m", "ops", at.Add(11*time.Minute)
	if err := st.SaveRun(ctx, run, store.Event{RunID: run.ID, At: run.EndedAt, Type: "run_ended", Message: "failed"}); err != nil {
		t.Fatal(err)
	}
	r, err := report.FromStore(ctx, st, "synthetic")
	if err != nil {
		t.Fatal(err)
	}
	if r.Verdict != "failed" || len(r.KPIs) != 4 || r.KPIs[0].Status != "no data" || r.KPIs[0].Canary.Mean != nil || r.Traffic.Checked {
		t.Fatalf("report of a run without data: %+v", r.KPIs[0])
	}
	var b bytes.Buffer
	for _, f := range []func() error{
		func() error { return report.WriteJSON(&b, r) },
		func() error { return report.WriteHTML(&b, r) },
		func() error { return report.WriteMarkdown(&b, r, report.MarkdownOptions{ChartDir: t.TempDir()}) },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(b.String(), "NaN") {
		t.Error("NaN in a report")
	}
}
