package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store for several replicas sharing one PostgreSQL database: the same
// semantics as SQLite (one unfinished run per pool enforced by a unique index, optimistic
// versions, events with a global sequence), plus leases whose expiry is measured on the
// database's clock. Times are stored as Unix milliseconds, as in SQLite, except lease expiry.
type Postgres struct {
	pool  *pgxpool.Pool
	dsn   string // redacted
	clock func() time.Time
	log   *slog.Logger
}

var (
	_ Store  = (*Postgres)(nil)
	_ Leaser = (*Postgres)(nil)
)

// EventsChannel is the LISTEN/NOTIFY channel on which every transaction that adds events
// notifies, at commit, the highest Seq it added: replicas LISTEN on it to fan events out to
// their SSE clients without polling.
const EventsChannel = "verdict_events"

// OpenPostgres connects to the database dsn names (a postgres:// URL or libpq key=value
// string) and brings its schema up to date. Replicas starting together migrate once: the
// migrations run under a transaction-scoped advisory lock. The schema lives in the search
// path's first schema (public unless the DSN sets search_path).
func OpenPostgres(ctx context.Context, dsn string, o Options) (*Postgres, error) {
	redacted := RedactDSN(dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, scrub(fmt.Errorf("parse PostgreSQL connection string %s: %w", redacted, err), dsn)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "verdict"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, scrub(fmt.Errorf("connect to PostgreSQL %s: %w", redacted, err), dsn)
	}
	p := &Postgres{pool: pool, dsn: redacted, clock: o.Clock, log: o.logger()}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, scrub(fmt.Errorf("connect to PostgreSQL %s: %w", redacted, err), dsn)
	}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, scrub(fmt.Errorf("PostgreSQL %s: %w", redacted, err), dsn)
	}
	return p, nil
}

// DSN is the connection string with its password redacted.
func (p *Postgres) DSN() string { return p.dsn }

// Close closes every connection.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// pgMigrations are applied in order, each once; never edit one that has shipped. Times are
// Unix milliseconds (0 for none) as in SQLite; lease expiry is a timestamptz so the
// database's clock can grant and check it.
var pgMigrations = []string{
	`CREATE TABLE runs (
		n BIGINT GENERATED ALWAYS AS IDENTITY,
		id TEXT PRIMARY KEY,
		experiment TEXT NOT NULL,
		pool TEXT NOT NULL,
		state TEXT NOT NULL,
		active BOOLEAN NOT NULL,
		version BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		data TEXT NOT NULL
	);
	CREATE UNIQUE INDEX runs_one_active_per_pool ON runs(pool) WHERE active;
	CREATE INDEX runs_experiment ON runs(experiment, created_at);
	CREATE TABLE events (
		seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		run_id TEXT NOT NULL REFERENCES runs(id),
		at BIGINT NOT NULL,
		type TEXT NOT NULL,
		message TEXT NOT NULL,
		data TEXT
	);
	CREATE INDEX events_run ON events(run_id, seq);
	CREATE TABLE observations (
		run_id TEXT NOT NULL REFERENCES runs(id),
		kpi TEXT NOT NULL,
		start_at BIGINT NOT NULL,
		end_at BIGINT NOT NULL,
		step INTEGER NOT NULL,
		phase TEXT NOT NULL,
		vals TEXT NOT NULL,
		PRIMARY KEY (run_id, kpi, end_at, phase)
	);
	CREATE TABLE decisions (
		seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		run_id TEXT NOT NULL REFERENCES runs(id),
		at BIGINT NOT NULL,
		step INTEGER NOT NULL,
		action TEXT NOT NULL,
		reason TEXT NOT NULL,
		details TEXT
	);
	CREATE INDEX decisions_run ON decisions(run_id, seq);
	CREATE TABLE commands (
		id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		run_id TEXT NOT NULL REFERENCES runs(id),
		action TEXT NOT NULL,
		who TEXT NOT NULL,
		reason TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		done_at BIGINT,
		result TEXT
	);
	CREATE INDEX commands_pending ON commands(run_id) WHERE done_at IS NULL;
	CREATE TABLE leases (
		run_id TEXT PRIMARY KEY REFERENCES runs(id),
		owner TEXT NOT NULL,
		token BIGINT NOT NULL,
		expires_at TIMESTAMPTZ NOT NULL,
		ttl_ms BIGINT NOT NULL
	);`,
}

