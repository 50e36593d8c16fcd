package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/sim"
)

// demoArgs are the parsed arguments of verdict demo.
type demoArgs struct {
	fleetOnly bool
	scenario  string
	list      bool
	rate      float64
	noUI      bool
}

func newDemoCmd(g *globals) *cobra.Command {
	var a demoArgs
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run an experiment against a simulated fleet on this machine",
		Long: `Demo starts a playground on loopback: simulated clusters (real HTTP servers with
latency and error profiles, instrumented with client_golang), a Cloudflare API emulator whose
data plane forwards a load generator's requests to them by weight, and an embedded Prometheus
scraping them with a cluster label. No Cloudflare account and no Kubernetes are needed.

Without flags it runs two experiments end to end with the live view, steps compressed to
seconds: a regression that Verdict must roll back, then a good variant it must promote. It
exits 0 when both end as expected. State goes to <state>/demo: inspect a run with
'verdict --state <state>/demo status RUN-ID' or 'report RUN-ID'.

With --fleet-only it prints the environment, the Prometheus address and an experiment file
that works against the fleet, and serves until interrupted, so that verdict validate, check,
plan and run can be pointed at it from another shell.

Scenarios (--list): good, regression, latency-only, outage, no-traffic-honour, or a path to a
scenario file. --scenario dns runs regression and good behind Route 53 weighted records in
moto_server (the Python moto package's AWS emulator, which must be installed) instead of the
Cloudflare emulator; dns-NAME runs one built-in scenario that way.`,
		Example: "  verdict demo --fleet-only --scenario regression\n  verdict demo --scenario dns\n  verdict demo --list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.list {
				return runDemoList(g)
			}
			if a.fleetOnly {
				return runFleetOnlyContext(cmd.Context(), g, a)
			}
			names := demoScenarios
			if cmd.Flags().Changed("scenario") {
				names = []string{a.scenario}
			}
			return runDemo(cmd.Context(), g, names, a.rate, a.noUI)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&a.fleetOnly, "fleet-only", false, "start the simulated fleet and serve it until interrupted, without running an experiment")
	f.StringVar(&a.scenario, "scenario", "regression", "scenario name (see --list) or scenario file; without it the demo runs regression, then good")
	f.BoolVar(&a.noUI, "no-ui", false, "print JSON events instead of the live view")
	f.BoolVar(&a.list, "list", false, "list the built-in scenarios")
	f.Float64Var(&a.rate, "rate", 0, "mean requests per second through the load balancer (default: the scenario's)")
	return cmd
}

// runFleetOnly serves the fleet of a scenario until SIGINT or SIGTERM.
func runFleetOnly(g *globals, scenario string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runFleetOnlyContext(ctx, g, demoArgs{fleetOnly: true, scenario: scenario})
}

