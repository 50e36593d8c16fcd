package bench

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/verdict-dev/verdict/sim"
)

// Kind says what the truth of a scenario is, and so which figures mean what.
type Kind string

const (
	// KindAA has no difference at all: every rollback is a false rollback.
	KindAA Kind = "A/A"
	// KindRegression has a harmful canary: a rollback is a detection.
	KindRegression Kind = "regression"
	// KindImprovement has a better canary: a rollback is a false rollback.
	KindImprovement Kind = "improvement"
	// KindMismatch has an identical canary behind a load balancer that does not honour
	// the weights: detecting means flagging the traffic-share mismatch.
	KindMismatch Kind = "mismatch"
)

// Scenario is one simulated world. Every cluster serves requests from Profile; the
// canary's profile is changed by Variant (and TailFactor), as sim's scenarios do.
type Scenario struct {
	// Name is short and stable: it keys the JSON and the charts.
	Name string
	// Kind is the truth: A/A, regression, improvement or mismatch.
	Kind Kind
	// Description says what differs, for results.md.
	Description string
	// Profile is every cluster's profile (sim.Profile semantics).
	Profile sim.Profile
	// Variant changes the canary's profile.
	Variant sim.Effect
	// TailFactor, when > 0, multiplies the canary's TailMedian only: a p99 regression
	// that barely moves the mean.
	TailFactor float64
	// Shares is the canary's configured share of the experiment's traffic per step.
	Shares []float64
	// BaselineSplit is the first baseline's part of the baselines' traffic (0.5: equal).
	BaselineSplit float64
	// ChangeAt, when > 0, is the interval at which the canary's configured share becomes
	// ChangeShare and the baselines' split ChangeSplit, in the middle of a step: an
	// operator's rebalancing that the analysis must survive.
	ChangeAt    int
	ChangeShare float64
	ChangeSplit float64
	// Honour is the fraction of its configured share the canary really receives
	// (1: weights honoured; 0.6: session affinity keeps 40% of its traffic elsewhere).
	Honour float64
	// Effect is the true effect the oracle SPRT is told about: which KPI and by how much.
	Effect TrueEffect
}

// TrueEffect is what the oracle knows.
type TrueEffect struct {
	// KPI is "errors", "latency", "slow" or "share"; empty for no harmful effect.
	KPI string
	// Ratio is the true canary/baseline ratio of that KPI (or, for "share", of the
	// canary's real share to its configured share).
	Ratio float64
}

// World holds the experiment-wide settings every scenario shares.
type World struct {
	// Load is the traffic through the pool: a daily wave on 1,440 one-minute intervals.
	Load sim.Load
	// Interval is the analysis interval (one minute).
	Interval time.Duration
	// StepIntervals is each step's hold in intervals.
	StepIntervals int
	// SlowerThan is the latency KPI's slow threshold (a histogram bucket boundary).
	SlowerThan float64
	// MinIntervals and PlannedIntervals configure Verdict's sequences as an experiment's
	// analysis section would; 0 takes the engine's values (10, and the total hold).
	MinIntervals, PlannedIntervals int
}

// DefaultWorld is §3a's setting on the fleet's numbers: 200 requests/s (12,000 per
// minute) with a ±50% daily wave, one-minute intervals, three steps of 50 intervals.
func DefaultWorld() World {
	return World{Load: sim.Load{Rate: 200, Amplitude: 0.5, Period: sim.Duration(24 * time.Hour)}, Interval: time.Minute, StepIntervals: 50, SlowerThan: 0.25}
}

// Horizon is the number of intervals of a run.
func (w World) Horizon(sc Scenario) int { return w.StepIntervals * len(sc.Shares) }

// overdispersed is statistics.md §3a's worst error process on the fleet's profile:
// the error rate gets a fresh Gamma(k=5) multiplier every minute and 2% of minutes
// burst ×2–6.
func overdispersed() sim.Profile {
	p := sim.DefaultProfile()
	p.Epoch = sim.Duration(time.Minute)
	p.ErrorDispersion = 5
	p.BurstProbability = 0.02
	p.BurstFactor = 6
	return p
}

