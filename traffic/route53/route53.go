package route53

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/traffic"
)

// MaxWeight is the largest Route 53 weight, which Verdict's weight 1 maps to.
const MaxWeight = 255

// AliasTTL is the TTL assumed for an alias record, which has none of its own: Route 53
// answers with the target's TTL, 60 seconds for ELB load balancers, CloudFront and S3.
const AliasTTL = 60 * time.Second

// DefaultRegion is the region used for the Route 53 API when none is configured; Route 53
// is a global service whose control plane lives in us-east-1.
const DefaultRegion = "us-east-1"

// Units is the Route 53 weight Verdict writes for weight w: round(w×255).
func Units(w float64) int64 { return int64(math.Round(w * MaxWeight)) }

// Fraction is the Verdict weight a Route 53 weight reads as: u/255.
func Fraction(u int64) float64 { return float64(u) / MaxWeight }

// ErrNotWeighted reports that the record set exists but is not a weighted one (a simple,
// failover or latency record), which Verdict cannot steer.
var ErrNotWeighted = errors.New("record set is not weighted")

// ErrNotInSync reports that a change was accepted but did not reach INSYNC within
// Options.SyncTimeout: the weights are written and Route 53 is still propagating them.
var ErrNotInSync = errors.New("change not INSYNC in time")

// Options configures a Steerer. Zero fields take the defaults noted on each; tests shrink
// the time bounds so retry paths run in milliseconds.
type Options struct {
	// HostedZoneID is used for a PoolRef without an Account.
	HostedZoneID string
	// Region for the API client, default the AWS configuration's region, else
	// DefaultRegion.
	Region string
	// Endpoint overrides the API endpoint (BaseEndpoint), for moto_server or LocalStack:
	// "http://127.0.0.1:5000".
	Endpoint string
	// Profile selects a shared-config profile; empty uses the default chain as is.
	Profile string
	// Credentials overrides the standard AWS credential chain (environment, shared
	// config, SSO, web identity, IMDS), which is used when nil. Credentials are only
	// handed to the SDK's signer; they never appear in errors or logs.
	Credentials aws.CredentialsProvider
	// HTTPClient defaults to the SDK's (which honours AWS_CA_BUNDLE); a client given here
	// is used as is.
	HTTPClient *http.Client
	// Logger defaults to discarding.
	Logger *slog.Logger

	// CallTimeout bounds each API attempt, default 30s.
	CallTimeout time.Duration
	// MaxAttempts bounds the attempts of one call on throttling, 5xx and network errors,
	// default 5. The SDK's own retryer is switched off so this policy is the only one.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the backoff between attempts: attempt n waits a
	// random time in [d/2, d] with d = min(BackoffBase·2ⁿ⁻¹, BackoffMax). Defaults 500ms
	// and 8s (Route 53 allows 5 requests per second per account).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// MaxWait bounds the total time one call spends waiting between attempts, default
	// 60s; past it the call fails with an error matching ErrThrottled when it was
	// throttled, so an experiment step fails and is retried later instead of stalling.
	MaxWait time.Duration
	// SyncTimeout bounds the wait for a change to become INSYNC, default 3m (Route 53
	// usually propagates within 60s). SyncPoll is the interval between GetChange calls,
	// default 3s.
	SyncTimeout time.Duration
	SyncPoll    time.Duration
	// PageSize is MaxItems for ListResourceRecordSets, default 300 (the API's maximum).
	PageSize int32
}

// Steerer is the traffic.Steerer for Route 53 weighted record sets. It is safe for
// concurrent use.
type Steerer struct {
	opts   Options
	client *r53.Client
	log    *slog.Logger
}

var (
	_ traffic.Steerer = (*Steerer)(nil)
	_ traffic.Claimer = (*Steerer)(nil)
)

