package engine

// ShareInput is what the traffic-share check reads from one live interval's observations,
// chosen by the same rule AddInterval uses: the KPI whose request counts feed it, and each
// cluster's count and configured weight in exp.Spec.Clusters() order. ok is false when the
// interval does not feed the check (no KPI with request counts, or a cluster without
// them). Reports show each step's observed shares from it, so they cannot pick another KPI
// than the check did.
func (e *Evidence) ShareInput(obs map[string]Observation) (kpi string, counts, weights []float64, ok bool) {
	k, o := e.shareSource(obs)
	if k == nil {
		return "", nil, nil, false
	}
	for _, c := range e.exp.Spec.Clusters() {
		n, found := k.requests(o, c)
		if !found {
			return k.spec.Name, nil, nil, false
		}
		counts = append(counts, n)
		weights = append(weights, o.Weights[c])
	}
	return k.spec.Name, counts, weights, true
}
