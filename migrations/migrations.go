// Package migrations owns meterbase's schema: the embedded SQL migrations and
// the API a host service calls at startup to bring its database up to date.
//
// The library keeps its own version table (meterbase_schema_migrations by
// default), never touches the host's schema_migrations, never closes the
// host's pool, and serialises concurrent migrators (many replicas starting at
// once) with a Postgres advisory lock whose wait is bounded by the caller's
// context.
//
// meterbase's tables are created in the schema that the pool's connections
// resolve first on their search_path; a host that wants them elsewhere sets
// search_path on its pool. Config.Schema only chooses where the version
// table lives.
//
// Before an upgrade reaches a large, busy database, Migrator.Plan (or
// PlanBetween, offline) is the dry run: the files that would run, in order,
// each opening with a header of its risks (locks, rewrites, scans, cost on a
// large table, whether the down migration loses data, the rollback plan),
// and Plan.String is the exact SQL. Every file bounds its lock waits with
// SET LOCAL lock_timeout, so a busy table fails it fast with ErrLockTimeout
// and leaves the database clean for a retry, instead of queueing the
// table's queries behind it. The rules migration authors follow are in the
// README.md next to this file.
package migrations

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultTable is the version table's name when Config.Table is empty.
const DefaultTable = "meterbase_schema_migrations"

// Config tunes a Migrator. The zero value is ready to use.
type Config struct {
	// Schema holds the version table. It is created if missing.
	// Default: the connections' current schema (first on search_path).
	Schema string
	// Table is the version table's name. Default: DefaultTable.
	Table string
	// Logger gets a line for each migration applied. Default: no logging.
	Logger *slog.Logger
}

// Migrator applies meterbase's embedded migrations to a host's database.
type Migrator struct {
	pool       *pgxpool.Pool
	schema     string // "" means the current schema, resolved per run
	table      string
	log        *slog.Logger
	migrations []Migration // List(), or a test's own files
	// lockTimeout, when set, replaces the lock_timeout of every file
	// (tests only: the files' own SET LOCAL lines are the production value).
	lockTimeout string
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ErrInvalidConfig reports a Config or argument that cannot work.
var ErrInvalidConfig = errors.New("migrations: invalid config")

// New returns a Migrator over the host's pool. The pool is borrowed: the
// Migrator uses up to two of its connections while it runs and never closes
// it. A nil cfg means the defaults.
//
// It takes a pool, not a DBTX like the repositories: golang-migrate runs on
// a database/sql handle made from the pool, each file commits on its own,
// and the advisory lock is held by a session; a pgx.Tx can give none of it.
func New(pool *pgxpool.Pool, cfg *Config) (*Migrator, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pool is nil", ErrInvalidConfig)
	}
	if cfg == nil {
		cfg = &Config{}
	}
	m := &Migrator{pool: pool, schema: cfg.Schema, table: cfg.Table, log: cfg.Logger, migrations: List()}
	if m.table == "" {
		m.table = DefaultTable
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if !identifier.MatchString(m.table) {
		return nil, fmt.Errorf("%w: table %q must be a lower-case SQL identifier", ErrInvalidConfig, m.table)
	}
	if m.schema != "" && !identifier.MatchString(m.schema) {
		return nil, fmt.Errorf("%w: schema %q must be a lower-case SQL identifier", ErrInvalidConfig, m.schema)
	}
	// One connection holds the advisory lock while another runs the files;
	// with a single connection the second would wait for ever.
	if pool.Config().MaxConns < 2 {
		return nil, fmt.Errorf("%w: the pool allows %d connection(s); migrating needs 2", ErrInvalidConfig, pool.Config().MaxConns)
	}
	return m, nil
}

// Migrate brings the database up to date: the one call a host makes at
// startup. A database already at the latest version is success.
func Migrate(ctx context.Context, pool *pgxpool.Pool, cfg *Config) (*Result, error) {
	m, err := New(pool, cfg)
	if err != nil {
		return nil, err
	}
	return m.Up(ctx)
}

// Result says what a run changed. From == To when there was nothing to do.
type Result struct {
	From uint // version before the run; 0 for none
	To   uint // version after the run
}

// Status describes the database against the migrations in this binary.
type Status struct {
	Version uint        // applied version; 0 when none is
	Dirty   bool        // a migration failed part-way at Version; see DirtyError
	Latest  uint        // newest version this binary embeds
	Ahead   bool        // the database is newer than this binary; see AheadError
	Pending []Migration // migrations Up would apply, in order; empty when dirty or ahead
}

// Status reads the version table without changing anything or taking a lock.
func (m *Migrator) Status(ctx context.Context) (*Status, error) {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: acquire connection: %w", err)
	}
	defer conn.Release()
	return m.status(ctx, conn.Conn())
}