type scenarioJSON struct {
	Type        string `json:"type"`
	Version     int    `json:"version"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Expect      string `json:"expect"`
}

func runDemoList(g *globals) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	for _, name := range sim.ScenarioNames() {
		sc, err := sim.LoadScenario(name)
		if err != nil {
			return withCode(exitError, err)
		}
		if g.json() {
			if err := writeJSON(g.stdout, scenarioJSON{Type: "scenario", Version: jsonVersion, Name: sc.Name, Description: sc.Description, Expect: sc.Expect}); err != nil {
				return withCode(exitError, err)
			}
			continue
		}
		fmt.Fprintf(tw, "%s\texpect %s\t%s\n", sc.Name, sc.Expect, sc.Description)
	}
	const dnsDescription = "regression, then good, steered by Route 53 weighted records in moto_server (needs Python moto; dns-good, dns-regression, … run one)"
	if g.json() {
		return writeJSON(g.stdout, scenarioJSON{Type: "scenario", Version: jsonVersion, Name: demoDNS, Description: dnsDescription, Expect: "rollback, promote"})
	}
	fmt.Fprintf(tw, "%s\texpect rollback, promote\t%s\n", demoDNS, dnsDescription)
	if !g.json() {
		return tw.Flush()
	}
	return nil
}

// fleetStartedJSON is the first message of verdict demo --fleet-only -o json.
type fleetStartedJSON struct {
	Type           string            `json:"type"`
	Version        int               `json:"version"`
	Scenario       string            `json:"scenario"`
	Description    string            `json:"description"`
	Expect         string            `json:"expect"`
	Env            map[string]string `json:"env"`
	PrometheusURL  string            `json:"prometheus_url"`
	PoolID         string            `json:"pool_id"`
	DataURL        string            `json:"data_url"`
	ExperimentFile string            `json:"experiment_file"`
	PoolFile       string            `json:"pool_file"`
	Rate           float64           `json:"rate"`
	Clusters       []sim.ClusterInfo `json:"clusters"`
}

// fleetEventJSON reports something the fleet did on its own (the trigger, an outage).
type fleetEventJSON struct {
	Type    string  `json:"type"`
	Version int     `json:"version"`
	Elapsed float64 `json:"elapsed_seconds"`
	What    string  `json:"what"`
}

// fleetStoppedJSON is the last message: what the load generator sent.
type fleetStoppedJSON struct {
	Type      string           `json:"type"`
	Version   int              `json:"version"`
	Elapsed   float64          `json:"elapsed_seconds"`
	Requests  int64            `json:"requests"`
	ByCluster map[string]int64 `json:"by_cluster"`
	Errors    int64            `json:"server_errors"`
}

// runFleetOnlyContext starts the fleet, prints how to reach it and serves until ctx ends.
func runFleetOnlyContext(ctx context.Context, g *globals, a demoArgs) error {
	if a.rate < 0 {
		return usageErrorf("--rate must be positive")
	}
	scs, needMoto, err := demoScenarioSet([]string{a.scenario})
	if err != nil {
		return usageErrorf("--scenario: %v", err)
	}
	sc := scs[0] // "dns" serves the first of its pair
	var dns *sim.DNSOptions
	if needMoto {
		moto, stopMoto, err := startMoto(ctx)
		if err != nil {
			return err
		}
		defer stopMoto()
		dns = &sim.DNSOptions{Endpoint: moto.URL}
	}
	var mu sync.Mutex // OnNotice runs on the fleet's goroutine
	f, err := sim.Start(sim.Options{
		Scenario: sc,
		Rate:     a.rate,
		Logger:   g.log,
		DNS:      dns,
		OnNotice: func(n sim.Notice) {
			mu.Lock()
			defer mu.Unlock()
			if g.json() {
				_ = writeJSON(g.stdout, fleetEventJSON{Type: "fleet_event", Version: jsonVersion, Elapsed: n.Elapsed.Seconds(), What: n.What})
				return
			}
			fmt.Fprintf(g.stdout, "[+%s] %s\n", n.Elapsed.Round(time.Second), n.What)
		},
	})
	if err != nil {
		return withCode(exitError, fmt.Errorf("start the demo fleet: %w", err))
	}
	mu.Lock()
	err = printFleet(g, f)
	mu.Unlock()
	if err != nil {
		f.Close()
		return withCode(exitError, err)
	}

	<-ctx.Done()
	st := f.Stats()
	if err := f.Close(); err != nil {
		return withCode(exitError, fmt.Errorf("stop the demo fleet: %w", err))
	}
	var serverErrors int64
	for code, n := range st.ByStatus {
		if code >= 500 {
			serverErrors += n
		}
	}
	if g.json() {
		return writeJSON(g.stdout, fleetStoppedJSON{Type: "fleet_stopped", Version: jsonVersion, Elapsed: st.Elapsed.Seconds(), Requests: st.Completed, ByCluster: st.ByCluster, Errors: serverErrors})
	}
	fmt.Fprintf(g.stdout, "Stopped after %s: %d requests answered, %d server errors.\n", st.Elapsed.Round(time.Second), st.Completed, serverErrors)
	return nil
}

func printFleet(g *globals, f *sim.Fleet) error {
	sc := f.Scenario()
	if g.json() {
		env := map[string]string{}
		for _, kv := range f.Env() {
			env[kv[0]] = kv[1]
		}
		return writeJSON(g.stdout, fleetStartedJSON{
			Type: "fleet_started", Version: jsonVersion, Scenario: sc.Name, Description: sc.Description, Expect: sc.Expect,
			Env: env, PrometheusURL: f.PrometheusURL(), PoolID: f.PoolID(), DataURL: f.DataURL(),
			ExperimentFile: f.ExperimentFile(), PoolFile: f.PoolFile(), Rate: sc.Load.Rate, Clusters: f.Clusters(),
		})
	}
	w := g.stdout
	fmt.Fprintf(w, "Verdict demo fleet: scenario %s (a correct verdict: %s)\n  %s\n\n", sc.Name, sc.Expect, sc.Description)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  cluster\trole\torigin\tweight\taddress\n")
	for _, c := range f.Clusters() {
		role := "baseline"
		if c.Canary {
			role = "canary"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%.2f\t%s\n", c.Name, role, c.Origin, c.Weight, c.URL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	wave := ""
	if sc.Load.Amplitude > 0 {
		wave = fmt.Sprintf(", ±%.0f%% over %s", sc.Load.Amplitude*100, sc.Load.Period.D())
	}
	from := "from the start"
	if sc.Variant.From == sim.FromTrigger {
		from = "from the first weight change"
	}
	fmt.Fprintf(w, "\n  variant        %s on %s, %s\n", sc.Variant.Effect, f.Canary(), from)
	if f.HostedZoneID() != "" {
		fmt.Fprintf(w, "  clients        %s  (resolving %s A in hosted zone %s by weight, %g requests/s%s)\n", f.DataURL(), f.RecordName(), f.HostedZoneID(), sc.Load.Rate, wave)
	} else {
		fmt.Fprintf(w, "  load balancer  %s  (pool %s, %g requests/s%s)\n", f.DataURL(), f.PoolID(), sc.Load.Rate, wave)
	}
	fmt.Fprintf(w, "  Prometheus     %s  (scrapes every %s)\n", f.PrometheusURL(), sc.ScrapeInterval.D())
	fmt.Fprintf(w, "  experiment     %s\n", f.ExperimentFile())
	fmt.Fprintf(w, "  pool file      %s\n", f.PoolFile())
	for _, e := range sc.Events {
		after := "the start"
		if e.From == sim.FromTrigger {
			after = "the first weight change"
		}
		fmt.Fprintf(w, "  scheduled      %s after %s: %s\n", e.At.D(), after, e)
	}
	fmt.Fprintf(w, "\nIn another shell")
	if exps, err := experiments.LoadFile(f.ExperimentFile(), experiments.LoadOptions{}); err == nil && len(exps) > 0 {
		a := exps[0].Spec.Analysis
		fmt.Fprintf(w, " (check and run want %d intervals of data: wait %s after the start)", a.MinIntervals, time.Duration(a.MinIntervals)*a.Interval.Std())
	}
	fmt.Fprintf(w, ":\n\n")
	for _, kv := range f.Env() {
		fmt.Fprintf(w, "  export %s=%s\n", kv[0], kv[1])
	}
	fmt.Fprintf(w, "  verdict validate %s\n", f.ExperimentFile())
	fmt.Fprintf(w, "  verdict plan %s --pool-file %s\n", f.ExperimentFile(), f.PoolFile())
	fmt.Fprintf(w, "  verdict check %s\n", f.ExperimentFile())
	fmt.Fprintf(w, "  verdict run %s\n", f.ExperimentFile())
	fmt.Fprintf(w, "\nServing until interrupted (Ctrl-C).\n")
	return nil
}