func (p *Postgres) migrate(ctx context.Context) error {
	var applied []int
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		// Held to commit, so a replica starting at the same moment waits here and then finds
		// the schema current. Keyed by schema, so databases shared by several installations
		// (one per schema) do not wait on each other.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('verdict.migrate.' || current_schema(), 0))`); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if have > len(pgMigrations) {
			return fmt.Errorf("schema version %d is newer than this verdict understands (%d); upgrade verdict", have, len(pgMigrations))
		}
		for v := have + 1; v <= len(pgMigrations); v++ {
			if _, err := tx.Exec(ctx, pgMigrations[v-1]); err != nil {
				return fmt.Errorf("migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("migration %d: %w", v, err)
			}
			applied = append(applied, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		p.log.Info("applied store migrations", "store", p.dsn, "versions", applied)
	}
	return nil
}

// now is the lease clock as a query argument: NULL means the database's clock.
func (p *Postgres) now() *time.Time {
	if p.clock == nil {
		return nil
	}
	t := p.clock()
	return &t
}

func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (constraint == "" || pe.ConstraintName == constraint)
}

// CreateRun implements Store. Two replicas creating runs on one pool at once are ordered by
// the unique index: the second waits for the first to commit and gets *PoolBusyError.
func (p *Postgres) CreateRun(ctx context.Context, r *Run, events ...Event) error {
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
	for attempt := 0; ; attempt++ {
		var busy bool
		err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			busy = false
			q := `INSERT INTO runs (id, experiment, pool, state, active, version, created_at, updated_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
			if !r.State.Terminal() {
				q += ` ON CONFLICT (pool) WHERE active DO NOTHING`
			}
			tag, err := tx.Exec(ctx, q, r.ID, r.Experiment, r.Pool, string(r.State), !r.State.Terminal(), r.Version, ms(r.CreatedAt), ms(r.UpdatedAt), string(data))
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				busy = true
				return errPoolTaken
			}
			return p.insertEvents(ctx, tx, r.ID, events)
		})
		if !busy {
			break
		}
		// A later statement sees the winner's committed row: name it.
		var holder string
		herr := p.pool.QueryRow(ctx, `SELECT id FROM runs WHERE pool = $1 AND active`, r.Pool).Scan(&holder)
		if herr == nil {
			err = &PoolBusyError{Pool: r.Pool, RunID: holder}
			break
		}
		if !errors.Is(herr, pgx.ErrNoRows) || attempt >= 3 {
			err = fmt.Errorf("%w (pool %s)", ErrPoolBusy, r.Pool)
			break
		}
		// The holder finished in between: the pool is free again, try once more.
	}
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	return nil
}

var errPoolTaken = errors.New("pool taken")

// insertEvents adds events in commit order. A sequence alone hands out numbers in the order
// transactions ask, not the order they commit, so a reader following Events(afterSeq) could
// skip an event committed late with a lower Seq; the table lock (which readers do not take)
// makes event-adding transactions commit one at a time, in Seq order.
func (p *Postgres) insertEvents(ctx context.Context, tx pgx.Tx, runID string, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN EXCLUSIVE MODE`); err != nil {
		return err
	}
	for i := range events {
		e := &events[i]
		if e.RunID == "" {
			e.RunID = runID
		}
		if e.At.IsZero() {
			e.At = time.Now().UTC()
		}
		if err := tx.QueryRow(ctx, `INSERT INTO events (run_id, at, type, message, data) VALUES ($1, $2, $3, $4, $5) RETURNING seq`,
			e.RunID, ms(e.At), e.Type, e.Message, nullJSON(e.Data)).Scan(&e.Seq); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, EventsChannel, strconv.FormatInt(events[len(events)-1].Seq, 10))
	return err
}

