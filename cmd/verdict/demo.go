package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/metrics"
	"github.com/verdict-dev/verdict/sim"
	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// demoOutcome is one scenario's result, for the closing summary.
type demoOutcome struct {
	Scenario string        `json:"scenario"`
	Expect   string        `json:"expect"`
	Run      string        `json:"run"`
	State    string        `json:"state"`
	Verdict  string        `json:"verdict"`
	Reason   string        `json:"reason"`
	Decided  time.Duration `json:"decidedAfter"`
	AsExpect bool          `json:"asExpected"`
}

// demoScenarios is what verdict demo runs without --scenario: a regression that must be
// rolled back, then a good variant that must be promoted.
var demoScenarios = []string{"regression", "good"}

// demoDNS is the --scenario that runs demoScenarios behind Route 53 weighted records in
// moto_server instead of the emulated Cloudflare pool.
const demoDNS = "dns"

// dnsPrefix names one scenario behind Route 53: "dns-good".
const dnsPrefix = "dns-"

// demoScenarioSet resolves demo scenario names: built-in names and files as
// sim.LoadScenario takes them, "dns" for the default pair behind Route 53, and "dns-NAME"
// for one built-in scenario behind Route 53. It reports whether any needs moto_server.
func demoScenarioSet(names []string) (scs []*sim.Scenario, dns bool, err error) {
	for _, name := range names {
		var expand []string
		switch {
		case name == demoDNS:
			for _, n := range demoScenarios {
				expand = append(expand, dnsPrefix+n)
			}
		default:
			expand = []string{name}
		}
		for _, n := range expand {
			base, isDNS := n, false
			if b, ok := strings.CutPrefix(n, dnsPrefix); ok && !strings.ContainsAny(n, "/.") {
				base, isDNS = b, true
			}
			sc, err := sim.LoadScenario(base)
			if err != nil {
				return nil, false, err
			}
			if isDNS {
				if sc, err = sim.DNSScenario(sc); err != nil {
					return nil, false, err
				}
				dns = true
			}
			scs = append(scs, sc)
		}
	}
	return scs, dns, nil
}

// startMoto starts the Route 53 emulator for the dns scenarios, saying what to install
// when it is missing, and returns it with the function that stops it. A variable, so that
// a test can hand the demo a server it keeps to inspect afterwards.
var startMoto = func(ctx context.Context) (*motoserver.Server, func(), error) {
	m, err := motoserver.Run(ctx)
	if errors.Is(err, motoserver.ErrNotInstalled) {
		return nil, nil, withCode(exitError, fmt.Errorf("the dns scenarios need moto_server, the Route 53 emulator of the Python package moto, on PATH: install it with %s (the other scenarios need nothing)", motoserver.Install))
	}
	if err != nil {
		return nil, nil, withCode(exitError, fmt.Errorf("start moto_server for the dns scenarios: %w", err))
	}
	return m, func() { m.Close() }, nil
}

