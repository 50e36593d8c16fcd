package server

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Message is one item of the server's event stream: an engine event of a run (every stored
// event, every decision) or a notice of the server itself (a file refused, a run resumed).
// ID orders messages across all runs; it is what SSE clients send back as Last-Event-ID.
type Message struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	RunID   string          `json:"run,omitempty"`
	At      time.Time       `json:"at"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`

	seq uint64
}

// broker keeps the most recent messages in order and fans new ones out to subscribers.
// Message IDs are "<epoch>-<n>": n counts up within one server process, and epoch tells a
// client reconnecting after a restart that its position is gone, so it gets a reset
// message and re-reads the state instead of silently missing events.
type broker struct {
	mu     sync.Mutex
	epoch  string
	next   uint64
	log    []Message // ring of the last cap messages, oldest first
	cap    int
	subs   map[*subscription]struct{}
	closed bool
}

type subscription struct {
	run  string // "" for every run
	ch   chan Message
	lost bool // the subscriber fell behind and was dropped
}

func newBroker(epoch string, capacity int) *broker {
	return &broker{epoch: epoch, cap: capacity, subs: map[*subscription]struct{}{}}
}

// publish appends m and hands it to every matching subscriber without blocking: a
// subscriber whose buffer is full is disconnected (its client reconnects with
// Last-Event-ID and catches up from the log).
func (b *broker) publish(m Message) Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	m.seq = b.next
	m.ID = b.epoch + "-" + strconv.FormatUint(m.seq, 10)
	b.log = append(b.log, m)
	if len(b.log) > b.cap {
		b.log = append(b.log[:0:0], b.log[len(b.log)-b.cap:]...)
	}
	for s := range b.subs {
		if s.run != "" && s.run != m.RunID {
			continue
		}
		select {
		case s.ch <- m:
		default:
			s.lost = true
			close(s.ch)
			delete(b.subs, s)
		}
	}
	return m
}

// cursor returns the ID of the latest message, for clients that read state first and then
// subscribe from exactly there.
func (b *broker) cursor() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch + "-" + strconv.FormatUint(b.next, 10)
}

// subscribe returns the messages after lastID (for run, or all runs when run is "") and a
// channel of the following ones, with the ID of the latest message at that moment. ok is false when lastID cannot be resumed exactly (another
// epoch, or older than the log): the caller must tell its client to re-read the state.
func (b *broker) subscribe(run, lastID string, buffer int) (backlog []Message, s *subscription, cursor string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok = true
	cursor = b.epoch + "-" + strconv.FormatUint(b.next, 10)
	if lastID != "" {
		ep, n, valid := parseID(lastID)
		switch {
		case !valid || ep != b.epoch || n > b.next:
			ok = false
		case len(b.log) > 0 && n+1 < b.log[0].seq:
			ok = false
		default:
			for _, m := range b.log {
				if m.seq > n && (run == "" || m.RunID == run) {
					backlog = append(backlog, m)
				}
			}
		}
	}
	s = &subscription{run: run, ch: make(chan Message, buffer)}
	if b.closed {
		close(s.ch)
		return backlog, s, cursor, ok
	}
	b.subs[s] = struct{}{}
	return backlog, s, cursor, ok
}

func (b *broker) unsubscribe(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.ch)
	}
}

// close ends every subscription (server shutdown).
func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		close(s.ch)
		delete(b.subs, s)
	}
}

// recent returns up to n of the latest messages matching run.
func (b *broker) recent(run string, n int) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Message
	for i := len(b.log) - 1; i >= 0 && len(out) < n; i-- {
		if run == "" || b.log[i].RunID == run {
			out = append(out, b.log[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func parseID(id string) (epoch string, n uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	return id[:i], n, err == nil
}
