// Package motoserver runs moto_server, the Python moto package's AWS emulator, as the
// Route 53 that Verdict's tests and the dns demo steer. It is the one place that knows how
// to find, start, wait for and stop it.
//
// Start is for tests (skip without moto, or fail under VERDICT_REQUIRE_MOTO=1); Run is for
// programs such as `verdict demo --scenario dns`, which report ErrNotInstalled to a person.
package motoserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
)

// EnvRequire set to 1 turns "moto_server is not installed" from a skip into a failure, so
// CI cannot pass without running the emulator tests.
const EnvRequire = "VERDICT_REQUIRE_MOTO"

// Install says how to get moto_server, for messages a person reads.
const Install = "pip install 'moto[server]'"

// Region is the region the emulator's clients sign for; moto accepts any.
const Region = "us-east-1"

// Fake credentials that moto accepts. The secret is distinctive so that tests can assert
// it never appears in output.
const (
	AccessKeyID     = "AKIAVERDICTTEST"
	SecretAccessKey = "verdict-test-secret-do-not-log"
)

// Credentials is a static provider of the fake credentials.
var Credentials aws.CredentialsProvider = credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")

// ErrNotInstalled is returned by Run when moto_server is not on PATH.
var ErrNotInstalled = errors.New("moto_server is not on PATH (Python package moto: " + Install + ")")

// readyTimeout bounds the start-up: a cold moto imports botocore, which takes seconds on
// a loaded machine.
const readyTimeout = 60 * time.Second

// Server is a running moto_server on a loopback port.
type Server struct {
	// URL is the emulator's base URL, "http://127.0.0.1:PORT": an AWS endpoint for every
	// service moto emulates.
	URL string

	cmd    *exec.Cmd
	out    syncBuffer
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited is closed
	once   sync.Once
}

// Run starts moto_server on a free loopback port and returns once it answers. The process
// and anything it starts (the pyenv shim's python) run in their own process group, which
// Close kills. Cancelling ctx aborts the start-up only; stop a started server with Close.
func Run(ctx context.Context) (*Server, error) {
	path, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a port for moto_server: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), exited: make(chan struct{})}
	s.cmd = exec.Command(path, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("moto_server exited before answering: %v\n%s", s.err, s.Output())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/moto-api/", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("moto_server did not answer on %s within %s\n%s", s.URL, readyTimeout, s.Output())
			}
			return fmt.Errorf("start moto_server: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Close kills the server's process group and waits for it to exit. It is safe to call
// more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.cmd.Process != nil {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-s.exited
	})
	return nil
}

// Output is what moto_server has printed so far, for failure messages.
func (s *Server) Output() string { return s.out.String() }

// Env is the environment that points the AWS SDK's Route 53 client (and Verdict's
// steerer, through the standard credential chain) at the server, as KEY=VALUE pairs.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL_ROUTE_53=" + s.URL,
	}
}

// Route53 is a plain SDK client of the server with the fake credentials: for seeding
// zones and for changes made behind Verdict's back.
func (s *Server) Route53() *r53.Client {
	return r53.New(r53.Options{Region: Region, BaseEndpoint: aws.String(s.URL), Credentials: Credentials})
}

var zoneSeq atomic.Int64

// CreateZone creates a hosted zone whose name is unique on the server, so that users
// sharing one server do not see each other's records. prefix is a DNS label such as
// "crash"; the name returned ends with a dot ("crash-3-123456.verdict-test.example.")
// and the ID has no "/hostedzone/" prefix.
func CreateZone(ctx context.Context, c *r53.Client, prefix string) (id, name string, err error) {
	label := strings.Trim(strings.ToLower(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, prefix)), "-")
	if len(label) > 40 {
		label = label[:40]
	}
	if label == "" {
		label = "z"
	}
	name = fmt.Sprintf("%s-%d-%d.verdict-test.example.", label, zoneSeq.Add(1), time.Now().UnixNano()%1e6)
	out, err := c.CreateHostedZone(ctx, &r53.CreateHostedZoneInput{Name: aws.String(name), CallerReference: aws.String(name)})
	if err != nil {
		return "", "", fmt.Errorf("create hosted zone %s: %w", name, err)
	}
	return strings.TrimPrefix(aws.ToString(out.HostedZone.Id), "/hostedzone/"), name, nil
}

// Upsert writes record sets into a zone in one change batch.
func Upsert(ctx context.Context, c *r53.Client, zone string, recs ...types.ResourceRecordSet) error {
	ch := make([]types.Change, 0, len(recs))
	for i := range recs {
		ch = append(ch, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: &recs[i]})
	}
	_, err := c.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(zone),
		ChangeBatch:  &types.ChangeBatch{Changes: ch},
	})
	if err != nil {
		return fmt.Errorf("upsert %d record sets in hosted zone %s: %w", len(recs), zone, err)
	}
	return nil
}

// Weighted is a weighted record set with one value.
func Weighted(name string, typ types.RRType, setID string, weight, ttl int64, value string) types.ResourceRecordSet {
	return types.ResourceRecordSet{
		Name: aws.String(name), Type: typ, SetIdentifier: aws.String(setID), Weight: aws.Int64(weight), TTL: aws.Int64(ttl),
		ResourceRecords: []types.ResourceRecord{{Value: aws.String(value)}},
	}
}

// Records lists a whole zone (following pages), keyed "name/TYPE/SetIdentifier", for
// comparing everything before and after a write.
func Records(ctx context.Context, c *r53.Client, zone string) (map[string]types.ResourceRecordSet, error) {
	m := map[string]types.ResourceRecordSet{}
	in := &r53.ListResourceRecordSetsInput{HostedZoneId: aws.String(zone)}
	for {
		out, err := c.ListResourceRecordSets(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list hosted zone %s: %w", zone, err)
		}
		for _, r := range out.ResourceRecordSets {
			m[Key(r)] = r
		}
		if !out.IsTruncated {
			return m, nil
		}
		in.StartRecordName, in.StartRecordType, in.StartRecordIdentifier = out.NextRecordName, out.NextRecordType, out.NextRecordIdentifier
	}
}

// Key names a record set as Records does: "name/TYPE/SetIdentifier".
func Key(r types.ResourceRecordSet) string {
	return aws.ToString(r.Name) + "/" + string(r.Type) + "/" + aws.ToString(r.SetIdentifier)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// installed reports whether moto_server is on PATH.
func installed() bool {
	_, err := exec.LookPath("moto_server")
	return err == nil
}

// required reports whether VERDICT_REQUIRE_MOTO=1 is set.
func required() bool { return os.Getenv(EnvRequire) == "1" }
