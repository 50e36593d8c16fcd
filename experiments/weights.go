package experiments

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Verdict weights are 0–1 in steps of 0.01 (Cloudflare's grid; Route 53's 0–255 integers
// are mapped onto it by the route53 steerer). Planning works in whole hundredths so that
// rounding can never change a total.
const weightScale = 100

// PoolOrigin is an origin of the pool as read before the experiment.
type PoolOrigin struct {
	Name    string
	Weight  float64
	Enabled bool
}

// OriginWeight is an origin's weight in one step of a plan.
type OriginWeight struct {
	Name    string  `json:"name"`
	Cluster string  `json:"cluster,omitempty"` // empty for origins outside the experiment
	Weight  float64 `json:"weight"`
	// Share is the origin's share of the pool's traffic: its weight over the weights of
	// the pool's enabled origins.
	Share float64 `json:"share"`
}

// Replicas are a cluster's HPA bounds in one step.
type Replicas struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// PlanStep is the pool at one step; step 0 is the pool as it is now.
type PlanStep struct {
	Step        int                 `json:"step"`
	CanaryShare float64             `json:"canaryShare"` // the canary's share of the experiment's traffic
	Hold        Duration            `json:"hold,omitempty"`
	MinHold     Duration            `json:"minHold,omitempty"` // the step may advance after this when every KPI is non-inferior
	Origins     []OriginWeight      `json:"origins"`
	Replicas    map[string]Replicas `json:"replicas,omitempty"`
}

// Plan is every weight the experiment will set, computed before anything changes.
type Plan struct {
	Experiment string     `json:"experiment"`
	Steps      []PlanStep `json:"steps"`
	// Rollback and Promote are the pool after each ending.
	Rollback PlanStep `json:"rollback"`
	Promote  PlanStep `json:"promote"`
	// Drained is the pool with the canary drained (its share to the baselines), where the
	// canary waits while its variant is applied with spec.canary.apply.during: drained.
	Drained *PlanStep `json:"drained,omitempty"`
}

// PlanError says why the pool cannot carry the experiment as written.
type PlanError struct {
	Path string // the field to change, e.g. spec.traffic.steps[0].weight
	Msg  string
}

func (e *PlanError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// FieldError places a PlanError in the experiment file.
func (e *Experiment) FieldError(err error) error {
	var pe *PlanError
	if errors.As(err, &pe) && pe.Path != "" {
		return &FieldError{Pos: e.Pos(pe.Path), Path: pe.Path, Msg: pe.Msg}
	}
	return err
}

// WeightPlan computes the pool's weights at every step from its current origins.
//
// The experiment's origins share a fixed total T, their current weight sum. At canary
// share s the canary gets s·T and the baselines split (1−s)·T in their current proportions
// (largest-remainder rounding to hundredths, so the sum is exactly T). Origins outside the
// experiment keep their weights. A step whose canary weight rounds to 0, or whose
// weights would exceed 1, cannot be represented and is an error naming the step.
func WeightPlan(e *Experiment, pool []PoolOrigin) (*Plan, error) {
	s := &e.Spec
	byName := map[string]PoolOrigin{}
	for _, o := range pool {
		byName[o.Name] = o
	}
	origins, originsPath := s.Traffic.Origins(), s.Traffic.originsPath()
	clusterOf := map[string]string{}
	for _, c := range s.Clusters() {
		name := origins[c]
		o, ok := byName[name]
		if !ok {
			return nil, &PlanError{Path: originsPath + "." + c, Msg: fmt.Sprintf("origin %q is not in the pool (origins: %s)", name, originNames(pool))}
		}
		if !o.Enabled {
			return nil, &PlanError{Path: originsPath + "." + c, Msg: fmt.Sprintf("origin %q is disabled in the pool, so it would get no traffic whatever its weight", name)}
		}
		clusterOf[name] = c
	}

	cents := func(w float64) int { return int(math.Round(w * weightScale)) }
	canaryOrigin := origins[s.Canary.Cluster]
	total := 0
	var baseTotal int
	for _, c := range s.Clusters() {
		w := cents(byName[origins[c]].Weight)
		total += w
		if c != s.Canary.Cluster {
			baseTotal += w
		}
	}
	if total == 0 {
		return nil, &PlanError{Path: originsPath, Msg: "the experiment's origins all have weight 0 in the pool: there is no traffic to share"}
	}

	current := map[string]int{}
	others := 0
	for _, o := range pool {
		current[o.Name] = cents(o.Weight)
		if _, mine := clusterOf[o.Name]; !mine && o.Enabled {
			others += cents(o.Weight)
		}
	}
	// With no other origin carrying traffic, shares depend only on the experiment's
	// origins, so a total the largest step cannot fit under the maximum weight of 1 (a
	// migration to 100% of two origins at Cloudflare's default weight 1) is scaled to 1.
	stepTotal := total
	if n := len(s.Traffic.Steps); n > 0 && others == 0 && int(math.Round(float64(s.Traffic.Steps[n-1].Weight)*float64(total))) > weightScale {
		stepTotal = weightScale
	}
	plan := &Plan{Experiment: e.Metadata.Name}
	canaryNow := float64(current[canaryOrigin]) / float64(total)
	plan.Steps = append(plan.Steps, e.planStep(0, canaryNow, 0, pool, current, clusterOf))

	for i, st := range s.Traffic.Steps {
		w, err := shareWeights(e, byName, stepTotal, baseTotal, float64(st.Weight))
		if err != nil {
			return nil, &PlanError{Path: fmt.Sprintf("spec.traffic.steps[%d].weight", i), Msg: fmt.Sprintf("%s: %v", st.Weight, err)}
		}
		plan.Steps = append(plan.Steps, e.planStep(i+1, float64(st.Weight), st.Hold, pool, merge(current, w), clusterOf))
	}

	last := plan.Steps[len(plan.Steps)-1]
	plan.Promote = last
	if s.Traffic.OnPromote == OnPromoteRestore {
		plan.Promote = plan.Steps[0]
	}
	plan.Rollback = plan.Steps[0]
	drainedAt := func(path string) (PlanStep, error) {
		w, err := shareWeights(e, byName, stepTotal, baseTotal, 0)
		if err != nil {
			return PlanStep{}, &PlanError{Path: path, Msg: fmt.Sprintf("cannot drain the canary: %v", err)}
		}
		st := e.planStep(0, 0, 0, pool, merge(current, w), clusterOf)
		st.Step = -1
		return st, nil
	}
	if s.Traffic.OnRollback == OnRollbackDrain {
		st, err := drainedAt("spec.traffic.onRollback")
		if err != nil {
			return nil, err
		}
		plan.Rollback = st
	}
	if a := s.Canary.Apply; a != nil && a.During == ApplyDuringDrained {
		st, err := drainedAt("spec.canary.apply.during")
		if err != nil {
			return nil, err
		}
		plan.Drained = &st
	}
	plan.Promote.Step, plan.Promote.Hold = -1, 0
	plan.Rollback.Step, plan.Rollback.Hold = -1, 0
	return plan, nil
}

// shareWeights returns the experiment origins' weights (in hundredths) at canary share s.
func shareWeights(e *Experiment, byName map[string]PoolOrigin, total, baseTotal int, s float64) (map[string]int, error) {
	sp := &e.Spec
	orig := sp.Traffic.Origins()
	// Whose grid: Cloudflare's own, or Verdict's for Route 53 (mapped to 0–255 integers).
	whose := "Cloudflare's"
	if sp.Traffic.Provider() == ProviderRoute53 {
		whose = "Verdict's"
	}
	canary := int(math.Round(s * float64(total)))
	if s > 0 && canary == 0 {
		return nil, fmt.Errorf("%.4g%% of the experiment's total weight %.2f is below %s smallest weight step of 0.01", s*100, float64(total)/weightScale, whose)
	}
	if canary > weightScale {
		return nil, fmt.Errorf("the canary would need weight %.2f, above %s maximum of 1; lower the other origins' weights first", float64(canary)/weightScale, whose)
	}
	rest := total - canary
	if rest > 0 && baseTotal == 0 {
		return nil, errors.New("the baselines have weight 0 in the pool, so there is no proportion to split their share by")
	}
	out := map[string]int{orig[sp.Canary.Cluster]: canary}
	// Largest remainder: floor every share, then hand the leftover hundredths to the
	// largest fractional parts (ties by file order), so the sum is exactly rest.
	type part struct {
		origin string
		frac   float64
		order  int
	}
	parts := make([]part, 0, len(sp.Baselines))
	given := 0
	for i, b := range sp.Baselines {
		name := orig[b]
		exact := 0.0
		if baseTotal > 0 {
			exact = float64(rest) * math.Round(byName[name].Weight*weightScale) / float64(baseTotal)
		}
		fl := int(math.Floor(exact + 1e-9))
		out[name] = fl
		given += fl
		parts = append(parts, part{name, exact - float64(fl), i})
	}
	sort.SliceStable(parts, func(i, j int) bool {
		if math.Abs(parts[i].frac-parts[j].frac) > 1e-9 {
			return parts[i].frac > parts[j].frac
		}
		return parts[i].order < parts[j].order
	})
	for i := 0; given < rest; i++ {
		out[parts[i%len(parts)].origin]++
		given++
	}
	for _, b := range sp.Baselines {
		if w := out[orig[b]]; w > weightScale {
			return nil, fmt.Errorf("baseline %q would need weight %.2f, above %s maximum of 1", b, float64(w)/weightScale, whose)
		}
	}
	return out, nil
}

func merge(base, over map[string]int) map[string]int {
	m := make(map[string]int, len(base))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

func (e *Experiment) planStep(i int, share float64, hold Duration, pool []PoolOrigin, w map[string]int, clusterOf map[string]string) PlanStep {
	enabled := 0
	for _, o := range pool {
		if o.Enabled {
			enabled += w[o.Name]
		}
	}
	st := PlanStep{Step: i, CanaryShare: share, Hold: hold}
	if i > 0 {
		st.MinHold = e.Spec.Traffic.Steps[i-1].MinHold
	}
	for _, o := range pool {
		ow := OriginWeight{Name: o.Name, Cluster: clusterOf[o.Name], Weight: float64(w[o.Name]) / weightScale}
		if o.Enabled && enabled > 0 {
			ow.Share = float64(w[o.Name]) / float64(enabled)
		}
		st.Origins = append(st.Origins, ow)
	}
	if c := e.Spec.Capacity; c != nil {
		st.Replicas = map[string]Replicas{}
		for _, ow := range st.Origins {
			if ow.Cluster != "" {
				st.Replicas[ow.Cluster] = c.HPA.ReplicasAt(ow.Share * 100)
			}
		}
	}
	return st
}

// ReplicasAt applies the seed HPA formula for a cluster carrying percent% of the pool's
// traffic. Bounds round up: an under-provisioned cluster is the failure this guards against.
func (h HPA) ReplicasAt(percent float64) Replicas {
	return Replicas{
		Min: max(h.DefaultMinReplicas, int(math.Ceil(float64(h.MinReplicas)*percent/100-1e-9))),
		Max: max(h.DefaultMaxReplicas, int(math.Ceil(float64(h.MaxReplicas)*percent/100-1e-9))),
	}
}

func originNames(pool []PoolOrigin) string {
	s := ""
	for i, o := range pool {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", o.Name)
	}
	return s
}
