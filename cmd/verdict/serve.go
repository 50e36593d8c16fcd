package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/server"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// serveArgs are the parsed arguments of verdict serve.
type serveArgs struct {
	dir        string
	listen     string
	tokenFile  string
	poll       time.Duration
	tick       time.Duration
	settle     time.Duration
	replica    string
	poolMaxAge time.Duration
	leaseTTL   time.Duration
	tokensFile string
	adopt      bool
	grace      time.Duration
}

func newServeCmd(g *globals) *cobra.Command {
	var a serveArgs
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "Run experiments from a directory as a service, with an API, a web dashboard and /metrics",
		Long: `Serve watches a directory of experiment files (a GitOps checkout). A new or changed valid
file starts its experiments, several at once (one per pool); a change to a running experiment
is refused and said; an invalid file runs nothing and its errors are shown; a removed file
leaves its runs running.

It serves the dashboard at /, the JSON API and event streams under /api/v1 (docs/api.yaml),
and Prometheus metrics at /metrics. On loopback no token is needed; on any other address a
bearer token is required (VERDICT_TOKEN or --token-file), or serve refuses to start.

SIGTERM or Ctrl-C stops stepping, persists every run and leaves the pools as they are; the
next 'verdict serve' on the same --state resumes the runs from this directory.

Several replicas can share one PostgreSQL database (--store postgres://... or VERDICT_STORE):
each unfinished run is driven by the one replica holding its lease, and another replica takes
it over within about --lease-ttl when that one dies. Every replica serves every run. See
docs/ha.md.

A run started elsewhere (verdict run, another directory) whose process died is listed as
orphaned in the API and dashboard, with how to finish it. With --adopt-orphans serve takes
such runs over from their stored spec once their lease has been expired for --orphan-grace
(so a 'verdict run --resume' right after a crash wins), and says so.

--tokens-file names tokens: each line is "NAME TOKEN"; an action made with a named token is
recorded as done by NAME, whatever who the client sends (kept only as "on behalf of").

Cloudflare credentials come from CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) and
CLOUDFLARE_BASE_URL, as for verdict run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, cmd, a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.dir, "dir", "", "directory of experiment files to watch (required)")
	f.StringVar(&a.listen, "listen", server.DefaultListen, "address to listen on; beyond loopback a token is required")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the API's bearer token (default: $VERDICT_TOKEN)")
	f.DurationVar(&a.poll, "poll", 2*time.Second, "how often the directory is scanned")
	f.DurationVar(&a.settle, "settle", 0, "how long after an interval ends its data counts as complete (scrape and federation lag) before the engine reads it, then re-reading it until its counts stop changing (default: per experiment, a quarter of its analysis interval, at most 15s)")
	f.DurationVar(&a.tick, "tick", 0, "how often runs step (default: per experiment, a sixth of its analysis interval, 1s–10s)")
	f.StringVar(&a.replica, "replica", "", "this replica's name in run leases (default: $VERDICT_REPLICA, else HOSTNAME-PID on PostgreSQL and HOSTNAME on SQLite)")
	f.DurationVar(&a.poolMaxAge, "pool-max-age", 10*time.Second, "runs on one Cloudflare account share one listing of its pools, at most this old, instead of one read per run per step (Cloudflare allows 1,200 calls per 5 minutes); 0 reads each pool directly")
	f.DurationVar(&a.leaseTTL, "lease-ttl", 30*time.Second, "how long a run's lease lasts without renewal: a dead replica's runs are taken over after about that long")
	f.StringVar(&a.tokensFile, "tokens-file", "", `file of named bearer tokens, one "NAME TOKEN" per line (# comments); actions made with one are recorded as done by NAME`)
	f.BoolVar(&a.adopt, "adopt-orphans", false, "take over unfinished runs started elsewhere (verdict run, a spec file anywhere or gone) once their lease has been expired for --orphan-grace, driving them from their stored spec")
	f.DurationVar(&a.grace, "orphan-grace", 0, "how long an orphaned run's lease must have been expired before --adopt-orphans takes it (default: --lease-ttl)")
	return cmd
}

// readTokens reads a --tokens-file: one "NAME TOKEN" per line, blank lines and # comments
// ignored.
func readTokens(file string) ([]server.NamedToken, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tokens-file: %w", err)
	}
	var out []server.NamedToken
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("--tokens-file %s line %d: want NAME TOKEN", file, i+1)
		}
		out = append(out, server.NamedToken{Name: fields[0], Secret: fields[1]})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--tokens-file %s holds no token", file)
	}
	return out, nil
}

// replicaName is this process's owner name in run leases: --replica (or VERDICT_REPLICA),
// else the hostname, with the pid when replicas share the store (two on one machine must
// differ). On SQLite one serve process holds the state directory at a time, so the plain
// hostname lets a restarted process take its runs back at once instead of waiting out the
// dead one's leases.
func replicaName(flag string, shared bool) string {
	if flag = strings.TrimSpace(flag); flag != "" {
		return flag
	}
	host := hostname()
	if !shared {
		return host
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func hostname() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "verdict"
	}
	return host
}

// serveToken reads the bearer token: --token-file, else VERDICT_TOKEN.
func serveToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("VERDICT_TOKEN")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return tok, nil
}

