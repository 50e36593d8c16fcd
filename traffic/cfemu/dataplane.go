package cfemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// OriginHeader names the response header in which the data plane reports which origin
// served a request. Cloudflare has no such header; it lets tests and the demo count.
const OriginHeader = "X-Cfemu-Origin"

type pickKey struct{}

type picked struct {
	origin originView
	target *url.URL
}

// DataHandler is the data plane: each request goes to one enabled, healthy origin of the
// data pool drawn at random in proportion to weight (Cloudflare's "random" origin
// steering), read afresh per request so a weight change applies to the next request.
func (s *Server) DataHandler() http.Handler { return s.dataPlaneHandler }

func (s *Server) newDataPlane() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			p := pr.In.Context().Value(pickKey{}).(picked)
			pr.SetURL(p.target)
			pr.SetXForwarded()
			// Cloudflare forwards the visitor's Host unless the origin overrides it.
			pr.Out.Host = pr.In.Host
			if p.origin.Host != "" {
				pr.Out.Host = p.origin.Host
			}
			if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
				pr.Out.Header.Set("Cf-Connecting-Ip", ip)
			}
		},
		Transport: s.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p, _ := r.Context().Value(pickKey{}).(picked)
			// Cloudflare's edge codes: 521 origin refused the connection, 522 timed out,
			// 502 anything else.
			code := http.StatusBadGateway
			var ne net.Error
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				code = 521
			case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
				code = 522
			}
			s.log.Debug("data plane: origin failed", "origin", p.origin.Name, "err", err)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(code)
			fmt.Fprintf(w, "error code: %d (origin %q)\n", code, p.origin.Name)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.pick()
		if err != nil {
			http.Error(w, "cfemu: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set(OriginHeader, p.origin.Name)
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), pickKey{}, p)))
	})
}

// pick draws an origin for one request.
func (s *Server) pick() (picked, error) {
	s.mu.Lock()
	id := s.opts.DataPool
	if id == "" && len(s.order) > 0 {
		id = s.order[0]
	}
	p, ok := s.pools[id]
	var v view
	if ok {
		v = p.view()
	}
	s.mu.Unlock()
	if !ok {
		return picked{}, fmt.Errorf("no pool %q to serve", id)
	}
	if !v.Enabled {
		return picked{}, fmt.Errorf("pool %q is disabled", v.Name)
	}
	var cands []originView
	healthy := 0
	total := 0.0
	for _, o := range v.Origins {
		if !o.Healthy {
			continue
		}
		healthy++
		if o.Weight > 0 {
			cands = append(cands, o)
			total += o.Weight
		}
	}
	if healthy < v.MinimumOrigins {
		return picked{}, fmt.Errorf("pool %q is unhealthy: %d healthy origins, minimum_origins %d", v.Name, healthy, v.MinimumOrigins)
	}
	if len(cands) == 0 {
		return picked{}, fmt.Errorf("pool %q has no enabled, healthy origin with weight above 0", v.Name)
	}
	s.rngMu.Lock()
	x := s.rng.Float64() * total
	s.rngMu.Unlock()
	chosen := cands[len(cands)-1]
	for _, o := range cands {
		if x < o.Weight {
			chosen = o
			break
		}
		x -= o.Weight
	}
	target, err := originURL(chosen)
	if err != nil {
		return picked{}, err
	}
	return picked{origin: chosen, target: target}, nil
}

// originURL is where a request for origin o goes. Cloudflare origins are an IP address or
// hostname plus an optional port (0 meaning the visitor's port; here 80); the emulator
// also accepts an http:// or https:// URL as the address, which is how loopback test
// servers with their own paths are named.
func originURL(o originView) (*url.URL, error) {
	if strings.Contains(o.Address, "://") {
		u, err := url.Parse(o.Address)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("origin %q: address %q is not an http(s) URL", o.Name, o.Address)
		}
		return u, nil
	}
	port := o.Port
	if port == 0 {
		port = 80
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(o.Address, strconv.Itoa(port))}, nil
}
