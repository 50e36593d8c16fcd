package report

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/store"
)

// TestReportShowsTheWriteBack: the write-back of a promoted run's weights (the
// source_synced event) is in the JSON, Markdown and HTML reports: the branch, commit and
// pull request, or the error with how to retry.
func TestReportShowsTheWriteBack(t *testing.T) {
	for name, d := range map[string]engine.SourceSyncData{
		"pull request": {Source: "lb/use1.tf local.traffic_split.use1", Ending: "promote (keep)", Changes: 2, Branch: "verdict/run-1", Commit: "0123456789abcdef", Base: "main", Pushed: true,
			PullRequest: "https://github.com/acme/infra/pull/42", PRNumber: 42},
		"failed": {Source: "lb/use1.tf local.traffic_split.use1", Ending: "promote (keep)", Error: "git push: rejected"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, id := loadFixture(t, "promoted")
			run, err := st.Run(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(d)
			ev := store.Event{RunID: id, At: run.EndedAt, Type: engine.EventSourceSynced, Message: d.Summary(), Data: raw}
			if err := st.SaveRun(ctx, run, ev); err != nil {
				t.Fatal(err)
			}
			r, err := FromStore(ctx, st, id)
			if err != nil {
				t.Fatal(err)
			}
			s := r.SourceOfTruth
			if s == nil || s.Branch != d.Branch || s.PullRequest != d.PullRequest || s.Error != d.Error {
				t.Fatalf("report source of truth: %+v", s)
			}
			var md, html, js bytes.Buffer
			if err := WriteMarkdown(&md, r, MarkdownOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := WriteHTML(&html, r); err != nil {
				t.Fatal(err)
			}
			if err := WriteJSON(&js, r); err != nil {
				t.Fatal(err)
			}
			want := []string{"Source of truth", "verdict/run-1", "https://github.com/acme/infra/pull/42"}
			if d.Error != "" {
				want = []string{"Source of truth", "failed: git push: rejected", "verdict sync " + id}
			}
			for _, w := range want {
				if !strings.Contains(md.String(), w) {
					t.Errorf("Markdown lacks %q", w)
				}
				if !strings.Contains(html.String(), w) {
					t.Errorf("HTML lacks %q", w)
				}
			}
			if !strings.Contains(js.String(), `"sourceOfTruth"`) || !strings.Contains(js.String(), `"source": "lb/use1.tf local.traffic_split.use1"`) {
				t.Errorf("JSON lacks the source of truth")
			}
		})
	}
}
