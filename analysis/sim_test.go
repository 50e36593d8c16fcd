package analysis

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/verdict-dev/verdict/internal/randx"
)

// The simulation follows statistics.md §3a: one-minute intervals, 12,000
// requests/min on a daily wave (random phase), 0.5% errors, the canary's
// share 5% → 20% → 34% in three steps of 50 intervals (two baselines share
// the rest), mean latency ~100 ms that also follows the load, per-cluster
// per-minute noise, and one of five error processes.

type errorProcess struct {
	name   string
	gammaK float64 // 0: no gamma noise
	bursts bool
}

var errorProcesses = []errorProcess{
	{name: "poisson"},
	{name: "gamma-k20", gammaK: 20},
	{name: "gamma-k5", gammaK: 5},
	{name: "bursts", bursts: true},
	{name: "gamma-k5+bursts", gammaK: 5, bursts: true},
}

type simConfig struct {
	proc        errorProcess
	errorEffect float64 // canary error-rate multiplier (1 = A/A)
	latEffect   float64 // canary latency multiplier
	stepLen     int
	shares      []float64
	load        float64
	errRate     float64
	prePeriod   int       // intervals before the change (0: none)
	errTol      float64   // tolerance of the error-rate KPI (default 0.10)
	precisions  []float64 // nil: the default mixture
	plannedLat  int
	preBias     float64 // canary cluster's own ratio to the baselines, before and during (1 = identical)
}

func defaultSim(p errorProcess) simConfig {
	return simConfig{proc: p, errorEffect: 1, latEffect: 1, stepLen: 50, shares: []float64{0.05, 0.20, 0.34}, load: 12000, errRate: 0.005, preBias: 1, errTol: 0.10, plannedLat: 50}
}

// simOutcome is what one simulated experiment produced.
type simOutcome struct {
	rollbackAt    int // interval of the first Rollback, −1 if none
	naiveAt       int // interval the naive fixed-horizon test would have rolled back, −1
	errCSExcluded bool
	latCSExcluded bool
	strictAt      int  // first interval either CS excluded 0 on the harm side, −1
	binomExcluded bool // §3 binomial e-process crossed its harm bound (φ0 = 1)
	binomAt       int  // interval it first crossed, −1
	batchAt       int  // interval the §3a batch-means sequence on log rate ratios first showed harm, −1
	batchExcluded bool // the batch-means sequence excluded φ = 1 on the harm side
	errNonInf     bool // the error-rate KPI was ever declared non-inferior
	latNonInf     bool // the latency KPI was ever declared non-inferior
	dispersion    float64
}

func (p errorProcess) multiplier(r *rand.Rand) float64 {
	m := 1.0
	if p.gammaK > 0 {
		m = randx.Gamma(r, p.gammaK) / p.gammaK
	}
	if p.bursts && r.Float64() < 0.02 {
		m *= 2 + 4*r.Float64()
	}
	return m
}

