package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/gitops"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// syncArgs are the parsed arguments of verdict sync.
type syncArgs struct {
	target     string // a run ID or an experiment file
	experiment string
	check      bool
	timeout    time.Duration
}

func newSyncCmd(g *globals) *cobra.Command {
	var a syncArgs
	cmd := &cobra.Command{
		Use:   "sync RUN-ID|EXPERIMENT-FILE",
		Short: "Write the pool's live weights into the experiment's declared source of truth",
		Long: `Sync reads the live pool through the experiment's provider and compares it with the weights
declared in spec.traffic.sourceOfTruth (a Terraform file or a YAML/JSON values file).

With --check it prints the difference the way terraform plan would (what applying the file
would do to the pool) and changes nothing: exit 0 when they agree, 6 when they disagree.
Run it in CI on the infrastructure repository after merges.

Without --check it writes the live weights into the file: in place, or with
sourceOfTruth.git as a commit on a new branch verdict/<run-id> pushed to the remote and,
with git.pullRequest, a GitHub pull request. For a RUN-ID the experiment is the stored run's
and the commit names the run and its verdict. Repeating it is harmless.

Exit status: 0 done or in sync, 1 the pool, Git or GitHub failed, 2 invalid input, 6 out of
sync (--check).`,
		Example: "  verdict sync --check examples/terraform.yaml\n  verdict sync 20261205-0930-karpenter",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.target = args[0]
			if a.timeout <= 0 {
				return usageErrorf("--timeout must be positive, not %s", a.timeout)
			}
			return runSync(cmd.Context(), g, a)
		},
	}
	cmd.Flags().BoolVar(&a.check, "check", false, "compare only; exit 6 when the file and the live pool disagree")
	cmd.Flags().StringVar(&a.experiment, "experiment", "", "the experiment of a multi-document file")
	cmd.Flags().DurationVar(&a.timeout, "timeout", 2*time.Minute, "longest the Git and GitHub work may take")
	return cmd
}

// syncJSON is the JSON view of verdict sync: type sync_check or sync_result.
type syncJSON struct {
	Type    string         `json:"type"`
	Version int            `json:"version"`
	Run     string         `json:"run,omitempty"`
	Source  string         `json:"source"`
	InSync  bool           `json:"inSync"`
	Plan    gitops.Plan    `json:"plan"`
	Result  *gitops.Result `json:"result,omitempty"`
}

func runSync(ctx context.Context, g *globals, a syncArgs) error {
	exp, run, err := syncTarget(ctx, g, a)
	if err != nil {
		return err
	}
	src, err := exp.Spec.Traffic.Source()
	if errors.Is(err, experiments.ErrNoSourceOfTruth) {
		return usageErrorf("experiment %s declares no spec.traffic.sourceOfTruth: nothing to sync (docs/gitops.md)", exp.Metadata.Name)
	}
	if err != nil {
		return withCode(exitInvalid, err)
	}
	steer, err := steererFor(ctx, g, exp)
	if err != nil {
		return err
	}
	pool, err := steer.Pool(ctx, exp.Spec.Traffic.PoolRef())
	if err != nil {
		return withCode(exitError, fmt.Errorf("read pool %s: %w", exp.Spec.Traffic.PoolRef(), err))
	}
	live := pool.Weights()
	if a.check {
		plan, err := gitops.Check(ctx, src, live)
		if err != nil && !errors.Is(err, gitops.ErrOutOfSync) {
			return withCode(exitInvalid, err)
		}
		if g.json() {
			if err := writeJSON(g.stdout, syncJSON{Type: "sync_check", Version: jsonVersion, Run: run.ID, Source: src.String(), InSync: plan.InSync(), Plan: plan}); err != nil {
				return withCode(exitError, err)
			}
		} else {
			printDrift(g.stdout, src, plan)
		}
		if !plan.InSync() {
			return silentExit(exitCheckFailed)
		}
		return nil
	}
	opts, err := exp.Spec.Traffic.SyncOptions(run)
	if err != nil {
		return withCode(exitInvalid, err)
	}
	opts.Logger = g.log
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	res, err := gitops.Sync(ctx, src, live, opts)
	if err != nil {
		code := exitError
		var se *gitops.SourceError
		if errors.As(err, &se) || errors.Is(err, gitops.ErrDirty) || errors.Is(err, gitops.ErrBranchConflict) {
			code = exitInvalid
		}
		return withCode(code, fmt.Errorf("sync %s: %w", src, err))
	}
	if g.json() {
		return withCode(exitError, writeJSON(g.stdout, syncJSON{Type: "sync_result", Version: jsonVersion, Run: run.ID, Source: src.String(), InSync: true, Plan: res.Plan, Result: &res}))
	}
	printSyncResult(g.stdout, src, res)
	return nil
}