// checkFence refuses a fenced write unless fence is the run's current, unexpired lease
// token. FOR SHARE holds the lease row until commit, so no replica can take the lease
// between this check and the write.
func (p *Postgres) checkFence(ctx context.Context, tx pgx.Tx, runID string, fence int64) error {
	var l leaseRow
	var now time.Time
	err := tx.QueryRow(ctx, `SELECT owner, token, expires_at, COALESCE($2::timestamptz, clock_timestamp()) FROM leases WHERE run_id = $1 FOR SHARE`, runID, p.now()).
		Scan(&l.owner, &l.token, &l.expires, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return fenceErr(runID, fence, leaseRow{}, false, time.Time{})
	}
	if err != nil {
		return fmt.Errorf("read lease: %w", err)
	}
	return fenceErr(runID, fence, l, true, now)
}

// SaveRun implements Store.
func (p *Postgres) SaveRun(ctx context.Context, r *Run, events ...Event) error {
	next := *r
	next.Version = r.Version + 1
	next.UpdatedAt = time.Now().UTC()
	data, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if r.Fence != 0 {
			if err := p.checkFence(ctx, tx, r.ID, r.Fence); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE runs SET state = $1, active = $2, version = $3, updated_at = $4, data = $5 WHERE id = $6 AND version = $7`,
			string(next.State), !next.State.Terminal(), next.Version, ms(next.UpdatedAt), string(data), r.ID, r.Version)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			var v int64
			if err := tx.QueryRow(ctx, `SELECT version FROM runs WHERE id = $1`, r.ID).Scan(&v); errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return ErrConflict
		}
		return p.insertEvents(ctx, tx, r.ID, events)
	})
	if isUniqueViolation(err, "runs_one_active_per_pool") {
		// Reopening a finished run on a pool another run has taken since.
		var holder string
		_ = p.pool.QueryRow(ctx, `SELECT id FROM runs WHERE pool = $1 AND active`, r.Pool).Scan(&holder)
		err = &PoolBusyError{Pool: r.Pool, RunID: holder}
	}
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	r.Version, r.UpdatedAt = next.Version, next.UpdatedAt
	return nil
}

// Run implements Store.
func (p *Postgres) Run(ctx context.Context, idOrName string) (*Run, error) {
	var data string
	err := p.pool.QueryRow(ctx, `SELECT data FROM runs WHERE id = $1`, idOrName).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		err = p.pool.QueryRow(ctx, `SELECT data FROM runs WHERE experiment = $1 ORDER BY created_at DESC, n DESC LIMIT 1`, idOrName).Scan(&data)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("run %q: %w", idOrName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read run %q: %w", idOrName, err)
	}
	return scanRun(data)
}

// ListRuns implements Store, newest first.
func (p *Postgres) ListRuns(ctx context.Context, o ListOptions) ([]*Run, error) {
	var where []string
	var args []any
	if o.Experiment != "" {
		args = append(args, o.Experiment)
		where = append(where, fmt.Sprintf("experiment = $%d", len(args)))
	}
	if o.Unfinished {
		where = append(where, "active")
	}
	q := `SELECT data FROM runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, n DESC"
	if o.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", o.Limit)
	}
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	out := make([]*Run, 0, len(datas))
	for _, d := range datas {
		r, err := scanRun(d)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// AddObservations implements Store. Re-adding an interval replaces it, so replay never
// double counts.
func (p *Postgres) AddObservations(ctx context.Context, obs []Observation) error {
	// A day of history is thousands of rows: one pipelined batch, not a round trip each.
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, o := range obs {
			b.Queue(`INSERT INTO observations (run_id, kpi, start_at, end_at, step, phase, vals) VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (run_id, kpi, end_at, phase) DO UPDATE SET start_at = excluded.start_at, step = excluded.step, vals = excluded.vals`,
				o.RunID, o.KPI, ms(o.Start), ms(o.End), o.Step, o.Phase, string(o.Values))
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("add observations: %w", err)
	}
	return nil
}

// Observations implements Store, in time order.
func (p *Postgres) Observations(ctx context.Context, runID string) ([]Observation, error) {
	rows, err := p.pool.Query(ctx, `SELECT kpi, start_at, end_at, step, phase, vals FROM observations WHERE run_id = $1 ORDER BY end_at, kpi`, runID)
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
			return nil, fmt.Errorf("read observations of %s: %w", runID, err)
		}
		o.Start, o.End, o.Values = fromMS(start), fromMS(end), json.RawMessage(vals)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read observations of %s: %w", runID, err)
	}
	return out, nil
}