func (m *Migrator) status(ctx context.Context, conn *pgx.Conn) (*Status, error) {
	schema, err := m.resolveSchema(ctx, conn)
	if err != nil {
		return nil, err
	}
	st := &Status{Latest: uint(len(m.migrations))}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, quote(schema)+"."+quote(m.table)).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrations: look up version table: %w", err)
	}
	if exists {
		var version int64
		err := conn.QueryRow(ctx, `SELECT version, dirty FROM `+quote(schema)+"."+quote(m.table)+` LIMIT 1`).Scan(&version, &st.Dirty)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("migrations: read version table: %w", err)
		}
		if version > 0 {
			st.Version = uint(version)
		}
	}
	st.Ahead = st.Version > st.Latest
	if !st.Dirty && !st.Ahead {
		st.Pending = m.migrations[st.Version:]
	}
	return st, nil
}

// check turns a dirty or newer-than-binary database into its typed error.
func (st *Status) check() error {
	switch {
	case st.Dirty:
		return &DirtyError{Version: st.Version}
	case st.Ahead:
		return &AheadError{Database: st.Version, Binary: st.Latest}
	}
	return nil
}

// Up applies every pending migration.
func (m *Migrator) Up(ctx context.Context) (*Result, error) {
	return m.run(ctx, func(st *Status) uint { return st.Latest })
}

// Down rolls back the newest steps migrations (fewer if fewer are applied).
// Rolling back to version 0 also drops the version table, so nothing of
// meterbase is left in the database.
func (m *Migrator) Down(ctx context.Context, steps int) (*Result, error) {
	if steps < 1 {
		return nil, fmt.Errorf("%w: steps must be at least 1, got %d", ErrInvalidConfig, steps)
	}
	return m.run(ctx, func(st *Status) uint { return st.Version - min(uint(steps), st.Version) })
}

// To migrates up or down to version; 0 removes meterbase from the database.
func (m *Migrator) To(ctx context.Context, version uint) (*Result, error) {
	if version > uint(len(m.migrations)) {
		return nil, fmt.Errorf("%w: version %d does not exist; the latest is %d", ErrInvalidConfig, version, len(m.migrations))
	}
	return m.run(ctx, func(*Status) uint { return version })
}

