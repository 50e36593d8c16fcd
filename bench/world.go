package bench

import (
	"math"
	"math/rand/v2"

	"github.com/verdict-dev/verdict/internal/randx"
)

// Kind says what the truth of a world is, and so which figures mean what.
type Kind string

const (
	// KindAA has a healthy canary (the same code, whatever its cluster's offset): a
	// rollback for harm is a false rollback; a promotion is the right outcome.
	KindAA Kind = "A/A"
	// KindBoundary has a canary exactly at the error-rate tolerance (×1.10): flagging harm
	// must stay at or below α/K, the error rate's share of α.
	KindBoundary Kind = "boundary"
	// KindRegression has a harmful canary: a rollback is a detection.
	KindRegression Kind = "regression"
	// KindMismatch has a healthy canary behind a load balancer that does not honour its
	// weight: detecting means flagging the traffic-share mismatch.
	KindMismatch Kind = "mismatch"
)

// Scale is a traffic level: requests per minute through the pool (canary and baselines
// together) and the clusters' normal error rate.
type Scale struct {
	Name              string  `json:"name"`
	RequestsPerMinute float64 `json:"requestsPerMinute"`
	ErrorRate         float64 `json:"errorRate"`
}

// Scales are the three traffic levels at both error rates, smallest counts first.
func Scales() []Scale {
	return []Scale{
		{"1k/0.1%", 1_000, 0.001}, {"1k/1%", 1_000, 0.01},
		{"12k/0.1%", 12_000, 0.001}, {"12k/1%", 12_000, 0.01},
		{"700k/0.1%", 700_000, 0.001}, {"700k/1%", 700_000, 0.01},
	}
}

// Noise is how every cluster's error rate and latency move from minute to minute, on
// top of the daily load wave. The canary cluster draws from the same process as the
// baselines, independently.
type Noise struct {
	// GammaK > 0 multiplies each cluster's error rate by Gamma(k)/k every minute
	// (overdispersion: k = 100 is ±10%, k = 20 ±22% per cluster-minute).
	GammaK float64 `json:"gammaK,omitempty"`
	// BurstStart is the per-minute probability that a burst starts in a cluster; a burst
	// multiplies its error rate by BurstFactor and lasts a geometric number of minutes
	// with mean BurstMinutes (a crash-looping pod, a noisy neighbour).
	BurstStart   float64 `json:"burstStart,omitempty"`
	BurstMinutes float64 `json:"burstMinutes,omitempty"`
	BurstFactor  float64 `json:"burstFactor,omitempty"`
	// DriftPhi and DriftSD make each cluster's log error rate an AR(1) process with
	// lag-1 correlation DriftPhi and stationary sd DriftSD (slow wander, minutes to hours).
	DriftPhi float64 `json:"driftPhi,omitempty"`
	DriftSD  float64 `json:"driftSD,omitempty"`
	// LatencySD is the sd of each cluster's log latency multiplier, fresh every minute.
	LatencySD float64 `json:"latencySD"`
}