// New returns a Steerer using the standard AWS configuration chain (environment,
// ~/.aws/config and credentials, SSO, web identity, instance roles) unless
// o.Credentials is set. It does not call the API; missing credentials surface on the
// first call.
func New(ctx context.Context, o Options) (*Steerer, error) {
	var loads []func(*config.LoadOptions) error
	if o.Region != "" {
		loads = append(loads, config.WithRegion(o.Region))
	}
	if o.Profile != "" {
		loads = append(loads, config.WithSharedConfigProfile(o.Profile))
	}
	if o.Credentials != nil {
		loads = append(loads, config.WithCredentialsProvider(o.Credentials))
	}
	// Verdict owns the retry policy (Throttling between attempts must re-read the set).
	loads = append(loads, config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
	cfg, err := config.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if o.Endpoint != "" && !strings.HasPrefix(o.Endpoint, "http://") && !strings.HasPrefix(o.Endpoint, "https://") {
		return nil, fmt.Errorf("Route 53 endpoint %q must start with http:// or https://", o.Endpoint)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 8 * time.Second
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 60 * time.Second
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = 3 * time.Minute
	}
	if o.SyncPoll <= 0 {
		o.SyncPoll = 3 * time.Second
	}
	if o.PageSize <= 0 || o.PageSize > 300 {
		o.PageSize = 300
	}
	client := r53.NewFromConfig(cfg, func(ro *r53.Options) {
		if o.Endpoint != "" {
			ro.BaseEndpoint = aws.String(o.Endpoint)
		}
		ro.Retryer = aws.NopRetryer{}
		if o.HTTPClient != nil {
			// Set on the client, not the loaded config: LoadDefaultConfig refuses a plain
			// *http.Client when AWS_CA_BUNDLE is set.
			ro.HTTPClient = o.HTTPClient
		}
	})
	o.Credentials = nil // the client holds them; Options may be logged by a caller
	return &Steerer{opts: o, client: client, log: o.Logger}, nil
}

// Ref returns the PoolRef naming the weighted record set name/rrType in a hosted zone.
func Ref(hostedZoneID, name, rrType string) traffic.PoolRef {
	return traffic.PoolRef{Account: normZone(hostedZoneID), Pool: normName(name) + "/" + strings.ToUpper(strings.TrimSpace(rrType))}
}

// ParseRef splits a PoolRef into hosted zone ID, record name (lower case, with the final
// dot) and type. The zone may be empty (the Steerer's default applies).
func ParseRef(ref traffic.PoolRef) (zone, name, rrType string, err error) {
	i := strings.LastIndex(ref.Pool, "/")
	if i <= 0 || i == len(ref.Pool)-1 {
		return "", "", "", fmt.Errorf("Route 53 record set %q: want \"<record name>/<type>\", e.g. \"api.example.com./A\"", ref.Pool)
	}
	name, rrType = normName(ref.Pool[:i]), strings.ToUpper(strings.TrimSpace(ref.Pool[i+1:]))
	if !slices.Contains(types.RRType("").Values(), types.RRType(rrType)) {
		return "", "", "", fmt.Errorf("Route 53 record set %q: unknown record type %q", ref.Pool, rrType)
	}
	if strings.ContainsAny(name, " /") || name == "." {
		return "", "", "", fmt.Errorf("Route 53 record set %q: %q is not a DNS name", ref.Pool, name)
	}
	return normZone(ref.Account), name, rrType, nil
}

func normZone(z string) string {
	z = strings.TrimSpace(z)
	z = strings.TrimPrefix(z, "/hostedzone/")
	return strings.TrimPrefix(z, "hostedzone/")
}

func normName(n string) string {
	n = strings.ToLower(strings.TrimSpace(n))
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	return n
}

// target is a resolved reference.
type target struct {
	ref    traffic.PoolRef
	zone   string
	name   string
	rrType types.RRType
}

func (s *Steerer) resolve(ref traffic.PoolRef) (target, error) {
	zone, name, rrType, err := ParseRef(ref)
	if err != nil {
		return target{}, err
	}
	if zone == "" {
		zone = normZone(s.opts.HostedZoneID)
	}
	if zone == "" {
		return target{}, fmt.Errorf("record set %q: no hosted zone ID: set the experiment's hosted zone", ref.Pool)
	}
	if strings.ContainsAny(zone, "/ ?#") {
		return target{}, fmt.Errorf("hosted zone ID %q is not a valid identifier", zone)
	}
	t := target{zone: zone, name: name, rrType: types.RRType(rrType)}
	t.ref = traffic.PoolRef{Account: zone, Pool: name + "/" + rrType}
	return t, nil
}

// set is one read of a weighted record set: the Pool Verdict sees and the records as
// Route 53 returned them, which writes send back with only Weight changed.
type set struct {
	pool    traffic.Pool
	records map[string]types.ResourceRecordSet // by SetIdentifier
	ttl     time.Duration
}

func (st set) units(id string) int64 { return aws.ToInt64(st.records[id].Weight) }

// Pool reads the weighted record set with ListResourceRecordSets, following pagination.
// Origins are its records by SetIdentifier, in the order Route 53 lists them, with
// Weight = weight/255, Address = the record values (or the alias target), Enabled always
// true and Raw = the record in the AWS CLI's JSON shape, the weight under "weight". The
// pool's Description is the claim TXT record's text; its Raw holds the zone, name, type
// and TTL.
func (s *Steerer) Pool(ctx context.Context, ref traffic.PoolRef) (traffic.Pool, error) {
	t, err := s.resolve(ref)
	if err != nil {
		return traffic.Pool{}, err
	}
	st, err := s.read(ctx, t, true)
	if err != nil {
		return traffic.Pool{}, fmt.Errorf("read record set %s: %w", t.ref, err)
	}
	return st.pool, nil
}

// TTL is how long resolvers may cache the set's answers: the largest TTL among its
// records, AliasTTL for alias records. A weight change is fully in effect one TTL after
// SetWeights returns, so the engine waits at least this long before an interval counts.
func (s *Steerer) TTL(ctx context.Context, ref traffic.PoolRef) (time.Duration, error) {
	t, err := s.resolve(ref)
	if err != nil {
		return 0, err
	}
	st, err := s.read(ctx, t, false)
	if err != nil {
		return 0, fmt.Errorf("read TTL of record set %s: %w", t.ref, err)
	}
	return st.ttl, nil
}

func (s *Steerer) read(ctx context.Context, t target, withClaim bool) (set, error) {
	var st set
	err := s.do(ctx, "list record set "+t.ref.String(), func(ctx context.Context) error {
		var err error
		st, err = s.readOnce(ctx, t, withClaim)
		return err
	})
	return st, err
}

// readOnce is one read of the set (all its pages, and the claim record when withClaim),
// for callers that run it inside their own retried attempt. Writes read without the
// claim: it is not part of the set, and Route 53 allows 5 requests a second.
func (s *Steerer) readOnce(ctx context.Context, t target, withClaim bool) (set, error) {
	recs, err := s.list(ctx, t.zone, t.name, t.rrType)
	if err != nil {
		return set{}, err
	}
	if len(recs) == 0 {
		return set{}, final(fmt.Errorf("no %s records named %s in hosted zone %s: %w", t.rrType, t.name, t.zone, traffic.ErrNotFound))
	}
	var claim *types.ResourceRecordSet
	if withClaim {
		if claim, err = s.claimRecord(ctx, t); err != nil {
			return set{}, err
		}
	}
	st := set{records: make(map[string]types.ResourceRecordSet, len(recs))}
	p := traffic.Pool{ID: t.ref.Pool, Name: t.name, Enabled: true, MinimumOrigins: 1, SteeringPolicy: "weighted"}
	if claim != nil {
		p.Description = txtText(*claim)
	}
	for _, r := range recs {
		if r.SetIdentifier == nil || r.Weight == nil {
			policy := "simple"
			switch {
			case r.Failover != "":
				policy = "failover"
			case r.Region != "":
				policy = "latency"
			case r.GeoLocation != nil:
				policy = "geolocation"
			case r.MultiValueAnswer != nil:
				policy = "multivalue"
			}
			return set{}, final(fmt.Errorf("%s %s in hosted zone %s has %s routing: %w", t.name, t.rrType, t.zone, policy, ErrNotWeighted))
		}
		id := *r.SetIdentifier
		if r.AliasTarget != nil && aws.ToInt64(r.TTL) == 0 {
			// An alias record has no TTL of its own and Route 53 refuses one in a write;
			// moto reports TTL 0 for it.
			r.TTL = nil
		}
		raw, err := recordJSON(r)
		if err != nil {
			return set{}, final(fmt.Errorf("record %q: %w", id, err))
		}
		st.records[id] = r
		p.Origins = append(p.Origins, traffic.Origin{
			Name:    id,
			Address: address(r),
			Enabled: true,
			Weight:  Fraction(*r.Weight),
			Raw:     raw,
		})
		ttl := AliasTTL
		if r.AliasTarget == nil {
			ttl = time.Duration(aws.ToInt64(r.TTL)) * time.Second
		}
		st.ttl = max(st.ttl, ttl)
	}
	p.Raw, _ = json.Marshal(map[string]any{
		"HostedZoneId": t.zone, "Name": t.name, "Type": string(t.rrType),
		"TTL": int64(st.ttl / time.Second), "description": p.Description,
	})
	st.pool = p
	return st, nil
}

// list returns every record named name of type rrType, following pagination. Route 53
// lists records sorted by name, type and set identifier, so the set's records are the
// run starting at (name, type).
func (s *Steerer) list(ctx context.Context, zone, name string, rrType types.RRType) ([]types.ResourceRecordSet, error) {
	in := &r53.ListResourceRecordSetsInput{
		HostedZoneId:    aws.String(zone),
		StartRecordName: aws.String(name),
		StartRecordType: rrType,
		MaxItems:        aws.Int32(s.opts.PageSize),
	}
	var out []types.ResourceRecordSet
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page > 1000 {
			return nil, final(fmt.Errorf("list %s %s: more than 1000 pages", name, rrType))
		}
		resp, err := s.client.ListResourceRecordSets(ctx, in)
		if err != nil {
			return nil, s.apiError("ListResourceRecordSets", err)
		}
		for _, r := range resp.ResourceRecordSets {
			if normName(unescape(aws.ToString(r.Name))) != name || r.Type != rrType {
				return out, nil
			}
			key := aws.ToString(r.SetIdentifier)
			if seen[key] {
				// An API that ignores StartRecordIdentifier (moto) returns the same page
				// again: stop rather than loop.
				return nil, final(fmt.Errorf("list %s %s: record %q listed twice; the API does not page within a record set", name, rrType, key))
			}
			seen[key] = true
			out = append(out, r)
		}
		if !resp.IsTruncated {
			return out, nil
		}
		if normName(unescape(aws.ToString(resp.NextRecordName))) != name || resp.NextRecordType != rrType {
			return out, nil
		}
		in.StartRecordName = resp.NextRecordName
		in.StartRecordType = resp.NextRecordType
		in.StartRecordIdentifier = resp.NextRecordIdentifier
	}
}

