package cfemu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/load_balancers"
	"github.com/cloudflare/cloudflare-go/v7/option"

	"github.com/verdict-dev/verdict/traffic/cfemu"
)

const poolJSON = `{
  "id": "17b5962d775c646f3f9725cbc7a53df4",
  "name": "primary-dc-1",
  "description": "Primary data center - Provider XYZ",
  "enabled": true,
  "minimum_origins": 1,
  "monitor": "f1aba936b94213e5b8dca0c0dbf1f9cc",
  "origin_steering": {"policy": "random"},
  "origins": [
    {"name": "a", "address": "192.0.2.1", "enabled": true, "weight": 0.5, "header": {"Host": ["example.com"]}, "port": 0},
    {"name": "b", "address": "192.0.2.2", "enabled": true, "weight": 0.5},
    {"name": "c", "address": "192.0.2.3", "enabled": false, "weight": 1}
  ]
}`

const poolID = "17b5962d775c646f3f9725cbc7a53df4"

// fakeClock is a settable clock for modified_on and the rate limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, o cfemu.Options) *cfemu.Server {
	t.Helper()
	s := cfemu.New(o)
	if _, err := s.LoadPools([]byte(poolJSON)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

// call sends one API request; auth is the whole Authorization header ("" for none).
func call(t *testing.T, s *cfemu.Server, method, path, auth, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(s.APIURL(), "/")+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v\n%s", method, path, err, raw)
	}
	return r
}

func bearer(s *cfemu.Server) string { return "Bearer " + s.Token() }

func poolPath(s *cfemu.Server, rest string) string {
	return "/accounts/" + s.AccountID() + "/load_balancers/pools" + rest
}

// shape describes a JSON value's structure: object keys with their shapes, the first
// element of arrays, and the type of scalars. Two responses with the same shape decode the
// same way in any client.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			m[k] = shape(e)
		}
		return m
	case []any:
		if len(x) == 0 {
			return []any{}
		}
		return []any{shape(x[0])}
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%T", x)
	}
}

// sameShape reports where got lacks something recorded has, or has it with another type.
// Extra members in got are allowed only where listed.
func sameShape(path string, recorded, got any, problems *[]string) {
	switch r := recorded.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			*problems = append(*problems, fmt.Sprintf("%s: recorded an object, emulator %v", path, got))
			return
		}
		for k, rv := range r {
			gv, ok := g[k]
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s.%s: missing", path, k))
				continue
			}
			sameShape(path+"."+k, rv, gv, problems)
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			*problems = append(*problems, fmt.Sprintf("%s: recorded a list, emulator %v", path, got))
			return
		}
		if len(r) > 0 && len(g) > 0 {
			sameShape(path+"[0]", r[0], g[0], problems)
		}
	default:
		// "null" in a recording is compatible with anything (an optional object).
		if r != "null" && r != got {
			*problems = append(*problems, fmt.Sprintf("%s: recorded %v, emulator %v", path, r, got))
		}
	}
}

