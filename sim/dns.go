package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/internal/motoserver"
	"github.com/verdict-dev/verdict/traffic/cfemu"
	"github.com/verdict-dev/verdict/traffic/route53"
)

// Placeholders of a DNS scenario's experiment, filled in by a fleet started with
// Options.DNS.
const (
	PlaceholderHostedZoneID = "@HOSTED_ZONE_ID@"
	PlaceholderRecordName   = "@RECORD_NAME@"
)

// DNSOptions put a fleet behind a Route 53 weighted record set instead of the emulated
// Cloudflare pool: one weighted A record per cluster in a hosted zone of its own, its
// SetIdentifier the cluster's origin name. Simulated clients resolve the name by reading
// the set and choosing a record by weight, and keep their answer for the record's TTL, as
// resolvers do; so a weight change reaches the traffic over one TTL, not at once.
type DNSOptions struct {
	// Endpoint is the Route 53 API, a moto_server URL ("http://127.0.0.1:PORT").
	Endpoint string
	// AccessKeyID and SecretAccessKey are the credentials the endpoint accepts, and what
	// Fleet.Env hands to Verdict. Default: motoserver's fake ones.
	AccessKeyID, SecretAccessKey string
	// TTL is every record's TTL. Default 5s, so that a demo's steps of tens of seconds
	// see their weights within a few seconds.
	TTL time.Duration
	// Clients is the number of simulated clients, each with its own cached answer; each
	// request comes from one of them at random. Default 1000: the canary's share of
	// clients, and so of traffic, varies binomially, by about ±10% of a 10% share at 1000.
	Clients int
	// Refresh is how often the set is read for clients whose answer expired: the
	// authoritative answer's staleness. Default 250ms.
	Refresh time.Duration
}

// dnsPlane is the DNS data plane: it reads the record set, answers each request from the
// client's cached choice, or a new weighted choice once the TTL is over, and proxies to
// the chosen cluster.
type dnsPlane struct {
	o       DNSOptions
	client  *r53.Client
	zone    string
	name    string // the weighted set's name, "api.<zone>"
	targets map[string]*url.URL
	apiTr   *http.Transport // the API client's, so that close leaves no idle connection behind
	seed    maphash.Seed
	proxy   *httputil.ReverseProxy
	tr      *http.Transport
	log     func(msg string, args ...any)

	mu      sync.Mutex
	weights map[string]int64 // SetIdentifier → Route 53 weight, as last read
	cache   []dnsAnswer
	rng     uint64

	cancel context.CancelFunc
	done   chan struct{}
}

type dnsAnswer struct {
	origin  string
	expires time.Time
}

type dnsTargetKey struct{}

// startDNS creates the hosted zone and one weighted record per cluster, and starts reading
// the set.
func (f *Fleet) startDNS(o DNSOptions) error {
	if o.Endpoint == "" {
		return fmt.Errorf("sim: DNSOptions.Endpoint is empty: the fleet needs a Route 53 endpoint (moto_server)")
	}
	if o.AccessKeyID == "" {
		o.AccessKeyID, o.SecretAccessKey = motoserver.AccessKeyID, motoserver.SecretAccessKey
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Second
	}
	if o.Clients <= 0 {
		o.Clients = 1000
	}
	if o.Refresh <= 0 {
		o.Refresh = 250 * time.Millisecond
	}
	apiTr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	d := &dnsPlane{
		apiTr: apiTr,
		o:     o, targets: map[string]*url.URL{}, seed: maphash.MakeSeed(), cache: make([]dnsAnswer, o.Clients),
		rng: f.opts.Seed | 1, done: make(chan struct{}),
		log: func(msg string, args ...any) { f.log.Warn(msg, args...) },
		client: r53.New(r53.Options{Region: motoserver.Region, BaseEndpoint: aws.String(o.Endpoint),
			Credentials: credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, ""),
			HTTPClient:  &http.Client{Transport: apiTr, Timeout: 10 * time.Second}}),
	}
	f.dns = d // for Close, from here on
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zone, zname, err := motoserver.CreateZone(ctx, d.client, "sim-"+f.sc.Name)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	d.zone, d.name = zone, "api."+zname
	recs := []types.ResourceRecordSet{
		// Outside the experiment's set, so that a test can check it is left alone.
		{Name: aws.String("www." + zname), Type: types.RRTypeA, TTL: aws.Int64(300),
			ResourceRecords: []types.ResourceRecord{{Value: aws.String("192.0.2.80")}}},
	}
	for i, spec := range f.specs {
		u, err := url.Parse(f.clusters[i].URL())
		if err != nil {
			return fmt.Errorf("sim: cluster %s URL: %w", spec.Name, err)
		}
		d.targets[spec.Origin] = u
		// The value is documentation only: the data plane proxies by SetIdentifier, since
		// every cluster listens on 127.0.0.1 and differs by port, which DNS cannot carry.
		recs = append(recs, motoserver.Weighted(d.name, types.RRTypeA, spec.Origin, route53.Units(spec.Weight), int64(o.TTL/time.Second),
			fmt.Sprintf("192.0.2.%d", i+1)))
	}
	if err := motoserver.Upsert(ctx, d.client, zone, recs...); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := d.read(ctx); err != nil {
		return fmt.Errorf("sim: read the record set back: %w", err)
	}
	d.tr = &http.Transport{Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	d.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(pr.In.Context().Value(dnsTargetKey{}).(*url.URL))
			pr.SetXForwarded()
		},
		Transport:    d.tr,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) },
	}
	var rctx context.Context
	rctx, d.cancel = context.WithCancel(context.Background())
	go d.poll(rctx)
	return nil
}

