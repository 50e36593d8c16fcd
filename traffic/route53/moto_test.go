package route53

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/internal/motoserver"
)

// The tests share one moto_server (it takes seconds to start) and isolate themselves by
// creating their own hosted zone.
func TestMain(m *testing.M) {
	code := m.Run()
	motoserver.StopShared()
	os.Exit(code)
}

// motoURL returns the shared moto_server's URL, starting it on first use; without
// moto_server on PATH the test is skipped, or fails under VERDICT_REQUIRE_MOTO=1.
func motoURL(t *testing.T) string {
	t.Helper()
	return motoserver.Shared(t).URL
}

// requireMoto skips the test when moto_server is not on PATH, or fails it under
// VERDICT_REQUIRE_MOTO=1.
func requireMoto(t *testing.T) {
	t.Helper()
	motoserver.Require(t)
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

var testCreds = motoserver.Credentials

// adminClient is a plain SDK client for seeding and for changes "behind Verdict's back".
func adminClient(t *testing.T, url string) *r53.Client {
	t.Helper()
	return r53.New(r53.Options{
		Region:       motoserver.Region,
		BaseEndpoint: aws.String(url),
		Credentials:  testCreds,
	})
}

// newZone creates a hosted zone with a unique name and returns its ID and name.
func newZone(t *testing.T, c *r53.Client) (id, name string) {
	t.Helper()
	return motoserver.NewZone(t, c, "z")
}

func upsert(t *testing.T, c *r53.Client, zone string, recs ...types.ResourceRecordSet) {
	t.Helper()
	motoserver.MustUpsert(t, c, zone, recs...)
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
	return motoserver.MustRecords(t, c, zone)
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