// syncTarget loads the experiment: from the file when the argument is one, else from the
// stored run of that ID. The RunInfo names the run for commits and pull requests.
func syncTarget(ctx context.Context, g *globals, a syncArgs) (*experiments.Experiment, gitops.RunInfo, error) {
	if st, err := os.Stat(a.target); err == nil && !st.IsDir() {
		exp, err := loadExperiment(a.target, a.experiment)
		if err != nil {
			return nil, gitops.RunInfo{}, err
		}
		id := exp.Metadata.Name + "-sync-" + time.Now().UTC().Format("20060102-1504")
		return exp, gitops.RunInfo{ID: id, Verdict: "manual sync", Ending: "verdict sync " + a.target}, nil
	}
	st, err := openStore(ctx, g)
	if err != nil {
		return nil, gitops.RunInfo{}, err
	}
	defer st.Close()
	rec, err := st.Run(ctx, a.target)
	if errors.Is(err, store.ErrNotFound) {
		return nil, gitops.RunInfo{}, usageErrorf("%s is neither an experiment file nor a run in the store (verdict status --all lists runs)", a.target)
	}
	if err != nil {
		return nil, gitops.RunInfo{}, withCode(exitError, fmt.Errorf("read run %s: %w", a.target, err))
	}
	exp := &experiments.Experiment{}
	if err := json.Unmarshal(rec.Spec, exp); err != nil {
		return nil, gitops.RunInfo{}, withCode(exitError, fmt.Errorf("run %s: stored experiment: %w", rec.ID, err))
	}
	info := gitops.RunInfo{ID: rec.ID, Verdict: rec.Verdict, ReportURL: "verdict report " + rec.ID}
	if !rec.State.Terminal() {
		return nil, gitops.RunInfo{}, usageErrorf("run %s has not ended (%s): sync writes the weights a run leaves; wait for it to end", rec.ID, rec.State)
	}
	if rec.State == store.StatePromoted {
		info.Ending = "promote (" + exp.Spec.Traffic.OnPromote + ")"
	} else {
		info.Ending = string(rec.State)
	}
	return exp, info, nil
}

// printDrift prints a source of truth's comparison with the live pool as terraform plan
// shows it (what applying the file would do to the pool).
func printDrift(w io.Writer, src gitops.Source, plan gitops.Plan) {
	_ = plan.Render(w, gitops.ToPool)
}