// World is one simulated setting: a noise process, the canary cluster's standing
// difference, the load, the traffic and the variant.
type World struct {
	// Name is short and stable: it keys the JSON and the charts.
	Name string `json:"name"`
	// Kind is the truth: A/A, boundary, regression or mismatch.
	Kind Kind `json:"kind"`
	// Description says what happens, for results.md.
	Description string `json:"description"`
	Noise       Noise  `json:"noise"`
	// Offset multiplies the canary cluster's error rate and latency always, history and
	// run alike: the same code, a different cluster (1: none).
	Offset float64 `json:"offset"`
	// Diurnal is the amplitude of the daily load wave (0.5: ±50%).
	Diurnal float64 `json:"diurnal"`
	// Rebalance: halfway through step 2 an operator moves the canary from its step weight
	// to RebalanceShare and splits the baselines 80/20 instead of 50/50 (the run pauses
	// on the drift and is resumed from the pool's new weights).
	Rebalance      bool    `json:"rebalance,omitempty"`
	RebalanceShare float64 `json:"rebalanceShare,omitempty"`
	// Honour is the fraction of its configured share the canary really receives (1:
	// weights honoured; 0.6: session affinity keeps 40% of its traffic elsewhere).
	Honour float64 `json:"honour"`
	// Errors and Latency are the variant's effect on the canary: its error rate and every
	// request's latency are multiplied by them once the variant is in (1: none).
	Errors  float64 `json:"errors"`
	Latency float64 `json:"latency"`
	// AppliedBefore is how many minutes before the ramp starts the variant arrived on
	// the canary (0: it arrives with the ramp). DeclareApplied says whether the
	// experiment declares it as spec.canary.apply.appliedAt, so that the history the
	// engine reads ends there.
	AppliedBefore  int  `json:"appliedBefore,omitempty"`
	DeclareApplied bool `json:"declareApplied,omitempty"`
	// RunsFactor multiplies the world's runs per cell (0: 1): the worlds the headline
	// reads get more.
	RunsFactor int `json:"runsFactor,omitempty"`
	// Scales limits the world to these scale names (nil: all).
	Scales []string `json:"scales,omitempty"`
}

// clusters are the canary and the two baselines, in that order.
const nClusters = 3

// The per-request latency distribution of every cluster at multiplier 1: a lognormal
// body (median 50 ms) and a 2% lognormal tail (median 250 ms), both with log-sd 0.5.
const (
	latBodyMedian = 0.050
	latTailMedian = 0.250
	latTailShare  = 0.02
	latSigma      = 0.5
	// slowerThan is the latency KPI's slow threshold (a bucket boundary).
	slowerThan = 0.25
)

// promBuckets are Prometheus' default histogram buckets: the CV² the engine estimates
// from them is what the bench hands it.
var promBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func lognormSurv(x, median, sigma float64) float64 {
	if x <= 0 {
		return 1
	}
	return 0.5 * math.Erfc(math.Log(x/median)/(sigma*math.Sqrt2))
}

// latSurv is the share of requests slower than x at latency multiplier m.
func latSurv(x, m float64) float64 {
	return (1-latTailShare)*lognormSurv(x, latBodyMedian*m, latSigma) + latTailShare*lognormSurv(x, latTailMedian*m, latSigma)
}

// latMoments are the per-request mean and sd of latency (s) at multiplier 1.
func latMoments() (mean, sd float64) {
	s2 := latSigma * latSigma
	e1 := ((1-latTailShare)*latBodyMedian + latTailShare*latTailMedian) * math.Exp(s2/2)
	e2 := ((1-latTailShare)*latBodyMedian*latBodyMedian + latTailShare*latTailMedian*latTailMedian) * math.Exp(2*s2)
	return e1, math.Sqrt(e2 - e1*e1)
}

var latMean1, latSD1 = latMoments()

// latTable tabulates a function of the latency multiplier on a fine log grid (the
// generator calls it for every cluster-minute); between grid points it interpolates.
type latTable struct {
	lo, step float64
	v        []float64
}

func newLatTable(f func(m float64) float64) *latTable {
	t := &latTable{lo: math.Log(0.25), step: 0.0005}
	for x := t.lo; x <= math.Log(4)+t.step; x += t.step {
		t.v = append(t.v, f(math.Exp(x)))
	}
	return t
}

func (t *latTable) at(m float64) float64 {
	x := (math.Log(m) - t.lo) / t.step
	i := int(x)
	if i < 0 || i >= len(t.v)-1 {
		return math.NaN()
	}
	f := x - float64(i)
	return t.v[i]*(1-f) + t.v[i+1]*f
}

var (
	cv2Table  = newLatTable(bucketCV2)
	slowTable = newLatTable(func(m float64) float64 { return latSurv(slowerThan, m) })
)

// slowShareAt is the share of requests slower than slowerThan at latency multiplier m.
func slowShareAt(m float64) float64 {
	if v := slowTable.at(m); !math.IsNaN(v) {
		return v
	}
	return latSurv(slowerThan, m)
}