// Scenarios are the scenarios of issue 10, in the order results show them.
func Scenarios() []Scenario {
	base := sim.DefaultProfile()
	shares := []float64{0.05, 0.20, 0.34}
	sc := func(name string, kind Kind, desc string, v sim.Effect, eff TrueEffect) Scenario {
		return Scenario{Name: name, Kind: kind, Description: desc, Profile: base, Variant: v, Shares: shares, BaselineSplit: 0.5, Honour: 1, Effect: eff}
	}
	aaOver := sc("aa-overdispersed", KindAA, "no difference; errors Gamma(k=5) per minute with 2% ×2–6 bursts (§3a's worst row)", sim.Effect{}, TrueEffect{})
	aaOver.Profile = overdispersed()
	aaUnequal := sc("aa-unequal-sizes", KindAA, "no difference; baselines split 80/20 and a small canary (2% → 10% → 25%)", sim.Effect{}, TrueEffect{})
	aaUnequal.BaselineSplit = 0.8
	aaUnequal.Shares = []float64{0.02, 0.10, 0.25}
	aaChange := sc("aa-weight-change", KindAA, "no difference; mid-step rebalancing at interval 75: canary 20% → 30%, baselines 50/50 → 80/20", sim.Effect{}, TrueEffect{})
	aaChange.ChangeAt, aaChange.ChangeShare, aaChange.ChangeSplit = 75, 0.30, 0.8
	p99 := sc("p99-only", KindRegression, "the canary's slow tail is 50% slower (p99 +~45%, mean +~5%)", sim.Effect{}, TrueEffect{KPI: "slow"})
	p99.TailFactor = 1.5
	p99.Effect.Ratio = slowShare(p99.canaryProfile(), 0.25, 1) / slowShare(base, 0.25, 1)
	mismatch := sc("weight-mismatch", KindMismatch, "no difference, but the canary gets only 60% of its weight (session affinity)", sim.Effect{}, TrueEffect{KPI: "share", Ratio: 0.6})
	mismatch.Honour = 0.6
	return []Scenario{
		sc("aa-diurnal", KindAA, "no difference; the fleet's default profile (Gamma(k=20) per 10 s epoch, 2% bursts, ±4% drift) under a ±50% daily wave", sim.Effect{}, TrueEffect{}),
		aaOver,
		aaUnequal,
		aaChange,
		sc("errors-x1.2", KindRegression, "canary error rate ×1.2", sim.Effect{Errors: 1.2}, TrueEffect{KPI: "errors", Ratio: 1.2}),
		sc("errors-x1.5", KindRegression, "canary error rate ×1.5", sim.Effect{Errors: 1.5}, TrueEffect{KPI: "errors", Ratio: 1.5}),
		sc("errors-x2", KindRegression, "canary error rate ×2", sim.Effect{Errors: 2}, TrueEffect{KPI: "errors", Ratio: 2}),
		sc("latency+5%", KindRegression, "canary latency ×1.05 (every quantile)", sim.Effect{Latency: 1.05}, TrueEffect{KPI: "latency", Ratio: 1.05}),
		sc("latency+10%", KindRegression, "canary latency ×1.10", sim.Effect{Latency: 1.10}, TrueEffect{KPI: "latency", Ratio: 1.10}),
		sc("latency+20%", KindRegression, "canary latency ×1.20", sim.Effect{Latency: 1.20}, TrueEffect{KPI: "latency", Ratio: 1.20}),
		p99,
		sc("improvement", KindImprovement, "canary errors ×0.8 and latency ×0.95 (the demo's good release)", sim.Effect{Errors: 0.8, Latency: 0.95}, TrueEffect{}),
		mismatch,
	}
}

// canaryProfile is the canary's profile: the scenario's profile changed by its variant.
func (sc Scenario) canaryProfile() sim.Profile {
	p := sc.Profile.With(sc.Variant)
	if sc.TailFactor > 0 {
		p.TailMedian = sim.Duration(float64(p.TailMedian) * sc.TailFactor)
	}
	return p
}

