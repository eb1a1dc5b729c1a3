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
//
// A file and its version commit together: the migrator appends to every
// file that runs as one transaction the statements that record its new
// version, so however a run is cut off (a failed file, a lock timeout, a
// cancelled statement, a killed process or connection), the version table
// either names the schema's version, clean, or says dirty; it never names a
// version the schema is not at. The migrator sets a version back only when
// the table shows that a file did not commit.
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
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
	// Logger gets a line for each migration applied, and a warning when
	// writing the version after a file failed although the version was
	// recorded all the same. Default: no logging.
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
// Migrator uses one of its connections while it runs and never closes it.
// A nil cfg means the defaults.
//
// It takes a pool, not a DBTX like the repositories: each file commits on
// its own, and the advisory lock that serialises runs is held by the
// session the files run in; a pgx.Tx can give neither.
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
	v, err := readVersion(ctx, conn, m.qualified(schema), m.versionLockTimeout())
	if err != nil {
		return nil, err
	}
	st := &Status{Latest: uint(len(m.migrations)), Dirty: v.dirty}
	if v.version > 0 {
		st.Version = uint(v.version)
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

// step is one file of a run, and the versions it takes the database from
// and to.
type step struct {
	from, to uint
	version  uint // the migration the file belongs to
	file     File // as written, without the version record
}

func (m *Migrator) stepFrom(v, target uint) step {
	list := m.runnable()
	if v < target {
		return step{from: v, to: v + 1, version: v + 1, file: list[v].Up}
	}
	return step{from: v, to: v - 1, version: v, file: list[v-1].Down}
}

// migrateTo runs one file at a time from the applied version to target,
// and stops before the next file once ctx has ended; run reports the
// shortfall. (golang-migrate's own GracefulStop races with its reader
// goroutine, so the stepping is done here.)
func (m *Migrator) migrateTo(ctx context.Context, s *session, target uint) error {
	for v := s.before.Version; v != target; {
		if ctx.Err() != nil {
			return nil
		}
		st := m.stepFrom(v, target)
		s.drv.ran, s.drv.runErr = false, nil
		var err error
		if st.to == 0 {
			err = s.mig.Steps(-1) // golang-migrate has no version 0 to migrate to
		} else {
			err = s.mig.Migrate(st.to)
		}
		if err != nil {
			if err := m.settle(s, st, err); err != nil {
				return err
			}
		}
		v = st.to
	}
	return nil
}

// settle decides, from what the version table says, what a step that
// returned an error did; it never guesses. A transactional file writes its
// own version record in its transaction (see bookkeeping), so the table
// tells whether the file committed:
//
//   - the step's target, clean: the file committed with its record, and
//     only golang-migrate's write after it failed, with nothing left to
//     record. The step is done and the run goes on.
//   - golang-migrate's dirty marker for the step (the target, dirty): the
//     marker was written, and a transactional file that had committed
//     would have replaced it. So the file did not commit, and the
//     version is set back to the step's start, clean, for a retry. A
//     file that is not a transaction may have done part of its work: it
//     stays dirty, unless it returned success and only its record failed.
//   - the step's start, clean: the marker was never written; nothing ran.
//   - anything else, or no answer: reported as it is, nothing forced.
//
// Only a session that still holds the migration lock may set anything
// back: once the connection is lost, another migrator may be at work, and
// the run ends with what the table says.
func (m *Migrator) settle(s *session, st step, stepErr error) error {
	fileErr := func(cause error) error {
		return &FileError{Version: st.version, Path: st.file.Path, Err: cause}
	}
	cause := stepErr
	if s.drv.ran && s.drv.runErr != nil {
		cause = fileErr(queryCause(stepErr))
	}
	if s.conn.IsClosed() {
		return fmt.Errorf("migrations: lost the connection, and the migration lock with it, at %s: %w", st.file.Path, cause)
	}
	ctx := context.WithoutCancel(s.ctx)
	got, err := readVersion(ctx, s.conn, s.table, m.versionLockTimeout())
	if err != nil {
		return errors.Join(cause, fmt.Errorf("migrations: could not read the version back after %s, so nothing was set back; Status tells where the database is: %w", st.file.Path, err))
	}
	version := uint(max(got.version, 0))
	switch {
	case version == st.to && !got.dirty:
		m.log.Warn("meterbase migration: recording the version after the file failed, but the file had recorded it itself",
			"file", st.file.Path, "version", st.to, "error", stepErr)
		return nil

	case version == st.to && got.dirty && isTransactional(st.file.SQL) && (!s.drv.ran || s.drv.runErr != nil):
		if !s.drv.ran {
			cause = fmt.Errorf("migrations: %s did not run: %w", st.file.Path, cause)
		} else if pgErr := (*pgconn.PgError)(nil); errors.As(s.drv.runErr, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
			cause = fileErr(&LockTimeoutError{Timeout: lockTimeoutOf(st.file.SQL), Err: queryCause(stepErr)})
		}
		if err := s.drv.SetVersion(versionArg(st.from), false); err != nil {
			return errors.Join(cause, fmt.Errorf("migrations: %s did not commit, but version %d could not be marked clean again: %w", st.file.Path, st.from, err))
		}
		return cause

	case version == st.to && got.dirty && s.drv.ran && s.drv.runErr == nil:
		// Not a transaction, but it ran to its end: only its record failed.
		if err := s.drv.SetVersion(versionArg(st.to), false); err != nil {
			return errors.Join(cause, fmt.Errorf("migrations: %s ran to its end, but version %d could not be recorded: %w", st.file.Path, st.to, err))
		}
		m.log.Warn("meterbase migration: recording the version after the file failed, and succeeded on a second try",
			"file", st.file.Path, "version", st.to, "error", stepErr)
		return nil

	case version == st.to && got.dirty:
		return cause // part of the file may have run: dirty, for a person

	case version == st.from && !got.dirty:
		return cause // the step never began

	default:
		return errors.Join(cause, fmt.Errorf("migrations: after %s the version table says version %d (dirty: %t), which this run did not write; nothing was set back", st.file.Path, version, got.dirty))
	}
}

// versionArg is golang-migrate's number for version v: -1 for none.
func versionArg(v uint) int {
	if v == 0 {
		return database.NilVersion
	}
	return int(v)
}

// Force records version as applied and clean without running any SQL. It is
// for after a person has repaired a dirty database by hand: they bring the
// schema to a known version, then tell the Migrator which one.
func (m *Migrator) Force(ctx context.Context, version uint) error {
	if version > uint(len(m.migrations)) {
		return fmt.Errorf("%w: version %d does not exist; the latest is %d", ErrInvalidConfig, version, len(m.migrations))
	}
	_, err := m.locked(ctx, func(s *session) error {
		return s.drv.SetVersion(versionArg(version), false)
	})
	return err
}

// run takes the lock, refuses a dirty or newer database, and migrates to
// the version target names. A run that ctx stopped between files short of
// its target is an error, never a success.
func (m *Migrator) run(ctx context.Context, target func(*Status) uint) (*Result, error) {
	var want uint
	res, err := m.locked(ctx, func(s *session) error {
		if err := s.before.check(); err != nil {
			return err
		}
		want = target(s.before)
		return m.migrateTo(ctx, s, want)
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

// session is one run under the migration lock: the connection that holds
// the lock, and golang-migrate working on it.
type session struct {
	ctx    context.Context
	conn   *pgx.Conn
	table  string // the version table, schema-qualified and quoted
	before *Status
	drv    *connDriver
	mig    *migrate.Migrate
}

// locked runs fn while this process holds the migration advisory lock, on
// the connection that holds it. Waiting for the lock ends with ctx; once a
// file has started it runs to its end, bounded by its own lock_timeout and
// statement_timeout, and ctx's end stops the run before the next file.
func (m *Migrator) locked(ctx context.Context, fn func(*session) error) (res *Result, err error) {
	lockConn, schema, key, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	conn := lockConn.Conn()
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		if conn.IsClosed() {
			lockConn.Release() // the pool drops a closed connection; the lock went with it
			return
		}
		// A session lock outlives the statement; if unlocking fails, close the
		// session so the lock cannot stay behind on a pooled connection.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); uerr != nil {
			_ = lockConn.Hijack().Close(context.WithoutCancel(ctx))
			return
		}
		lockConn.Release()
	}
	defer release()

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
	s := &session{ctx: ctx, conn: conn, table: m.qualified(schema)}
	// Like the schema, the table may exist for a role that could not
	// create it.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, s.table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrations: look up version table: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, createVersionTable(s.table)); err != nil {
			return nil, fmt.Errorf("migrations: create version table: %w", err)
		}
	}
	if s.before, err = m.status(ctx, conn); err != nil {
		return nil, err
	}
	s.drv = &connDriver{ctx: context.WithoutCancel(ctx), conn: conn, table: s.table, lockTimeout: m.versionLockTimeout()}
	if s.mig, err = migrate.NewWithInstance("meterbase", listSource{list: m.runnable(), table: s.table}, "meterbase", s.drv); err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	s.mig.Log = logAdapter{m.log}
	defer s.mig.Close()

	runErr := fn(s)
	if errors.Is(runErr, migrate.ErrNoChange) {
		runErr = nil
	}
	after, err := m.statusAfter(ctx, conn, release)
	if err != nil {
		return nil, errors.Join(runErr, err)
	}
	res = &Result{From: s.before.Version, To: after.Version}
	if runErr != nil {
		if after.Dirty && !errors.Is(runErr, ErrDirty) {
			runErr = errors.Join(runErr, &DirtyError{Version: after.Version})
		}
		return res, runErr
	}
	if after.Version == 0 && s.before.Version != 0 {
		// Bounded like every wait on the version table: a reader of it would
		// otherwise hold the drop, and the run, for as long as it reads.
		drop := "SET LOCAL lock_timeout = " + quoteLiteral(m.versionLockTimeout()) + ";\nDROP TABLE IF EXISTS " + s.table
		if _, err := conn.Exec(context.WithoutCancel(ctx), drop); err != nil {
			return nil, fmt.Errorf("migrations: drop version table: %w", err)
		}
	}
	return res, nil
}

