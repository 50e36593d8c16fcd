package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/store"
)

// Client talks to a Verdict server: the CLI's status, watch and actions use it when a
// server is configured.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// NewClient returns a client for the server at baseURL (http://host:port); token is sent
// as a bearer token when not empty.
func NewClient(baseURL, token string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	return &Client{base: u, token: token, http: &http.Client{}}, nil
}

// APIError is an error answer of the server.
type APIError struct {
	Status  int
	Message string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// ErrNotFound matches an APIError with status 404.
var ErrNotFound = errors.New("not found")

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("verdict server %s: %w", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return resp.StatusCode, &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return resp.StatusCode, nil
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("verdict server %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// RunQuery filters a run list: by experiment, by states (which include finished runs),
// unfinished ones only unless All.
type RunQuery struct {
	Experiment string
	States     []store.State
	All        bool
	Limit      int
}

// ListRuns lists runs, newest first.
func (c *Client) ListRuns(ctx context.Context, q RunQuery) (*RunList, error) {
	v := url.Values{}
	v.Set("all", fmt.Sprint(q.All))
	if q.Experiment != "" {
		v.Set("experiment", q.Experiment)
	}
	if len(q.States) > 0 {
		names := make([]string, len(q.States))
		for i, s := range q.States {
			names[i] = string(s)
		}
		v.Set("state", strings.Join(names, ","))
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	var out RunList
	if _, err := c.do(ctx, "GET", "/api/v1/runs?"+v.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Runs lists runs: unfinished ones, or all with all.
func (c *Client) Runs(ctx context.Context, all bool) ([]RunSummary, error) {
	var out RunList
	_, err := c.do(ctx, "GET", "/api/v1/runs?all="+fmt.Sprint(all), nil, &out)
	return out.Runs, err
}

// Run returns a run by ID, or an experiment's latest run by name.
func (c *Client) Run(ctx context.Context, id string) (*RunDetail, error) {
	var out RunDetail
	_, err := c.do(ctx, "GET", "/api/v1/runs/"+url.PathEscape(id), nil, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Events returns a run's stored events.
func (c *Client) Events(ctx context.Context, id string) ([]store.Event, error) {
	var out EventList
	_, err := c.do(ctx, "GET", "/api/v1/runs/"+url.PathEscape(id)+"/events", nil, &out)
	return out.Events, err
}

// Decisions returns a run's decisions.
func (c *Client) Decisions(ctx context.Context, id string) ([]store.Decision, error) {
	var out DecisionList
	_, err := c.do(ctx, "GET", "/api/v1/runs/"+url.PathEscape(id)+"/decisions", nil, &out)
	return out.Decisions, err
}

// Report returns a run's report rendered by the server: format html, md or json.
func (c *Client) Report(ctx context.Context, id, format string) ([]byte, error) {
	var out []byte
	_, err := c.do(ctx, "GET", "/api/v1/runs/"+url.PathEscape(id)+"/report?format="+url.QueryEscape(format), nil, &out)
	return out, err
}

// Act asks for a manual action (pause, resume, promote, abort) on a run.
func (c *Client) Act(ctx context.Context, id, action, who, reason string) (*ActionResult, error) {
	var out ActionResult
	_, err := c.do(ctx, "POST", "/api/v1/runs/"+url.PathEscape(id)+"/"+url.PathEscape(action), ActionRequest{Who: who, Reason: reason}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Retry asks the server to start a new run of an ended run's stored experiment.
func (c *Client) Retry(ctx context.Context, id, who, reason string) (*RetryResult, error) {
	var out RetryResult
	_, err := c.do(ctx, "POST", "/api/v1/runs/"+url.PathEscape(id)+"/retry", ActionRequest{Who: who, Reason: reason}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ErrStopStream, returned by a Stream callback, ends the stream without an error.
var ErrStopStream = errors.New("stop stream")

// Stream calls fn with every message of a run's stream (every run's when run is ""),
// starting after lastID ("" for only new ones). It reconnects with Last-Event-ID when the
// connection drops, and passes a message of type "reset" when the server could not resume
// exactly (re-read the state then). It returns when fn returns an error (nil for
// ErrStopStream) or ctx ends.
func (c *Client) Stream(ctx context.Context, run, lastID string, fn func(Message) error) error {
	path := "/api/v1/stream"
	if run != "" {
		path = "/api/v1/runs/" + url.PathEscape(run) + "/stream"
	}
	backoff := 500 * time.Millisecond
	for {
		err := c.streamOnce(ctx, path, &lastID, fn)
		var apiErr *APIError
		switch {
		case errors.Is(err, ErrStopStream):
			return nil
		case errors.Is(err, errCallback):
			return errors.Unwrap(err)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &apiErr) && apiErr.Status < 500:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

var errCallback = errors.New("callback")

type callbackError struct{ err error }

func (e callbackError) Error() string        { return e.err.Error() }
func (e callbackError) Unwrap() error        { return e.err }
func (e callbackError) Is(target error) bool { return target == errCallback }

func (c *Client) streamOnce(ctx context.Context, path string, lastID *string, fn func(Message) error) error {
	req, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(data, &e)
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var id, event string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				var m Message
				if event == "reset" {
					m = Message{ID: id, Type: "reset", Message: string(data)}
				} else if err := json.Unmarshal(data, &m); err != nil {
					return fmt.Errorf("event %s: %w", id, err)
				}
				if id != "" {
					*lastID = id
				}
				if err := fn(m); err != nil {
					if errors.Is(err, ErrStopStream) {
						return err
					}
					return callbackError{err}
				}
			}
			id, event, data = "", "", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(line[5:], " ")...)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