func recorded(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "recorded", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// TestResponsesMatchRecordedShapes compares the emulator's answers with Cloudflare's,
// member by member and type by type, including status codes and error codes.
func TestResponsesMatchRecordedShapes(t *testing.T) {
	s := cfemu.New(cfemu.Options{RateLimit: 6})
	// The pool is the recorded one, so the comparison shows the emulator returns what it
	// was given in Cloudflare's envelope, with Cloudflare's types.
	getPool, err := os.ReadFile(filepath.Join("testdata", "recorded", "200_pool_get.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadPools(getPool); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cases := []struct {
		file, method, path, auth, body string
	}{
		{"200_pool_get.json", "GET", poolPath(s, "/"+poolID), bearer(s), ""},
		{"200_pools_list.json", "GET", poolPath(s, ""), bearer(s), ""},
		{"403_no_auth.json", "GET", poolPath(s, ""), "", ""},
		{"403_bad_token.json", "GET", poolPath(s, ""), "Bearer nope", ""},
		{"400_bad_auth_header.json", "GET", poolPath(s, ""), "Token x", ""},
		{"400_validation.json", "PATCH", poolPath(s, "/"+poolID), bearer(s), `{"origins": []}`},
		{"404_no_route.json", "GET", "/accounts/" + s.AccountID() + "/load_balancers/poolz", bearer(s), ""},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			rec := recorded(t, c.file)
			got := call(t, s, c.method, c.path, c.auth, c.body)
			wantStatus, _ := strconv.Atoi(c.file[:3])
			if got.status != wantStatus {
				t.Errorf("status = %d, want %d: %s", got.status, wantStatus, got.raw)
			}
			var problems []string
			sameShape("$", shape(rec), shape(got.body), &problems)
			for _, p := range problems {
				t.Error(p)
			}
			if errs, _ := rec["errors"].([]any); len(errs) > 0 {
				wantCode := errs[0].(map[string]any)["code"]
				gotErrs, _ := got.body["errors"].([]any)
				if len(gotErrs) == 0 || gotErrs[0].(map[string]any)["code"] != wantCode {
					t.Errorf("errors = %v, want code %v", got.body["errors"], wantCode)
				}
				if got.body["success"] != false || got.body["result"] != nil {
					t.Errorf("error envelope: success=%v result=%v", got.body["success"], got.body["result"])
				}
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
	t.Run("200_pool_health.json", func(t *testing.T) {
		got := call(t, s, "GET", poolPath(s, "/"+poolID+"/health"), bearer(s), "")
		res := got.body["result"].(map[string]any)
		if res["pool_id"] != poolID {
			t.Errorf("pool_id = %v", res["pool_id"])
		}
		// pop_health is keyed by data centre and origins by address: compare the values.
		rec := recorded(t, "200_pool_health.json")["result"].(map[string]any)
		recPop := firstValue(rec["pop_health"]).(map[string]any)
		gotPop := firstValue(res["pop_health"]).(map[string]any)
		var problems []string
		sameShape("$.pop_health.*.healthy", shape(recPop["healthy"]), shape(gotPop["healthy"]), &problems)
		recOrigin := firstValue(recPop["origins"].([]any)[0])
		gotOrigin := firstValue(gotPop["origins"].([]any)[0])
		sameShape("$.pop_health.*.origins[0].*", shape(recOrigin), shape(gotOrigin), &problems)
		for _, p := range problems {
			t.Error(p)
		}
	})
	t.Run("429_rate_limited.json", func(t *testing.T) {
		var got response
		for range 10 {
			if got = call(t, s, "GET", poolPath(s, ""), bearer(s), ""); got.status == 429 {
				break
			}
		}
		if got.status != 429 || got.header.Get("Retry-After") != "300" {
			t.Fatalf("status %d Retry-After %q, want 429 and 300", got.status, got.header.Get("Retry-After"))
		}
		var problems []string
		sameShape("$", shape(recorded(t, "429_rate_limited.json")), shape(got.body), &problems)
		for _, p := range problems {
			t.Error(p)
		}
	})
}

func firstValue(v any) any {
	m := v.(map[string]any)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return m[keys[0]]
}

func TestAuthAndAccount(t *testing.T) {
	s := start(t, cfemu.Options{Token: "secret-token"})
	cases := []struct {
		name, auth, account string
		status              int
		code                float64
	}{
		{"missing", "", s.AccountID(), 403, 10000},
		{"wrong token", "Bearer other", s.AccountID(), 403, 9109},
		{"not bearer", "Basic abc", s.AccountID(), 400, 6003},
		{"empty bearer", "Bearer ", s.AccountID(), 400, 6003},
		{"other account", "Bearer secret-token", "023e105f4ecef8ad9ca31a8372d0c353", 403, 9109},
		{"right", "Bearer secret-token", s.AccountID(), 200, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := call(t, s, "GET", "/accounts/"+c.account+"/load_balancers/pools/"+poolID, c.auth, "")
			if got.status != c.status {
				t.Fatalf("status = %d, want %d: %s", got.status, c.status, got.raw)
			}
			if c.code != 0 {
				if errs := got.body["errors"].([]any); errs[0].(map[string]any)["code"] != c.code {
					t.Errorf("errors = %v, want code %v", errs, c.code)
				}
			}
		})
	}
}

func TestWriteValidation(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)}
	s := start(t, cfemu.Options{Now: clock.Now})
	before, _ := s.Pool(poolID)
	origins := func(extra string) string {
		return `{"origins": [{"name": "a", "address": "192.0.2.1"` + extra + `}]}`
	}
	cases := map[string]struct{ method, body, want string }{
		"weight above 1":         {"PATCH", origins(`, "weight": 1.5`), "between 0 and 1 in steps of 0.01"},
		"weight below 0":         {"PATCH", origins(`, "weight": -0.01`), "between 0 and 1"},
		"weight off the grid":    {"PATCH", origins(`, "weight": 0.333`), "steps of 0.01"},
		"weight not a number":    {"PATCH", origins(`, "weight": "0.5"`), "weight must be a number"},
		"enabled not a bool":     {"PATCH", origins(`, "enabled": "yes"`), "enabled must be a boolean"},
		"port out of range":      {"PATCH", origins(`, "port": 70000`), "port"},
		"no origins":             {"PATCH", `{"origins": []}`, "origin list length"},
		"origins not a list":     {"PATCH", `{"origins": {}}`, "origins must be a list"},
		"origin without name":    {"PATCH", `{"origins": [{"address": "192.0.2.1"}]}`, "origins[0].name is required"},
		"origin without address": {"PATCH", `{"origins": [{"name": "a"}]}`, "origins[0].address is required"},
		"duplicate origin names": {"PATCH", `{"origins": [{"name": "a", "address": "x"}, {"name": "a", "address": "y"}]}`, "used by another origin"},
		"bad pool name":          {"PATCH", `{"name": "has space"}`, "alphanumeric"},
		"bad policy":             {"PATCH", `{"origin_steering": {"policy": "round_robin"}}`, "origin_steering.policy"},
		"minimum_origins 0":      {"PATCH", `{"minimum_origins": 0}`, "minimum_origins"},
		"PUT without name":       {"PUT", origins(""), "name is required"},
		"PUT without origins":    {"PUT", `{"name": "x"}`, "origin list length"},
		"not JSON":               {"PATCH", `{"origins": [`, "not a JSON object"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := call(t, s, c.method, poolPath(s, "/"+poolID), bearer(s), c.body)
			if got.status != 400 {
				t.Fatalf("status = %d, want 400: %s", got.status, got.raw)
			}
			e := got.body["errors"].([]any)[0].(map[string]any)
			msg, _ := e["message"].(string)
			if e["code"] != float64(cfemu.CodeValidation) || !strings.Contains(msg, c.want) || !strings.HasSuffix(msg, "validation failed") {
				t.Errorf("error = %v, want code 1002 with %q", e, c.want)
			}
		})
	}
	clock.Add(time.Minute)
	if after, _ := s.Pool(poolID); !bytes.Equal(before, after) {
		t.Errorf("rejected writes changed the pool:\n%s\n%s", before, after)
	}
}

