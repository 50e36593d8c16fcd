package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/verdict-dev/verdict/server"
)

// globals are the flags every command shares, resolved with the precedence
// flag > VERDICT_* environment variable > config file > default.
type globals struct {
	output   string // text | json; report and analyze also md | html
	outFile  string // --out FILE of the commands that print a document
	logLevel string
	config   string
	state    string
	store    string

	v      *viper.Viper
	log    *slog.Logger
	stdio  *streams
	stdout io.Writer
}

func newRootCmd(s *streams) *cobra.Command {
	g := &globals{v: viper.New(), stdio: s, stdout: s.out}
	root := &cobra.Command{
		Use:   "verdict",
		Short: "Infrastructure A/B experiments across whole clusters",
		Long: `Verdict sends a slice of a load balancer pool's traffic to a canary cluster that runs a
variant of your infrastructure, compares it live against the other clusters, and promotes or
rolls back on its own.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Version:           version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return g.resolve(cmd) },
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", "", "config file (default $XDG_CONFIG_HOME/verdict/config.yaml if present)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json (report and analyze: text, md, html or json)")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	pf.StringVar(&g.state, "state", "", "state directory (default $XDG_STATE_HOME/verdict)")
	pf.StringVar(&g.store, "store", "", "where runs are kept: a directory (SQLite) or postgres://... shared with serve replicas (default: the state directory)")

	root.AddCommand(
		newValidateCmd(g),
		newPlanCmd(g),
		newCheckCmd(g),
		newSyncCmd(g),
		newRunCmd(g),
		newStatusCmd(g),
		newDrainCmd(g), newRestoreCmd(g), newEmulateCmd(g),
		newDemoCmd(g),
		newReportCmd(g), newAnalyzeCmd(g), newReplayCmd(g),
		newServeCmd(g), newWatchCmd(g),
		newVersionCmd(g),
		newCompletionCmd(),
	)
	root.AddCommand(newGetCmd(g), newListCmd(g), newRetryCmd(g))
	root.AddCommand(newActionCmds(g)...)
	root.AddCommand(newDrillCmds(g)...)
	for _, c := range root.Commands() {
		if documentCmds[c.Name()] {
			addOutFlag(c, g)
		}
	}
	return root
}

// documentCmds are the commands whose output is a document --out can write to a file;
// report and analyze have their own --out, which also places a Markdown report's charts.
var documentCmds = map[string]bool{
	"validate": true, "plan": true, "check": true, "status": true, "get": true, "list": true,
	"drain": true, "restore": true, "retry": true, "version": true,
	"pause": true, "resume": true, "promote": true, "abort": true,
}

// formatsAnnotation lists the -o values a command accepts beyond text and json.
const formatsAnnotation = "verdict/output-formats"

// addOutFlag gives cmd --out FILE: what it prints goes to FILE instead, written whole when
// the command ends (also when it ends in error, since a list of problems is a document
// too), through a temporary file so a reader never sees half of it.
func addOutFlag(cmd *cobra.Command, g *globals) {
	cmd.Flags().StringVar(&g.outFile, "out", "", "write the output to FILE instead of stdout (replacing FILE when the command ends)")
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if g.outFile == "" {
			return run(cmd, args)
		}
		var buf bytes.Buffer
		g.stdout = &buf
		err := run(cmd, args)
		g.stdout = g.stdio.out
		if werr := writeFileAtomic(g.outFile, buf.Bytes()); werr != nil {
			return errors.Join(err, withCode(exitError, fmt.Errorf("--out: %w", werr)))
		}
		return err
	}
}

// writeFileAtomic replaces path with data: readers see the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// resolve fills every flag the user did not set from VERDICT_* or the config file, then
// checks the global ones.
func (g *globals) resolve(cmd *cobra.Command) error {
	v := g.v
	v.SetEnvPrefix("VERDICT")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if g.config == "" {
		g.config = os.Getenv("VERDICT_CONFIG")
	}
	if g.config != "" {
		v.SetConfigFile(g.config)
		if err := v.ReadInConfig(); err != nil {
			return usageErrorf("couldn't load configuration (--config=%q): %v", g.config, err)
		}
	} else if dir, err := os.UserConfigDir(); err == nil {
		v.SetConfigFile(dir + "/verdict/config.yaml")
		if _, statErr := os.Stat(dir + "/verdict/config.yaml"); statErr == nil {
			if err := v.ReadInConfig(); err != nil {
				return usageErrorf("couldn't load configuration (%s): %v", dir+"/verdict/config.yaml", err)
			}
		}
	}
	var firstErr error
	apply := func(f *pflag.Flag) {
		// --out never comes from the environment or a config file: it would send every
		// command's output to one file.
		if f.Changed || firstErr != nil || f.Name == "config" || f.Name == "out" {
			return
		}
		if !v.IsSet(f.Name) {
			return
		}
		val := v.GetString(f.Name)
		if err := f.Value.Set(val); err != nil {
			firstErr = usageErrorf("invalid value %q for %s (from environment or config file): %v", val, f.Name, err)
		}
	}
	cmd.Flags().VisitAll(apply)
	cmd.InheritedFlags().VisitAll(apply)
	if firstErr != nil {
		return firstErr
	}

	formats := []string{"text", "json"}
	if extra := cmd.Annotations[formatsAnnotation]; extra != "" {
		formats = append(formats, strings.Split(extra, ",")...)
	}
	if !slices.Contains(formats, g.output) {
		hint := ""
		if looksLikePath(g.output) {
			hint = " (to write to a file, use --out FILE)"
		}
		return usageErrorf("--output must be %s, not %q%s", orList(formats), g.output, hint)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return usageErrorf("--log-level must be debug, info, warn or error, not %q", g.logLevel)
	}
	g.log = slog.New(slog.NewTextHandler(g.stdio.err, &slog.HandlerOptions{Level: lvl}))
	return nil
}

func (g *globals) json() bool { return g.output == "json" }

// orList is "a, b or c".
func orList(xs []string) string {
	if len(xs) < 2 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// looksLikePath says whether an -o value was meant as a file: it has a directory or an
// extension.
func looksLikePath(s string) bool {
	return strings.ContainsAny(s, `/\`) || filepath.Ext(s) != ""
}

// stateDir is where runs, drains and history live: --state, else $XDG_STATE_HOME/verdict,
// else ~/.local/state/verdict.
func (g *globals) stateDir() (string, error) {
	if g.state != "" {
		return g.state, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return d + "/verdict", nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: set --state or XDG_STATE_HOME: %w", err)
	}
	return home + "/.local/state/verdict", nil
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json() {
				return writeJSON(g.stdout, server.VersionInfo{TypeMeta: server.Meta(server.KindVersion), Version: version})
			}
			fmt.Fprintf(g.stdout, "verdict %s\n", version)
			return nil
		},
	}
}

func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:       "completion bash|zsh|fish|powershell",
		Short:     "Generate a shell completion script",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}
