package route53

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
)

// EnvRequireMoto set to 1 turns "moto_server is not installed" from a skip into a
// failure, so CI cannot pass without running these tests.
const EnvRequireMoto = "VERDICT_REQUIRE_MOTO"

// The tests share one moto_server (it takes seconds to start) and isolate themselves by
// creating their own hosted zone.
var moto struct {
	once sync.Once
	url  string
	err  error
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopMoto()
	os.Exit(code)
}

// motoURL starts moto_server on a free port the first time it is called and returns its
// URL; without moto_server on PATH the test is skipped, or fails under
// VERDICT_REQUIRE_MOTO=1.
func motoURL(t *testing.T) string {
	t.Helper()
	requireMoto(t)
	moto.once.Do(func() { moto.url, moto.err = startMoto() })
	if moto.err != nil {
		t.Fatalf("start moto_server: %v\n%s", moto.err, moto.out.String())
	}
	return moto.url
}

// requireMoto skips the test when moto_server is not on PATH, or fails it under
// VERDICT_REQUIRE_MOTO=1.
func requireMoto(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("moto_server"); err != nil {
		msg := "moto_server is not on PATH (Python package moto, `pip install 'moto[server]'`); the Route 53 steerer's emulator tests need it"
		if os.Getenv(EnvRequireMoto) == "1" {
			t.Fatalf("%s, and %s=1 requires them", msg, EnvRequireMoto)
		}
		t.Skip(msg)
	}
}

func startMoto() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = &syncWriter{w: &moto.out}, &syncWriter{w: &moto.out}
	// Its own process group, so stopping it also stops anything the pyenv shim started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	moto.cmd = cmd
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			moto.cmd = nil
			return "", fmt.Errorf("moto_server exited: %v", err)
		default:
		}
		resp, err := http.Get(url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("moto_server did not answer on %s within 60s", url)
}

func stopMoto() {
	if moto.cmd != nil && moto.cmd.Process != nil {
		_ = syscall.Kill(-moto.cmd.Process.Pid, syscall.SIGKILL)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

var testCreds = credentials.NewStaticCredentialsProvider("AKIAVERDICTTEST", "verdict-test-secret-do-not-log", "")

// adminClient is a plain SDK client for seeding and for changes "behind Verdict's back".
func adminClient(t *testing.T, url string) *r53.Client {
	t.Helper()
	return r53.New(r53.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials:  testCreds,
	})
}

var zoneSeq atomic.Int64

// newZone creates a hosted zone with a unique name and returns its ID and name
// ("z3.verdict-test.example.").
func newZone(t *testing.T, c *r53.Client) (id, name string) {
	t.Helper()
	n := zoneSeq.Add(1)
	name = fmt.Sprintf("z%d-%d.verdict-test.example.", n, time.Now().UnixNano()%1e6)
	out, err := c.CreateHostedZone(context.Background(), &r53.CreateHostedZoneInput{
		Name:            aws.String(name),
		CallerReference: aws.String(name),
	})
	if err != nil {
		t.Fatalf("create hosted zone: %v", err)
	}
	return strings.TrimPrefix(aws.ToString(out.HostedZone.Id), "/hostedzone/"), name
}

func upsert(t *testing.T, c *r53.Client, zone string, recs ...types.ResourceRecordSet) {
	t.Helper()
	var ch []types.Change
	for i := range recs {
		ch = append(ch, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &recs[i]})
	}
	_, err := c.ChangeResourceRecordSets(context.Background(), &r53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(zone),
		ChangeBatch:  &types.ChangeBatch{Changes: ch},
	})
	if err != nil {
		t.Fatalf("seed records: %v", err)
	}
}

func deleteRecord(t *testing.T, c *r53.Client, zone string, r types.ResourceRecordSet) {
	t.Helper()
	_, err := c.ChangeResourceRecordSets(context.Background(), &r53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(zone),
		ChangeBatch:  &types.ChangeBatch{Changes: []types.Change{{Action: types.ChangeActionDelete, ResourceRecordSet: &r}}},
	})
	if err != nil {
		t.Fatalf("delete record: %v", err)
	}
}

// allRecords lists the whole zone, for comparing everything before and after a write.
func allRecords(t *testing.T, c *r53.Client, zone string) map[string]types.ResourceRecordSet {
	t.Helper()
	out, err := c.ListResourceRecordSets(context.Background(), &r53.ListResourceRecordSetsInput{HostedZoneId: aws.String(zone)})
	if err != nil {
		t.Fatalf("list zone: %v", err)
	}
	m := map[string]types.ResourceRecordSet{}
	for _, r := range out.ResourceRecordSets {
		m[aws.ToString(r.Name)+"/"+string(r.Type)+"/"+aws.ToString(r.SetIdentifier)] = r
	}
	return m
}

// faults sits in front of moto and can answer, delay or rewrite calls by operation:
// "list" (ListResourceRecordSets), "change" (ChangeResourceRecordSets), "getchange".
type faults struct {
	next http.RoundTripper
	mu   sync.Mutex
	// calls counts requests that reached the transport, by operation.
	calls map[string]int
	// bodies keeps every change request body.
	bodies []string
	// before runs first for every request, with the operation's call number (1-based);
	// a non-nil response is returned instead of calling moto.
	before func(op string, n int, req *http.Request) (*http.Response, error)
	// after may rewrite moto's response body.
	after func(op string, n int, body []byte) []byte
}

func opOf(r *http.Request) string {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/rrset"):
		return "change"
	case r.Method == http.MethodGet && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/rrset"):
		return "list"
	case strings.Contains(r.URL.Path, "/change/"):
		return "getchange"
	}
	return r.Method + " " + r.URL.Path
}

func (f *faults) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opOf(req)
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	n := f.calls[op]
	before, after := f.before, f.after
	f.mu.Unlock()
	if op == "change" && req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		f.mu.Lock()
		f.bodies = append(f.bodies, string(b))
		f.mu.Unlock()
	}
	if before != nil {
		if resp, err := before(op, n, req); resp != nil || err != nil {
			return resp, err
		}
	}
	resp, err := f.next.RoundTrip(req)
	if err != nil || after == nil {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body = after(op, n, body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func (f *faults) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *faults) set(before func(string, int, *http.Request) (*http.Response, error), after func(string, int, []byte) []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
	f.calls = map[string]int{}
	f.bodies = nil
}

// awsError is a Route 53 error response as the API sends it.
func awsError(req *http.Request, status int, code, msg string) *http.Response {
	body := `<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>` + code +
		`</Code><Message>` + msg + `</Message></Error><RequestId>verdict-fault</RequestId></ErrorResponse>`
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{"Content-Type": {"text/xml"}, "X-Amzn-Requestid": {"verdict-fault"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
		Proto:         "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
}