// serveLogger logs text on a terminal and JSON otherwise (to a log collector), at info
// unless --log-level says otherwise.
func serveLogger(g *globals, cmd *cobra.Command) *slog.Logger {
	lvl := slog.LevelInfo
	if cmd.Flags().Changed("log-level") || g.v.IsSet("log-level") {
		_ = lvl.UnmarshalText([]byte(g.logLevel))
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if isTerminal(g.stdio.err) {
		return slog.New(slog.NewTextHandler(g.stdio.err, opts))
	}
	return slog.New(slog.NewJSONHandler(g.stdio.err, opts))
}

func runServe(ctx context.Context, g *globals, cmd *cobra.Command, a serveArgs) error {
	if a.dir == "" {
		return usageErrorf("serve needs --dir: the directory of experiment files to run")
	}
	if fi, err := os.Stat(a.dir); err != nil || !fi.IsDir() {
		return usageErrorf("--dir %s is not a directory", a.dir)
	}
	token, err := serveToken(a.tokenFile)
	if err != nil {
		return withCode(exitInvalid, err)
	}
	tokens, err := readTokens(a.tokensFile)
	if err != nil {
		return withCode(exitInvalid, err)
	}
	if a.grace < 0 {
		return usageErrorf("--orphan-grace must not be negative")
	}
	log := serveLogger(g, cmd)
	tel := server.NewTelemetry()
	if a.poolMaxAge < 0 {
		return usageErrorf("--pool-max-age must not be negative")
	}
	// Cloudflare credentials are needed only by Cloudflare experiments (Route 53 ones use
	// the AWS credential chain); without them such an experiment fails to start, saying so.
	cfo, cfErr := traffic.CloudflareOptionsFromEnv(os.LookupEnv)
	if cfErr != nil && !errors.Is(cfErr, traffic.ErrNoCredentials) {
		return withCode(exitInvalid, cfErr)
	}
	var cache *traffic.PoolCache
	if cfErr == nil {
		cfo.HTTPClient = &http.Client{Transport: tel.CloudflareTransport(nil)}
		lo := cfo
		lo.Logger = log
		lister, err := traffic.NewCloudflare(lo)
		if err != nil {
			return withCode(exitInvalid, err)
		}
		cache = traffic.NewPoolCache(lister, traffic.PoolCacheOptions{MaxAge: a.poolMaxAge})
	} else {
		log.Warn("no Cloudflare credentials (CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE): Cloudflare experiments will not start")
	}
	// Each run gets its own client, whose log lines name the run; Cloudflare pool reads
	// are shared through the cache (one listing per account per --pool-max-age).
	steererFor := func(exp *experiments.Experiment, l *slog.Logger) (traffic.Steerer, error) {
		if exp.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
			r, err := route53FromEnv(ctx, g, exp)
			if r == nil || err != nil {
				return nil, err
			}
			return r, nil
		}
		if cache == nil {
			return nil, errors.New("no Cloudflare credentials: set CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) for serve, and CLOUDFLARE_BASE_URL for the emulator")
		}
		o := cfo
		o.Logger = l
		cf, err := traffic.NewCloudflare(o)
		if err != nil || a.poolMaxAge == 0 {
			return cf, err
		}
		return cache.Steerer(cf), nil
	}
	if a.leaseTTL <= 0 {
		return usageErrorf("--lease-ttl must be positive")
	}
	st, err := openStore(context.WithoutCancel(ctx), g)
	if err != nil {
		return err
	}
	defer st.Close()
	_, shared := st.(*store.Postgres)
	if sq, ok := st.(*store.SQLite); ok {
		unlock, err := lockFile(sq.Path() + ".serve.lock")
		if err != nil {
			return withCode(exitError, fmt.Errorf("%w: one verdict serve per state directory (use PostgreSQL, --store postgres://..., for several replicas)", err))
		}
		defer unlock()
	}
	srv, err := server.New(server.Options{Store: st, SteererFor: steererFor, Dir: a.dir, Poll: a.poll, Listen: a.listen, Token: token, Tokens: tokens,
		AdoptOrphans: a.adopt, OrphanGrace: a.grace,
		Tick: a.tick, Settle: a.settle, Telemetry: tel, Logger: log, Replica: replicaName(a.replica, shared), LeaseTTL: a.leaseTTL})
	if errors.Is(err, server.ErrTokenRequired) {
		return withCode(exitInvalid, err)
	}
	if err != nil {
		return withCode(exitInvalid, err)
	}
	if err := srv.Start(); err != nil {
		return withCode(exitError, err)
	}
	srv.StartDrills() // the drill files of --dir, on their schedules
	if g.json() {
		writeJSON(g.stdout, map[string]any{"type": "serving", "version": jsonVersion, "url": srv.URL(), "dir": a.dir, "auth": token != "" || len(tokens) > 0})
	} else {
		fmt.Fprintf(g.stdout, "Verdict is serving %s\n  dashboard  %s/\n  API        %s/api/v1/experiments\n  metrics    %s/metrics\nStop with Ctrl-C or SIGTERM: runs are persisted and pools left as they are.\n", a.dir, srv.URL(), srv.URL(), srv.URL())
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return withCode(exitError, err)
	}
	return nil
}