func TestPatchAndPutSemantics(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)}
	s := start(t, cfemu.Options{Now: clock.Now})
	clock.Add(time.Hour)

	// PATCH replaces the whole origins list and only the fields it names.
	got := call(t, s, "PATCH", poolPath(s, "/"+poolID), bearer(s),
		`{"origins": [{"name": "a", "address": "192.0.2.1", "weight": 0.50, "custom": 1}, {"name": "d", "address": "192.0.2.4", "enabled": false}], "id": "ignored", "modified_on": "1999-01-01T00:00:00Z"}`)
	if got.status != 200 {
		t.Fatalf("PATCH: %d %s", got.status, got.raw)
	}
	res := got.body["result"].(map[string]any)
	if res["id"] != poolID || res["description"] != "Primary data center - Provider XYZ" || res["modified_on"] != "2026-11-23T08:00:00.000000Z" {
		t.Errorf("PATCH result id=%v description=%v modified_on=%v", res["id"], res["description"], res["modified_on"])
	}
	list := res["origins"].([]any)
	if len(list) != 2 {
		t.Fatalf("origins = %v, want exactly the two sent", list)
	}
	a, d := list[0].(map[string]any), list[1].(map[string]any)
	if a["weight"] != 0.5 || a["enabled"] != true || a["custom"] != float64(1) || a["header"] != nil {
		t.Errorf("origin a = %v: want weight 0.5, default enabled, custom kept, header gone", a)
	}
	if d["weight"] != float64(1) || d["disabled_at"] != "2026-11-23T08:00:00.000000Z" {
		t.Errorf("origin d = %v: want default weight 1 and disabled_at set", d)
	}

	// PUT replaces every writable field: description and monitor go, created_on stays.
	clock.Add(time.Hour)
	got = call(t, s, "PUT", poolPath(s, "/"+poolID), bearer(s), `{"name": "renamed", "origins": [{"name": "a", "address": "192.0.2.1"}]}`)
	if got.status != 200 {
		t.Fatalf("PUT: %d %s", got.status, got.raw)
	}
	res = got.body["result"].(map[string]any)
	if _, ok := res["description"]; ok || res["name"] != "renamed" || res["created_on"] == nil || res["modified_on"] != "2026-11-23T09:00:00.000000Z" {
		t.Errorf("PUT result = %v", res)
	}
	if res["enabled"] != true || res["minimum_origins"] != float64(1) {
		t.Errorf("PUT defaults: enabled=%v minimum_origins=%v", res["enabled"], res["minimum_origins"])
	}

	for _, c := range []struct{ method, path string }{{"DELETE", "/" + poolID}, {"POST", ""}, {"POST", "/" + poolID + "/health"}} {
		if got := call(t, s, c.method, poolPath(s, c.path), bearer(s), ""); got.status != 405 {
			t.Errorf("%s %s = %d, want 405", c.method, c.path, got.status)
		}
	}
	if got := call(t, s, "GET", poolPath(s, "/ffffffffffffffffffffffffffffffff"), bearer(s), ""); got.status != 404 {
		t.Errorf("unknown pool = %d, want 404", got.status)
	}
}