// unescape turns Route 53's octal escapes ("\052" for "*") back into characters.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil && v < 256 {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// address is what an operator recognises a record by: its values, or its alias target.
func address(r types.ResourceRecordSet) string {
	if r.AliasTarget != nil {
		return aws.ToString(r.AliasTarget.DNSName)
	}
	vals := make([]string, 0, len(r.ResourceRecords))
	for _, v := range r.ResourceRecords {
		vals = append(vals, aws.ToString(v.Value))
	}
	return strings.Join(vals, ",")
}

// recordJSON renders r the way `aws route53 list-resource-record-sets` prints it (unset
// fields left out), except that the weight is under "weight", the key Verdict's shared
// code (traffic.DiffPools, the conformance suite) treats as an origin's weight.
func recordJSON(r types.ResourceRecordSet) (json.RawMessage, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m = prune(m).(map[string]any)
	if w, ok := m["Weight"]; ok {
		delete(m, "Weight")
		m["weight"] = w
	}
	return json.Marshal(m)
}

// prune drops nulls, empty strings and empty lists and objects: the SDK's structs have
// no omitempty, and an unset field is not part of the record.
func prune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			e = prune(e)
			if empty(e) {
				delete(x, k)
				continue
			}
			x[k] = e
		}
		return x
	case []any:
		out := x[:0]
		for _, e := range x {
			if e = prune(e); !empty(e) {
				out = append(out, e)
			}
		}
		return out
	}
	return v
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// SetWeights reads the set, refuses with a *traffic.DriftError if the records in expect
// do not have those weights, validates want, and sends one ChangeResourceRecordSets
// batch that UPSERTs only the records whose weight changes (at Verdict's 0.01
// granularity: a record at 127 asked for 0.5 is left alone), each exactly as read but for
// Weight = Units(w). It waits for the change to be INSYNC, reads the set back and
// returns a *traffic.DriftError (phase PhaseAfterWrite) if any record's weight is not
// what was written or kept.
//
// Throttling, PriorRequestNotComplete, 5xx and network errors are retried; every retry
// first reads the set again, and any difference from the first read (a weight, a record
// added or removed, any other field) stops with a *traffic.DriftError
// (PhaseBetweenAttempts) instead of writing over it. What remains unprotected is the one
// round trip between that read and the batch arriving: an UPSERT is unconditional.
func (s *Steerer) SetWeights(ctx context.Context, ref traffic.PoolRef, want, expect traffic.Weights) error {
	t, err := s.resolve(ref)
	if err != nil {
		return err
	}
	first, err := s.read(ctx, t, false)
	if err != nil {
		return fmt.Errorf("set weights on record set %s: read current records: %w", t.ref, err)
	}
	if err := traffic.CheckDrift(first.pool, t.ref, traffic.PhaseBeforeWrite, expect); err != nil {
		return err
	}
	if err := traffic.CheckRequest(first.pool, want, expect); err != nil {
		if allZero(first, want) {
			err = fmt.Errorf("%w (in Route 53 it would be worse: a set whose weights are all 0 answers with every record equally)", err)
		}
		return fmt.Errorf("set weights on record set %s: %w", t.ref, err)
	}
	if len(batch(first, want)) == 0 {
		s.log.Debug("weights already as wanted; nothing written", "pool", t.ref.String())
		return nil
	}
	latest := first
	attempts := 0
	unsure := false // an earlier attempt failed without saying whether it was applied
	var change string
	err = s.do(ctx, "change record set "+t.ref.String(), func(ctx context.Context) error {
		attempts++
		if attempts > 1 {
			st, err := s.readOnce(ctx, t, false)
			if err != nil {
				return err
			}
			latest = st
			switch landed, err := s.sinceFirstRead(t, first, latest, want, unsure); {
			case err != nil:
				return final(err)
			case landed:
				s.log.Info("an earlier attempt was applied despite its error; not sending again", "pool", t.ref.String())
				return nil
			}
		}
		changes := batch(latest, want)
		resp, err := s.client.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{
			HostedZoneId: aws.String(t.zone),
			ChangeBatch: &types.ChangeBatch{
				Comment: aws.String(comment("verdict: set weights " + describeChanges(changes))),
				Changes: changes,
			},
		})
		if err != nil {
			err = s.apiError("ChangeResourceRecordSets", err)
			if !refused(err) {
				unsure = true
			}
			return err
		}
		if resp.ChangeInfo != nil {
			change = aws.ToString(resp.ChangeInfo.Id)
			if resp.ChangeInfo.Status == types.ChangeStatusInsync {
				change = ""
			}
		}
		return nil
	})
	if err != nil {
		var de *traffic.DriftError
		if errors.As(err, &de) {
			return err
		}
		return fmt.Errorf("set weights on record set %s: change records: %w", t.ref, err)
	}
	start := time.Now()
	if change != "" {
		if err := s.waitInSync(ctx, change); err != nil {
			return fmt.Errorf("set weights on record set %s: written (change %s), but %w", t.ref, change, err)
		}
	}
	s.log.Info("record weights written", "pool", t.ref.String(), "weights", formatWeights(want), "attempts", attempts, "insync_after", time.Since(start))
	back, err := s.read(ctx, t, false)
	if err != nil {
		return fmt.Errorf("set weights on record set %s: written, but reading back to verify failed: %w", t.ref, err)
	}
	return afterWrite(t.ref, latest, back, want)
}