func (d *dnsPlane) poll(ctx context.Context) {
	defer close(d.done)
	t := time.NewTicker(d.o.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := d.read(rctx); err != nil && ctx.Err() == nil {
				// Clients keep their answers, and new ones use the last set read, as
				// resolvers serve stale answers when the authority does not answer.
				d.log("sim: read the Route 53 record set", "err", err)
			}
			cancel()
		}
	}
}

// read lists the weighted set.
func (d *dnsPlane) read(ctx context.Context) error {
	out, err := d.client.ListResourceRecordSets(ctx, &r53.ListResourceRecordSetsInput{
		HostedZoneId: aws.String(d.zone), StartRecordName: aws.String(d.name), StartRecordType: types.RRTypeA,
	})
	if err != nil {
		return err
	}
	w := map[string]int64{}
	for _, r := range out.ResourceRecordSets {
		if !strings.EqualFold(aws.ToString(r.Name), d.name) || r.Type != types.RRTypeA || r.SetIdentifier == nil {
			continue
		}
		w[aws.ToString(r.SetIdentifier)] = aws.ToInt64(r.Weight)
	}
	d.mu.Lock()
	d.weights = w
	d.mu.Unlock()
	return nil
}

// choose is Route 53's weighted answer: a record with probability weight/sum, or, when
// every weight is 0, any record with equal probability.
func (d *dnsPlane) chooseLocked() string {
	var total int64
	var names []string
	for n, w := range d.weights {
		if _, ok := d.targets[n]; ok {
			names = append(names, n)
			total += w
		}
	}
	if len(names) == 0 {
		return ""
	}
	// Map order is random; sort for a reproducible draw under a fixed seed.
	slices.Sort(names)
	d.rng ^= d.rng << 13
	d.rng ^= d.rng >> 7
	d.rng ^= d.rng << 17
	if total == 0 {
		return names[d.rng%uint64(len(names))]
	}
	x := int64(d.rng % uint64(total))
	for _, n := range names {
		if x < d.weights[n] {
			return n
		}
		x -= d.weights[n]
	}
	return names[len(names)-1]
}

func (d *dnsPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.RemoteAddr
	if c, err := r.Cookie(sessionCookie); err == nil {
		key = c.Value
	}
	i := maphash.String(d.seed, key) % uint64(len(d.cache))
	now := time.Now()
	d.mu.Lock()
	a := d.cache[i]
	if a.origin == "" || !now.Before(a.expires) {
		a = dnsAnswer{origin: d.chooseLocked(), expires: now.Add(d.o.TTL)}
		d.cache[i] = a
	}
	d.mu.Unlock()
	target, ok := d.targets[a.origin]
	if !ok {
		// NXDOMAIN, as far as the client is concerned.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	w.Header().Set(cfemu.OriginHeader, a.origin)
	d.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), dnsTargetKey{}, target)))
}

// fractions is the set's weights as Verdict reads them (weight/255), by origin.
func (d *dnsPlane) fractions() map[string]float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]float64, len(d.weights))
	for n, w := range d.weights {
		m[n] = float64(w) / 255
	}
	return m
}

func (d *dnsPlane) close() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	if d.tr != nil {
		d.tr.CloseIdleConnections()
	}
	d.apiTr.CloseIdleConnections()
}

// HostedZoneID is the hosted zone of a fleet started with Options.DNS, "" otherwise.
func (f *Fleet) HostedZoneID() string {
	if f.dns == nil {
		return ""
	}
	return f.dns.zone
}

