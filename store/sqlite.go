package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// SQLite is the Store for one machine: a single file under the state directory, in WAL
// mode with full fsync, so every save survives a crash or power loss.
type SQLite struct {
	db    *sql.DB
	path  string
	clock func() time.Time
}

var (
	_ Store  = (*SQLite)(nil)
	_ Leaser = (*SQLite)(nil)
)

// DBFile is the database's name inside the state directory.
const DBFile = "verdict.db"

// OpenSQLite opens (creating if needed) the store in dir and brings its schema up to date.
func OpenSQLite(ctx context.Context, dir string) (*SQLite, error) {
	return OpenSQLiteWith(ctx, dir, Options{})
}

// OpenSQLiteWith is OpenSQLite with Options.
func OpenSQLiteWith(ctx context.Context, dir string, o Options) (*SQLite, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, DBFile)
	// Probe writability first: SQLite opens read-only files lazily and fails later, in the
	// middle of a run, with a less helpful message.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("state directory %s is not writable: %w", dir, err)
	} else {
		f.Close()
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	s := &SQLite{db: db, path: path, clock: o.Clock}
	if s.clock == nil {
		s.clock = time.Now
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	return s, nil
}

// Path is the database file.
func (s *SQLite) Path() string { return s.path }

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// migrations are applied in order, each once; never edit one that has shipped.
var migrations = []string{
	`CREATE TABLE runs (
		id TEXT PRIMARY KEY,
		experiment TEXT NOT NULL,
		pool TEXT NOT NULL,
		state TEXT NOT NULL,
		active INTEGER NOT NULL,
		version INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		data TEXT NOT NULL
	);
	CREATE UNIQUE INDEX runs_one_active_per_pool ON runs(pool) WHERE active = 1;
	CREATE INDEX runs_experiment ON runs(experiment, created_at);
	CREATE TABLE events (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		run_id TEXT NOT NULL REFERENCES runs(id),
		at INTEGER NOT NULL,
		type TEXT NOT NULL,
		message TEXT NOT NULL,
		data TEXT
	);
	CREATE INDEX events_run ON events(run_id, seq);
	CREATE TABLE observations (
		run_id TEXT NOT NULL REFERENCES runs(id),
		kpi TEXT NOT NULL,
		start_at INTEGER NOT NULL,
		end_at INTEGER NOT NULL,
		step INTEGER NOT NULL,
		phase TEXT NOT NULL,
		vals TEXT NOT NULL,
		PRIMARY KEY (run_id, kpi, end_at, phase)
	);
	CREATE TABLE decisions (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		run_id TEXT NOT NULL REFERENCES runs(id),
		at INTEGER NOT NULL,
		step INTEGER NOT NULL,
		action TEXT NOT NULL,
		reason TEXT NOT NULL,
		details TEXT
	);
	CREATE INDEX decisions_run ON decisions(run_id, seq);
	CREATE TABLE commands (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		run_id TEXT NOT NULL REFERENCES runs(id),
		action TEXT NOT NULL,
		who TEXT NOT NULL,
		reason TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		done_at INTEGER,
		result TEXT
	);
	CREATE INDEX commands_pending ON commands(run_id) WHERE done_at IS NULL;`,
	// Leases (see Leaser): owner is '' once released; the token outlives release and expiry.
	`CREATE TABLE leases (
		run_id TEXT PRIMARY KEY REFERENCES runs(id),
		owner TEXT NOT NULL,
		token INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		ttl_ms INTEGER NOT NULL
	);`,
}

func (s *SQLite) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var have int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this verdict understands (%d); upgrade verdict", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			// Another process may have applied it since we looked; the write lock is ours now.
			var done int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, v).Scan(&done); err != nil || done > 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
	}
	return nil
}

func (s *SQLite) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func active(st State) int {
	if st.Terminal() {
		return 0
	}
	return 1
}

