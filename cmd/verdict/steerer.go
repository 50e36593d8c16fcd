package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// Environment variables that point the Route 53 steerer at another endpoint (moto_server,
// LocalStack): the AWS SDK's own names, the service-specific one first.
const (
	envRoute53Endpoint = "AWS_ENDPOINT_URL_ROUTE_53"
	envAWSEndpoint     = "AWS_ENDPOINT_URL"
)

// steererFor returns the steerer of the experiment's provider: Cloudflare from the
// CLOUDFLARE_* variables, or Route 53 from the standard AWS credential chain. A missing
// credential is a usage error that says what to set.
func steererFor(ctx context.Context, g *globals, exp *experiments.Experiment) (traffic.Steerer, error) {
	switch p := exp.Spec.Traffic.Provider(); p {
	case experiments.ProviderCloudflare:
		cf, err := steererFromEnv(g)
		if err != nil {
			return nil, err
		}
		return cf, nil
	case experiments.ProviderRoute53:
		r, err := route53FromEnv(ctx, g, exp)
		if err != nil {
			return nil, err
		}
		return r, nil
	default:
		return nil, usageErrorf("experiment %s: unknown traffic provider %q (want spec.traffic.cloudflare or spec.traffic.route53)", exp.Metadata.Name, p)
	}
}

// route53Endpoint is the Route 53 API endpoint from the environment, "" for AWS itself.
func route53Endpoint() string {
	if v := strings.TrimSpace(os.Getenv(envRoute53Endpoint)); v != "" {
		return v
	}
	return strings.TrimSpace(os.Getenv(envAWSEndpoint))
}

// awsCredentials checks that the standard AWS credential chain yields credentials, so a
// command fails with a usage error before its first call rather than in the middle. The
// credentials themselves are only handed to the SDK.
func awsCredentials(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return errors.New("no credential provider configured")
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return firstLineErr(err)
	}
	return nil
}

// firstLineErr keeps an SDK error's first line: the rest can be a long chain of every
// provider tried.
func firstLineErr(err error) error {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return errors.New(msg)
}

const noAWSCredentials = "no AWS credentials for Route 53: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (SSO included), or run where a pod or instance role applies; " +
	"set AWS_ENDPOINT_URL_ROUTE_53 for moto_server or LocalStack"

// route53FromEnv builds the Route 53 steerer for exp from the standard AWS chain, with the
// endpoint from AWS_ENDPOINT_URL_ROUTE_53 or AWS_ENDPOINT_URL and the region from the AWS
// configuration (default us-east-1, where Route 53's control plane lives).
func route53FromEnv(ctx context.Context, g *globals, exp *experiments.Experiment) (*route53.Steerer, error) {
	if err := awsCredentials(ctx); err != nil {
		return nil, usageErrorf("%s (%v)", noAWSCredentials, err)
	}
	s, err := route53.New(ctx, route53.Options{Endpoint: route53Endpoint(), HostedZoneID: exp.Spec.Traffic.PoolRef().Account, Logger: g.log})
	if err != nil {
		return nil, withCode(exitInvalid, err)
	}
	return s, nil
}

// poolTTL is the DNS TTL of the experiment's pool when its steerer has one (Route 53):
// ok is false for a load balancer pool.
func poolTTL(ctx context.Context, steer traffic.Steerer, ref traffic.PoolRef) (ttl time.Duration, ok bool, err error) {
	t, ok := steer.(interface {
		TTL(context.Context, traffic.PoolRef) (time.Duration, error)
	})
	if !ok {
		return 0, false, nil
	}
	ttl, err = t.TTL(ctx, ref)
	return ttl, true, err
}

// readPoolAndTTL reads the experiment's pool the way run will, with its DNS TTL when it has one.
func readPoolAndTTL(ctx context.Context, steer traffic.Steerer, exp *experiments.Experiment) (traffic.Pool, time.Duration, error) {
	ref := exp.Spec.Traffic.PoolRef()
	pool, err := steer.Pool(ctx, ref)
	if err != nil {
		return traffic.Pool{}, 0, err
	}
	ttl, _, err := poolTTL(ctx, steer, ref)
	if err != nil {
		return traffic.Pool{}, 0, err
	}
	return pool, ttl, nil
}

// decodePoolFile reads a --pool-file for exp: Cloudflare's pool JSON, or for Route 53 the
// record sets as `aws route53 list-resource-record-sets` prints them (the whole zone or
// just the set; see decodeRecordSets).
func decodePoolFile(exp *experiments.Experiment, file string, data []byte) (traffic.Pool, time.Duration, error) {
	if exp.Spec.Traffic.Provider() == experiments.ProviderRoute53 {
		pool, ttl, err := decodeRecordSets(data, exp.Spec.Traffic.PoolRef())
		if err != nil {
			return traffic.Pool{}, 0, usageErrorf("%s: %v", file, err)
		}
		return pool, ttl, nil
	}
	pool, err := traffic.DecodePool(data)
	if err != nil {
		return traffic.Pool{}, 0, usageErrorf("%s: %v", file, err)
	}
	if id := exp.Spec.Traffic.PoolRef().Pool; pool.ID != "" && id != pool.ID {
		return traffic.Pool{}, 0, usageErrorf("%s: pool %s is not the experiment's pool %s (spec.traffic.cloudflare.poolID)", file, pool.ID, id)
	}
	return pool, 0, nil
}