// shareAt is the canary's configured share and the first baseline's split at interval k.
func (sc Scenario) shareAt(k, stepLen int) (share, split float64, step int) {
	step = min(k/stepLen, len(sc.Shares)-1)
	share, split = sc.Shares[step], sc.BaselineSplit
	if sc.ChangeAt > 0 && k >= sc.ChangeAt && step == sc.ChangeAt/stepLen {
		share, split = sc.ChangeShare, sc.ChangeSplit
	}
	return share, split, step
}

// Interval is one interval of one run as every rule sees it: per cluster counts and
// values, canary first, then the two baselines.
type Interval struct {
	// Step is the step index (0-based); Weights are the configured origin weights
	// (canary, baseline 1, baseline 2) during the interval.
	Step    int
	Weights [3]float64
	// Requests, Errors and Slow are counts; Mean and P99 are latencies in seconds.
	Requests [3]float64
	Errors   [3]float64
	Slow     [3]float64
	Mean     [3]float64
	P99      [3]float64
	// LatVar is the oracle's variance of log(canary mean / baselines' mean).
	LatVar float64
}

// profileStats are a profile's latency moments, computed once per run.
type profileStats struct {
	mean, sdReq float64 // per-request mean and sd of latency (s) at multiplier 1
	p99, p99Den float64 // p99 (s) and the density there, at multiplier 1
}

func lognormSurv(x, median, sigma float64) float64 {
	if x <= 0 {
		return 1
	}
	return 0.5 * math.Erfc(math.Log(x/median)/(sigma*math.Sqrt2))
}

// slowShare is the probability that a request is slower than limit when every latency
// is multiplied by m.
func slowShare(p sim.Profile, limit, m float64) float64 {
	f := p.TailFraction
	return (1-f)*lognormSurv(limit, p.LatencyMedian.D().Seconds()*m, p.LatencySigma) + f*lognormSurv(limit, p.TailMedian.D().Seconds()*m, p.LatencySigma)
}

func statsOf(p sim.Profile) profileStats {
	f, s := p.TailFraction, p.LatencySigma
	mb, mt := p.LatencyMedian.D().Seconds(), p.TailMedian.D().Seconds()
	e1 := ((1-f)*mb + f*mt) * math.Exp(s*s/2)
	e2 := ((1-f)*mb*mb + f*mt*mt) * math.Exp(2*s*s)
	// p99 by bisection on the survival function.
	lo, hi := 1e-6, 100.0
	for range 100 {
		mid := math.Sqrt(lo * hi)
		if slowShare(p, mid, 1) > 0.01 {
			lo = mid
		} else {
			hi = mid
		}
	}
	q := lo
	dens := func(median float64) float64 {
		z := math.Log(q/median) / s
		return math.Exp(-z*z/2) / (q * s * math.Sqrt(2*math.Pi))
	}
	return profileStats{mean: e1, sdReq: math.Sqrt(math.Max(e2-e1*e1, 0)), p99: q, p99Den: (1-f)*dens(mb) + f*dens(mt)}
}

// clusterState is one cluster's slowly varying state: its drift phases.
type clusterState struct {
	p     sim.Profile
	st    profileStats
	phase [2]float64 // latency, errors
}