// TestRateLimiter drives the limiter on a fake clock: 3 requests per 10 s, then every call
// is blocked for a whole window with Retry-After counting down.
func TestRateLimiter(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)}
	s := start(t, cfemu.Options{Now: clock.Now, RateLimit: 3, RateWindow: 10 * time.Second})
	get := func() response { return call(t, s, "GET", poolPath(s, "/"+poolID), bearer(s), "") }
	for i := range 3 {
		got := get()
		if got.status != 200 {
			t.Fatalf("request %d: %d", i, got.status)
		}
		if want := fmt.Sprintf(`"default";r=%d;t=10`, 2-i); got.header.Get("Ratelimit") != want {
			t.Errorf("Ratelimit = %q, want %q", got.header.Get("Ratelimit"), want)
		}
		if got.header.Get("Ratelimit-Policy") != `"default";q=3;w=10` {
			t.Errorf("Ratelimit-Policy = %q", got.header.Get("Ratelimit-Policy"))
		}
	}
	got := get()
	if got.status != 429 || got.header.Get("Retry-After") != "10" {
		t.Fatalf("4th request: %d Retry-After %q, want 429 and 10", got.status, got.header.Get("Retry-After"))
	}
	clock.Add(4 * time.Second)
	if got := get(); got.status != 429 || got.header.Get("Retry-After") != "6" {
		t.Errorf("while blocked: %d Retry-After %q, want 429 and 6", got.status, got.header.Get("Retry-After"))
	}
	clock.Add(6 * time.Second)
	if got := get(); got.status != 200 {
		t.Errorf("after the block: %d, want 200", got.status)
	}
	// Requests that fail authentication are not counted against the token's quota.
	clock.Add(time.Minute)
	for range 5 {
		call(t, s, "GET", poolPath(s, ""), "Bearer wrong", "")
	}
	if got := get(); got.status != 200 {
		t.Errorf("after unauthenticated requests: %d, want 200", got.status)
	}
}

