package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// loadExperiment loads one experiment from file; name picks one of a multi-document file.
func loadExperiment(file, name string) (*experiments.Experiment, error) {
	exps, err := experiments.LoadFile(file, experiments.LoadOptions{})
	if err != nil {
		return nil, withCode(exitInvalid, err)
	}
	if name == "" {
		if len(exps) > 1 {
			var names []string
			for _, e := range exps {
				names = append(names, e.Metadata.Name)
			}
			return nil, usageErrorf("%s holds %d experiments (%s): pick one with --experiment", file, len(exps), strings.Join(names, ", "))
		}
		return exps[0], nil
	}
	for _, e := range exps {
		if e.Metadata.Name == name {
			return e, nil
		}
	}
	return nil, usageErrorf("%s: no experiment named %q", file, name)
}

// metricsSource connects to the experiment's Prometheus with its auth and TLS settings.
func metricsSource(exp *experiments.Experiment) (*metrics.Source, error) {
	p := exp.Spec.Prometheus
	opts := metrics.Options{Address: p.Address, ClusterLabel: p.ClusterLabel, Timeout: p.Timeout.Std()}
	if a := p.Auth; a != nil {
		opts.BearerTokenFile = a.BearerTokenFile
		opts.Headers = a.Headers
		if b := a.Basic; b != nil {
			opts.BasicAuth = &metrics.BasicAuth{Username: b.Username, PasswordFile: b.PasswordFile}
		}
	}
	if t := p.TLS; t != nil {
		opts.TLSCAFile = t.CAFile
	}
	src, err := metrics.New(opts)
	if err != nil {
		return nil, withCode(exitInvalid, fmt.Errorf("prometheus: %w", err))
	}
	return src, nil
}

// steererFromEnv builds the Cloudflare steerer from CLOUDFLARE_* variables.
func steererFromEnv(g *globals) (*traffic.Cloudflare, error) {
	opts, err := traffic.CloudflareOptionsFromEnv(os.LookupEnv)
	if errors.Is(err, traffic.ErrNoCredentials) {
		return nil, usageErrorf("no Cloudflare credentials: set CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE), and CLOUDFLARE_BASE_URL for the emulator")
	}
	if err != nil {
		return nil, withCode(exitInvalid, err)
	}
	opts.Logger = g.log
	cf, err := traffic.NewCloudflare(opts)
	if err != nil {
		return nil, withCode(exitInvalid, err)
	}
	return cf, nil
}

// openStore opens the store --store (or VERDICT_STORE) names: a postgres:// URL for
// PostgreSQL shared with serve replicas, a directory for SQLite; empty means the state
// directory. The store returned implements store.Leaser.
func openStore(ctx context.Context, g *globals) (store.Store, error) {
	spec := g.store
	if spec == "" {
		dir, err := g.stateDir()
		if err != nil {
			return nil, withCode(exitError, err)
		}
		spec = dir
	}
	st, err := store.Open(ctx, spec)
	if err != nil {
		return nil, withCode(exitError, err)
	}
	return st, nil
}

// actor names the person behind a manual action: --who, else the login name.
func actor(who string) string {
	if who != "" {
		return who
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}