// allZero reports whether want would leave every record of the set at weight 0.
func allZero(st set, want traffic.Weights) bool {
	for _, o := range st.pool.Origins {
		w, ok := want[o.Name]
		if !ok {
			w = o.Weight
		}
		if Units(w) > 0 {
			return false
		}
	}
	return true
}

// targetUnits is the integer a record should hold after want: Units(w) if it is named and its
// weight changes at Verdict's granularity, else what it holds. A record at 127 asked for
// 0.5 (128) keeps its 127: 127/255 already is 0.5 within traffic.SameWeight, and
// rewriting it would touch a record whose weight does not change.
func targetUnits(st set, name string, want traffic.Weights) int64 {
	cur := st.units(name)
	if w, ok := want[name]; ok && !traffic.SameWeight(Fraction(cur), w) {
		return Units(w)
	}
	return cur
}

// batch is the UPSERT of every record whose weight changes under want, each exactly as
// read but for its weight, in the set's order.
func batch(st set, want traffic.Weights) []types.Change {
	var out []types.Change
	for _, o := range st.pool.Origins {
		u := targetUnits(st, o.Name, want)
		if u == st.units(o.Name) {
			continue
		}
		r := st.records[o.Name]
		r.Weight = aws.Int64(u)
		out = append(out, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &r})
	}
	return out
}