// CreateRun implements Store.
func (s *SQLite) CreateRun(ctx context.Context, r *Run, events ...Event) error {
	if r.ID == "" || r.Pool == "" || r.Experiment == "" {
		return errors.New("create run: ID, Pool and Experiment are required")
	}
	now := time.Now().UTC()
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	r.UpdatedAt = now
	r.Version = 1
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var holder string
		err := tx.QueryRowContext(ctx, `SELECT id FROM runs WHERE pool = ? AND active = 1`, r.Pool).Scan(&holder)
		if err == nil && active(r.State) == 1 {
			return &PoolBusyError{Pool: r.Pool, RunID: holder}
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO runs (id, experiment, pool, state, active, version, created_at, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.Experiment, r.Pool, string(r.State), active(r.State), r.Version, ms(r.CreatedAt), ms(r.UpdatedAt), string(data)); err != nil {
			return err
		}
		return insertEvents(ctx, tx, r.ID, events)
	})
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	return nil
}

func insertEvents(ctx context.Context, tx *sql.Tx, runID string, events []Event) error {
	for i := range events {
		e := &events[i]
		if e.RunID == "" {
			e.RunID = runID
		}
		if e.At.IsZero() {
			e.At = time.Now().UTC()
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO events (run_id, at, type, message, data) VALUES (?, ?, ?, ?, ?)`, e.RunID, ms(e.At), e.Type, e.Message, nullJSON(e.Data))
		if err != nil {
			return err
		}
		e.Seq, _ = res.LastInsertId()
	}
	return nil
}

// SaveRun implements Store.
func (s *SQLite) SaveRun(ctx context.Context, r *Run, events ...Event) error {
	next := *r
	next.Version = r.Version + 1
	next.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if r.Fence != 0 {
			if err := s.checkFence(ctx, tx, r.ID, r.Fence); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE runs SET state = ?, active = ?, version = ?, updated_at = ?, data = ? WHERE id = ? AND version = ?`,
			string(next.State), active(next.State), next.Version, ms(next.UpdatedAt), string(data), r.ID, r.Version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			var v int64
			if err := tx.QueryRowContext(ctx, `SELECT version FROM runs WHERE id = ?`, r.ID).Scan(&v); errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return ErrConflict
		}
		return insertEvents(ctx, tx, r.ID, events)
	})
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	r.Version, r.UpdatedAt = next.Version, next.UpdatedAt
	return nil
}

func scanRun(data string) (*Run, error) {
	var r Run
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return nil, fmt.Errorf("decode stored run: %w", err)
	}
	return &r, nil
}

// Run implements Store.
func (s *SQLite) Run(ctx context.Context, idOrName string) (*Run, error) {
	var data string
	err := s.db.QueryRowContext(ctx, `SELECT data FROM runs WHERE id = ?`, idOrName).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		err = s.db.QueryRowContext(ctx, `SELECT data FROM runs WHERE experiment = ? ORDER BY created_at DESC, rowid DESC LIMIT 1`, idOrName).Scan(&data)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("run %q: %w", idOrName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read run %q: %w", idOrName, err)
	}
	return scanRun(data)
}