// cv2At is bucketCV2(m), tabulated.
func cv2At(m float64) float64 {
	if v := cv2Table.at(m); !math.IsNaN(v) {
		return v
	}
	return bucketCV2(m)
}

// bucketCV2 is the per-request squared coefficient of variation the engine estimates
// from histogram buckets (engine.Reduce: each bucket's requests at its midpoint, the +Inf
// bucket's at 1.5× the last bound, the exact mean), on the expected bucket shares at
// multiplier m.
func bucketCV2(m float64) float64 {
	var m2, prev, prevSurv float64 = 0, 0, 1
	for _, b := range promBuckets {
		s := latSurv(b, m)
		m2 += (prevSurv - s) * (prev + b) / 2 * (prev + b) / 2
		prev, prevSurv = b, s
	}
	m2 += prevSurv * (1.5 * prev) * (1.5 * prev)
	mean := latMean1 * m
	return math.Max(m2/(mean*mean)-1, 1e-6)
}

// latent is one run's world before any traffic decision: the load and every cluster's
// error-rate and latency multipliers, minute by minute, from the start of the history
// to the end of the longest run. Rules that steer traffic differently draw their counts
// from the same latent world with the same random numbers (common random numbers), so
// two rules at the same weights see exactly the same interval.
type latent struct {
	w    *World
	sc   Scale
	seed uint64
	// start is the minute the ramp starts; histEnd the minute the engine's history
	// ends (start, or the declared appliedAt).
	start, histEnd int
	load           []float64
	errMult        [nClusters][]float64
	latMult        [nClusters][]float64
	cv2            [nClusters][]float64
}

// newLatent draws a run's latent world: history minutes before the ramp (the engine's
// history window, plus the time since the variant arrived) and horizon minutes of run.
func newLatent(w *World, sc Scale, seed uint64, history, horizon int) *latent {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	pre := history + w.AppliedBefore
	n := pre + horizon
	l := &latent{w: w, sc: sc, seed: seed, start: pre, histEnd: pre, load: make([]float64, n)}
	if w.DeclareApplied {
		l.histEnd = pre - w.AppliedBefore
	}
	phase := r.Float64() * 1440
	for t := range n {
		l.load[t] = sc.RequestsPerMinute * (1 + w.Diurnal*math.Sin(2*math.Pi*(float64(t)+phase)/1440))
	}
	applied := pre - w.AppliedBefore
	for j := range nClusters {
		l.errMult[j] = make([]float64, n)
		l.latMult[j] = make([]float64, n)
		l.cv2[j] = make([]float64, n)
		p := newProcess(w.Noise, r)
		for t := range n {
			m, lm := p.next(r)
			if j == 0 {
				m *= w.Offset
				lm *= w.Offset
				if t >= applied {
					m *= w.Errors
					lm *= w.Latency
				}
			}
			l.errMult[j][t], l.latMult[j][t] = m, lm
			l.cv2[j][t] = cv2At(lm)
		}
	}
	return l
}

// process is one cluster's noise: its error-rate and latency multipliers, minute by
// minute, before any offset or variant.
type process struct {
	nz             Noise
	a              float64 // AR(1) state of the log error rate
	inBurst        bool
	pEnter, pLeave float64
}

// newProcess starts a cluster's process in its stationary state.
func newProcess(nz Noise, r *rand.Rand) *process {
	p := &process{nz: nz}
	if nz.BurstStart > 0 && nz.BurstFactor > 0 {
		p.pEnter, p.pLeave = nz.BurstStart, 1/math.Max(nz.BurstMinutes, 1)
		p.inBurst = r.Float64() < p.pEnter/(p.pEnter+p.pLeave)
	}
	if nz.DriftSD > 0 {
		p.a = nz.DriftSD * r.NormFloat64()
	}
	return p
}

