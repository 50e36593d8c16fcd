package experiments

import (
	"strings"

	"github.com/verdict-dev/verdict/traffic"
)

// Traffic providers, as Traffic.Provider names them.
const (
	ProviderCloudflare = "cloudflare"
	ProviderRoute53    = "route53"
)

// DefaultRecordType is the record type of spec.traffic.route53 when the file leaves it out.
const DefaultRecordType = "A"

// Provider names the steerer that carries the experiment: ProviderCloudflare or
// ProviderRoute53, or "" when the file set neither (validation reports it).
func (t *Traffic) Provider() string {
	switch {
	case t.Route53 != nil && t.Cloudflare == nil:
		return ProviderRoute53
	case t.Cloudflare != nil:
		return ProviderCloudflare
	}
	return ""
}

// Origins maps every cluster to its origin in the pool: the Cloudflare origin name, or the
// Route 53 record's SetIdentifier. Callers must not change the map.
func (t *Traffic) Origins() map[string]string {
	switch t.Provider() {
	case ProviderRoute53:
		return t.Route53.SetIdentifiers
	case ProviderCloudflare:
		return t.Cloudflare.Origins
	}
	return nil
}

// PoolRef is the pool the experiment steers, as the provider's traffic.Steerer addresses
// it: Cloudflare's account and pool IDs, or for Route 53 the hosted zone ID and
// "<record name>/<type>" with the name in lower case with its final dot — exactly what
// route53.Ref builds, so the reference stored with a run is stable.
func (t *Traffic) PoolRef() traffic.PoolRef {
	switch t.Provider() {
	case ProviderRoute53:
		r := t.Route53
		typ := strings.ToUpper(strings.TrimSpace(r.Type))
		if typ == "" {
			typ = DefaultRecordType
		}
		zone := strings.TrimSpace(r.HostedZoneID)
		zone = strings.TrimPrefix(strings.TrimPrefix(zone, "/hostedzone/"), "hostedzone/")
		return traffic.PoolRef{Account: zone, Pool: recordName(r.Record) + "/" + typ}
	case ProviderCloudflare:
		return traffic.PoolRef{Account: t.Cloudflare.AccountID, Pool: t.Cloudflare.PoolID}
	}
	return traffic.PoolRef{}
}

// recordName is a DNS name as Route 53 lists it: lower case, with the final dot.
func recordName(n string) string {
	n = strings.ToLower(strings.TrimSpace(n))
	if n != "" && !strings.HasSuffix(n, ".") {
		n += "."
	}
	return n
}

// originsPath is the file path of the cluster → origin map, for errors.
func (t *Traffic) originsPath() string {
	if t.Provider() == ProviderRoute53 {
		return "spec.traffic.route53.setIdentifiers"
	}
	return "spec.traffic.cloudflare.origins"
}

// OriginsPath is the field that maps clusters to origins ("spec.traffic.cloudflare.origins"
// or "spec.traffic.route53.setIdentifiers"), for messages that point at it.
func (t *Traffic) OriginsPath() string { return t.originsPath() }

// Migration reports whether the final step gives the canary all of the experiment's
// traffic (legacy → new). That step is the cut-over: the baselines would carry nothing to
// compare against, so it is not held or judged but written as the promotion, once the
// step before it is judged, and it leaves the baselines at weight 0.
func (t *Traffic) Migration() bool {
	n := len(t.Steps)
	return n > 0 && t.Steps[n-1].Weight >= 1
}

// JudgedSteps is the number of steps that are held and judged: every step but a
// migration's cut-over.
func (t *Traffic) JudgedSteps() int {
	if t.Migration() {
		return len(t.Steps) - 1
	}
	return len(t.Steps)
}

// MigrationNote is what plans and a promoted migration's ending say about the baselines:
// "migration: after promotion the legacy clusters carry no traffic and can be removed
// (c2: o2, c3: o3)", naming each cluster's origin (a Route 53 SetIdentifier: the record to
// delete). It is "" unless the experiment is a migration that keeps its final weights.
func (s *Spec) MigrationNote() string {
	// A switchover keeps its old cluster as the standby: nothing is to be removed.
	if n := s.SwitchoverNote(); n != "" {
		return n
	}
	t := &s.Traffic
	if !t.Migration() || t.OnPromote != OnPromoteKeep {
		return ""
	}
	origins := t.Origins()
	parts := make([]string, 0, len(s.Baselines))
	for _, b := range s.Baselines {
		parts = append(parts, b+": "+origins[b])
	}
	return "migration: after promotion the legacy clusters carry no traffic and can be removed (" + strings.Join(parts, ", ") + ")"
}
