package report

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium finds Debian's headless Chromium; without it the browser test is skipped
// locally and fails in CI, where .ci/run installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; CI must install it (.ci/run: apt-get install chromium)")
	}
	t.Skip("chromium not found: skipping the browser test (apt-get install chromium to run it)")
	return ""
}

func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("VERDICT_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func runChromium(t *testing.T, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(errb.String(), 2000))
	}
	return out.String(), errb.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// probe is injected into a copy of the page: it records script errors and console errors,
// and once the page has loaded checks that every KPI section has its charts and that each
// chart was laid out with a non-zero size. The results land in the DOM for --dump-dom.
const probe = `<script>
(function(){
  var errs=[];
  window.addEventListener('error',function(e){errs.push('error: '+(e.message||(e.target&&e.target.outerHTML)||'?'))},true);
  var ce=console.error;console.error=function(){errs.push('console: '+Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)};
  window.addEventListener('load',function(){
    var out=[];
    document.querySelectorAll('section.kpi').forEach(function(s){
      var name=s.getAttribute('data-kpi');
      var v=s.querySelector('svg.chart-values'), e=s.querySelector('svg.chart-effect');
      var size=function(svg){if(!svg)return 'none';var b=svg.getBoundingClientRect();return Math.round(b.width)+'x'+Math.round(b.height)};
      out.push(name+'='+size(v)+'/'+size(e));
    });
    var r=document.createElement('pre');r.id='probe';
    r.textContent='ERRORS['+errs.join(' | ')+']\nCHARTS['+out.join(';')+']';
    document.body.appendChild(r);
  });
})();
</script>`

func TestHTMLInChromium(t *testing.T) {
	bin := chromium(t)
	st, id := loadFixture(t, "rolled_back")
	r, err := FromStore(context.Background(), st, id)
	if err != nil {
		t.Fatal(err)
	}
	dir := artifactDir(t)
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "report-rolled-back.html")
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	probed := filepath.Join(dir, "report-rolled-back.probe.html")
	if err := os.WriteFile(probed, []byte(strings.Replace(b.String(), "<head>", "<head>"+probe, 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The page as shipped: a screenshot, and no console message at all (a missing asset
	// or a CSP complaint would show up here).
	shot := filepath.Join(dir, "report-rolled-back.png")
	_, stderr := runChromium(t, bin, "--screenshot="+shot, "--window-size=1280,2000", "--hide-scrollbars", "file://"+page)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Fatalf("no screenshot written (%v):\n%s", err, tail(stderr, 2000))
	}
	if m := regexp.MustCompile(`(?m)^.*CONSOLE.*$`).FindAllString(stderr, -1); len(m) > 0 {
		t.Errorf("console messages while rendering the report:\n%s", strings.Join(m, "\n"))
	}
	t.Logf("screenshot: %s", shot)

	// The probed copy: errors caught in the page, and every KPI's charts laid out.
	dom, stderr := runChromium(t, bin, "--dump-dom", "--virtual-time-budget=5000", "--window-size=1280,2000", "file://"+probed)
	m := regexp.MustCompile(`id="probe">ERRORS\[(.*)\]\s*CHARTS\[(.*)\]</pre>`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the probe did not run; DOM tail:\n%s\nstderr:\n%s", tail(dom, 1500), tail(stderr, 1500))
	}
	if m[1] != "" {
		t.Errorf("errors in the page: %s", m[1])
	}
	charts := map[string]string{}
	for _, kv := range strings.Split(m[2], ";") {
		if name, size, ok := strings.Cut(kv, "="); ok {
			charts[name] = size
		}
	}
	for _, k := range r.KPIs {
		size, ok := charts[k.Name]
		if !ok {
			t.Errorf("no section for KPI %s (got %v)", k.Name, charts)
			continue
		}
		vals, eff, _ := strings.Cut(size, "/")
		if vals == "none" || strings.HasPrefix(vals, "0x") || strings.HasSuffix(vals, "x0") {
			t.Errorf("KPI %s: value chart %s", k.Name, vals)
		}
		if k.Status != StatusNotJudged && (eff == "none" || strings.HasPrefix(eff, "0x")) {
			t.Errorf("KPI %s: effect chart %s", k.Name, eff)
		}
	}
}