func printSyncResult(w io.Writer, src gitops.Source, res gitops.Result) {
	s := safeText(src.String())
	switch {
	case res.Written:
		_ = res.Plan.Render(w, gitops.ToFile)
		fmt.Fprintf(w, "\nWrote the live weights into %s.\n", s)
	case res.Published != nil && res.Published.Changed:
		p := res.Published
		verb := "Pushed"
		if !p.Pushed {
			verb = "Branch already published:"
		}
		fmt.Fprintf(w, "%s branch %s (commit %s, based on %s) with the live weights for %s:\n\n", verb, safeText(p.Branch), shortHash(p.Commit), safeText(p.Base), s)
		_ = res.Plan.Render(w, gitops.ToFile)
		if pr := res.PullRequest; pr != nil {
			what := "Opened pull request"
			if pr.Existing {
				what = "Pull request already open"
			}
			fmt.Fprintf(w, "\n%s #%d: %s\n", what, pr.Number, safeText(pr.HTMLURL))
		}
	default:
		where := ""
		if res.Published != nil {
			where = " on " + safeText(res.Published.Base)
		}
		fmt.Fprintf(w, "%s already matches the live pool%s: nothing to write.\n", s, where)
	}
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// sourceDrift compares an experiment's declared source of truth with the pool, for plan
// and check. It returns nil without a source of truth.
type sourceDrift struct {
	Source string       `json:"source"`
	InSync bool         `json:"inSync"`
	Plan   *gitops.Plan `json:"plan,omitempty"`
	// Error is why the file could not be read or compared.
	Error string `json:"error,omitempty"`
	// Hints are the configuration that keeps an apply from reverting the experiment's
	// weights for its window.
	Hints []gitops.Snippet `json:"hints,omitempty"`
}

func compareSource(exp *experiments.Experiment, live traffic.Weights) *sourceDrift {
	if exp.Spec.Traffic.SourceOfTruth == nil {
		return nil
	}
	src, err := exp.Spec.Traffic.Source()
	out := &sourceDrift{Source: src.String()}
	if err != nil {
		out.Error = err.Error()
		return out
	}
	d, err := gitops.Read(src)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	p := gitops.Diff(d, live)
	out.Plan, out.InSync = &p, p.InSync()
	out.Hints = sourceHints(exp, src)
	return out
}

// sourceHints are the snippets that apply to the source: Terraform's lifecycle block for a
// pool resource, Argo CD's ignoreDifferences for a values file.
func sourceHints(exp *experiments.Experiment, src gitops.Source) []gitops.Snippet {
	if exp.Spec.Traffic.Provider() != experiments.ProviderCloudflare {
		return nil
	}
	if src.Terraform != nil {
		res := "cloudflare_load_balancer_pool.POOL"
		if e := src.Terraform.Expression; strings.HasPrefix(e, "cloudflare_load_balancer_pool.") {
			parts := strings.SplitN(e, ".", 3)
			res = parts[0] + "." + parts[1]
		} else if b, err := os.ReadFile(src.Path()); err == nil {
			// The weights feed a pool resource in the same file, as in the monday.com layout.
			if m := poolResource.FindSubmatch(b); m != nil {
				res = "cloudflare_load_balancer_pool." + string(m[1])
			}
		}
		return []gitops.Snippet{gitops.TerraformIgnoreChanges(res, 5)}
	}
	return []gitops.Snippet{gitops.ArgoCDIgnoreDifferences(gitops.ArgoCDTarget{})}
}

var poolResource = regexp.MustCompile(`resource\s+"cloudflare_load_balancer_pool"\s+"([A-Za-z0-9_-]+)"`)

// printSourceDrift prints the comparison for plan and check, with the hints once.
func printSourceDrift(w io.Writer, d *sourceDrift, accepted bool) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "\nSource of truth %s\n", safeText(d.Source))
	switch {
	case d.Error != "":
		fmt.Fprintf(w, "  ERROR: %s\n", safeText(d.Error))
		return
	case d.InSync:
		fmt.Fprintln(w, "  agrees with the live pool.")
	default:
		_ = d.Plan.Render(w, gitops.ToPool)
		if accepted {
			fmt.Fprintln(w, "  WARNING: accepted (--accept-drift or onMismatch: warn): the next apply moves traffic.")
		} else {
			fmt.Fprintln(w, "  ERROR: a run would end check_failed before any change: fix the file or the pool, run `verdict sync`, or accept it (sourceOfTruth.onMismatch: warn; check --accept-drift).")
		}
	}
	for _, h := range d.Hints {
		fmt.Fprintf(w, "\n  %s:\n", safeText(h.Title))
		for _, l := range strings.Split(strings.TrimRight(h.Text, "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
		if len(h.Caveats) > 0 {
			fmt.Fprintf(w, "  Note: %s\n", safeText(h.Caveats[0]))
		}
	}
}