// afterWrite compares the read-back with what latest and want intend, on the integers
// Route 53 stores: every record at its target.
func afterWrite(ref traffic.PoolRef, latest, back set, want traffic.Weights) error {
	var drift []traffic.OriginDrift
	for _, o := range latest.pool.Origins {
		u := targetUnits(latest, o.Name, want)
		b, ok := back.records[o.Name]
		switch {
		case !ok:
			drift = append(drift, traffic.OriginDrift{Name: o.Name, Expect: Fraction(u), Missing: true})
		case aws.ToInt64(b.Weight) != u:
			drift = append(drift, traffic.OriginDrift{Name: o.Name, Expect: Fraction(u), Actual: Fraction(aws.ToInt64(b.Weight))})
		}
	}
	if len(drift) == 0 {
		return nil
	}
	slices.SortFunc(drift, func(x, y traffic.OriginDrift) int { return strings.Compare(x.Name, y.Name) })
	return &traffic.DriftError{Pool: ref, Phase: traffic.PhaseAfterWrite, Origins: drift}
}

// sinceFirstRead decides whether a retry may go ahead with latest. Any difference from
// first is someone else's change and comes back as a *traffic.DriftError, except this
// call's own weights already in place (landed: an earlier attempt was applied despite its
// error). Weights are compared as Route 53's integers, so even a 1/255 change counts.
func (s *Steerer) sinceFirstRead(t target, first, latest set, want traffic.Weights, unsure bool) (landed bool, err error) {
	diff := diffSets(first, latest)
	if len(diff) == 0 {
		return false, nil
	}
	ours, others := 0, 0
	for _, d := range diff {
		w, wanted := want[d.Name]
		if wanted && !d.Missing && !d.Added && len(d.Fields) == 0 && Units(w) == latest.units(d.Name) {
			ours++
		} else {
			others++
		}
	}
	if others == 0 && len(batch(latest, want)) == 0 {
		return true, nil
	}
	phase := traffic.PhaseBetweenAttempts
	if unsure && ours > 0 {
		phase = traffic.PhaseAfterWrite
	}
	s.log.Warn("record set changed while a write waited to be retried; not writing over it", "pool", t.ref.String(), "records", len(diff))
	return false, &traffic.DriftError{Pool: t.ref, Phase: phase, Origins: diff}
}