// next is the next minute's error-rate and latency multipliers.
func (p *process) next(r *rand.Rand) (errMult, latMult float64) {
	nz := &p.nz
	m := 1.0
	if nz.GammaK > 0 {
		m = randx.Gamma(r, nz.GammaK) / nz.GammaK
	}
	if nz.DriftSD > 0 {
		p.a = nz.DriftPhi*p.a + math.Sqrt(1-nz.DriftPhi*nz.DriftPhi)*nz.DriftSD*r.NormFloat64()
		m *= math.Exp(p.a)
	}
	if p.pEnter > 0 {
		if p.inBurst {
			p.inBurst = r.Float64() >= p.pLeave
		} else {
			p.inBurst = r.Float64() < p.pEnter
		}
		if p.inBurst {
			m *= nz.BurstFactor
		}
	}
	return m, math.Exp(nz.LatencySD * r.NormFloat64())
}

// Interval is one minute of one run as every rule sees it: the configured weights and,
// per cluster (canary first, then the two baselines), the counts and latency sums.
type Interval struct {
	// Weights are the configured shares of the experiment's traffic (sum 1).
	Weights [nClusters]float64
	// Requests, Errors and Slow (slower than 250 ms) are counts; Sum is the latency sum
	// (s); CV2 the per-request squared CV of latency as estimated from the buckets.
	Requests, Errors, Slow, Sum, CV2 [nClusters]float64
}

// Mean is cluster j's mean latency (s), NaN without requests.
func (iv *Interval) Mean(j int) float64 {
	if iv.Requests[j] <= 0 {
		return math.NaN()
	}
	return iv.Sum[j] / iv.Requests[j]
}

// baseline pools the two baselines: summed counts, request-weighted mean latency.
func (iv *Interval) baseline() (req, errs, slow, mean float64) {
	req = iv.Requests[1] + iv.Requests[2]
	errs = iv.Errors[1] + iv.Errors[2]
	slow = iv.Slow[1] + iv.Slow[2]
	mean = math.NaN()
	if req > 0 {
		mean = (iv.Sum[1] + iv.Sum[2]) / req
	}
	return
}

// drawer draws intervals from a latent world with its own reseeded generator: the
// counts of minute t depend only on (seed, t) and the weights.
type drawer struct {
	l   *latent
	pcg *rand.PCG
	r   *rand.Rand
}

func newDrawer(l *latent) *drawer {
	p := rand.NewPCG(0, 0)
	return &drawer{l: l, pcg: p, r: rand.New(p)}
}

// draw is minute t at the configured weights w (canary, baselines): the canary really
// receives Honour of its share, the baselines the rest in proportion.
func (d *drawer) draw(t int, w [nClusters]float64) Interval {
	l := d.l
	d.pcg.Seed(l.seed, uint64(t)+1)
	r := d.r
	iv := Interval{Weights: w}
	real := w[0] * l.w.Honour
	rest := w[1] + w[2]
	actual := [nClusters]float64{real, 0, 0}
	if rest > 0 {
		actual[1] = (1 - real) * w[1] / rest
		actual[2] = (1 - real) * w[2] / rest
	}
	for j := range nClusters {
		n := randx.Poisson(r, l.load[t]*actual[j])
		m, lm := l.errMult[j][t], l.latMult[j][t]
		iv.Requests[j] = n
		iv.Errors[j] = randx.Poisson(r, n*math.Min(1, l.sc.ErrorRate*m))
		iv.CV2[j] = l.cv2[j][t]
		if n <= 200 {
			// few requests: draw each one, so that slow counts and sums agree
			var sum, slow float64
			for range int(n) {
				med := latBodyMedian
				if r.Float64() < latTailShare {
					med = latTailMedian
				}
				x := lm * med * math.Exp(latSigma*r.NormFloat64())
				sum += x
				if x > slowerThan {
					slow++
				}
			}
			iv.Sum[j], iv.Slow[j] = sum, slow
			continue
		}
		iv.Slow[j] = randx.Poisson(r, n*slowShareAt(lm))
		iv.Sum[j] = math.Max(0, lm*(n*latMean1+math.Sqrt(n)*latSD1*r.NormFloat64()))
	}
	return iv
}