// generate draws a run's intervals. The rng is the run's own, so runs are independent
// and reproducible.
func (w World) generate(sc Scenario, r *rand.Rand) []Interval {
	n := w.Horizon(sc)
	out := make([]Interval, n)
	profiles := [3]sim.Profile{sc.canaryProfile(), sc.Profile, sc.Profile}
	var cs [3]clusterState
	epochs := 1
	if e := profiles[0].Epoch.D(); e > 0 && e < w.Interval {
		epochs = int(w.Interval / e)
	}
	for j := range cs {
		cs[j] = clusterState{p: profiles[j], st: statsOf(profiles[j]), phase: [2]float64{2 * math.Pi * r.Float64(), 2 * math.Pi * r.Float64()}}
	}
	dayPhase := r.Float64() * w.Load.Period.D().Minutes()
	ivMin := w.Interval.Minutes()
	for k := range n {
		share, split, step := sc.shareAt(k, w.StepIntervals)
		iv := &out[k]
		iv.Step = step
		iv.Weights = [3]float64{share, (1 - share) * split, (1 - share) * (1 - split)}
		real := share * sc.Honour
		actual := [3]float64{real, (1 - real) * split, (1 - real) * (1 - split)}
		tMin := (float64(k) + 0.5) * ivMin
		load := w.Load.Rate * 60 * ivMin * (1 + w.Load.Amplitude*math.Sin(2*math.Pi*(tMin+dayPhase)/w.Load.Period.D().Minutes()))
		var latVar [3]float64
		for j := range cs {
			c := &cs[j]
			p := &c.p
			nReq := poissonRand(r, load*actual[j])
			drift := func(i int) float64 {
				if p.Drift == 0 || p.DriftPeriod <= 0 {
					return 1
				}
				return math.Exp(p.Drift * math.Sin(2*math.Pi*tMin/p.DriftPeriod.D().Minutes()+c.phase[i]))
			}
			latM, errM := 0.0, 0.0
			for range epochs {
				lm := math.Exp(p.LatencyNoise * r.NormFloat64())
				em := 1.0
				if p.ErrorDispersion > 0 {
					em = gammaRand(r, p.ErrorDispersion) / p.ErrorDispersion
				}
				if p.BurstProbability > 0 && r.Float64() < p.BurstProbability {
					em *= 2 + r.Float64()*(p.BurstFactor-2)
				}
				latM += lm
				errM += em
			}
			latM = latM / float64(epochs) * drift(0)
			errM /= float64(epochs)
			iv.Requests[j] = nReq
			iv.Errors[j] = poissonRand(r, nReq*math.Min(1, p.ErrorRate*drift(1)*errM))
			iv.Slow[j] = poissonRand(r, nReq*slowShare(*p, w.SlowerThan, latM))
			nn := math.Max(nReq, 1)
			iv.Mean[j] = latM * (c.st.mean + c.st.sdReq/math.Sqrt(nn)*r.NormFloat64())
			iv.P99[j] = latM * math.Max(0.001, c.st.p99+math.Sqrt(0.99*0.01/nn)/c.st.p99Den*r.NormFloat64())
			// The oracle's variance of log(mean): epoch noise, drift (as noise) and sampling.
			latVar[j] = p.LatencyNoise*p.LatencyNoise/float64(epochs) + p.Drift*p.Drift/2 + c.st.sdReq*c.st.sdReq/(nn*c.st.mean*c.st.mean)
		}
		wb := iv.Requests[1] + iv.Requests[2]
		if wb > 0 {
			a, b := iv.Requests[1]/wb, iv.Requests[2]/wb
			iv.LatVar = latVar[0] + a*a*latVar[1] + b*b*latVar[2]
		} else {
			iv.LatVar = latVar[0]
		}
	}
	return out
}

// baseline pools the two baselines: summed counts, request-weighted mean latency and
// p99 (an approximation of the pooled p99), as the engine pools them.
func (iv *Interval) baseline() (req, errs, slow, mean, p99 float64) {
	req = iv.Requests[1] + iv.Requests[2]
	errs = iv.Errors[1] + iv.Errors[2]
	slow = iv.Slow[1] + iv.Slow[2]
	if req > 0 {
		mean = (iv.Requests[1]*iv.Mean[1] + iv.Requests[2]*iv.Mean[2]) / req
		p99 = (iv.Requests[1]*iv.P99[1] + iv.Requests[2]*iv.P99[2]) / req
	}
	return
}

// gammaRand draws Gamma(k, 1) by Marsaglia and Tsang's method (k ≥ 1).
func gammaRand(r *rand.Rand, k float64) float64 {
	if k < 1 {
		return gammaRand(r, k+1) * math.Pow(r.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// poissonRand is numpy's exact Poisson generator (multiplication below 10, PTRS above),
// the same one analysis/sim_test.go uses, so A/A counts are really A/A.
func poissonRand(r *rand.Rand, lam float64) float64 {
	if !(lam > 0) {
		return 0
	}
	if lam < 10 {
		l := math.Exp(-lam)
		k, p := 0.0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	slam := math.Sqrt(lam)
	loglam := math.Log(lam)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lam + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lam+k*loglam-lg {
			return k
		}
	}
}
