package cfemu_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/traffic/cfemu"
)

// TestAdminHealthHook: PUT /cfemu/admin/pools/{id}/origins/{name}/health marks an origin
// down over HTTP (for `verdict emulate cloudflare`), with the API token, and the data plane
// then sends it nothing.
func TestAdminHealthHook(t *testing.T) {
	s := start(t, cfemu.Options{})
	base := strings.TrimSuffix(s.APIURL(), "/client/v4/")
	put := func(auth, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	path := cfemu.AdminPrefix + "pools/" + poolID + "/origins/b/health"
	if code := put("", path, `{"healthy": false}`); code != http.StatusBadRequest && code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("without a token: %d", code)
	}
	if code := put(bearer(s), path, `{}`); code != http.StatusBadRequest {
		t.Errorf("without healthy: %d, want 400", code)
	}
	if code := put(bearer(s), cfemu.AdminPrefix+"pools/"+poolID+"/origins/nope/health", `{"healthy": false}`); code != http.StatusNotFound {
		t.Errorf("unknown origin: %d, want 404", code)
	}
	if code := put(bearer(s), path, `{"healthy": false}`); code != http.StatusOK {
		t.Fatalf("mark b down: %d", code)
	}
	res := call(t, s, "GET", poolPath(s, "/"+poolID+"/health"), bearer(s), "").body["result"].(map[string]any)
	pop := firstValue(res["pop_health"]).(map[string]any)
	for _, o := range pop["origins"].([]any) {
		for addr, h := range o.(map[string]any) {
			if addr == "192.0.2.2" && h.(map[string]any)["healthy"].(bool) {
				t.Errorf("b still healthy in /health after the admin call")
			}
		}
	}
	if len(s.Calls()) != 1 {
		t.Errorf("admin calls were recorded as API calls: %+v", s.Calls())
	}
}
