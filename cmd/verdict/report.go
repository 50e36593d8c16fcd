package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/store"
)

// reportOutput is where and how a report is written; shared by report and analyze.
type reportOutput struct {
	format string // md, html or json; "" picks from the file's extension, else md
	file   string // "" means stdout
}

// reportArgs are the parsed arguments of verdict report.
type reportArgs struct {
	run string
	out reportOutput
}

func newReportCmd(g *globals) *cobra.Command {
	var a reportArgs
	cmd := &cobra.Command{
		Use:   "report RUN-ID|EXPERIMENT [--format md|html|json] [-o FILE]",
		Short: "Write the post-hoc report of a run: verdict, timeline, charts and statistics",
		Long: `Report reads a run (or the latest run of an experiment) from the state directory and writes
what happened and why: the verdict and its reason, the steps and weights over time, every
decision, manual action, notification and fault, and per KPI a chart of the canary against each
baseline, the effect with its confidence sequence, the fixed-horizon tests (Welch, Mann-Whitney
with Hodges–Lehmann, exact binomial rate test; Holm-adjusted) and Kayenta's classification, the
noise model learned from the history before the variant (and so why each verdict took the time
it took), the traffic-share check and the preconditions. The evidence is rebuilt from the stored
observations through the engine's own evidence model, so it is exactly what the run decided on.

Formats: html (one self-contained page with inline SVG charts), md (Markdown; with -o FILE.md the
charts are written next to it as FILE-*.svg), json (the stable schema of docs/report-json.md).
Without --format the format follows the file's extension, else md (json with --output json).

-o FILE writes to FILE instead of stdout (-o text and -o json keep their global meaning).

Exit status: 0 written, 1 runtime error, 2 invalid input (unknown run, bad format).`,
		Args: cobra.ExactArgs(1),
		// -o is the global --output (text|json) shorthand; the CLI contract also documents
		// "report -o FILE". Any value other than text or json is taken as the file.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			takeOutputFile(cmd, g, &a.out)
			return g.resolve(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run = args[0]
			return runReport(cmd, g, a)
		},
	}
	cmd.Flags().StringVar(&a.out.format, "format", "", "report format: md, html or json")
	cmd.Flags().StringVar(&a.out.file, "out", "", "write the report to this file instead of stdout (same as -o FILE)")
	return cmd
}

// takeOutputFile reinterprets -o/--output FILE as the report's output file.
func takeOutputFile(cmd *cobra.Command, g *globals, out *reportOutput) {
	f := cmd.Flags().Lookup("output")
	if f == nil || !f.Changed {
		return
	}
	if g.output != "text" && g.output != "json" {
		if out.file == "" {
			out.file = g.output
		}
		g.output = "text"
	}
}

// resolve picks the format and checks it.
func (o *reportOutput) resolve(g *globals) error {
	if o.format == "" {
		switch strings.ToLower(filepath.Ext(o.file)) {
		case ".html", ".htm":
			o.format = "html"
		case ".json":
			o.format = "json"
		case ".md", ".markdown":
			o.format = "md"
		default:
			o.format = "md"
			if g.json() {
				o.format = "json"
			}
		}
	}
	switch o.format {
	case "md", "markdown":
		o.format = "md"
	case "html", "json":
	default:
		return usageErrorf("--format must be md, html or json, not %q", o.format)
	}
	return nil
}

func runReport(cmd *cobra.Command, g *globals, a reportArgs) error {
	if err := a.out.resolve(g); err != nil {
		return err
	}
	ctx := cmd.Context()
	st, err := openStore(ctx, g)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := report.FromStore(ctx, st, a.run)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store (verdict status --all lists them)", a.run)
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("report of %s: %w", a.run, err))
	}
	return writeReport(g, rep, a.out)
}

// writeReport renders rep to the file or stdout; with a file it says what it wrote.
func writeReport(g *globals, rep *report.Report, o reportOutput) error {
	var buf bytes.Buffer
	var err error
	switch o.format {
	case "html":
		err = report.WriteHTML(&buf, rep)
	case "json":
		err = report.WriteJSON(&buf, rep)
	default:
		mo := report.MarkdownOptions{}
		if o.file != "" {
			mo.ChartDir = filepath.Dir(o.file)
			mo.ChartPrefix = strings.TrimSuffix(filepath.Base(o.file), filepath.Ext(o.file))
		}
		err = report.WriteMarkdown(&buf, rep, mo)
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("render the %s report: %w", o.format, err))
	}
	if o.file == "" {
		_, err := io.Copy(g.stdout, &buf)
		return withCode(exitError, err)
	}
	if err := os.WriteFile(o.file, buf.Bytes(), 0o644); err != nil {
		return withCode(exitError, fmt.Errorf("write the report: %w", err))
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{"type": "report_written", "version": jsonVersion, "file": o.file, "format": o.format,
			"kind": rep.Kind, "verdict": rep.Verdict})
	}
	fmt.Fprintf(g.stdout, "Wrote %s (%s report, verdict %s)\n", o.file, o.format, rep.Verdict)
	return nil
}
