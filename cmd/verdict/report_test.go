package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/report/reporttest"
	"github.com/verdict-dev/verdict/store"
)

// reportState writes a synthetic finished run into a fresh state directory.
func reportState(t *testing.T) (dir, id string) {
	t.Helper()
	dir = t.TempDir()
	st, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, err = reporttest.Record(context.Background(), st, reporttest.Options{Intervals: 30, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

func TestReportCommand(t *testing.T) {
	state, id := reportState(t)
	out := t.TempDir()

	t.Run("json to stdout", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "--state", state, "report", id, "--format", "json")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var r struct {
			SchemaVersion int    `json:"schemaVersion"`
			Verdict       string `json:"verdict"`
			Clusters      struct {
				Canary string `json:"canary"`
			} `json:"clusters"`
			KPIs []struct {
				Name  string `json:"name"`
				Tests []struct {
					Method string `json:"method"`
				} `json:"tests"`
			} `json:"kpis"`
		}
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, stdout)
		}
		if r.SchemaVersion != 1 || r.Verdict != "promoted" || r.Clusters.Canary != "c1" || len(r.KPIs) != 4 || len(r.KPIs[0].Tests) == 0 {
			t.Errorf("report %+v", r)
		}
	})
	t.Run("--output json means a JSON report", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "--state", state, "--output", "json", "report", "synthetic")
		if code != exitOK || !strings.HasPrefix(stdout, "{") {
			t.Fatalf("exit %d: %s\n%.200s", code, stderr, stdout)
		}
	})
	t.Run("--out FILE.html picks HTML", func(t *testing.T) {
		file := filepath.Join(out, "run.html")
		code, stdout, stderr := runCLI(t, "--state", state, "report", id, "--out", file)
		if code != exitOK || stderr != "" {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, "Wrote "+file+" (html report, verdict promoted)") {
			t.Errorf("stdout %q", stdout)
		}
		b, err := os.ReadFile(file)
		if err != nil || !strings.HasPrefix(string(b), "<!DOCTYPE html>") || strings.Count(string(b), `class="chart chart-values"`) != 4 {
			t.Errorf("html file: %v %.100s", err, b)
		}
	})
	t.Run("markdown with charts beside it", func(t *testing.T) {
		file := filepath.Join(out, "run.md")
		code, _, stderr := runCLI(t, "--state", state, "report", "synthetic", "--out", file)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		md, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(md), "](run-error-rate-values.svg)") {
			t.Errorf("markdown does not link its charts:\n%.600s", md)
		}
		svg, err := os.ReadFile(filepath.Join(out, "run-error-rate-values.svg"))
		if err != nil || !strings.HasPrefix(string(svg), "<svg") {
			t.Errorf("chart file: %v", err)
		}
	})
	t.Run("markdown to stdout has tables, no images", func(t *testing.T) {
		code, stdout, _ := runCLI(t, "--state", state, "report", id)
		if code != exitOK || !strings.HasPrefix(stdout, "# Verdict report: synthetic — PROMOTED") || strings.Contains(stdout, "![") {
			t.Errorf("exit %d\n%.300s", code, stdout)
		}
	})
	t.Run("the older -o FILE still works, with a warning", func(t *testing.T) {
		file := filepath.Join(out, "old.html")
		code, stdout, stderr := runCLI(t, "--state", state, "report", id, "-o", file)
		if code != exitOK || !strings.Contains(stdout, "Wrote "+file+" (html report") || !strings.Contains(stderr, "-o FILE is deprecated") || !strings.Contains(stderr, "--out "+file) {
			t.Fatalf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
		}
		if b, err := os.ReadFile(file); err != nil || !strings.HasPrefix(string(b), "<!DOCTYPE html>") {
			t.Errorf("html file: %v %.100s", err, b)
		}
	})
	t.Run("-o picks the format, --out the file", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "--state", state, "report", id, "-o", "html")
		if code != exitOK || !strings.HasPrefix(stdout, "<!DOCTYPE html>") || stderr != "" {
			t.Fatalf("-o html: exit %d %q %.100s", code, stderr, stdout)
		}
		file := filepath.Join(out, "report.txt")
		code, stdout, stderr = runCLI(t, "--state", state, "report", id, "-o", "json", "--out", file)
		b, err := os.ReadFile(file)
		if code != exitOK || stdout != "" || err != nil || !strings.HasPrefix(string(b), "{") {
			t.Fatalf("-o json --out FILE: exit %d, stdout %q, stderr %q, file %v %.50s", code, stdout, stderr, err, b)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown run", []string{"report", "no-such-run"}, exitInvalid, `no run or experiment "no-such-run" in the store`},
		{"bad -o", []string{"report", id, "-o", "pdf"}, exitInvalid, `--output must be text, json, md or html, not "pdf"`},
		{"-o with a file name is not a format elsewhere", []string{"status", "-o", "out.json"}, exitInvalid, `--output must be text or json, not "out.json" (to write to a file, use --out FILE)`},
		{"bad format", []string{"report", id, "--format", "pdf"}, exitInvalid, `--format must be md, html or json, not "pdf"`},
		{"no argument", []string{"report"}, exitInvalid, "accepts 1 arg"},
		{"unwritable file", []string{"report", id, "--out", filepath.Join(out, "missing", "r.html")}, exitError, "write the report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, append([]string{"--state", state}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q, want %q", code, tc.code, stderr, tc.want)
			}
		})
	}
}