// cliRecord is a record set as the AWS CLI prints it (encoding/json matches "Weight" and
// the "weight" of route53 Pool origins' Raw alike).
type cliRecord struct {
	Name          string  `json:"Name"`
	Type          string  `json:"Type"`
	SetIdentifier *string `json:"SetIdentifier"`
	Weight        *int64  `json:"Weight"`
	TTL           *int64  `json:"TTL"`
	AliasTarget   *struct {
		DNSName string `json:"DNSName"`
	} `json:"AliasTarget"`
	ResourceRecords []struct {
		Value string `json:"Value"`
	} `json:"ResourceRecords"`
}

// decodeRecordSets builds the pool of the weighted record set ref names from record sets
// in the AWS CLI's JSON: the output of
//
//	aws route53 list-resource-record-sets --hosted-zone-id Z… [--start-record-name api.example.com]
//
// ({"ResourceRecordSets": [...]}) or a bare list of record sets. Records of other names and
// types are ignored, except the claim TXT record (_verdict.<name>), read as the pool's
// description just as the steerer reads it. Weights read as units/255; the TTL is the
// largest in the set, route53.AliasTTL for alias records.
func decodeRecordSets(data []byte, ref traffic.PoolRef) (traffic.Pool, time.Duration, error) {
	_, name, rrType, err := route53.ParseRef(ref)
	if err != nil {
		return traffic.Pool{}, 0, err
	}
	data = bytes.TrimSpace(data)
	var recs []cliRecord
	if len(data) > 0 && data[0] == '[' {
		err = json.Unmarshal(data, &recs)
	} else {
		var doc struct {
			ResourceRecordSets []cliRecord `json:"ResourceRecordSets"`
		}
		err = json.Unmarshal(data, &doc)
		recs = doc.ResourceRecordSets
	}
	if err != nil {
		return traffic.Pool{}, 0, fmt.Errorf("not the AWS CLI's record sets JSON (aws route53 list-resource-record-sets): %w", err)
	}
	norm := func(n string) string {
		n = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(n, `\052`, "*")))
		if !strings.HasSuffix(n, ".") {
			n += "."
		}
		return n
	}
	pool := traffic.Pool{ID: ref.Pool, Name: name, Enabled: true, MinimumOrigins: 1, SteeringPolicy: "weighted"}
	var ttl time.Duration
	seen := map[string]bool{}
	for i, r := range recs {
		n, typ := norm(r.Name), strings.ToUpper(r.Type)
		if n == "_verdict."+name && typ == "TXT" && r.SetIdentifier == nil {
			var text strings.Builder
			for _, v := range r.ResourceRecords {
				text.WriteString(strings.ReplaceAll(strings.Trim(v.Value, `"`), `" "`, ""))
			}
			pool.Description = text.String()
			continue
		}
		if n != name || typ != rrType {
			continue
		}
		if r.SetIdentifier == nil || r.Weight == nil {
			return traffic.Pool{}, 0, fmt.Errorf("record set %d (%s %s) is not a weighted record: %w", i, name, rrType, route53.ErrNotWeighted)
		}
		id := *r.SetIdentifier
		if seen[id] {
			return traffic.Pool{}, 0, fmt.Errorf("record set %d: SetIdentifier %q appears twice", i, id)
		}
		seen[id] = true
		if *r.Weight < 0 || *r.Weight > route53.MaxWeight {
			return traffic.Pool{}, 0, fmt.Errorf("record %q: weight %d outside 0..%d", id, *r.Weight, route53.MaxWeight)
		}
		addr := ""
		rttl := route53.AliasTTL
		if r.AliasTarget != nil {
			addr = r.AliasTarget.DNSName
		} else {
			var vals []string
			for _, v := range r.ResourceRecords {
				vals = append(vals, v.Value)
			}
			addr = strings.Join(vals, ",")
			rttl = time.Duration(derefInt(r.TTL)) * time.Second
		}
		ttl = max(ttl, rttl)
		pool.Origins = append(pool.Origins, traffic.Origin{Name: id, Address: addr, Enabled: true, Weight: route53.Fraction(*r.Weight)})
	}
	if len(pool.Origins) == 0 {
		return traffic.Pool{}, 0, fmt.Errorf("no %s records named %s in the file: %w", rrType, name, traffic.ErrNotFound)
	}
	return pool, ttl, nil
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// ttlAdvice explains what a DNS TTL does to a run with analysis interval iv.
func ttlAdvice(ttl, iv time.Duration) string {
	s := fmt.Sprintf("DNS TTL %s: resolvers and clients cache answers for up to %s, so a weight change reaches every client one TTL after Route 53 has it; "+
		"the run counts an interval only from one TTL after each change. Intervals shorter than the TTL delay evidence", experiments.Duration(ttl), experiments.Duration(ttl))
	if iv > 0 && ttl > 0 {
		s += fmt.Sprintf(": with a %s interval each change discards about %d interval(s) of evidence", experiments.Duration(iv), int((ttl+iv-1)/iv)+1)
	}
	return s
}