// statusAfter reads where a run left the database. When the run lost its
// connection, it gives that one back first (the pool may have no other)
// and reads on a new one, for the report only.
func (m *Migrator) statusAfter(ctx context.Context, conn *pgx.Conn, release func()) (*Status, error) {
	ctx = context.WithoutCancel(ctx)
	if !conn.IsClosed() {
		return m.status(ctx, conn)
	}
	release()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fresh, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: read the version after losing the connection: %w", err)
	}
	defer fresh.Release()
	return m.status(ctx, fresh.Conn())
}

// lock takes the migration advisory lock on a connection of the pool and
// returns that connection, which holds it. It waits with pg_try_advisory_lock
// and gives its connection back to the pool between tries: replicas sharing
// a small pool would otherwise each keep a connection from the host's own
// work for as long as another run lasts. The wait ends with ctx.
func (m *Migrator) lock(ctx context.Context) (conn *pgxpool.Conn, schema string, key int64, err error) {
	wait := 10 * time.Millisecond
	for {
		conn, err = m.pool.Acquire(ctx)
		if err != nil {
			return nil, "", 0, fmt.Errorf("migrations: wait for the migration lock: acquire connection: %w", err)
		}
		// The schema is resolved once: each retry's search_path is the pool's.
		if schema == "" {
			if schema, err = m.resolveSchema(ctx, conn.Conn()); err != nil {
				conn.Release()
				if ctx.Err() != nil {
					return nil, "", 0, fmt.Errorf("migrations: wait for the migration lock: %w", ctx.Err())
				}
				return nil, "", 0, err
			}
			key = lockKey(schema, m.table)
		}
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

// qualified names the version table in schema, quoted.
func (m *Migrator) qualified(schema string) string { return quote(schema) + "." + quote(m.table) }

// versionLockTimeout bounds the migrator's own waits on the version table:
// the files' lock_timeout in tests that shorten it, else versionLockTimeout.
func (m *Migrator) versionLockTimeout() string {
	if m.lockTimeout != "" {
		return m.lockTimeout
	}
	return versionLockTimeout
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