// ListRuns implements Store, newest first.
func (s *SQLite) ListRuns(ctx context.Context, o ListOptions) ([]*Run, error) {
	var where []string
	var args []any
	if o.Experiment != "" {
		where, args = append(where, "experiment = ?"), append(args, o.Experiment)
	}
	if o.Unfinished {
		where = append(where, "active = 1")
	}
	q := `SELECT data FROM runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, rowid DESC"
	if o.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", o.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []*Run
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		r, err := scanRun(data)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// AddObservations implements Store. Re-adding an interval (after a crash between storing
// and deciding) replaces it, so replay never double counts.
func (s *SQLite) AddObservations(ctx context.Context, obs []Observation) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, o := range obs {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO observations (run_id, kpi, start_at, end_at, step, phase, vals) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				o.RunID, o.KPI, ms(o.Start), ms(o.End), o.Step, o.Phase, string(o.Values)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add observations: %w", err)
	}
	return nil
}

// Observations implements Store, in time order.
func (s *SQLite) Observations(ctx context.Context, runID string) ([]Observation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kpi, start_at, end_at, step, phase, vals FROM observations WHERE run_id = ? ORDER BY end_at, kpi`, runID)
	if err != nil {
		return nil, fmt.Errorf("read observations of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []Observation
	for rows.Next() {
		o := Observation{RunID: runID}
		var start, end int64
		var vals string
		if err := rows.Scan(&o.KPI, &start, &end, &o.Step, &o.Phase, &vals); err != nil {
			return nil, err
		}
		o.Start, o.End, o.Values = fromMS(start), fromMS(end), json.RawMessage(vals)
		out = append(out, o)
	}
	return out, rows.Err()
}

// AddDecision implements Store.
func (s *SQLite) AddDecision(ctx context.Context, d *Decision) error {
	insert := func(ctx context.Context, db interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}) error {
		res, err := db.ExecContext(ctx, `INSERT INTO decisions (run_id, at, step, action, reason, details) VALUES (?, ?, ?, ?, ?, ?)`,
			d.RunID, ms(d.At), d.Step, d.Action, d.Reason, nullJSON(d.Details))
		if err != nil {
			return err
		}
		d.Seq, _ = res.LastInsertId()
		return nil
	}
	var err error
	if d.Fence == 0 {
		err = insert(ctx, s.db)
	} else {
		err = s.tx(ctx, func(tx *sql.Tx) error {
			if err := s.checkFence(ctx, tx, d.RunID, d.Fence); err != nil {
				return err
			}
			return insert(ctx, tx)
		})
	}
	if err != nil {
		return fmt.Errorf("add decision to %s: %w", d.RunID, err)
	}
	return nil
}

// Decisions implements Store.
func (s *SQLite) Decisions(ctx context.Context, runID string) ([]Decision, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, at, step, action, reason, COALESCE(details, '') FROM decisions WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("read decisions of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []Decision
	for rows.Next() {
		d := Decision{RunID: runID}
		var at int64
		var details string
		if err := rows.Scan(&d.Seq, &at, &d.Step, &d.Action, &d.Reason, &details); err != nil {
			return nil, err
		}
		d.At = fromMS(at)
		if details != "" {
			d.Details = json.RawMessage(details)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Events implements Store.
func (s *SQLite) Events(ctx context.Context, runID string, after int64) ([]Event, error) {
	q := `SELECT seq, run_id, at, type, message, COALESCE(data, '') FROM events WHERE seq > ?`
	args := []any{after}
	if runID != "" {
		q += " AND run_id = ?"
		args = append(args, runID)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY seq", args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		var data string
		if err := rows.Scan(&e.Seq, &e.RunID, &at, &e.Type, &e.Message, &data); err != nil {
			return nil, err
		}
		e.At = fromMS(at)
		if data != "" {
			e.Data = json.RawMessage(data)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// PostCommand implements Store.
func (s *SQLite) PostCommand(ctx context.Context, c *Command) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now().UTC()
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO commands (run_id, action, who, reason, created_at) VALUES (?, ?, ?, ?, ?)`,
		c.RunID, c.Action, c.Who, c.Reason, ms(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("post %s to run %s: %w", c.Action, c.RunID, err)
	}
	c.ID, _ = res.LastInsertId()
	return nil
}

// PendingCommands implements Store, oldest first.
func (s *SQLite) PendingCommands(ctx context.Context, runID string) ([]Command, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, action, who, reason, created_at FROM commands WHERE run_id = ? AND done_at IS NULL ORDER BY id`, runID)
	if err != nil {
		return nil, fmt.Errorf("read commands of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []Command
	for rows.Next() {
		c := Command{RunID: runID}
		var at int64
		if err := rows.Scan(&c.ID, &c.Action, &c.Who, &c.Reason, &at); err != nil {
			return nil, err
		}
		c.CreatedAt = fromMS(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// CompleteCommand implements Store.
func (s *SQLite) CompleteCommand(ctx context.Context, id int64, result string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE commands SET done_at = ?, result = ? WHERE id = ?`, ms(at), result, id); err != nil {
		return fmt.Errorf("complete command %d: %w", id, err)
	}
	return nil
}