// migrateTo runs one file at a time from the applied version to target,
// and stops before the next file once ctx has ended; run reports the
// shortfall. (golang-migrate's own GracefulStop races with its reader
// goroutine, so the stepping is done here.)
func (m *Migrator) migrateTo(ctx context.Context, mig *migrate.Migrate, target uint, st *Status) error {
	for v := st.Version; v != target; {
		if ctx.Err() != nil {
			return nil
		}
		var err error
		switch {
		case v < target:
			v++
			err = mig.Migrate(v)
		case v == 1:
			v = 0
			err = mig.Steps(-1)
		default:
			v--
			err = mig.Migrate(v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Force records version as applied and clean without running any SQL. It is
// for after a person has repaired a dirty database by hand: they bring the
// schema to a known version, then tell the Migrator which one.
func (m *Migrator) Force(ctx context.Context, version uint) error {
	if version > uint(len(m.migrations)) {
		return fmt.Errorf("%w: version %d does not exist; the latest is %d", ErrInvalidConfig, version, len(m.migrations))
	}
	_, err := m.locked(ctx, func(conn *pgx.Conn, _ *Status, mig *migrate.Migrate) error {
		if version == 0 {
			return mig.Force(database.NilVersion)
		}
		return mig.Force(int(version))
	})
	return err
}

// run takes the lock, refuses a dirty or newer database, and runs step.
// run takes the lock, refuses a dirty or newer database, and migrates to
// the version target names. A run that ctx stopped between files short of
// its target is an error, never a success.
func (m *Migrator) run(ctx context.Context, target func(*Status) uint) (*Result, error) {
	var want uint
	res, err := m.locked(ctx, func(conn *pgx.Conn, st *Status, mig *migrate.Migrate) error {
		if err := st.check(); err != nil {
			return err
		}
		want = target(st)
		return m.migrateTo(ctx, mig, want, st)
	})
	if err != nil {
		return res, err
	}
	if res.To != want {
		if cerr := ctx.Err(); cerr != nil {
			return res, fmt.Errorf("migrations: stopped at version %d short of %d: %w", res.To, want, cerr)
		}
		return res, fmt.Errorf("migrations: stopped at version %d short of %d", res.To, want)
	}
	return res, nil
}

// locked runs fn while this process holds the migration advisory lock, with
// a golang-migrate instance over the pool. Waiting for the lock ends with
// ctx; a running migration file is bounded by its own statement_timeout, and
// ctx's end stops the run before the next file.
func (m *Migrator) locked(ctx context.Context, fn func(*pgx.Conn, *Status, *migrate.Migrate) error) (res *Result, err error) {
	lockConn, schema, key, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	conn := lockConn.Conn()
	defer func() {
		// A session lock outlives the statement; if unlocking fails, close the
		// session so the lock cannot stay behind on a pooled connection.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); uerr != nil {
			_ = lockConn.Hijack().Close(context.WithoutCancel(ctx))
			return
		}
		lockConn.Release()
	}()

	if m.schema != "" {
		// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
		// the schema is there; a host's role may well lack it.
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regnamespace($1) IS NOT NULL`, quote(m.schema)).Scan(&exists); err != nil {
			return nil, fmt.Errorf("migrations: look up schema %q: %w", m.schema, err)
		}
		if !exists {
			if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+quote(m.schema)); err != nil {
				return nil, fmt.Errorf("migrations: create schema %q: %w", m.schema, err)
			}
		}
	}
	before, err := m.status(ctx, conn)
	if err != nil {
		return nil, err
	}
	mig, err := m.newMigrateCtx(ctx, schema)
	if err != nil {
		return nil, err
	}
	defer mig.Close()

	runErr := fn(conn, before, mig)
	if errors.Is(runErr, migrate.ErrNoChange) {
		runErr = nil
	}
	after, err := m.status(context.WithoutCancel(ctx), conn)
	if err != nil {
		return nil, errors.Join(runErr, err)
	}
	if runErr != nil {
		runErr = m.explain(mig, before, after, runErr)
		// Where the run got to, files before the failed one included.
		if now, err := m.status(context.WithoutCancel(ctx), conn); err == nil {
			after = now
		}
		return &Result{From: before.Version, To: after.Version}, runErr
	}
	if after.Version == 0 && before.Version != 0 {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+quote(schema)+"."+quote(m.table)); err != nil {
			return nil, fmt.Errorf("migrations: drop version table: %w", err)
		}
	}
	return &Result{From: before.Version, To: after.Version}, nil
}

// lock takes the migration advisory lock on a connection of the pool and
// returns that connection, which holds it. It waits with pg_try_advisory_lock
// and gives its connection back to the pool between tries: a migrator that
// waited holding a connection could starve the one holding the lock of the
// second connection it needs, on a small pool. The wait ends with ctx.
func (m *Migrator) lock(ctx context.Context) (conn *pgxpool.Conn, schema string, key int64, err error) {
	wait := 10 * time.Millisecond
	for {
		conn, err = m.pool.Acquire(ctx)
		if err != nil {
			return nil, "", 0, fmt.Errorf("migrations: wait for the migration lock: acquire connection: %w", err)
		}
		if schema, err = m.resolveSchema(ctx, conn.Conn()); err != nil {
			conn.Release()
			return nil, "", 0, err
		}
		key = lockKey(schema, m.table)
		var locked bool
		if err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
			conn.Release()
			return nil, "", 0, fmt.Errorf("migrations: wait for the migration lock: %w", err)
		}
		if locked {
			return conn, schema, key, nil
		}
		conn.Release()
		select {
		case <-ctx.Done():
			return nil, "", 0, fmt.Errorf("migrations: wait for the migration lock: %w", ctx.Err())
		case <-time.After(wait + rand.N(wait)):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// explain turns a failed run into an error that names the migration. A file
// that runs as one transaction leaves nothing behind when it fails, so the
// version golang-migrate marked dirty is set back to the last clean one and
// a retry can simply run again. Only a non-transactional file (CREATE INDEX
// CONCURRENTLY) can leave the schema half-changed; that one stays dirty.
func (m *Migrator) explain(mig *migrate.Migrate, before, after *Status, runErr error) error {
	var dirty *DirtyError
	if errors.As(runErr, &dirty) || errors.As(runErr, new(*AheadError)) {
		return runErr
	}
	if !after.Dirty {
		return fmt.Errorf("migrations: %w", runErr)
	}
	// golang-migrate marks the target version dirty before it runs a file:
	// going up, the target is the failed file's own version; going down from
	// V, it is V-1 and the failed file is V's down.
	failed, clean, direction := after.Version, after.Version-1, "up"
	if after.Version < before.Version || (before.Version > 0 && after.Version == 0) {
		failed, clean, direction = after.Version+1, after.Version+1, "down"
	}
	var file File
	if list := m.runnable(); failed >= 1 && int(failed) <= len(list) {
		file = list[failed-1].Up
		if direction == "down" {
			file = list[failed-1].Down
		}
	}
	cause := queryCause(runErr)
	if file.Path == "" || !isTransactional(file.SQL) {
		// Part of the file may have run: no promise that nothing changed.
		return &FileError{Version: failed, Path: file.Path, Err: cause}
	}
	if pgErr := (*pgconn.PgError)(nil); errors.As(cause, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
		cause = &LockTimeoutError{Timeout: lockTimeoutOf(file.SQL), Err: cause}
	}
	ferr := &FileError{Version: failed, Path: file.Path, Err: cause}
	target := int(clean)
	if clean == 0 {
		target = database.NilVersion
	}
	if err := mig.Force(target); err != nil {
		return errors.Join(ferr, fmt.Errorf("migrations: could not mark version %d clean again: %w", clean, err))
	}
	return ferr
}

// runnable returns the migrations exactly as they will be sent to Postgres.
func (m *Migrator) runnable() []Migration {
	if m.lockTimeout == "" {
		return m.migrations
	}
	return withLockTimeout(m.migrations, m.lockTimeout)
}

// queryCause digs the Postgres error out of golang-migrate's database.Error,
// whose message repeats the whole file, and says on which line it failed.
func queryCause(err error) error {
	var dbErr database.Error
	if ptr := (*database.Error)(nil); errors.As(err, &ptr) && ptr != nil {
		dbErr = *ptr
	} else if !errors.As(err, &dbErr) {
		return err
	}
	if dbErr.OrigErr == nil {
		return err
	}
	var detail string
	var positioned bool // golang-migrate says line 1 when Postgres gave no position
	if pgErr := (*pgconn.PgError)(nil); errors.As(dbErr.OrigErr, &pgErr) {
		positioned = pgErr.Position > 0
		if pgErr.Detail != "" {
			detail = " (" + pgErr.Detail + ")"
		}
	}
	if positioned && dbErr.Line > 0 {
		return fmt.Errorf("line %d: %w%s", dbErr.Line, dbErr.OrigErr, detail)
	}
	if detail != "" {
		return fmt.Errorf("%w%s", dbErr.OrigErr, detail)
	}
	return dbErr.OrigErr
}

// newMigrateCtx is newMigrate bounded by ctx. golang-migrate takes the
// connection it runs on with context.Background(), which waits for as long
// as the host's own work keeps the pool full; past ctx the caller gets its
// error, and an instance that arrives later is closed.
func (m *Migrator) newMigrateCtx(ctx context.Context, schema string) (*migrate.Migrate, error) {
	type made struct {
		mig *migrate.Migrate
		err error
	}
	done := make(chan made, 1)
	go func() {
		mig, err := m.newMigrate(schema)
		done <- made{mig, err}
	}()
	select {
	case r := <-done:
		return r.mig, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.mig != nil {
				_, _ = r.mig.Close()
			}
		}()
		return nil, fmt.Errorf("migrations: wait for a connection to run the files on: %w", ctx.Err())
	}
}

func (m *Migrator) newMigrate(schema string) (*migrate.Migrate, error) {
	src := listSource{m.runnable()}
	// Closing this *sql.DB (golang-migrate does) leaves the pool open.
	db := stdlib.OpenDBFromPool(m.pool)
	drv, err := pgxmigrate.WithInstance(db, &pgxmigrate.Config{MigrationsTable: m.table, SchemaName: schema})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("migrations: open version table: %w", err)
	}
	mig, err := migrate.NewWithInstance("meterbase", src, "pgx5", drv)
	if err != nil {
		_ = drv.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	mig.Log = logAdapter{m.log}
	return mig, nil
}

func (m *Migrator) resolveSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	if m.schema != "" {
		return m.schema, nil
	}
	var schema *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return "", fmt.Errorf("migrations: read current schema: %w", err)
	}
	if schema == nil {
		return "", fmt.Errorf("%w: the connection's search_path names no existing schema; set Config.Schema", ErrInvalidConfig)
	}
	return *schema, nil
}

func lockKey(schema, table string) int64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, "meterbase.migrations:"+schema+"."+table)
	return int64(h.Sum64())
}

func quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Printf(format string, v ...any) {
	l.log.Info(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l logAdapter) Verbose() bool { return false }
