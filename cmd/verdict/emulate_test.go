package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/traffic"
	"github.com/verdict-dev/verdict/traffic/cfemu"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEmulateServesAndSaves runs `verdict emulate cloudflare` until its context ends:
// the API answers with the loaded pool, and --save writes the pools back on exit.
func TestEmulateServesAndSaves(t *testing.T) {
	dir := t.TempDir()
	poolFile := filepath.Join(dir, "pool.json")
	if err := os.WriteFile(poolFile, []byte(drainPoolJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, "saved.json")
	t.Setenv(traffic.EnvCloudflareToken, "")

	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd(&streams{in: strings.NewReader(""), out: out, err: &lockedBuffer{}})
	root.SetArgs([]string{"emulate", "cloudflare", "--pool", poolFile, "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--save", saved, "-o", "json"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	var started emulatorStartedJSON
	for started.APIURL == "" {
		select {
		case err := <-done:
			t.Fatalf("emulator exited early: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if line, _, ok := strings.Cut(out.String(), "\n"); ok {
			if err := json.Unmarshal([]byte(line), &started); err != nil {
				t.Fatalf("first line is not the started message: %v\n%s", err, line)
			}
		}
	}
	if started.Type != "emulator_started" || started.AccountID != cfemu.DefaultAccountID || len(started.Pools) != 1 || started.Pools[0].ID != drainPool || started.DataURL == "" {
		t.Errorf("started = %+v", started)
	}

	c, err := traffic.NewCloudflare(traffic.CloudflareOptions{Token: cfemu.DefaultToken, AccountID: started.AccountID, BaseURL: started.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	ref := traffic.PoolRef{Pool: drainPool}
	if err := c.SetWeights(ctx, ref, traffic.Weights{"canary": 0.05}, traffic.Weights{"canary": 0.2}); err != nil {
		t.Fatalf("SetWeights against the CLI's emulator: %v", err)
	}
	res, err := http.Get(started.DataURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get(cfemu.OriginHeader) == "" {
		t.Errorf("data plane answered without choosing an origin: %d", res.StatusCode)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("emulator exit: %v", err)
	}
	b, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	p, err := traffic.DecodePool(bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSpace(b), []byte("[")), []byte("]")))
	if err != nil {
		t.Fatalf("saved pools: %v\n%s", err, b)
	}
	if o, _ := p.Origin("canary"); o.Weight != 0.05 {
		t.Errorf("saved canary weight = %v, want 0.05", o.Weight)
	}
}

func TestEmulateBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"name": "p", "origins": [{"name": "a", "address": "x", "weight": 0.333}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(drainPoolJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		args []string
		want string
	}{
		"no pool":           {[]string{"emulate", "cloudflare"}, "--pool is required"},
		"invalid pool":      {[]string{"emulate", "cloudflare", "--pool", bad}, "steps of 0.01"},
		"missing file":      {[]string{"emulate", "cloudflare", "--pool", filepath.Join(dir, "nope.json")}, "nope.json"},
		"zero rate limit":   {[]string{"emulate", "cloudflare", "--pool", good, "--rate-limit", "0"}, "--rate-limit"},
		"unknown data pool": {[]string{"emulate", "cloudflare", "--pool", good, "--data-pool", "x"}, "--data-pool"},
		"no provider":       {[]string{"emulate"}, "emulate cloudflare"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runVerdict(t, c.args...)
			if code != exitInvalid || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stderr %q; want 2 mentioning %q", code, errOut, c.want)
			}
		})
	}
}
