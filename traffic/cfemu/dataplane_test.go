package cfemu_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// origin is a loopback HTTP server standing in for one cluster's ingress; it counts the
// requests it really received.
type origin struct {
	name  string
	srv   *httptest.Server
	hits  atomic.Int64
	hosts sync.Map // Host headers seen
}

func newOrigin(t testing.TB, name string) *origin {
	o := &origin{name: name}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		o.hosts.Store(r.Host, true)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// urlAddress is the origin as an http URL address (an emulator extension).
func (o *origin) urlAddress() string { return `"address": "` + o.srv.URL + `"` }

// ipPortAddress is the origin as Cloudflare spells it: an IP address and a port.
func (o *origin) ipPortAddress() string {
	u, _ := url.Parse(o.srv.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	return `"address": "` + host + `", "port": ` + port
}

// dataPlane starts an emulator whose only pool has the given origins.
func dataPlane(t testing.TB, seed uint64, origins string) *cfemu.Server {
	t.Helper()
	s := cfemu.New(cfemu.Options{Seed: seed, RateLimit: -1})
	if _, err := s.LoadPools([]byte(`{"id": "dp", "name": "dp", "origins": [` + origins + `]}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(t testing.TB, c *http.Client, s *cfemu.Server) (status int, servedBy, body string) {
	t.Helper()
	res, err := c.Get(s.DataURL() + "/checkout")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get(cfemu.OriginHeader), string(b)
}

// chiSquareP returns Pearson's statistic for observed counts against expected shares and
// its p-value for len-1 degrees of freedom (closed form for 2 degrees: e^(-x/2)).
func chiSquareP(observed []int64, shares []float64) (x2, p float64) {
	var n int64
	for _, o := range observed {
		n += o
	}
	for i, o := range observed {
		e := shares[i] * float64(n)
		x2 += (float64(o) - e) * (float64(o) - e) / e
	}
	if len(observed) != 3 {
		panic("chiSquareP: closed form only for 3 categories")
	}
	return x2, math.Exp(-x2 / 2)
}

// TestDataPlaneFollowsWeights sends 20,000 real requests through the proxy with origin
// weights 0.10 / 0.95 / 0.95, i.e. shares 0.05 / 0.475 / 0.475 (Cloudflare weights are
// multiples of 0.01 and relative, so 0.475 itself is not a valid weight), and checks the
// origins received them in those shares with a chi-square test at p > 0.001.
func TestDataPlaneFollowsWeights(t *testing.T) {
	canary, blue, green := newOrigin(t, "canary"), newOrigin(t, "blue"), newOrigin(t, "green")
	s := dataPlane(t, 20261123, `
		{"name": "canary", `+canary.urlAddress()+`, "weight": 0.10},
		{"name": "blue", `+blue.ipPortAddress()+`, "weight": 0.95},
		{"name": "green", `+green.urlAddress()+`, "weight": 0.95}`)
	const total, workers = 20000, 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var mismatched atomic.Int64
	for range workers {
		wg.Go(func() {
			for range total / workers {
				status, by, body := send(t, client, s)
				if status != 200 || by != body {
					mismatched.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if mismatched.Load() != 0 {
		t.Errorf("%d responses failed or came from another origin than the header says", mismatched.Load())
	}
	observed := []int64{canary.hits.Load(), blue.hits.Load(), green.hits.Load()}
	shares := []float64{0.05, 0.475, 0.475}
	x2, p := chiSquareP(observed, shares)
	t.Logf("observed canary/blue/green = %v of %d: shares %.4f / %.4f / %.4f vs 0.05 / 0.475 / 0.475; chi2 = %.3f, p = %.3f",
		observed, total, float64(observed[0])/total, float64(observed[1])/total, float64(observed[2])/total, x2, p)
	if observed[0]+observed[1]+observed[2] != total {
		t.Fatalf("origins received %d requests, want %d", observed[0]+observed[1]+observed[2], total)
	}
	if p <= 0.001 {
		t.Errorf("shares do not follow weights: chi2 = %.2f, p = %.5f", x2, p)
	}
}

// TestDataPlaneWeightChangeAppliesToNextRequest changes weights through the API and checks
// the very next request follows them.
func TestDataPlaneWeightChangeAppliesToNextRequest(t *testing.T) {
	a, b := newOrigin(t, "a"), newOrigin(t, "b")
	s := dataPlane(t, 1, `{"name": "a", `+a.urlAddress()+`, "weight": 1}, {"name": "b", `+b.urlAddress()+`, "weight": 0}`)
	c := &http.Client{}
	for range 20 {
		if _, by, _ := send(t, c, s); by != "a" {
			t.Fatalf("request went to %q with b at weight 0", by)
		}
	}
	patch := `{"origins": [{"name": "a", "address": "` + a.srv.URL + `", "weight": 0}, {"name": "b", "address": "` + b.srv.URL + `", "weight": 1}]}`
	req, _ := http.NewRequest("PATCH", s.APIURL()+"accounts/"+s.AccountID()+"/load_balancers/pools/dp", strings.NewReader(patch))
	req.Header.Set("Authorization", "Bearer "+s.Token())
	res, err := c.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("PATCH: %v %v", res, err)
	}
	res.Body.Close()
	for i := range 20 {
		if _, by, _ := send(t, c, s); by != "b" {
			t.Fatalf("request %d after the change went to %q", i, by)
		}
	}
	if err := s.SetWeight("dp", "a", 0.5); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 200 {
		_, by, _ := send(t, c, s)
		seen[by] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("at 0.5 / 1 both origins should serve; saw %v", seen)
	}
}

func TestDataPlaneRefusals(t *testing.T) {
	a, b := newOrigin(t, "a"), newOrigin(t, "b")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	c := &http.Client{}

	t.Run("unhealthy and disabled origins get nothing", func(t *testing.T) {
		s := dataPlane(t, 2, `{"name": "a", `+a.urlAddress()+`}, {"name": "b", `+b.urlAddress()+`}, {"name": "off", "address": "`+deadURL+`", "enabled": false}`)
		if err := s.SetOriginHealth("dp", "b", false); err != nil {
			t.Fatal(err)
		}
		for range 50 {
			if _, by, _ := send(t, c, s); by != "a" {
				t.Fatalf("served by %q", by)
			}
		}
	})
	t.Run("refused connection is 521", func(t *testing.T) {
		s := dataPlane(t, 3, `{"name": "gone", "address": "`+deadURL+`"}`)
		if status, by, _ := send(t, c, s); status != 521 || by != "gone" {
			t.Errorf("status %d by %q, want 521 from gone", status, by)
		}
	})
	t.Run("all weights zero", func(t *testing.T) {
		s := dataPlane(t, 4, `{"name": "a", `+a.urlAddress()+`, "weight": 0}`)
		if status, _, body := send(t, c, s); status != 503 || !strings.Contains(body, "weight above 0") {
			t.Errorf("status %d %q, want 503", status, body)
		}
	})
	t.Run("below minimum_origins", func(t *testing.T) {
		s := cfemu.New(cfemu.Options{})
		if _, err := s.LoadPools([]byte(`{"id": "m", "name": "m", "minimum_origins": 2, "origins": [{"name": "a", ` + a.urlAddress() + `}, {"name": "b", ` + b.urlAddress() + `}]}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if status, _, _ := send(t, c, s); status != 200 {
			t.Fatalf("healthy pool: %d", status)
		}
		if err := s.SetOriginHealth("m", "b", false); err != nil {
			t.Fatal(err)
		}
		if status, _, body := send(t, c, s); status != 503 || !strings.Contains(body, "minimum_origins") {
			t.Errorf("status %d %q, want 503 naming minimum_origins", status, body)
		}
	})
	t.Run("Host header override", func(t *testing.T) {
		s := dataPlane(t, 5, `{"name": "a", `+a.ipPortAddress()+`, "header": {"Host": ["shop.example.com"]}}`)
		if status, _, _ := send(t, c, s); status != 200 {
			t.Fatalf("status %d", status)
		}
		if _, ok := a.hosts.Load("shop.example.com"); !ok {
			t.Errorf("origin did not see the overridden Host header")
		}
	})
}

// BenchmarkDataPlane measures proxy throughput over loopback.
func BenchmarkDataPlane(b *testing.B) {
	o1, o2 := newOrigin(b, "a"), newOrigin(b, "b")
	s := dataPlane(b, 7, `{"name": "a", `+o1.urlAddress()+`, "weight": 0.3}, {"name": "b", `+o2.urlAddress()+`, "weight": 0.7}`)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(s.DataURL() + "/")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

// TestDataPlaneIgnoresDescription: a claim written into the pool's description (a PATCH
// of only "description") is kept on GET and in the list, leaves the origins alone, and
// does not change where traffic goes.
func TestDataPlaneIgnoresDescription(t *testing.T) {
	a, b := newOrigin(t, "a"), newOrigin(t, "b")
	s := dataPlane(t, 1, `{"name": "a", `+a.urlAddress()+`, "weight": 1}, {"name": "b", `+b.urlAddress()+`, "weight": 0}`)
	c := &http.Client{}
	desc := "checkout pool [verdict: run=r%5D1 owner=ops+team since=2026-11-23T09:30:00Z]"
	body, _ := json.Marshal(map[string]string{"description": desc})
	req, _ := http.NewRequest("PATCH", s.APIURL()+"accounts/"+s.AccountID()+"/load_balancers/pools/dp", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Token())
	res, err := c.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("PATCH description: %v %v", res, err)
	}
	res.Body.Close()
	for _, path := range []string{"/dp", ""} {
		req, _ := http.NewRequest("GET", s.APIURL()+"accounts/"+s.AccountID()+"/load_balancers/pools"+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Token())
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want, _ := json.Marshal(desc)
		if !bytes.Contains(raw, []byte(`"description":`+string(want))) || !bytes.Contains(raw, []byte(`"weight":1`)) {
			t.Errorf("GET pools%s does not return the description and the origins unchanged: %s", path, raw)
		}
	}
	for range 50 {
		if _, by, _ := send(t, c, s); by != "a" {
			t.Fatalf("request went to %q after a description change; b has weight 0", by)
		}
	}
}