// AddDecision implements Store.
func (p *Postgres) AddDecision(ctx context.Context, d *Decision) error {
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if d.Fence != 0 {
			if err := p.checkFence(ctx, tx, d.RunID, d.Fence); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO decisions (run_id, at, step, action, reason, details) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
			d.RunID, ms(d.At), d.Step, d.Action, d.Reason, nullJSON(d.Details)).Scan(&d.Seq)
	})
	if err != nil {
		return fmt.Errorf("add decision to %s: %w", d.RunID, err)
	}
	return nil
}

// Decisions implements Store.
func (p *Postgres) Decisions(ctx context.Context, runID string) ([]Decision, error) {
	rows, err := p.pool.Query(ctx, `SELECT seq, at, step, action, reason, COALESCE(details, '') FROM decisions WHERE run_id = $1 ORDER BY seq`, runID)
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
			return nil, fmt.Errorf("read decisions of %s: %w", runID, err)
		}
		d.At = fromMS(at)
		if details != "" {
			d.Details = json.RawMessage(details)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read decisions of %s: %w", runID, err)
	}
	return out, nil
}

// Events implements Store.
func (p *Postgres) Events(ctx context.Context, runID string, after int64) ([]Event, error) {
	q := `SELECT seq, run_id, at, type, message, COALESCE(data, '') FROM events WHERE seq > $1`
	args := []any{after}
	if runID != "" {
		q += " AND run_id = $2"
		args = append(args, runID)
	}
	rows, err := p.pool.Query(ctx, q+" ORDER BY seq", args...)
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
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.At = fromMS(at)
		if data != "" {
			e.Data = json.RawMessage(data)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// PostCommand implements Store.
func (p *Postgres) PostCommand(ctx context.Context, c *Command) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now().UTC()
	}
	err := p.pool.QueryRow(ctx, `INSERT INTO commands (run_id, action, who, reason, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		c.RunID, c.Action, c.Who, c.Reason, ms(c.CreatedAt)).Scan(&c.ID)
	if err != nil {
		return fmt.Errorf("post %s to run %s: %w", c.Action, c.RunID, err)
	}
	return nil
}

// PendingCommands implements Store, oldest first.
func (p *Postgres) PendingCommands(ctx context.Context, runID string) ([]Command, error) {
	rows, err := p.pool.Query(ctx, `SELECT id, action, who, reason, created_at FROM commands WHERE run_id = $1 AND done_at IS NULL ORDER BY id`, runID)
	if err != nil {
		return nil, fmt.Errorf("read commands of %s: %w", runID, err)
	}
	defer rows.Close()
	var out []Command
	for rows.Next() {
		c := Command{RunID: runID}
		var at int64
		if err := rows.Scan(&c.ID, &c.Action, &c.Who, &c.Reason, &at); err != nil {
			return nil, fmt.Errorf("read commands of %s: %w", runID, err)
		}
		c.CreatedAt = fromMS(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read commands of %s: %w", runID, err)
	}
	return out, nil
}

// CompleteCommand implements Store.
func (p *Postgres) CompleteCommand(ctx context.Context, id int64, result string, at time.Time) error {
	if _, err := p.pool.Exec(ctx, `UPDATE commands SET done_at = $1, result = $2 WHERE id = $3`, ms(at), result, id); err != nil {
		return fmt.Errorf("complete command %d: %w", id, err)
	}
	return nil
}