// RecordName is the weighted record set's name ("api.<zone>.") of a fleet started with
// Options.DNS, "" otherwise.
func (f *Fleet) RecordName() string {
	if f.dns == nil {
		return ""
	}
	return f.dns.name
}

// cloudflareBlock finds the "cloudflare:" mapping of an experiment and its more indented
// lines: its start and end offsets and its indentation; start < 0 when there is none.
func cloudflareBlock(exp string) (start, end int, indent string) {
	lines := strings.SplitAfter(exp, "\n")
	off := 0
	for i, l := range lines {
		if t := strings.TrimLeft(l, " "); strings.TrimRight(t, "\n") == "cloudflare:" {
			indent = l[:len(l)-len(t)]
			end = off + len(l)
			for _, m := range lines[i+1:] {
				if strings.TrimSpace(m) != "" && len(m)-len(strings.TrimLeft(m, " ")) <= len(indent) {
					break
				}
				end += len(m)
			}
			return off, end, indent
		}
		off += len(l)
	}
	return -1, -1, ""
}

// DNSScenario turns a Cloudflare scenario into the same world behind Route 53: its
// experiment steers the fleet's weighted record set instead of the pool, with a TTL short
// enough for a demo. The name gets a "dns-" prefix. Run it with Options.DNS.
func DNSScenario(base *Scenario) (*Scenario, error) {
	sc := *base
	sc.Events = append([]Event(nil), base.Events...)
	sc.Clusters = append([]ClusterSpec(nil), base.Clusters...)
	sc.Name = "dns-" + base.Name
	sc.Description = base.Description + " Steered by Route 53 weighted records."
	sc.Affinity = 0 // a resolver's TTL cache is DNS's affinity
	exp := base.Experiment
	start, end, indent := cloudflareBlock(exp)
	if start < 0 {
		return nil, fmt.Errorf("sim: scenario %s: its experiment has no spec.traffic.cloudflare block to replace", base.Name)
	}
	block := exp[start:end]
	var b strings.Builder
	b.WriteString(indent + "route53:\n")
	for _, kv := range [][2]string{{"hostedZoneID", PlaceholderHostedZoneID}, {"record", PlaceholderRecordName}, {"type", "A"}} {
		b.WriteString(indent + "  " + kv[0] + ": " + kv[1] + "\n")
	}
	b.WriteString(indent + "  setIdentifiers:\n")
	n := 0
	for _, c := range sc.Clusters {
		if strings.Contains(block, " "+c.Name+": "+c.Origin+"\n") {
			b.WriteString(indent + "    " + c.Name + ": " + c.Origin + "\n")
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("sim: scenario %s: its cloudflare block names none of the clusters' origins", base.Name)
	}
	sc.Experiment = exp[:start] + b.String() + exp[end:]
	sc.Experiment = strings.ReplaceAll(sc.Experiment, "name: demo-"+base.Name, "name: demo-dns-"+base.Name)
	sc.Experiment = strings.ReplaceAll(sc.Experiment, "{scenario: "+base.Name+"}", "{scenario: dns-"+base.Name+"}")
	return &sc, nil
}

// recordSetsJSON is the zone as `aws route53 list-resource-record-sets` prints it, for
// `verdict plan --pool-file`.
func (d *dnsPlane) recordSetsJSON() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := d.client.ListResourceRecordSets(ctx, &r53.ListResourceRecordSetsInput{HostedZoneId: aws.String(d.zone)})
	if err != nil {
		return nil, fmt.Errorf("list hosted zone %s: %w", d.zone, err)
	}
	type rr struct {
		Value string `json:"Value"`
	}
	type rrset struct {
		Name            string `json:"Name"`
		Type            string `json:"Type"`
		SetIdentifier   string `json:"SetIdentifier,omitempty"`
		Weight          *int64 `json:"Weight,omitempty"`
		TTL             *int64 `json:"TTL,omitempty"`
		ResourceRecords []rr   `json:"ResourceRecords,omitempty"`
	}
	var doc struct {
		ResourceRecordSets []rrset `json:"ResourceRecordSets"`
	}
	for _, r := range out.ResourceRecordSets {
		s := rrset{Name: aws.ToString(r.Name), Type: string(r.Type), SetIdentifier: aws.ToString(r.SetIdentifier), Weight: r.Weight, TTL: r.TTL}
		for _, v := range r.ResourceRecords {
			s.ResourceRecords = append(s.ResourceRecords, rr{Value: aws.ToString(v.Value)})
		}
		doc.ResourceRecordSets = append(doc.ResourceRecordSets, s)
	}
	return json.MarshalIndent(doc, "", "  ")
}
