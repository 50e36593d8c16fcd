package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/report"
	"github.com/verdict-dev/verdict/store"
)

// reportOutput is where and how a report is written; shared by report and analyze.
type reportOutput struct {
	format string // --format, the older spelling of -o md|html|json; resolve sets the format here
	file   string // "" means stdout
}

// reportFormats are the -o values of report and analyze beyond text and json; text is
// the human view, Markdown.
const reportFormats = "md,html"

// reportArgs are the parsed arguments of verdict report.
type reportArgs struct {
	run    string
	server string
	out    reportOutput
}

func newReportCmd(g *globals) *cobra.Command {
	var a reportArgs
	cmd := &cobra.Command{
		Use:   "report RUN-ID|EXPERIMENT [-o md|html|json] [--out FILE]",
		Short: "Write the post-hoc report of a run: verdict, timeline, charts and statistics",
		Long: `Report reads a run (or the latest run of an experiment) from the state directory and writes
what happened and why: the verdict and its reason, the steps and weights over time, every
decision, manual action, notification and fault, and per KPI a chart of the canary against each
baseline, the effect with its confidence sequence, the fixed-horizon tests (Welch, Mann-Whitney
with Hodges–Lehmann, exact binomial rate test; Holm-adjusted) and Kayenta's classification, the
noise model learned from the history before the variant (and so why each verdict took the time
it took), the traffic-share check and the preconditions. The evidence is rebuilt from the stored
observations through the engine's own evidence model, so it is exactly what the run decided on.

-o picks the format: text or md (Markdown, the default; with --out FILE.md the charts are
written next to it as FILE-*.svg), html (one self-contained page with inline SVG charts), json
(the stable schema of docs/report-json.md). --out FILE writes to FILE instead of stdout; without
-o the format follows FILE's extension. The older "-o FILE" still works, with a warning.

With --server URL the server renders the report from its store (Markdown then has tables and
no chart files).

Exit status: 0 written, 1 runtime error, 2 invalid input (unknown run, bad format).`,
		Args: cobra.ExactArgs(1),
		// The older "report -o FILE" is taken before the global flags are checked.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			takeOutputFile(cmd, g, &a.out)
			return g.resolve(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			a.run = args[0]
			return runReport(cmd, g, a)
		},
	}
	addReportOutputFlags(cmd, &a.out)
	addServerFlag(cmd, &a.server)
	return cmd
}

// addReportOutputFlags gives report and analyze -o md|html|json and --out FILE.
func addReportOutputFlags(cmd *cobra.Command, out *reportOutput) {
	cmd.Annotations = map[string]string{formatsAnnotation: reportFormats}
	cmd.Flags().StringVar(&out.format, "format", "", "report format: md, html or json (the older spelling of -o)")
	cmd.Flags().MarkHidden("format")
	cmd.Flags().StringVar(&out.file, "out", "", "write the report to FILE instead of stdout; a Markdown report's charts go next to it (format: -o, else FILE's extension, else md)")
}

// takeOutputFile keeps the older "-o FILE" working for one release: a value of -o that is
// not a format but looks like a path is taken as --out FILE, with a warning.
func takeOutputFile(cmd *cobra.Command, g *globals, out *reportOutput) {
	f := cmd.Flags().Lookup("output")
	if f == nil || !f.Changed {
		return
	}
	if g.output == "text" || g.output == "json" || slices.Contains(strings.Split(reportFormats, ","), g.output) || !looksLikePath(g.output) {
		return // a format, or a mistake that resolve names
	}
	fmt.Fprintf(g.stdio.err, "verdict: warning: -o FILE is deprecated and goes away in the next release: -o is the format (text, md, html or json); use --out %s\n", g.output)
	if out.file == "" {
		out.file = g.output
	}
	g.output = "text"
}

// resolve picks the format: --format, else -o unless it is text, else the file's
// extension, else Markdown.
func (o *reportOutput) resolve(g *globals) error {
	switch {
	case o.format != "":
	case g.output != "text":
		o.format = g.output
	default:
		switch strings.ToLower(filepath.Ext(o.file)) {
		case ".html", ".htm":
			o.format = "html"
		case ".json":
			o.format = "json"
		default:
			o.format = "md"
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
	if a.server != "" {
		return remoteReport(cmd, g, a)
	}
	st, err := openStore(ctx, g)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := report.FromStore(ctx, st, a.run)
	if errors.Is(err, store.ErrNotFound) {
		return usageErrorf("no run or experiment %q in the store (verdict list --all%s lists them)", safeText(a.run), storeFlags(g))
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("report of %s: %w", a.run, err))
	}
	return writeReport(g, rep, a.out)
}

// remoteReport has the server render the report, and writes it as writeReport does. A
// Markdown report from a server has tables and no chart files.
func remoteReport(cmd *cobra.Command, g *globals, a reportArgs) error {
	c, err := remoteClient(a.server)
	if err != nil {
		return err
	}
	body, err := c.Report(cmd.Context(), a.run, a.out.format)
	if err != nil {
		return remoteError("run or experiment "+a.run, err)
	}
	if a.out.file == "" {
		_, err := g.stdout.Write(body)
		return withCode(exitError, err)
	}
	if err := writeFileAtomic(a.out.file, body); err != nil {
		return withCode(exitError, fmt.Errorf("write the report: %w", err))
	}
	if !g.json() {
		fmt.Fprintf(g.stdout, "Wrote %s (%s report of run %s, from %s)\n", a.out.file, a.out.format, a.run, a.server)
	}
	return nil
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
	if err := writeFileAtomic(o.file, buf.Bytes()); err != nil {
		return withCode(exitError, fmt.Errorf("write the report: %w", err))
	}
	// With -o json the document is the file: stdout stays empty for scripts.
	if !g.json() {
		fmt.Fprintf(g.stdout, "Wrote %s (%s report, verdict %s)\n", o.file, o.format, rep.Verdict)
	}
	return nil
}