func TestFaultInjection(t *testing.T) {
	s := start(t, cfemu.Options{})
	s.SetFault(cfemu.Fault{Fail: 2})
	var statuses []int
	for range 3 {
		statuses = append(statuses, call(t, s, "GET", poolPath(s, ""), bearer(s), "").status)
	}
	if fmt.Sprint(statuses) != "[503 503 200]" {
		t.Errorf("statuses = %v, want [503 503 200]", statuses)
	}
	s.SetFault(cfemu.Fault{Fail: 1, Status: 429, RetryAfter: 1500 * time.Millisecond})
	if got := call(t, s, "GET", poolPath(s, ""), bearer(s), ""); got.status != 429 || got.header.Get("Retry-After") != "2" {
		t.Errorf("429 fault: %d Retry-After %q, want 429 and 2", got.status, got.header.Get("Retry-After"))
	}
	s.SetFault(cfemu.Fault{Fail: 1, Drop: true})
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := fresh.Get(strings.TrimSuffix(s.APIURL(), "/") + poolPath(s, "")); err == nil {
		t.Errorf("dropped connection returned a response")
	}
	// The client sees the dropped connection before the handler has returned and recorded
	// the call, so wait for the record.
	calls := s.Calls()
	for deadline := time.Now().Add(5 * time.Second); len(calls) < 5 && time.Now().Before(deadline); calls = s.Calls() {
		time.Sleep(5 * time.Millisecond)
	}
	if len(calls) != 5 || calls[4].Status != 0 || calls[3].Status != 429 {
		t.Errorf("calls = %+v, want 5 ending in a 429 and a dropped call (status 0)", calls)
	}
}

func TestHealth(t *testing.T) {
	s := start(t, cfemu.Options{})
	if err := s.SetOriginHealth(poolID, "a", false); err != nil {
		t.Fatal(err)
	}
	res := call(t, s, "GET", poolPath(s, "/"+poolID+"/health"), bearer(s), "").body["result"].(map[string]any)
	pop := firstValue(res["pop_health"]).(map[string]any)
	if pop["healthy"] != true {
		t.Errorf("pool with one healthy origin and minimum_origins 1 reported unhealthy")
	}
	health := map[string]bool{}
	for _, o := range pop["origins"].([]any) {
		for addr, h := range o.(map[string]any) {
			health[addr] = h.(map[string]any)["healthy"].(bool)
		}
	}
	if health["192.0.2.1"] || !health["192.0.2.2"] || health["192.0.2.3"] {
		t.Errorf("origin health = %v, want a down (marked), b up, c down (disabled)", health)
	}
	if err := s.SetOriginHealth(poolID, "nope", false); err == nil {
		t.Errorf("unknown origin accepted")
	}
}

