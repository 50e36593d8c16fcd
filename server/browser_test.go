package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/store"
	"github.com/verdict-dev/verdict/traffic"
)

// chromium finds a headless-capable Chromium: $VERDICT_CHROMIUM, else /usr/bin/chromium.
// Without one the browser test is skipped, except in CI (CI=true) where it must run.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("VERDICT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required in CI (.ci/run installs Debian's chromium); set VERDICT_CHROMIUM to its path")
	}
	t.Skip("no chromium at /usr/bin/chromium (apt-get install chromium, or set VERDICT_CHROMIUM): browser test skipped")
	return ""
}

func artifactDir(t *testing.T) string {
	if d := os.Getenv("VERDICT_ARTIFACTS"); d != "" {
		d = filepath.Join(d, "dashboard")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// chromiumProfile is a profile directory removed after the test. Not t.TempDir: Chromium's
// helper processes outlive a killed browser by a moment and still write into the profile,
// which made t.TempDir's cleanup fail a passing test.
func chromiumProfile(t *testing.T) string {
	dir, err := os.MkdirTemp("", "verdict-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Logf("chromium profile %s left behind: %v", dir, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	return dir
}

func chromiumFlags(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + profile}
}

// screenshot saves a picture of url at the given window size, after 3s of the page's
// virtual time (its fetches are done; the event stream stays open and is not waited for).
func screenshot(t *testing.T, bin, url, file string, w, h int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(chromiumFlags(chromiumProfile(t)), fmt.Sprintf("--window-size=%d,%d", w, h), "--virtual-time-budget=3000", "--screenshot="+file, url)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("screenshot of %s: %v\n%s", url, err, out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() < 5000 {
		t.Fatalf("screenshot %s missing or empty: %v\n%s", file, err, out)
	}
	t.Logf("screenshot: %s", file)
}

// harnessHTML drives the dashboard in a same-origin iframe: it opens the experiment list,
// clicks into a run, waits for a live update without any reload, clicks Abort, confirms in
// the dialog, waits for the rollback, and posts what it saw back to the test.
const harnessHTML = `<!doctype html><meta charset="utf-8"><title>harness</title>
<iframe id="f" width="1200" height="1600"></iframe><script src="/__test/harness.js"></script>`

const harnessJS = `(async () => {
  const frame = document.getElementById('f');
  const out = { steps: [], errors: [], received: [] };
  const doc = () => frame.contentDocument;
  const body = () => doc() && doc().body;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const wait = async (what, cond, ms) => {
    const t0 = Date.now();
    for (;;) {
      try { if (cond()) { out.steps.push(what); return; } } catch (e) {}
      if (Date.now() - t0 > ms) throw new Error('timed out: ' + what);
      await sleep(25);
    }
  };
  const hook = () => {
    const w = frame.contentWindow;
    if (w.__hooked) return;
    w.__hooked = true;
    w.addEventListener('error', (e) => out.errors.push('error: ' + e.message));
    w.addEventListener('unhandledrejection', (e) => out.errors.push('rejection: ' + e.reason));
    const ce = w.console.error.bind(w.console);
    w.console.error = (...a) => { out.errors.push('console.error: ' + a.join(' ')); ce(...a); };
    new w.MutationObserver(() => {
      const d = body().dataset;
      if (d.lastId && (!out.received.length || out.received[out.received.length - 1].id !== d.lastId)) out.received.push({ id: d.lastId, type: d.lastType, at: Number(d.lastAt) });
    }).observe(body(), { attributes: true });
  };
  try {
    frame.src = '/#/';
    await wait('list loaded', () => body().dataset.ready === '1' && doc().querySelectorAll('[data-experiment]').length === 3, 20000);
    hook();
    out.cards = Array.from(doc().querySelectorAll('[data-experiment]')).map((c) => c.dataset.experiment + ':' + (c.dataset.state || ''));
    const loadedAt = body().dataset.loadedAt;
    doc().querySelector('[data-experiment="long"]').click();
    await wait('run page', () => body().dataset.page === 'run' && body().dataset.ready === '1' && doc().getElementById('btn-abort') && !doc().getElementById('btn-abort').disabled, 20000);
    const d0 = Number(body().dataset.decisions), l0 = Number(body().dataset.live);
    const liveDecisions = () => out.received.filter((m) => m.type === 'decision').length;
    const r0 = liveDecisions();
    await wait('live decisions', () => Number(body().dataset.live) > l0 && liveDecisions() >= r0 + 3 && Number(body().dataset.decisions) > d0, 30000);
    out.noReload = body().dataset.loadedAt === loadedAt;
    out.charts = doc().querySelectorAll('.chart svg path').length;
    out.kpiRows = doc().querySelectorAll('#kpis tbody tr').length;
    doc().getElementById('btn-abort').click();
    await wait('dialog open', () => doc().getElementById('confirm').open, 5000);
    doc().getElementById('confirm-who').value = 'browser-test';
    doc().getElementById('confirm-reason').value = 'clicked Abort in headless chromium';
    doc().getElementById('confirm-ok').click();
    await wait('aborted', () => body().dataset.state === 'Aborted', 30000);
    await wait('verdict shown', () => doc().getElementById('verdict') && doc().getElementById('verdict').textContent.includes('browser-test'), 5000);
    out.verdict = doc().getElementById('verdict').textContent;
    out.noReloadAfterAbort = body().dataset.loadedAt === loadedAt;
    out.ok = true;
  } catch (e) {
    out.ok = false;
    out.failure = String(e);
    try { out.html = doc().body.innerHTML.slice(0, 4000); } catch (e2) {}
  }
  await fetch('/__test/result', { method: 'POST', body: JSON.stringify(out) });
})();`

type harnessResult struct {
	OK                 bool     `json:"ok"`
	Failure            string   `json:"failure"`
	Steps              []string `json:"steps"`
	Errors             []string `json:"errors"`
	Cards              []string `json:"cards"`
	NoReload           bool     `json:"noReload"`
	NoReloadAfterAbort bool     `json:"noReloadAfterAbort"`
	Charts             int      `json:"charts"`
	KPIRows            int      `json:"kpiRows"`
	Verdict            string   `json:"verdict"`
	HTML               string   `json:"html"`
	Received           []struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		At   int64  `json:"at"` // ms since the epoch, when the dashboard got it
	} `json:"received"`
}

// TestDashboardInChromium: headless Chromium loads the dashboard with no console errors,
// sees a decision arrive live without reloading, and aborts a run through the button and
// its confirmation dialog, which rolls the run back. Screenshots go to $VERDICT_ARTIFACTS
// (or a temporary directory) and the SSE latency from decision to browser is logged.
func TestDashboardInChromium(t *testing.T) {
	bin := chromium(t)
	w := newWorld(t)
	w.setErrors("b1", 0.04)
	w.write("good.yaml", w.experiment("good", "a", "3m"))
	w.write("bad.yaml", w.experiment("bad", "b", "3m"))
	w.write("long.yaml", w.experiment("long", "c", "3h"))
	s := w.server()

	// When each message was published, to measure the latency to the browser.
	published := map[string]time.Time{}
	var pubMu sync.Mutex
	_, sub, _, _ := s.broker.subscribe("", "", 4096)
	go func() {
		for m := range sub.ch {
			pubMu.Lock()
			published[m.ID] = time.Now()
			pubMu.Unlock()
		}
	}()

	results := make(chan harnessResult, 1)
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	mux.HandleFunc("GET /__test/harness.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, harnessHTML)
	})
	mux.HandleFunc("GET /__test/harness.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, harnessJS)
	})
	mux.HandleFunc("POST /__test/result", func(w http.ResponseWriter, r *http.Request) {
		var res harnessResult
		json.NewDecoder(r.Body).Decode(&res)
		select {
		case results <- res:
		default:
		}
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	c := &client{t: t, base: ts.URL}
	good, bad, long := c.waitRun("good"), c.waitRun("bad"), c.waitRun("long")
	eventually(t, "good promoted", func() bool { return c.run(good).State == store.StatePromoted })
	eventually(t, "bad rolled back", func() bool { return c.run(bad).State == store.StateRolledBack })
	var ds struct {
		Decisions []store.Decision `json:"decisions"`
	}
	eventually(t, "long has decisions", func() bool {
		c.do("GET", "/api/v1/runs/"+long+"/decisions", nil, &ds)
		return len(ds.Decisions) >= 6
	})

	dir := artifactDir(t)
	screenshot(t, bin, ts.URL+"/#/", filepath.Join(dir, "experiments.png"), 1280, 900)
	screenshot(t, bin, ts.URL+"/#/runs/"+long, filepath.Join(dir, "run-live.png"), 1280, 2000)
	screenshot(t, bin, ts.URL+"/#/runs/"+long, filepath.Join(dir, "run-phone.png"), 390, 2200)

	// A Go client on the same stream, as a baseline for the browser's latency.
	goRecv := map[string]time.Time{}
	goCtx, goStop := context.WithCancel(context.Background())
	defer goStop()
	goDone := make(chan struct{})
	go func() {
		defer close(goDone)
		cl, _ := NewClient(ts.URL, "")
		cl.Stream(goCtx, long, "", func(m Message) error {
			pubMu.Lock()
			goRecv[m.ID] = time.Now()
			pubMu.Unlock()
			return nil
		})
	}()

	// The interactive part, with Chromium's console on stderr.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append(chromiumFlags(chromiumProfile(t)), "--enable-logging=stderr", "--v=0", "--window-size=1280,1700", ts.URL+"/__test/harness.html")
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res harnessResult
	select {
	case res = <-results:
	case <-ctx.Done():
		t.Fatalf("the browser never reported; chromium said:\n%s", stderr.String())
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Logf("harness received %d messages live: %+v", len(res.Received), res.Received)
	t.Logf("harness: steps %v, cards %v, charts %d paths, %d KPI rows, verdict %q", res.Steps, res.Cards, res.Charts, res.KPIRows, res.Verdict)
	if !res.OK {
		t.Fatalf("dashboard: %s\nsteps %v\nerrors %v\nhtml %s\nchromium:\n%s", res.Failure, res.Steps, res.Errors, res.HTML, stderr.String())
	}
	if len(res.Errors) > 0 {
		t.Errorf("errors in the page: %v", res.Errors)
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "CONSOLE") && strings.Contains(line, ts.URL) && !strings.Contains(line, "/__test/") {
			t.Errorf("browser console: %s", line)
		}
	}
	if !res.NoReload || !res.NoReloadAfterAbort {
		t.Errorf("the page reloaded")
	}
	if res.Charts < 5 || res.KPIRows != 3 {
		t.Errorf("run page shows %d chart paths and %d KPI rows", res.Charts, res.KPIRows)
	}
	r := c.run(long)
	if r.State != store.StateAborted || r.EndedBy != "browser-test" || !strings.Contains(r.Reason, "headless chromium") {
		t.Errorf("run after the browser's abort: %+v", r)
	}
	if got := w.poolWeights("c"); got["oc1"] > 0.34 {
		t.Errorf("pool not rolled back: %v", got)
	}
	screenshot(t, bin, ts.URL+"/#/runs/"+long, filepath.Join(dir, "run-aborted.png"), 1280, 2000)
	screenshot(t, bin, ts.URL+"/api/v1/runs/"+bad+"/report", filepath.Join(dir, "report-linked.png"), 1280, 1600)

	// Latency from publication (right after the engine recorded the decision) to the
	// dashboard's handler, for the decisions the page received live.
	goStop()
	<-goDone
	pubMu.Lock()
	var lat, golat []time.Duration
	for _, m := range res.Received {
		if p, ok := published[m.ID]; ok && m.Type == "decision" {
			lat = append(lat, time.UnixMilli(m.At).Sub(p))
		}
	}
	for id, at := range goRecv {
		if p, ok := published[id]; ok {
			golat = append(golat, at.Sub(p))
		}
	}
	pubMu.Unlock()
	if len(lat) == 0 || len(golat) == 0 {
		t.Errorf("no live decision received by the page (%d) or the Go client (%d)", len(lat), len(golat))
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(golat, func(i, j int) bool { return golat[i] < golat[j] })
	summary := fmt.Sprintf("SSE latency from the decision's publication to the dashboard's handler in Chromium, over %d decisions: min %s, median %s, max %s (all %v); Go SSE client on the same stream over %d events: median %s, max %s",
		len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1], lat, len(golat), golat[len(golat)/2], golat[len(golat)-1])
	t.Log(summary)
	os.WriteFile(filepath.Join(dir, "sse-latency.txt"), []byte(summary+"\n"), 0o644)
}

const tokenHarnessJS = `(async () => {
  const frame = document.getElementById('f');
  const out = { steps: [], errors: [] };
  const doc = () => frame.contentDocument;
  const wait = async (what, cond, ms) => {
    const t0 = Date.now();
    for (;;) {
      try { if (cond()) { out.steps.push(what); return; } } catch (e) {}
      if (Date.now() - t0 > ms) throw new Error('timed out: ' + what);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  try {
    frame.src = '/#/';
    await wait('asks for the token', () => doc().getElementById('login').open, 20000);
    doc().getElementById('login-token').value = location.hash.slice(1);
    doc().getElementById('login-ok').click();
    await wait('list with the token', () => doc().body.dataset.ready === '1' && doc().querySelectorAll('[data-experiment]').length === 1, 20000);
    await wait('live with the token', () => doc().getElementById('live').classList.contains('on'), 20000);
    out.ok = true;
  } catch (e) {
    out.ok = false;
    out.failure = String(e);
  }
  await fetch('/__test/result', { method: 'POST', body: JSON.stringify(out) });
})();`

// TestDashboardAsksForTheToken: on a server with a token the dashboard asks for it, keeps
// it in the browser, and then lists and streams with it.
func TestDashboardAsksForTheToken(t *testing.T) {
	bin := chromium(t)
	w := newWorld(t)
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	const token = "dashboard-token-42"
	s := w.server(func(o *Options) { o.Token = token })
	results := make(chan harnessResult, 1)
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	mux.HandleFunc("GET /__test/harness.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, strings.Replace(harnessHTML, "/__test/harness.js", "/__test/token.js", 1))
	})
	mux.HandleFunc("GET /__test/token.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, tokenHarnessJS)
	})
	mux.HandleFunc("POST /__test/result", func(w http.ResponseWriter, r *http.Request) {
		var res harnessResult
		json.NewDecoder(r.Body).Decode(&res)
		select {
		case results <- res:
		default:
		}
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(chromiumFlags(chromiumProfile(t)), ts.URL+"/__test/harness.html#"+token)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	select {
	case res := <-results:
		if !res.OK {
			t.Fatalf("dashboard with a token: %s (steps %v)", res.Failure, res.Steps)
		}
		t.Logf("steps: %v", res.Steps)
	case <-ctx.Done():
		t.Fatal("the browser never reported")
	}
}

// layoutHarnessJS opens the experiment list and the run page in an iframe of each width
// (?widths=1400,390) and reports what a reader would notice: a column cut off or the page
// wider than the screen, the actual-weights line after drift, the hold progress, a
// timeline event shown twice, the progress bar's colour.
const layoutHarnessJS = `(async () => {
  const q = new URLSearchParams(location.search);
  const run = q.get('run');
  const out = { ok: true, views: [], errors: [] };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const wait = async (what, cond, ms) => {
    const t0 = Date.now();
    for (;;) {
      try { if (cond()) return; } catch (e) {}
      if (Date.now() - t0 > ms) throw new Error('timed out: ' + what);
      await sleep(25);
    }
  };
  // clipped lists the elements whose content is wider than their box, or that reach past
  // the right edge of the viewport.
  const clipped = (doc, sel) => {
    const vw = doc.documentElement.clientWidth;
    return Array.from(doc.querySelectorAll(sel)).filter((el) => {
      const r = el.getBoundingClientRect();
      return r.width > 0 && (el.scrollWidth > el.clientWidth + 1 || r.right > vw + 1);
    }).map((el) => el.tagName + ' ' + (el.dataset.label || '') + ' ' + el.textContent.slice(0, 40) + ' (' + el.scrollWidth + '>' + el.clientWidth + ')');
  };
  try {
    for (const width of q.get('widths').split(',').map(Number)) {
      const f = document.createElement('iframe');
      f.width = width; f.height = 1400; f.style.display = 'block';
      document.body.append(f);
      const doc = () => f.contentDocument, body = () => doc() && doc().body;
      const v = { width };
      f.src = '/#/';
      await wait('list at ' + width, () => body().dataset.ready === '1' && doc().querySelectorAll('a[data-experiment]').length >= 2, 20000);
      f.contentWindow.addEventListener('error', (e) => out.errors.push(width + ': ' + e.message));
      v.listOverflow = doc().documentElement.scrollWidth - doc().documentElement.clientWidth;
      v.cards = Array.from(doc().querySelectorAll('a[data-experiment]')).map((c) => ({ name: c.dataset.experiment, state: c.dataset.state,
        width: Math.round(c.getBoundingClientRect().width), bar: c.querySelector('.bar > span').className, text: c.textContent }));
      v.listClipped = clipped(doc(), 'main a[data-experiment] *');
      f.contentWindow.location.hash = '#/runs/' + encodeURIComponent(run);
      await wait('run page at ' + width, () => body().dataset.page === 'run' && body().dataset.ready === '1' && doc().getElementById('kpis') && doc().getElementById('actual-weights'), 30000);
      await sleep(500);
      v.actual = doc().getElementById('actual-weights').textContent;
      v.weights = doc().getElementById('weights').textContent;
      v.hold = (doc().getElementById('hold') || {}).textContent || '';
      v.elapsed = (doc().getElementById('elapsed') || {}).textContent || '';
      v.state = body().dataset.state;
      v.runOverflow = doc().documentElement.scrollWidth - doc().documentElement.clientWidth;
      v.runClipped = clipped(doc(), '#kpis th, #kpis td, .kv dt, .kv dd, #timeline li > *, h1');
      const sc = doc().querySelector('.scroll');
      v.tableScrolls = sc ? sc.scrollWidth > sc.clientWidth + 1 : false;
      v.kpiCells = Array.from(doc().querySelectorAll('#kpis tbody tr:first-child td')).map((td) => ({ label: td.dataset.label, visible: td.getBoundingClientRect().width > 0 && getComputedStyle(td).display !== 'none', text: td.textContent }));
      const items = Array.from(doc().querySelectorAll('#timeline li')).map((li) => li.className + ' ' + li.textContent);
      v.timeline = items.length;
      v.duplicates = items.filter((x, i) => items.indexOf(x) !== i);
      out.views.push(v);
    }
  } catch (e) {
    out.ok = false;
    out.failure = String(e);
  }
  await fetch('/__test/result', { method: 'POST', body: JSON.stringify(out) });
})();`

type layoutView struct {
	Width        int      `json:"width"`
	ListOverflow int      `json:"listOverflow"`
	RunOverflow  int      `json:"runOverflow"`
	ListClipped  []string `json:"listClipped"`
	RunClipped   []string `json:"runClipped"`
	TableScrolls bool     `json:"tableScrolls"`
	Cards        []struct {
		Name, State, Bar, Text string
		Width                  int
	} `json:"cards"`
	Actual, Weights, Hold, Elapsed, State string
	KPICells                              []struct {
		Label   string `json:"label"`
		Visible bool   `json:"visible"`
		Text    string `json:"text"`
	} `json:"kpiCells"`
	Timeline   int      `json:"timeline"`
	Duplicates []string `json:"duplicates"`
}

// TestDashboardLayout: headless Chromium shows the dashboard at 1400 px and at 390 px (a
// phone) after a run was paused by drift (someone changed the pool by hand). At both widths
// the experiment list is a full-width row per experiment whose bar is not red for a
// healthy run, the run page shows the pool's actual weights beside the confirmed ones and
// the hold progress, no table cell or definition is clipped and nothing reaches past the
// screen's edge, and the timeline shows every event once. Screenshots go to
// $VERDICT_ARTIFACTS (docs/examples/dashboard-*.png were made so).
func TestDashboardLayout(t *testing.T) {
	bin := chromium(t)
	// Virtual time starts now, so that the browser's clock and the run's roughly agree on
	// the time elapsed (screenshots), until the API says its own clock.
	w := newWorldAt(t, &fastClock{base: time.Now().UTC().Truncate(time.Minute), start: time.Now(), speed: 120}, 15*time.Second, poolRate)
	w.write("long.yaml", w.experiment("long", "a", "3h"))
	w.write("steady.yaml", w.experiment("steady", "c", "3h"))
	s := w.server()
	c := &client{t: t, base: ""}
	results := make(chan struct {
		OK      bool         `json:"ok"`
		Failure string       `json:"failure"`
		Errors  []string     `json:"errors"`
		Views   []layoutView `json:"views"`
	}, 1)
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	mux.HandleFunc("GET /__test/harness.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><meta charset="utf-8"><title>layout</title><body style="margin:0"><script src="/__test/layout.js"></script>`)
	})
	mux.HandleFunc("GET /__test/layout.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, layoutHarnessJS)
	})
	mux.HandleFunc("POST /__test/result", func(w http.ResponseWriter, r *http.Request) {
		var res struct {
			OK      bool         `json:"ok"`
			Failure string       `json:"failure"`
			Errors  []string     `json:"errors"`
			Views   []layoutView `json:"views"`
		}
		json.NewDecoder(r.Body).Decode(&res)
		select {
		case results <- res:
		default:
		}
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	c.base = ts.URL
	long := c.waitRun("long")
	c.waitRun("steady")
	var ds struct {
		Decisions []store.Decision `json:"decisions"`
	}
	eventually(t, "long has decisions", func() bool {
		c.do("GET", "/api/v1/runs/"+long+"/decisions", nil, &ds)
		return len(ds.Decisions) >= 3 && c.run(long).State == store.StateRamping
	})

	// An operator moves traffic by hand: half of the pool to the canary's origin.
	ctx := context.Background()
	ref := traffic.PoolRef{Account: w.emu.AccountID(), Pool: pools["a"]}
	cur := w.poolWeights("a")
	actual := traffic.Weights{"oa1": 0.5, "oa2": 0.25, "oa3": 0.25}
	if err := w.steer.SetWeights(ctx, ref, actual, cur); err != nil {
		t.Fatalf("change the pool by hand: %v", err)
	}
	eventually(t, "long paused on drift", func() bool { return c.run(long).State == store.StatePaused })
	r := c.run(long)
	t.Logf("after drift: state %s, weights %v, actualWeights %v", r.State, r.Weights, r.ActualWeights)
	if r.ActualWeights == nil {
		t.Logf("the API gives no actualWeights: the dashboard falls back to the drift event's data.actual")
	}

	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	args := append(chromiumFlags(chromiumProfile(t)), "--enable-logging=stderr", "--v=0", "--window-size=1500,1500", ts.URL+"/__test/harness.html?widths=1400,390&run="+long)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res struct {
		OK      bool         `json:"ok"`
		Failure string       `json:"failure"`
		Errors  []string     `json:"errors"`
		Views   []layoutView `json:"views"`
	}
	select {
	case res = <-results:
	case <-ctx.Done():
		t.Fatalf("the browser never reported; chromium said:\n%s", stderr.String())
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !res.OK {
		t.Fatalf("dashboard layout: %s\nviews so far %+v\nchromium:\n%s", res.Failure, res.Views, stderr.String())
	}
	if len(res.Errors) > 0 {
		t.Errorf("errors in the page: %v", res.Errors)
	}
	if len(res.Views) != 2 {
		t.Fatalf("%d views, want 2", len(res.Views))
	}
	for _, v := range res.Views {
		t.Logf("%d px: cards %d px wide, actual %q, hold %q, elapsed %q, %d timeline items", v.Width, v.Cards[0].Width, v.Actual, v.Hold, v.Elapsed, v.Timeline)
		if v.ListOverflow > 0 || v.RunOverflow > 0 {
			t.Errorf("%d px: the page is wider than the screen (list by %d px, run page by %d px)", v.Width, v.ListOverflow, v.RunOverflow)
		}
		if len(v.ListClipped) > 0 || len(v.RunClipped) > 0 || v.TableScrolls {
			t.Errorf("%d px: clipped: list %v, run page %v, KPI table scrolls sideways %v", v.Width, v.ListClipped, v.RunClipped, v.TableScrolls)
		}
		for _, card := range v.Cards {
			// Full width: the list's cards span the page, less its padding.
			if card.Width < min(v.Width, 1100)-60 {
				t.Errorf("%d px: the card of %s is %d px wide: a narrow card", v.Width, card.Name, card.Width)
			}
			if card.Name == "steady" && card.State == string(store.StateRamping) && strings.Contains(card.Bar, "harm") {
				t.Errorf("%d px: a healthy run's bar is coloured as harm: %q", v.Width, card.Bar)
			}
			if card.Name == "long" && !strings.Contains(card.Bar, "paused") {
				t.Errorf("%d px: the paused run's bar is %q", v.Width, card.Bar)
			}
		}
		if !strings.Contains(v.Actual, "oa1 0.50") || !strings.Contains(v.Actual, "oa2 0.25") || !strings.Contains(v.Actual, "changed outside Verdict") {
			t.Errorf("%d px: actual weights line %q, want oa1 0.50 · oa2 0.25 · oa3 0.25 and why", v.Width, v.Actual)
		}
		if strings.Contains(v.Weights, "oa1 0.50") {
			t.Errorf("%d px: the confirmed weights show the drifted ones: %q", v.Width, v.Weights)
		}
		if !strings.Contains(v.Hold, "analysed") || !strings.Contains(v.Hold, "left") || !strings.Contains(v.Elapsed, "of at most 12h") {
			t.Errorf("%d px: hold %q, elapsed %q: want the hold progress and time left", v.Width, v.Hold, v.Elapsed)
		}
		labels := []string{}
		for _, cell := range v.KPICells {
			if cell.Visible {
				labels = append(labels, cell.Label)
			}
		}
		if strings.Join(labels, ",") != "KPI,Status,Effect,Bounds,Tolerance,Why" {
			t.Errorf("%d px: visible KPI cells %v, want all six", v.Width, labels)
		}
		if v.Timeline < 4 || len(v.Duplicates) > 0 {
			t.Errorf("%d px: %d timeline items, shown twice: %v", v.Width, v.Timeline, v.Duplicates)
		}
	}
	dir := artifactDir(t)
	screenshot(t, bin, ts.URL+"/#/", filepath.Join(dir, "dashboard-experiments.png"), 1400, 700)
	screenshot(t, bin, ts.URL+"/#/runs/"+long, filepath.Join(dir, "dashboard-run-drift.png"), 1400, 2000)
	screenshot(t, bin, ts.URL+"/#/runs/"+long, filepath.Join(dir, "dashboard-run-phone.png"), 390, 2600)
	screenshot(t, bin, ts.URL+"/#/", filepath.Join(dir, "dashboard-experiments-phone.png"), 390, 900)
}
