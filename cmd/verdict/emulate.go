package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// emulateArgs are the parsed arguments of verdict emulate cloudflare.
type emulateArgs struct {
	listen     string
	dataListen string
	pools      []string
	token      string
	tokenSet   bool
	account    string
	save       string
	dataPool   string
	rateLimit  int
	rateWindow time.Duration
}

func newEmulateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "emulate",
		Short: "Run a local emulator of a traffic provider's API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf("emulate needs a provider: verdict emulate cloudflare")
		},
	}
	cmd.AddCommand(newEmulateCloudflareCmd(g))
	return cmd
}

func newEmulateCloudflareCmd(g *globals) *cobra.Command {
	var a emulateArgs
	cmd := &cobra.Command{
		Use:   "cloudflare --pool POOL.json",
		Short: "Serve a Cloudflare Load Balancing API emulator and a data plane that follows its weights",
		Long: `Serve Cloudflare's pool API (/client/v4/accounts/{account}/load_balancers/pools...) on
--listen with Cloudflare's envelope, Bearer-token auth, validation and rate limit, and a
data plane on --data-listen that forwards each request to an origin of the first pool
(or --data-pool) drawn at random by weight. Point Verdict at it with
CLOUDFLARE_BASE_URL, CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN.

Pools load from Cloudflare JSON (a pool, a GET envelope, or a list). An origin's address
may be an IP or hostname with "port", or, in the emulator only, an http:// URL.
Differences from Cloudflare: docs/cloudflare-emulator.md.`,
		Example: "  verdict emulate cloudflare --pool examples/pools/use1.json\n" +
			"  CLOUDFLARE_BASE_URL=http://127.0.0.1:8787/client/v4/ CLOUDFLARE_API_TOKEN=cfemu-token \\\n" +
			"    CLOUDFLARE_ACCOUNT_ID=" + cfemu.DefaultAccountID + " verdict drain eu-west --pool POOL_ID",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.tokenSet = cmd.Flags().Changed("token")
			return runEmulate(cmd.Context(), g, a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.listen, "listen", "127.0.0.1:8787", "address for the API")
	f.StringVar(&a.dataListen, "data-listen", "127.0.0.1:8788", `address for the data plane ("" to disable)`)
	f.StringArrayVar(&a.pools, "pool", nil, "pool file in Cloudflare JSON (repeatable; required)")
	f.StringVar(&a.token, "token", "", "API token to accept (default $"+traffic.EnvCloudflareToken+", else "+cfemu.DefaultToken+")")
	f.StringVar(&a.account, "account", cfemu.DefaultAccountID, "account ID whose pools are served")
	f.StringVar(&a.save, "save", "", "write the pools back to this file on exit")
	f.StringVar(&a.dataPool, "data-pool", "", "pool ID the data plane serves (default the first pool)")
	f.IntVar(&a.rateLimit, "rate-limit", 1200, "API requests allowed per --rate-window (-1 disables)")
	f.DurationVar(&a.rateWindow, "rate-window", 5*time.Minute, "rate-limit window; going over blocks the API for one window")
	return cmd
}

type emulatorStartedJSON struct {
	Type      string         `json:"type"`
	Version   int            `json:"version"`
	APIURL    string         `json:"api_url"`
	DataURL   string         `json:"data_url,omitempty"`
	AccountID string         `json:"account_id"`
	Pools     []emulatedJSON `json:"pools"`
}

type emulatedJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Origins int    `json:"origins"`
}

func runEmulate(ctx context.Context, g *globals, a emulateArgs) error {
	if len(a.pools) == 0 {
		return usageErrorf("--pool is required: a pool file in Cloudflare JSON")
	}
	if a.rateLimit == 0 {
		return usageErrorf("--rate-limit must be positive, or -1 to disable")
	}
	if a.rateWindow <= 0 {
		return usageErrorf("--rate-window must be positive")
	}
	tokenSource := "--token"
	if !a.tokenSet {
		if t := os.Getenv(traffic.EnvCloudflareToken); t != "" {
			a.token, tokenSource = t, "$"+traffic.EnvCloudflareToken
		} else {
			a.token, tokenSource = cfemu.DefaultToken, ""
		}
	}
	if a.token == "" {
		return usageErrorf("--token must not be empty")
	}
	emu := cfemu.New(cfemu.Options{
		Token: a.token, AccountID: a.account, DataPool: a.dataPool,
		RateLimit: a.rateLimit, RateWindow: a.rateWindow, Logger: g.log,
	})
	for _, path := range a.pools {
		if _, err := emu.LoadFile(path); err != nil {
			return usageErrorf("--pool %v", err)
		}
	}
	if a.dataPool != "" {
		if _, ok := emu.Pool(a.dataPool); !ok {
			return usageErrorf("--data-pool %q is not one of the loaded pools %v", a.dataPool, emu.PoolIDs())
		}
	}
	if err := emu.Start(a.listen, a.dataListen); err != nil {
		return withCode(exitError, err)
	}

	started := emulatorStartedJSON{Type: "emulator_started", Version: jsonVersion, APIURL: emu.APIURL(), DataURL: emu.DataURL(), AccountID: emu.AccountID()}
	for _, id := range emu.PoolIDs() {
		raw, _ := emu.Pool(id)
		p, err := traffic.DecodePool(raw)
		if err != nil {
			emu.Close()
			return withCode(exitError, fmt.Errorf("pool %s: %w", id, err))
		}
		started.Pools = append(started.Pools, emulatedJSON{ID: id, Name: p.Name, Origins: len(p.Origins)})
	}
	if g.json() {
		if err := writeJSON(g.stdout, started); err != nil {
			emu.Close()
			return withCode(exitError, err)
		}
	} else {
		w := g.stdout
		fmt.Fprintf(w, "Cloudflare emulator\n")
		fmt.Fprintf(w, "  API         %s\n", started.APIURL)
		if started.DataURL != "" {
			fmt.Fprintf(w, "  data plane  %s\n", started.DataURL)
		}
		fmt.Fprintf(w, "  account     %s\n", started.AccountID)
		if tokenSource == "" {
			fmt.Fprintf(w, "  token       %s (the default; pass --token to choose one)\n", cfemu.DefaultToken)
		} else {
			fmt.Fprintf(w, "  token       from %s\n", tokenSource)
		}
		for _, p := range started.Pools {
			fmt.Fprintf(w, "  pool        %s  %s (%d origins)\n", p.ID, p.Name, p.Origins)
		}
		fmt.Fprintf(w, "\nexport %s=%s %s=%s\n", traffic.EnvCloudflareBaseURL, started.APIURL, traffic.EnvCloudflareAccount, started.AccountID)
		fmt.Fprintf(w, "Serving until interrupted.\n")
	}

	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := emu.Shutdown(shutdownCtx)
	if a.save != "" {
		if serr := emu.SaveFile(a.save); serr != nil {
			return withCode(exitError, serr)
		}
		g.log.Info("pools saved", "file", a.save)
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("stop emulator: %w", err))
	}
	return nil
}
