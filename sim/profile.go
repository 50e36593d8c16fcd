package sim

import (
	"fmt"
	"math"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/internal/randx"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in scenario files as Go notation ("250ms", "4m"), so
// profiles and schedules read the way people say them.
type Duration time.Duration

// UnmarshalYAML reads a duration string; a bare 0 is accepted as zero.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 250ms, 4m): %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in Go notation.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Profile is how a simulated cluster behaves. The statistics Verdict must get right
// (docs statistics.md §1–3a) only show up on data with real-world flaws, so a profile has
// them all: a log-normal latency body with a heavier tail, an error probability that wobbles
// from epoch to epoch (Gamma-distributed, overdispersed) and sometimes bursts, a capacity
// near which latency climbs and beyond which requests are shed, and a slow drift so that
// two clusters with the same profile are never identical. Zero fields switch a feature off;
// start from DefaultProfile for a realistic cluster.
type Profile struct {
	// LatencyMedian is the median of the log-normal body of the latency distribution.
	LatencyMedian Duration `yaml:"latencyMedian"`
	// LatencySigma is the body's shape: the standard deviation of log latency.
	LatencySigma float64 `yaml:"latencySigma"`
	// TailFraction of requests take their latency from the tail instead of the body: slow
	// queries, GC pauses, cold caches. It is what p99 mostly measures.
	TailFraction float64 `yaml:"tailFraction"`
	// TailMedian is the median of the tail, log-normal with the body's shape.
	TailMedian Duration `yaml:"tailMedian"`
	// ErrorRate is the mean probability that a request fails with a 5xx.
	ErrorRate float64 `yaml:"errorRate"`
	// ClientErrorRate is the probability of a 404, which is not a server error: error KPIs
	// must select 5xx codes, as they would on a real ingress.
	ClientErrorRate float64 `yaml:"clientErrorRate"`
	// Capacity is the request rate (per second) the cluster can serve. As the load nears it,
	// latency rises (as a queue's does); above it the excess is shed with 503s. 0 means
	// unlimited.
	Capacity float64 `yaml:"capacity"`
	// CPUPerRequest is the mean CPU time a request costs, exported as a counter so that
	// CPU per request can be a gauge KPI.
	CPUPerRequest Duration `yaml:"cpuPerRequest"`
	// Drift is the amplitude of a slow multiplicative wander of latency, errors and CPU
	// (0.05 = ±5%), with period DriftPeriod and a random phase per cluster.
	Drift       float64  `yaml:"drift"`
	DriftPeriod Duration `yaml:"driftPeriod"`
	// Epoch is how long one draw of noise lasts: every epoch the latency gets a fresh
	// log-normal multiplier (LatencyNoise is its σ) and the error rate a fresh Gamma
	// multiplier of mean 1 and shape ErrorDispersion (0: none, errors are Poisson).
	Epoch           Duration `yaml:"epoch"`
	LatencyNoise    float64  `yaml:"latencyNoise"`
	ErrorDispersion float64  `yaml:"errorDispersion"`
	// BurstProbability is the chance that an epoch is an error burst (a pod crash, a noisy
	// neighbour): its error rate is multiplied by a factor drawn uniformly from
	// [2, BurstFactor].
	BurstProbability float64 `yaml:"burstProbability"`
	BurstFactor      float64 `yaml:"burstFactor"`
}

// DefaultProfile is a healthy production cluster: 50 ms median, 2% of requests in a 250 ms
// tail (p99 ≈ 0.3 s), 1% server errors overdispersed as Gamma(k=20) per 10 s epoch with a
// 2% chance of a ×2–6 burst, ±4% drift over 10 minutes, 20 ms of CPU per request and a
// capacity far above the demo's load.
func DefaultProfile() Profile {
	return Profile{
		LatencyMedian:    Duration(50 * time.Millisecond),
		LatencySigma:     0.45,
		TailFraction:     0.02,
		TailMedian:       Duration(250 * time.Millisecond),
		ErrorRate:        0.01,
		ClientErrorRate:  0.005,
		Capacity:         2000,
		CPUPerRequest:    Duration(20 * time.Millisecond),
		Drift:            0.04,
		DriftPeriod:      Duration(10 * time.Minute),
		Epoch:            Duration(10 * time.Second),
		LatencyNoise:     0.03,
		ErrorDispersion:  20,
		BurstProbability: 0.02,
		BurstFactor:      6,
	}
}

// Validate reports a profile that cannot be simulated, naming the field.
func (p Profile) Validate() error {
	switch {
	case p.LatencyMedian < 0 || p.TailMedian < 0 || p.CPUPerRequest < 0 || p.DriftPeriod < 0 || p.Epoch < 0:
		return fmt.Errorf("profile: durations must not be negative")
	case p.LatencySigma < 0 || p.LatencySigma > 3:
		return fmt.Errorf("profile: latencySigma %g must be in [0, 3]", p.LatencySigma)
	case p.TailFraction < 0 || p.TailFraction > 1:
		return fmt.Errorf("profile: tailFraction %g must be in [0, 1]", p.TailFraction)
	case p.ErrorRate < 0 || p.ErrorRate > 1:
		return fmt.Errorf("profile: errorRate %g must be in [0, 1]", p.ErrorRate)
	case p.ClientErrorRate < 0 || p.ClientErrorRate > 1:
		return fmt.Errorf("profile: clientErrorRate %g must be in [0, 1]", p.ClientErrorRate)
	case p.Capacity < 0:
		return fmt.Errorf("profile: capacity %g must not be negative", p.Capacity)
	case p.Drift < 0 || p.Drift > 1:
		return fmt.Errorf("profile: drift %g must be in [0, 1]", p.Drift)
	case p.LatencyNoise < 0 || p.LatencyNoise > 2:
		return fmt.Errorf("profile: latencyNoise %g must be in [0, 2]", p.LatencyNoise)
	case p.ErrorDispersion < 0:
		return fmt.Errorf("profile: errorDispersion %g must not be negative", p.ErrorDispersion)
	case p.BurstProbability < 0 || p.BurstProbability > 1:
		return fmt.Errorf("profile: burstProbability %g must be in [0, 1]", p.BurstProbability)
	case p.BurstProbability > 0 && p.BurstFactor < 2:
		return fmt.Errorf("profile: burstFactor %g must be at least 2 when bursts are on", p.BurstFactor)
	}
	return nil
}

// Effect is a change to a profile expressed as multipliers, which is how an experiment's
// result is stated ("errors ×2, p99 +30%"). Zero fields mean ×1.
type Effect struct {
	// Latency multiplies every latency (body and tail), so every quantile moves by it.
	Latency float64 `yaml:"latency"`
	// Errors multiplies the server error rate.
	Errors float64 `yaml:"errors"`
	// CPU multiplies the CPU per request.
	CPU float64 `yaml:"cpu"`
	// Capacity multiplies the capacity (an under-provisioned variant has less).
	Capacity float64 `yaml:"capacity"`
}

// IsZero reports whether the effect changes nothing.
func (e Effect) IsZero() bool {
	return one(e.Latency) == 1 && one(e.Errors) == 1 && one(e.CPU) == 1 && one(e.Capacity) == 1
}

// String describes the effect as a person would, e.g. "errors ×2, latency ×1.3".
func (e Effect) String() string {
	s := ""
	add := func(name string, v float64) {
		if one(v) == 1 {
			return
		}
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s ×%g", name, v)
	}
	add("errors", e.Errors)
	add("latency", e.Latency)
	add("cpu", e.CPU)
	add("capacity", e.Capacity)
	if s == "" {
		return "no change"
	}
	return s
}

func one(v float64) float64 {
	if v == 0 {
		return 1
	}
	return v
}

// With returns the profile changed by e.
func (p Profile) With(e Effect) Profile {
	scale := func(d Duration, f float64) Duration { return Duration(float64(d) * one(f)) }
	p.LatencyMedian = scale(p.LatencyMedian, e.Latency)
	p.TailMedian = scale(p.TailMedian, e.Latency)
	p.CPUPerRequest = scale(p.CPUPerRequest, e.CPU)
	p.ErrorRate = math.Min(1, p.ErrorRate*one(e.Errors))
	p.Capacity *= one(e.Capacity)
	return p
}

// outcome is what one request will experience.
type outcome struct {
	latency time.Duration
	status  int
	cpu     float64 // seconds
}

// behaviour draws outcomes from a profile, keeping the state that makes them realistic:
// the current epoch's noise, the drift phases and the recent arrival rate.
type behaviour struct {
	mu      sync.Mutex
	p       Profile
	rng     *mrand.Rand
	start   time.Time
	phase   [3]float64 // drift phases: latency, errors, cpu
	epoch   int64
	latMult float64
	errMult float64
	burst   bool
	// rate is an exponentially weighted arrival rate (per second) with time constant tau.
	rate     float64
	lastSeen time.Time
}

const rateTau = 2.0 // seconds

func newBehaviour(p Profile, seed uint64, start time.Time) *behaviour {
	b := &behaviour{p: p, rng: mrand.New(mrand.NewPCG(seed, seed^0xda942042e4dd58b5)), start: start, epoch: -1}
	for i := range b.phase {
		b.phase[i] = b.rng.Float64() * 2 * math.Pi
	}
	return b
}

func (b *behaviour) profile() Profile {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.p
}

func (b *behaviour) setProfile(p Profile) {
	b.mu.Lock()
	b.p = p
	b.epoch = -1 // redraw the noise for the new profile
	b.mu.Unlock()
}

// routeFactor scales latency and CPU per route: search is heavier than a listing.
func routeFactor(route string) float64 {
	switch route {
	case routeSearch:
		return 1.6
	case routeCheckout:
		return 1.3
	}
	return 1
}

// draw samples the outcome of one request arriving at now.
func (b *behaviour) draw(now time.Time, route string) outcome {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := &b.p

	// Arrival rate, for the capacity model.
	if !b.lastSeen.IsZero() {
		dt := now.Sub(b.lastSeen).Seconds()
		if dt > 0 {
			b.rate *= math.Exp(-dt / rateTau)
		}
	}
	b.rate += 1 / rateTau
	b.lastSeen = now

	// Epoch noise.
	t := now.Sub(b.start).Seconds()
	epochLen := p.Epoch.D().Seconds()
	if epochLen <= 0 {
		epochLen = 10
	}
	if e := int64(t / epochLen); e != b.epoch {
		b.epoch = e
		b.latMult = math.Exp(p.LatencyNoise * b.rng.NormFloat64())
		b.errMult = 1
		if p.ErrorDispersion > 0 {
			b.errMult = randx.Gamma(b.rng, p.ErrorDispersion) / p.ErrorDispersion
		}
		b.burst = p.BurstProbability > 0 && b.rng.Float64() < p.BurstProbability
		if b.burst {
			b.errMult *= 2 + b.rng.Float64()*(p.BurstFactor-2)
		}
	}

	drift := func(i int) float64 {
		if p.Drift == 0 || p.DriftPeriod <= 0 {
			return 1
		}
		return math.Exp(p.Drift * math.Sin(2*math.Pi*t/p.DriftPeriod.D().Seconds()+b.phase[i]))
	}

	// Load: latency climbs as utilisation u nears 1 (a queue), the excess above 1 is shed.
	loadMult, shed := 1.0, 0.0
	if p.Capacity > 0 {
		u := b.rate / p.Capacity
		loadMult = 1 + math.Pow(u, 4)/(1-math.Min(u, 0.95))
		if u > 1 {
			shed = 1 - 1/u
		}
	}

	rf := routeFactor(route)
	median := p.LatencyMedian.D().Seconds()
	if p.TailFraction > 0 && b.rng.Float64() < p.TailFraction {
		median = p.TailMedian.D().Seconds()
	}
	lat := median * math.Exp(p.LatencySigma*b.rng.NormFloat64())
	lat *= rf * drift(0) * b.latMult * loadMult

	o := outcome{status: 200}
	errP := math.Min(1, p.ErrorRate*drift(1)*b.errMult)
	switch u := b.rng.Float64(); {
	case shed > 0 && u < shed:
		o.status = 503
		lat = math.Min(lat, 0.005) // shed fast, as a load shedder does
	case u < shed+errP*(1-shed):
		// Server errors: mostly 500s, some 502/504 from the application's own upstreams.
		switch v := b.rng.Float64(); {
		case v < 0.7:
			o.status = 500
		case v < 0.9:
			o.status = 502
		default:
			o.status = 504
		}
	case b.rng.Float64() < p.ClientErrorRate:
		o.status = 404
	}
	o.latency = time.Duration(lat * float64(time.Second))
	o.cpu = p.CPUPerRequest.D().Seconds() * rf * drift(2) * math.Exp(0.2*b.rng.NormFloat64()-0.02)
	return o
}