// diffSets lists every record that differs between two reads: weight (as integers),
// presence, or any other field (named as in the AWS CLI's JSON).
func diffSets(before, after set) []traffic.OriginDrift {
	var out []traffic.OriginDrift
	for _, o := range before.pool.Origins {
		a, ok := after.pool.Origin(o.Name)
		if !ok {
			out = append(out, traffic.OriginDrift{Name: o.Name, Expect: o.Weight, Missing: true})
			continue
		}
		d := traffic.OriginDrift{Name: o.Name, Expect: o.Weight, Actual: a.Weight, Fields: fieldDiff(o.Raw, a.Raw)}
		if before.units(o.Name) != after.units(o.Name) || len(d.Fields) > 0 {
			out = append(out, d)
		}
	}
	for _, a := range after.pool.Origins {
		if _, ok := before.pool.Origin(a.Name); !ok {
			out = append(out, traffic.OriginDrift{Name: a.Name, Actual: a.Weight, Added: true})
		}
	}
	slices.SortFunc(out, func(x, y traffic.OriginDrift) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func fieldDiff(a, b json.RawMessage) []string {
	var ma, mb map[string]json.RawMessage
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return []string{"(unreadable record)"}
	}
	var f []string
	for k, va := range ma {
		if vb, ok := mb[k]; k != "weight" && (!ok || string(va) != string(vb)) {
			f = append(f, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok && k != "weight" {
			f = append(f, k)
		}
	}
	slices.Sort(f)
	return f
}

// waitInSync polls GetChange until the change is INSYNC, at most SyncTimeout.
func (s *Steerer) waitInSync(parent context.Context, id string) error {
	ctx, cancel := context.WithTimeout(parent, s.opts.SyncTimeout)
	defer cancel()
	for {
		var status types.ChangeStatus
		err := s.do(ctx, "get change "+id, func(ctx context.Context) error {
			resp, err := s.client.GetChange(ctx, &r53.GetChangeInput{Id: aws.String(id)})
			if err != nil {
				return s.apiError("GetChange", err)
			}
			if resp.ChangeInfo != nil {
				status = resp.ChangeInfo.Status
			}
			return nil
		})
		switch {
		case err == nil && status == types.ChangeStatusInsync:
			return nil
		case parent.Err() != nil:
			return fmt.Errorf("stopped waiting for INSYNC (status %s): %w", status, parent.Err())
		case ctx.Err() != nil:
			return fmt.Errorf("still %s after %s: %w", status, s.opts.SyncTimeout, ErrNotInSync)
		case err != nil:
			return fmt.Errorf("checking that it is INSYNC failed: %w", err)
		}
		t := time.NewTimer(s.opts.SyncPoll)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// describeChanges lists a batch as "canary=26 eu-west=115", for its comment.
func describeChanges(changes []types.Change) string {
	parts := make([]string, 0, len(changes))
	for _, c := range changes {
		parts = append(parts, fmt.Sprintf("%s=%d", aws.ToString(c.ResourceRecordSet.SetIdentifier), aws.ToInt64(c.ResourceRecordSet.Weight)))
	}
	return strings.Join(parts, " ")
}

func formatWeights(w traffic.Weights) string {
	names := make([]string, 0, len(w))
	for n := range w {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s=%s(%d)", n, traffic.FormatWeight(w[n]), Units(w[n])))
	}
	return strings.Join(parts, " ")
}

// comment fits a change batch comment into Route 53's 256 characters.
func comment(s string) string {
	if len(s) <= 256 {
		return s
	}
	return s[:253] + "..."
}