// runSim simulates one experiment and runs the live decision at every
// interval, plus the naive fixed-horizon tests on the same data.
func runSim(cfg simConfig, seed uint64) simOutcome {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	phase := r.Float64() * 1440
	errSeq := NewRatioSequence(RatioOptions{Precisions: cfg.precisions})
	latSeq := NewGaugeSequence(GaugeOptions{PlannedIntervals: cfg.plannedLat})
	kpis := []KPI{
		{Name: "error rate", State: errSeq, Harm: Increase, Tolerance: cfg.errTol},
		{Name: "mean latency", State: latSeq, Harm: Increase, Tolerance: 0.05},
	}
	const alpha = 0.05
	aK := alpha / float64(len(kpis))
	out := simOutcome{rollbackAt: -1, naiveAt: -1, binomAt: -1, strictAt: -1, batchAt: -1}
	// §3a's comparator: the §4 sequence on d_k = log rate ratio per interval
	// (+½ to both counts so empty intervals count), at the same α/K.
	batch := NewGaugeSequence(GaugeOptions{Scale: Difference, PlannedIntervals: cfg.stepLen})
	var cumC, cumNC, cumB, cumNB float64
	var dLat []float64
	zeros := make([]float64, 0, 256)
	total := cfg.stepLen * len(cfg.shares)
	interval := func(t int, share float64, effErr, effLat, bias float64) (c, nc, b, nb, lc, lb float64) {
		load := cfg.load * (1 + 0.5*math.Sin(2*math.Pi*(float64(t)+phase)/1440))
		latBase := 100 * (1 + 0.2*(load/cfg.load-1))
		nc = math.Round(load * share)
		nb1 := math.Round(load * (1 - share) / 2)
		nb2 := nb1
		clusterErr := func(n, eff float64) float64 {
			return randx.Poisson(r, n*cfg.errRate*eff*cfg.proc.multiplier(r))
		}
		clusterLat := func(n, eff float64) float64 {
			wobble := math.Exp(0.03 * r.NormFloat64())
			return latBase * eff * wobble * (1 + 0.66*r.NormFloat64()/math.Sqrt(math.Max(n, 1)))
		}
		c = clusterErr(nc, effErr*bias)
		b = clusterErr(nb1, 1) + clusterErr(nb2, 1)
		nb = nb1 + nb2
		lc = clusterLat(nc, effLat*bias)
		lb = (nb1*clusterLat(nb1, 1) + nb2*clusterLat(nb2, 1)) / nb
		return
	}
	for t := -cfg.prePeriod; t < 0; t++ {
		c, nc, b, nb, lc, lb := interval(t, 1.0/3, 1, 1, cfg.preBias)
		errSeq.AddPre(c, nc, b, nb)
		latSeq.AddPre(lc, lb)
	}
	for t := range total {
		stepIdx := t / cfg.stepLen
		c, nc, b, nb, lc, lb := interval(t, cfg.shares[stepIdx], cfg.errorEffect, cfg.latEffect, cfg.preBias)
		errSeq.Add(c, nc, b, nb)
		latSeq.Add(lc, lb)
		d := Decide(kpis, Step{Alpha: alpha, HoldComplete: t%cfg.stepLen == cfg.stepLen-1, Final: stepIdx == len(cfg.shares)-1})
		if d.Action == Rollback && out.rollbackAt < 0 {
			out.rollbackAt = t
		}
		out.errNonInf = out.errNonInf || d.KPIs[0].Status == NonInferior
		out.latNonInf = out.latNonInf || d.KPIs[1].Status == NonInferior
		// strict validity: does either CS ever exclude "no difference" on the
		// harm side (tolerance 0)?
		if iv := d.KPIs[0].Interval; iv.Ready && iv.Lower > 0 {
			out.errCSExcluded = true
		}
		if iv := d.KPIs[1].Interval; iv.Ready && iv.Lower > 0 {
			out.latCSExcluded = true
		}
		if out.strictAt < 0 && (out.errCSExcluded || out.latCSExcluded) {
			out.strictAt = t
		}
		if nc > 0 && nb > 0 {
			batch.Add(math.Log((c+0.5)/nc)-math.Log((b+0.5)/nb), 0)
		}
		if biv := batch.Interval(aK); biv.Ready {
			if biv.Lower > 0 {
				out.batchExcluded = true
			}
			if out.batchAt < 0 && biv.Lower > math.Log1p(cfg.errTol) {
				out.batchAt = t
			}
		}
		if !out.binomExcluded && t >= 9 && errSeq.HarmEValue(1) >= math.Log(1/aK) {
			out.binomExcluded = true
			out.binomAt = t
		}
		// naive peeking: a fixed-horizon one-sided test on all data so far,
		// at the same α/K, every interval.
		cumC, cumNC, cumB, cumNB = cumC+c, cumNC+nc, cumB+b, cumNB+nb
		if lc > 0 && lb > 0 {
			dLat = append(dLat, math.Log(lc)-math.Log(lb))
		}
		if out.naiveAt < 0 && t >= 9 {
			rr, err := RateRatioTest(cumC, cumNC, cumB, cumNB, 1, 0.95, Greater)
			naive := err == nil && rr.PValue < aK
			if len(dLat) >= 2 {
				zeros = zeros[:0]
				for range dLat {
					zeros = append(zeros, 0)
				}
				w, err := WelchTTest(dLat, zeros, Greater)
				naive = naive || (err == nil && w.PValue < aK)
			}
			if naive {
				out.naiveAt = t
			}
		}
	}
	out.dispersion = errSeq.Interval(aK).Dispersion
	return out
}