// runDemo runs each scenario on a fresh simulated fleet, end to end, with the live view.
func runDemo(ctx context.Context, g *globals, names []string, rate float64, noUI bool) error {
	scs, needMoto, err := demoScenarioSet(names)
	if err != nil {
		return usageErrorf("%v", err)
	}
	var moto *motoserver.Server
	if needMoto {
		var stop func()
		if moto, stop, err = startMoto(ctx); err != nil {
			return err
		}
		defer stop()
	}
	dir, err := g.stateDir()
	if err != nil {
		return withCode(exitError, err)
	}
	stateDir := filepath.Join(dir, "demo")
	st, err := store.OpenSQLite(ctx, stateDir)
	if err != nil {
		return withCode(exitError, err)
	}
	defer st.Close()
	var outcomes []demoOutcome
	for i, sc := range scs {
		if ctx.Err() != nil {
			break
		}
		var m *motoserver.Server
		if strings.HasPrefix(sc.Name, dnsPrefix) {
			m = moto
		}
		out, err := demoScenario(ctx, g, st, sc, m, rate, noUI, fmt.Sprintf("Verdict demo %d/%d", i+1, len(scs)))
		if err != nil {
			return err
		}
		outcomes = append(outcomes, out)
	}
	allGood := len(outcomes) == len(scs)
	if g.json() || noUI {
		for _, o := range outcomes {
			writeJSON(g.stdout, map[string]any{"type": "demo_result", "version": jsonVersion, "result": o})
		}
	} else {
		fmt.Fprintln(g.stdout, "\nDemo summary")
		tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SCENARIO\tEXPECTED\tVERDICT\tDECIDED AFTER\tRUN")
		for _, o := range outcomes {
			mark := "as expected"
			if !o.AsExpect {
				mark = "NOT as expected"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s (%s)\t%s\t%s\n", o.Scenario, o.Expect, o.Verdict, mark, o.Decided.Truncate(time.Second), o.Run)
		}
		tw.Flush()
		fmt.Fprintf(g.stdout, "\nState: %s\nDetails: verdict --state %s status RUN-ID   Report: verdict --state %s report RUN-ID\n", st.Path(), stateDir, stateDir)
	}
	for _, o := range outcomes {
		allGood = allGood && o.AsExpect
	}
	if !allGood {
		return &exitErr{code: exitError, silent: true}
	}
	return nil
}

// demoScenario runs one scenario; with moto, behind Route 53 weighted records there.
func demoScenario(ctx context.Context, g *globals, st store.Store, sc *sim.Scenario, moto *motoserver.Server, rate float64, noUI bool, title string) (demoOutcome, error) {
	name := sc.Name
	opts := sim.Options{Scenario: sc, Rate: rate, Logger: g.log}
	if moto != nil {
		opts.DNS = &sim.DNSOptions{Endpoint: moto.URL}
	}
	fleet, err := sim.Start(opts)
	if err != nil {
		return demoOutcome{}, withCode(exitError, fmt.Errorf("start the simulated fleet: %w", err))
	}
	defer fleet.Close()
	// Give Prometheus its first samples before preflight reads them.
	if err := fleet.Scrape(ctx); err != nil {
		return demoOutcome{}, withCode(exitError, fmt.Errorf("first scrape of the fleet: %w", err))
	}
	exps, err := experiments.LoadFile(fleet.ExperimentFile(), experiments.LoadOptions{})
	if err != nil {
		return demoOutcome{}, withCode(exitError, fmt.Errorf("scenario %s: %w", name, err))
	}
	exp := exps[0]
	var steer traffic.Steerer
	where := "the emulated Cloudflare pool " + fleet.PoolID()
	if moto != nil {
		steer, err = route53.New(ctx, route53.Options{Endpoint: moto.URL, Region: motoserver.Region, Credentials: motoserver.Credentials,
			CallTimeout: 5 * time.Second, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, SyncPoll: 100 * time.Millisecond, SyncTimeout: 30 * time.Second, Logger: g.log})
		where = fmt.Sprintf("the Route 53 weighted record set %s A in hosted zone %s (moto_server %s)", fleet.RecordName(), fleet.HostedZoneID(), moto.URL)
	} else {
		steer, err = traffic.NewCloudflare(traffic.CloudflareOptions{Token: fleet.Token(), AccountID: fleet.AccountID(), BaseURL: fleet.CloudflareBaseURL(),
			CallTimeout: 5 * time.Second, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, MaxRateLimitWait: 5 * time.Second, Logger: g.log})
	}
	if err != nil {
		return demoOutcome{}, withCode(exitError, err)
	}
	src, err := metrics.New(metrics.Options{Address: fleet.PrometheusURL(), Timeout: 3 * time.Second, MaxAttempts: 2, RetryBackoff: 200 * time.Millisecond, Logger: g.log})
	if err != nil {
		return demoOutcome{}, withCode(exitError, err)
	}
	defer src.Close()

	banner := fmt.Sprintf("%s — scenario %q: %s\nExpected: %s. Fleet: %d clusters behind %s, Prometheus %s",
		title, sc.Name, sc.Description, sc.Expect, len(fleet.Clusters()), where, fleet.PrometheusURL())
	if !noUI && !g.json() && !isTerminal(g.stdout) {
		fmt.Fprintln(g.stdout, banner)
	}
	settle := time.Duration(sc.ScrapeInterval)*2 + 500*time.Millisecond
	setup := runSetup{exp: exp, file: fleet.ExperimentFile(), tick: time.Second, noUI: noUI, banner: banner,
		opts: engine.Options{Store: st, Steerer: steer, Metrics: src, Logger: g.log, Settle: settle, Who: "verdict demo"}}
	started := time.Now()
	var rec store.Run
	setup.onEnd = func(r store.Run) { rec = r }
	err = driveRun(ctx, g, setup)
	if code := exitCodeOf(err); code == exitError || code == exitInvalid {
		return demoOutcome{}, err
	}
	out := demoOutcome{Scenario: sc.Name, Expect: sc.Expect, Run: rec.ID, State: string(rec.State), Verdict: rec.Verdict, Reason: rec.Reason, Decided: rec.EndedAt.Sub(started)}
	switch sc.Expect {
	case "promote":
		out.AsExpect = rec.State == store.StatePromoted
	case "rollback":
		out.AsExpect = rec.State == store.StateRolledBack
	case "inconclusive":
		out.AsExpect = rec.Verdict == engine.VerdictInconclusive
	default:
		out.AsExpect = rec.State != store.StatePromoted
	}
	if !noUI && !g.json() {
		fmt.Fprintf(g.stdout, "\n%s\n", strings.Repeat("─", 72))
	}
	return out, nil
}

func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	if ee, ok := err.(*exitErr); ok {
		return ee.code
	}
	return exitError
}
