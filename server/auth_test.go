package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestNonLoopbackNeedsAToken(t *testing.T) {
	w := newWorld(t)
	for _, addr := range []string{"0.0.0.0:0", ":8080", "192.0.2.1:80", "[::]:0"} {
		_, err := New(Options{Store: w.openStore(), Steerer: w.steer, Listen: addr})
		if !errors.Is(err, ErrTokenRequired) {
			t.Errorf("listen %s without a token: %v, want ErrTokenRequired", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:8080", "[::1]:0"} {
		if _, err := New(Options{Store: w.openStore(), Steerer: w.steer, Listen: addr}); err != nil {
			t.Errorf("listen %s without a token: %v", addr, err)
		}
	}
	if _, err := New(Options{Store: w.openStore(), Steerer: w.steer, Listen: "0.0.0.0:0", Token: "s3cret"}); err != nil {
		t.Errorf("listen beyond loopback with a token: %v", err)
	}
}

func TestAuthAndRefusals(t *testing.T) {
	w := newWorld(t)
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	const token = "correct-horse-battery-staple"
	s := w.server(func(o *Options) { o.Token = token })
	good := &client{t: t, base: s.URL(), token: token}
	id := good.waitRun("long")

	send := func(method, path, ctype, body string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	auth := []string{"Authorization", "Bearer " + token}
	for _, tc := range []struct {
		name, method, path, ctype, body string
		hdr                             []string
		want                            int
	}{
		{"no token", "GET", "/api/v1/runs", "", "", nil, 401},
		{"wrong token", "GET", "/api/v1/runs", "", "", []string{"Authorization", "Bearer nope"}, 401},
		{"not bearer", "GET", "/api/v1/runs", "", "", []string{"Authorization", "Basic " + token}, 401},
		{"right token", "GET", "/api/v1/runs", "", "", auth, 200},
		{"metrics need the token", "GET", "/metrics", "", "", nil, 401},
		{"stream needs the token", "GET", "/api/v1/stream", "", "", nil, 401},
		{"action without token", "POST", "/api/v1/runs/" + id + "/pause", "application/json", `{}`, nil, 401},
		{"action by GET", "GET", "/api/v1/runs/" + id + "/abort", "", "", auth, 405},
		{"action not JSON", "POST", "/api/v1/runs/" + id + "/abort", "application/x-www-form-urlencoded", "who=x", auth, 415},
		{"action bad JSON", "POST", "/api/v1/runs/" + id + "/abort", "application/json", `{"who": 1}`, auth, 400},
		{"action unknown field", "POST", "/api/v1/runs/" + id + "/abort", "application/json", `{"weight": 1}`, auth, 400},
		{"action too big", "POST", "/api/v1/runs/" + id + "/abort", "application/json", `{"reason": "` + strings.Repeat("x", 20000) + `"}`, auth, 413},
		{"unknown action", "POST", "/api/v1/runs/" + id + "/explode", "application/json", `{}`, auth, 404},
		{"cross-origin action", "POST", "/api/v1/runs/" + id + "/abort", "application/json", `{}`, append([]string{"Origin", "https://evil.example"}, auth...), 403},
		{"dashboard is public", "GET", "/", "", "", nil, 200},
		{"health is public", "GET", "/healthz", "", "", nil, 200},
	} {
		if got, body := send(tc.method, tc.path, tc.ctype, tc.body, tc.hdr...); got != tc.want {
			t.Errorf("%s: %d, want %d (%s)", tc.name, got, tc.want, body)
		}
	}
	// A body is exactly one JSON object: whatever follows it is refused, on every action.
	for _, body := range []string{`{"reason":"x"}{"action":"promote"}`, `{"reason":"x"} garbage`, `{"reason":"x"}}`, `{"reason":"x"}[]`} {
		for _, a := range []string{"pause", "abort", "promote"} {
			got, msg := send("POST", "/api/v1/runs/"+id+"/"+a, "application/json", body, auth...)
			if got != 400 || !strings.Contains(msg, "trailing data after the JSON object") {
				t.Errorf("%s with body %s: %d %s, want 400 naming the trailing data", a, body, got, msg)
			}
		}
	}
	// None of the refused actions reached the run.
	if r := good.run(id); r.State.Terminal() || r.State == "Paused" {
		t.Errorf("a refused action was applied: %+v", r)
	}
	// With the token, the action goes through and records who asked.
	var res ActionResult
	if code := good.do("POST", "/api/v1/runs/"+id+"/pause", ActionRequest{Who: "carol", Reason: "checking a dashboard"}, &res); code != 200 || res.State != "Paused" {
		t.Errorf("pause: %d %+v", code, res)
	}
}

// TestLoopbackRefusesForeignHosts: without a token, only loopback Host names are served,
// so a web page on another domain resolving to 127.0.0.1 (DNS rebinding) gets nothing.
func TestLoopbackRefusesForeignHosts(t *testing.T) {
	w := newWorld(t)
	s := w.server()
	req, _ := http.NewRequest("GET", s.URL()+"/api/v1/runs", nil)
	req.Host = "attacker.example:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("foreign Host: %d, want 403", resp.StatusCode)
	}
	c := &client{t: t, base: s.URL()}
	if code := c.do("GET", "/api/v1/runs", nil, nil); code != 200 {
		t.Errorf("loopback without a token: %d", code)
	}
}