// runMany runs n simulations on all cores; results are in seed order, so the
// figures are deterministic.
func runMany(cfg simConfig, n int, seed0 uint64) []simOutcome {
	out := make([]simOutcome, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = runSim(cfg, seed0+uint64(i))
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// wilson is the Wilson score 95% interval of k successes in n.
func wilson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	const z = 1.959963984540054
	p := float64(k) / float64(n)
	nn := float64(n)
	den := 1 + z*z/nn
	centre := (p + z*z/(2*nn)) / den
	half := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / den
	return math.Max(0, centre-half), math.Min(1, centre+half)
}

func count(o []simOutcome, f func(simOutcome) bool) int {
	k := 0
	for _, x := range o {
		if f(x) {
			k++
		}
	}
	return k
}

// TestCalibrationAA runs A/A experiments under each of the five error
// processes of statistics.md §3a and checks that the live decision's false
// rollbacks stay within α = 0.05 (upper end of the 95% Wilson interval
// ≤ α + 0.01). It logs, on the same data, how often naive repeated
// fixed-horizon testing would have rolled back, how often the plain binomial
// e-process of §3 crosses, and the strict rate at which either confidence
// sequence excludes "no difference" on the harm side.
func TestCalibrationAA(t *testing.T) {
	runs := 1000 // per process: 5,000 A/A experiments in all
	if testing.Short() || raceEnabled {
		runs = 200
	}
	const alpha = 0.05
	total, totalFalse := 0, 0
	for pi, p := range errorProcesses {
		t.Run(p.name, func(t *testing.T) {
			res := runMany(defaultSim(p), runs, uint64(1000*(pi+1)))
			falseRB := count(res, func(o simOutcome) bool { return o.rollbackAt >= 0 })
			naive := count(res, func(o simOutcome) bool { return o.naiveAt >= 0 })
			strictErr := count(res, func(o simOutcome) bool { return o.errCSExcluded })
			strictLat := count(res, func(o simOutcome) bool { return o.latCSExcluded })
			binom := count(res, func(o simOutcome) bool { return o.binomExcluded })
			batchEx := count(res, func(o simOutcome) bool { return o.batchExcluded })
			var strictAt []int
			for _, o := range res {
				if o.strictAt >= 0 {
					strictAt = append(strictAt, o.strictAt)
				}
			}
			firstStrict := median(strictAt)
			disp := make([]float64, len(res))
			for i, o := range res {
				disp[i] = o.dispersion
			}
			slices.Sort(disp)
			lo, hi := wilson(falseRB, runs)
			slo, shi := wilson(strictErr, runs)
			nlo, nhi := wilson(naive, runs)
			t.Logf("%-16s A/A false rollbacks %d/%d = %.2f%% (95%% CI %.2f–%.2f%%); strict CS harm-side exclusions: errors %.2f%% (CI %.2f–%.2f%%), latency %.2f%%; batch-means (§3a) %.2f%%; binomial e-process §3 crossing %.1f%%; naive peeking %.1f%% (CI %.1f–%.1f%%); median dispersion %.2f",
				p.name, falseRB, runs, 100*float64(falseRB)/float64(runs), 100*lo, 100*hi,
				100*float64(strictErr)/float64(runs), 100*slo, 100*shi, 100*float64(strictLat)/float64(runs),
				100*float64(batchEx)/float64(runs), 100*float64(binom)/float64(runs), 100*float64(naive)/float64(runs), 100*nlo, 100*nhi, disp[len(disp)/2])
			if hi > alpha+0.01 {
				t.Errorf("false-rollback rate upper CI %.3f exceeds α+0.01 = %.3f", hi, alpha+0.01)
			}
			// The stricter check: each KPI's one-sided sequence at α/K must
			// not exclude "no difference" on the harm side more often than
			// α/K (upper CI within α/K + 0.01), tolerance or not.
			// With the reduced run count (-short, -race) the interval is too
			// wide for that, and the point estimate is checked instead.
			aK := alpha / 2
			_, lhi := wilson(strictLat, runs)
			if runs < 1000 {
				shi, lhi = float64(strictErr)/float64(runs), float64(strictLat)/float64(runs)
			}
			if shi > aK+0.01 {
				t.Errorf("error-rate sequence excluded φ = 1 in %d/%d runs (%.3f > %.3f)", strictErr, runs, shi, aK+0.01)
			}
			if lhi > aK+0.01 {
				t.Errorf("latency sequence excluded 0 in %d/%d runs (%.3f > %.3f)", strictLat, runs, lhi, aK+0.01)
			}
			t.Logf("%-16s median interval of the first strict exclusion: %d", p.name, firstStrict)
			if naive <= falseRB {
				t.Errorf("naive peeking (%d) should roll back more often than the live rule (%d)", naive, falseRB)
			}
			total += runs
			totalFalse += falseRB
		})
	}
	lo, hi := wilson(totalFalse, total)
	t.Logf("all processes: %d/%d A/A false rollbacks = %.2f%% (95%% CI %.2f–%.2f%%)", totalFalse, total, 100*float64(totalFalse)/float64(total), 100*lo, 100*hi)
}

func median(v []int) int {
	if len(v) == 0 {
		return -1
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// TestPower injects +25% errors and +10% mean latency (separately) and checks
// that the live decision rolls back in ≥95% of runs within the 150-interval
// horizon, logging the median number of intervals to detection. The asserted
// error case uses a 1% error rate: at §3a's 0.5% the whole horizon holds too
// few canary errors for any anytime-valid rule to separate +25% from the 10%
// tolerance 95% of the time (its figure is logged). The §3a comparison rows
// (×1.5 errors, tolerance 0) log detection times next to the binomial
// e-process, whose speed under overdispersion comes from being invalid.
func TestPower(t *testing.T) {
	runs := 200
	if testing.Short() || raceEnabled {
		runs = 60
	}
	type pcase struct {
		proc      errorProcess
		errEffect float64
		latEffect float64
		errRate   float64
		errTol    float64
		minPower  float64 // asserted when > 0
	}
	tests := map[string]pcase{
		"errors +25% poisson 1%":         {proc: errorProcesses[0], errEffect: 1.25, errRate: 0.01, minPower: 0.95},
		"errors +25% gamma-k20 1%":       {proc: errorProcesses[1], errEffect: 1.25, errRate: 0.01},
		"errors +25% gamma-k5+bursts 1%": {proc: errorProcesses[4], errEffect: 1.25, errRate: 0.01},
		"errors +25% poisson 0.5%":       {proc: errorProcesses[0], errEffect: 1.25},
		"latency +10% poisson":           {proc: errorProcesses[0], latEffect: 1.10, minPower: 0.95},
		"latency +10% gamma-k5+bursts":   {proc: errorProcesses[4], latEffect: 1.10, minPower: 0.95},
	}
	for _, p := range errorProcesses {
		tests["§3a errors x1.5 tol 0 "+p.name] = pcase{proc: p, errEffect: 1.5, errTol: 1e-9}
	}
	names := make([]string, 0, len(tests))
	for n := range tests {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		tc := tests[name]
		t.Run(name, func(t *testing.T) {
			cfg := defaultSim(tc.proc)
			cfg.errorEffect, cfg.latEffect = max(tc.errEffect, 1), max(tc.latEffect, 1)
			if tc.errRate > 0 {
				cfg.errRate = tc.errRate
			}
			if tc.errTol > 0 {
				cfg.errTol = tc.errTol
			}
			res := runMany(cfg, runs, 777)
			var at, naiveAt, binomAt, batchAt []int
			for _, o := range res {
				if o.rollbackAt >= 0 {
					at = append(at, o.rollbackAt+1)
				}
				if o.naiveAt >= 0 {
					naiveAt = append(naiveAt, o.naiveAt+1)
				}
				if o.binomAt >= 0 {
					binomAt = append(binomAt, o.binomAt+1)
				}
				if o.batchAt >= 0 {
					batchAt = append(batchAt, o.batchAt+1)
				}
			}
			power := float64(len(at)) / float64(runs)
			lo, hi := wilson(len(at), runs)
			t.Logf("%-36s power %5.1f%% (95%% CI %.1f–%.1f%%) within %d intervals; median intervals to rollback %d (batch-means %d in %.0f%%; binomial e-process %d in %.0f%%; naive peeking %d)",
				name, 100*power, 100*lo, 100*hi, cfg.stepLen*len(cfg.shares), median(at),
				median(batchAt), 100*float64(len(batchAt))/float64(runs), median(binomAt), 100*float64(len(binomAt))/float64(runs), median(naiveAt))
			if tc.minPower > 0 && power < tc.minPower {
				t.Errorf("power %.3f below %.2f", power, tc.minPower)
			}
		})
	}
}

// TestCalibrationPrePeriod gives the canary cluster its own, pre-existing
// 15% more errors and 15% higher latency (a different machine type, say),
// with no change from the new code. Without a pre-period the decision rolls
// back — the clusters differ before the change (statistics.md §1.5); with a
// 30-interval pre-period the difference-in-differences sequences keep false
// rollbacks within α.
func TestCalibrationPrePeriod(t *testing.T) {
	runs := 500
	if testing.Short() || raceEnabled {
		runs = 150
	}
	const alpha = 0.05
	for _, p := range []errorProcess{errorProcesses[0], errorProcesses[4]} {
		t.Run(p.name, func(t *testing.T) {
			with := defaultSim(p)
			with.preBias, with.prePeriod = 1.15, 30
			without := with
			without.prePeriod = 0
			rw := runMany(with, runs, 4242)
			rn := runMany(without, runs, 4242)
			kw := count(rw, func(o simOutcome) bool { return o.rollbackAt >= 0 })
			kn := count(rn, func(o simOutcome) bool { return o.rollbackAt >= 0 })
			lo, hi := wilson(kw, runs)
			t.Logf("%-16s cluster bias +15%%: rollbacks with pre-period %d/%d = %.2f%% (95%% CI %.2f–%.2f%%); without %.1f%%",
				p.name, kw, runs, 100*float64(kw)/float64(runs), 100*lo, 100*hi, 100*float64(kn)/float64(runs))
			if hi > alpha+0.01 {
				t.Errorf("difference-in-differences false rollbacks upper CI %.3f > %.3f", hi, alpha+0.01)
			}
			if kn < runs/2 {
				t.Errorf("without a pre-period the biased cluster should mostly be rolled back, got %d/%d", kn, runs)
			}
		})
	}
}

// TestCalibrationNonInferiority checks the other error: a canary that is
// exactly at the tolerance (errors +10% against a 10% tolerance, latency
// +5% against 5%: the hardest case) must rarely be declared non-inferior at any
// interval — at most α/K per KPI (checked as rate ≤ α/K + 0.01 on 500 runs
// per process; with ≥1,000 runs, on the upper end of the 95% interval).
func TestCalibrationNonInferiority(t *testing.T) {
	runs := 500
	if testing.Short() || raceEnabled {
		runs = 150
	}
	const aK = 0.05 / 2
	for _, p := range []errorProcess{errorProcesses[0], errorProcesses[2], errorProcesses[4]} {
		t.Run(p.name, func(t *testing.T) {
			cfg := defaultSim(p)
			cfg.errorEffect, cfg.latEffect = 1.10, 1.05
			res := runMany(cfg, runs, 9090)
			ke := count(res, func(o simOutcome) bool { return o.errNonInf })
			kl := count(res, func(o simOutcome) bool { return o.latNonInf })
			_, he := wilson(ke, runs)
			_, hl := wilson(kl, runs)
			t.Logf("%-16s false non-inferiority at the margin: errors (+10%% vs 10%%) %d/%d, latency (+5%% vs 5%%) %d/%d", p.name, ke, runs, kl, runs)
			if runs < 1000 {
				he, hl = float64(ke)/float64(runs), float64(kl)/float64(runs)
			}
			if he > aK+0.01 || hl > aK+0.01 {
				t.Errorf("false non-inferiority too frequent: errors %d, latency %d of %d", ke, kl, runs)
			}
		})
	}
}