func TestLoadSaveRoundTrip(t *testing.T) {
	s := cfemu.New(cfemu.Options{})
	envelope := `{"success": true, "errors": [], "messages": [], "result": ` + poolJSON + `}`
	if _, err := s.LoadPools([]byte(envelope)); err != nil {
		t.Fatalf("envelope: %v", err)
	}
	if _, err := s.LoadPools([]byte(`[{"name": "second", "origins": [{"name": "x", "address": "192.0.2.9"}]}]`)); err != nil {
		t.Fatalf("list: %v", err)
	}
	if _, err := s.LoadPools([]byte(poolJSON)); err == nil {
		t.Errorf("duplicate pool id accepted")
	}
	for name, bad := range map[string]string{
		"empty":        ``,
		"not JSON":     `{`,
		"failed call":  `{"success": false, "errors": [{"code": 9109}], "result": null}`,
		"bad weight":   `{"name": "p", "origins": [{"name": "x", "address": "a", "weight": 2}]}`,
		"not a object": `"pool"`,
	} {
		if _, err := s.LoadPools([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	path := filepath.Join(t.TempDir(), "pools.json")
	if err := s.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	s2 := cfemu.New(cfemu.Options{})
	ids, err := s2.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != poolID {
		t.Fatalf("reloaded ids = %v", ids)
	}
	for _, id := range ids {
		a, _ := s.Pool(id)
		b, _ := s2.Pool(id)
		if !bytes.Equal(a, b) {
			t.Errorf("pool %s changed across save/load:\n%s\n%s", id, a, b)
		}
	}
}

// TestCloudflareGoDecodesEmulator uses cloudflare-go's typed API against the emulator: if
// the SDK can list, read, edit and health-check pools here, so can anything built on it.
func TestCloudflareGoDecodesEmulator(t *testing.T) {
	s := start(t, cfemu.Options{})
	svc := load_balancers.NewPoolService(option.WithBaseURL(s.APIURL()), option.WithAPIToken(s.Token()), option.WithMaxRetries(0))
	ctx := context.Background()
	var acct load_balancers.PoolGetParams
	acct.AccountID.Value, acct.AccountID.Present = s.AccountID(), true

	p, err := svc.Get(ctx, poolID, acct)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "primary-dc-1" || len(p.Origins) != 3 || p.Origins[0].Weight != 0.5 || p.Origins[0].Header.Host[0] != "example.com" || p.OriginSteering.Policy != "random" {
		t.Errorf("Get = %+v", p)
	}
	var list load_balancers.PoolListParams
	list.AccountID.Value, list.AccountID.Present = s.AccountID(), true
	page, err := svc.List(ctx, list)
	if err != nil || len(page.Result) != 1 || page.Result[0].ID != poolID {
		t.Errorf("List = %+v, %v", page, err)
	}
	var edit load_balancers.PoolEditParams
	edit.AccountID.Value, edit.AccountID.Present = s.AccountID(), true
	edit.Description.Value, edit.Description.Present = "edited by the SDK", true
	e, err := svc.Edit(ctx, poolID, edit)
	if err != nil || e.Description != "edited by the SDK" || len(e.Origins) != 3 {
		t.Errorf("Edit = %+v, %v", e, err)
	}
	var hp load_balancers.PoolHealthGetParams
	hp.AccountID.Value, hp.AccountID.Present = s.AccountID(), true
	h, err := svc.Health.Get(ctx, poolID, hp)
	if err != nil || h.PoolID != poolID {
		t.Errorf("Health = %+v, %v", h, err)
	}
	bad := load_balancers.NewPoolService(option.WithBaseURL(s.APIURL()), option.WithAPIToken("wrong"), option.WithMaxRetries(0))
	_, err = bad.Get(ctx, poolID, acct)
	var apiErr *load_balancers.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || len(apiErr.Errors) != 1 || apiErr.Errors[0].Code != 9109 {
		t.Errorf("bad token via SDK: %v", err)
	}
}

// TestFaultApplied: a write behind a Fault.Applied 502 is carried out although the client
// is told it failed; a 429 fault without Applied changes nothing.
func TestFaultApplied(t *testing.T) {
	s := start(t, cfemu.Options{})
	patch := `{"origins": [{"name": "a", "address": "192.0.2.1", "weight": 0.2}, {"name": "b", "address": "192.0.2.2", "weight": 0.8}]}`
	s.SetFault(cfemu.Fault{Fail: 1, Status: 502, Applied: true})
	if got := call(t, s, "PATCH", poolPath(s, "/"+poolID), bearer(s), patch); got.status != 502 {
		t.Fatalf("PATCH behind the fault = %d, want 502", got.status)
	}
	raw, _ := s.Pool(poolID)
	if !strings.Contains(string(raw), `"weight":0.2`) {
		t.Errorf("the write behind the 502 was not applied: %s", raw)
	}
	s.SetFault(cfemu.Fault{Fail: 1, Status: 429})
	if got := call(t, s, "PATCH", poolPath(s, "/"+poolID), bearer(s), `{"description": "changed"}`); got.status != 429 {
		t.Fatalf("PATCH = %d, want 429", got.status)
	}
	if raw, _ := s.Pool(poolID); strings.Contains(string(raw), `"changed"`) {
		t.Errorf("a refused write was applied: %s", raw)
	}
}

// TestOutOfBandPatch: Server.Patch changes the pool as an API PATCH would, validated.
func TestOutOfBandPatch(t *testing.T) {
	s := start(t, cfemu.Options{})
	if err := s.Patch(poolID, []byte(`{"description": "taken [verdict: run=x]"}`)); err != nil {
		t.Fatal(err)
	}
	raw, _ := s.Pool(poolID)
	var p struct {
		Description string           `json:"description"`
		Origins     []map[string]any `json:"origins"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.Description != "taken [verdict: run=x]" || len(p.Origins) != 3 {
		t.Errorf("after Patch: description %q, %d origins; want the description set and 3 origins kept", p.Description, len(p.Origins))
	}
	if err := s.Patch(poolID, []byte(`{"origins": [{"name": "a", "weight": 0.5}]}`)); err == nil || !strings.Contains(err.Error(), "address is required") {
		t.Errorf("Patch with an origin without address: err = %v, want a validation error", err)
	}
	if err := s.Patch("nope", []byte(`{}`)); err == nil {
		t.Errorf("Patch of an unknown pool succeeded")
	}
}
