package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// BasicAuth is HTTP basic authentication for Prometheus. Password and PasswordFile are
// alternatives; the file is re-read on every request so that rotated secrets take effect.
type BasicAuth struct {
	Username     string
	Password     string // never logged nor put in errors
	PasswordFile string // read per request; trailing whitespace trimmed
}

// newTransport builds the base transport: loopback-friendly timeouts and, when caFile is
// set, a root pool holding only that CA (as Prometheus's tls_config.ca_file does).
func newTransport(caFile string) (*http.Transport, error) {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read Prometheus TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("Prometheus TLS CA file %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// authTransport adds credentials and headers to every request. Secrets are read from files
// per request and never put into errors: a failure names the file, not its content.
type authTransport struct {
	base            http.RoundTripper
	bearerTokenFile string
	basic           *BasicAuth
	headers         map[string]string
}

// RoundTrip adds the headers and credentials to a copy of the request (a RoundTripper must
// not modify its argument).
func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, v := range a.headers {
		req.Header.Set(k, v)
	}
	if a.bearerTokenFile != "" {
		tok, err := os.ReadFile(a.bearerTokenFile)
		if err != nil {
			return nil, &credentialsError{fmt.Sprintf("read bearer token file %s: %v", a.bearerTokenFile, unwrapPathError(err))}
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	if a.basic != nil {
		pw := a.basic.Password
		if a.basic.PasswordFile != "" {
			b, err := os.ReadFile(a.basic.PasswordFile)
			if err != nil {
				return nil, &credentialsError{fmt.Sprintf("read basic auth password file %s: %v", a.basic.PasswordFile, unwrapPathError(err))}
			}
			pw = strings.TrimSpace(string(b))
		}
		req.SetBasicAuth(a.basic.Username, pw)
	}
	return a.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base transport.
func (a *authTransport) CloseIdleConnections() {
	if c, ok := a.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// credentialsError is a local failure to load credentials: not retried, not "unreachable".
type credentialsError struct{ msg string }

// Error names the credentials file, never its content.
func (e *credentialsError) Error() string { return e.msg }

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
