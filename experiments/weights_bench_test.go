package experiments

import "testing"

// BenchmarkWeightPlan is the planner the engine runs once per run in preflight: every
// step's weights, the rollback and the promotion, for the testdata experiment on a pool
// of five origins.
func BenchmarkWeightPlan(b *testing.B) {
	e := loadBase(b)
	for b.Loop() {
		if _, err := WeightPlan(e, basePool); err != nil {
			b.Fatal(err)
		}
	}
}
