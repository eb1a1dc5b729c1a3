package migrations_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/migrations"
)

func newMigrator(t *testing.T, pool *pgxpool.Pool, cfg *migrations.Config) *migrations.Migrator {
	t.Helper()
	m, err := migrations.New(pool, cfg)
	require.NoError(t, err)
	return m
}

func TestMigrateFromEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	latest := uint(len(migrations.List()))

	res, err := migrations.Migrate(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.Result{From: 0, To: latest}, *res)

	// Already current: success, nothing done.
	res, err = migrations.Migrate(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.Equal(t, migrations.Result{From: latest, To: latest}, *res)

	// The host's pool is still open.
	require.NoError(t, db.Pool.Ping(ctx))

	st, err := newMigrator(t, db.Pool, nil).Status(ctx)
	require.NoError(t, err)
	require.Equal(t, latest, st.Version)
	require.Equal(t, latest, st.Latest)
	require.False(t, st.Dirty)
	require.False(t, st.Ahead)
	require.Empty(t, st.Pending)
}

func TestStatusOfEmptyDatabase(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	st, err := newMigrator(t, db.Pool, nil).Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint(0), st.Version)
	require.Equal(t, migrations.List(), st.Pending)
	var exists bool
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT to_regclass('meterbase_schema_migrations') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "Status must not create anything")
}

// Up, down and up again at every version leaves the same schema, and down to
// zero leaves nothing of meterbase behind, version table included.
func TestUpDownUpAtEveryVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	m := newMigrator(t, db.Pool, nil)

	empty := pgtest.Schema(t, db.Pool)
	schemas := []string{empty}
	for _, mig := range migrations.List() {
		res, err := m.To(ctx, mig.Version)
		require.NoError(t, err)
		require.Equal(t, mig.Version, res.To)
		up := pgtest.Schema(t, db.Pool)
		require.NotEqual(t, schemas[len(schemas)-1], up, "version %d changed nothing", mig.Version)

		res, err = m.Down(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, mig.Version-1, res.To)
		require.Equal(t, schemas[mig.Version-1], pgtest.Schema(t, db.Pool), "down from %d", mig.Version)

		res, err = m.To(ctx, mig.Version)
		require.NoError(t, err)
		require.Equal(t, migrations.Result{From: mig.Version - 1, To: mig.Version}, *res)
		require.Equal(t, up, pgtest.Schema(t, db.Pool), "up again to %d", mig.Version)
		schemas = append(schemas, up)
	}

	res, err := m.To(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint(0), res.To)
	require.Equal(t, empty, pgtest.Schema(t, db.Pool), "down to zero must leave nothing behind")
}

func TestDownSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	m := newMigrator(t, db.Pool, nil)
	latest := uint(len(migrations.List()))
	_, err := m.Up(ctx)
	require.NoError(t, err)

	res, err := m.Down(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, migrations.Result{From: latest, To: latest - 1}, *res)

	res, err = m.Down(ctx, 100) // more steps than versions: down to zero
	require.NoError(t, err)
	require.Equal(t, uint(0), res.To)

	_, err = m.Down(ctx, 0)
	require.ErrorIs(t, err, migrations.ErrInvalidConfig)
	_, err = m.To(ctx, latest+1)
	require.ErrorIs(t, err, migrations.ErrInvalidConfig)
}

// Many replicas starting at once: every call succeeds and the migrations run
// exactly once.
func TestConcurrentMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	latest := uint(len(migrations.List()))

	const replicas = 8
	results := make([]*migrations.Result, replicas)
	errs := make([]error, replicas)
	pools := make([]*pgxpool.Pool, replicas)
	for i := range pools {
		pools[i] = db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 2 })
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			results[i], errs[i] = migrations.Migrate(ctx, pools[i], nil)
		})
	}
	close(start)
	wg.Wait()

	applied := 0
	for i := range replicas {
		require.NoError(t, errs[i], "replica %d", i)
		require.Equal(t, latest, results[i].To)
		if results[i].From == 0 {
			applied++
		} else {
			require.Equal(t, latest, results[i].From, "replica %d saw a half-migrated database", i)
		}
	}
	require.Equal(t, 1, applied, "exactly one replica applies the migrations")
	var rows int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM meterbase_schema_migrations`).Scan(&rows))
	require.Equal(t, 1, rows)
}

func TestDirtyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	m := newMigrator(t, db.Pool, nil)
	latest := uint(len(migrations.List()))

	_, err := db.Pool.Exec(ctx, `UPDATE meterbase_schema_migrations SET dirty = true`)
	require.NoError(t, err)

	_, err = m.Up(ctx)
	var dirty *migrations.DirtyError
	require.ErrorAs(t, err, &dirty)
	require.Equal(t, latest, dirty.Version)
	require.ErrorIs(t, err, migrations.ErrDirty)
	require.Contains(t, err.Error(), "dirty at version")

	_, err = m.Down(ctx, 1)
	require.ErrorIs(t, err, migrations.ErrDirty, "a dirty database is not rolled back either")

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.True(t, st.Dirty)
	require.Equal(t, latest, st.Version)
	require.Empty(t, st.Pending)

	// After a repair by hand, Force marks the version clean.
	require.NoError(t, m.Force(ctx, latest))
	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, latest, res.To)
}

func TestDatabaseAheadOfBinary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	m := newMigrator(t, db.Pool, nil)
	latest := uint(len(migrations.List()))

	_, err := db.Pool.Exec(ctx, `UPDATE meterbase_schema_migrations SET version = version + 1`)
	require.NoError(t, err)

	_, err = m.Up(ctx)
	var ahead *migrations.AheadError
	require.ErrorAs(t, err, &ahead)
	require.Equal(t, migrations.AheadError{Database: latest + 1, Binary: latest}, *ahead)
	require.ErrorIs(t, err, migrations.ErrAhead)

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.True(t, st.Ahead)
	require.Equal(t, latest+1, st.Version)
	require.Empty(t, st.Pending)
}

// A failing file that runs as one transaction leaves nothing behind and the
// version clean, so the next run can retry it.
func TestFailedMigrationRollsBackCleanly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	fsys := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte("CREATE TABLE a (id int);")},
		"0001_a.down.sql": {Data: []byte("DROP TABLE a;")},
		"0002_b.up.sql":   {Data: []byte("CREATE TABLE b (id int);\nSELECT 1/0;")},
		"0002_b.down.sql": {Data: []byte("DROP TABLE b;")},
	}
	m := migrations.NewWithFS(t, db.Pool, nil, fsys)

	res, err := m.Up(ctx)
	var fileErr *migrations.FileError
	require.ErrorAs(t, err, &fileErr)
	require.Equal(t, migrations.Result{From: 0, To: 1}, *res, "the result says how far the run got")
	require.Equal(t, uint(2), fileErr.Version)
	require.Equal(t, "0002_b.up.sql", fileErr.Path)
	require.Contains(t, err.Error(), "division by zero")
	require.NotContains(t, err.Error(), "CREATE TABLE b", "the error names the file; it does not repeat it")

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, uint(1), st.Version)
	require.False(t, st.Dirty)
	var b bool
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT to_regclass('b') IS NOT NULL`).Scan(&b))
	require.False(t, b, "the failed file's first statement must be rolled back with it")

	// The fixed file ships in a new binary, which retries.
	fsys["0002_b.up.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (id int);")}
	m = migrations.NewWithFS(t, db.Pool, nil, fsys)
	res, err = m.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, migrations.Result{From: 1, To: 2}, *res)
}

// A failed file's error names the line Postgres points at.
func TestFileErrorNamesTheLine(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	fsys := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte("-- changes: a\nCREATE TABLE a (id int);\nSELECT missing FROM a;")},
		"0001_a.down.sql": {Data: []byte("DROP TABLE a;")},
	}
	_, err := migrations.NewWithFS(t, db.Pool, nil, fsys).Up(context.Background())
	var fileErr *migrations.FileError
	require.ErrorAs(t, err, &fileErr)
	require.EqualError(t, err, `migrations: 0001_a.up.sql (version 1) failed: line 3: ERROR: column "missing" does not exist (SQLSTATE 42703)`)
	require.NotErrorIs(t, err, migrations.ErrLockTimeout)
}

// A file that cannot run as a transaction may have done part of its work,
// so its failure leaves the database dirty for a person to look at.
func TestFailedConcurrentIndexLeavesDirty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	fsys := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte("CREATE TABLE a (id int);")},
		"0001_a.down.sql": {Data: []byte("DROP TABLE a;")},
		"0002_b.up.sql":   {Data: []byte("CREATE INDEX CONCURRENTLY a_missing_idx ON a (missing);")},
		"0002_b.down.sql": {Data: []byte("DROP INDEX CONCURRENTLY IF EXISTS a_missing_idx;")},
	}
	m := migrations.NewWithFS(t, db.Pool, nil, fsys)
	_, err := m.Up(ctx)
	var fileErr *migrations.FileError
	require.ErrorAs(t, err, &fileErr)
	require.Equal(t, "0002_b.up.sql", fileErr.Path)
	var dirty *migrations.DirtyError
	require.ErrorAs(t, err, &dirty, "the run says it left the database dirty")
	require.Equal(t, uint(2), dirty.Version)
	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.True(t, st.Dirty)
	require.Equal(t, uint(2), st.Version)
}

func TestWaitForLockEndsWithContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)

	// Another migrator holds the lock: run a migration that waits on a lock
	// a second connection holds.
	holder, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer holder.Release()
	_, err = holder.Exec(ctx, `CREATE TABLE blocker (id int)`)
	require.NoError(t, err)
	tx, err := holder.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	slow := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte("SET LOCAL lock_timeout = '10s'; ALTER TABLE blocker ADD COLUMN x int;")},
		"0001_a.down.sql": {Data: []byte("ALTER TABLE blocker DROP COLUMN x;")},
	}
	first := migrations.NewWithFS(t, db.Connect(t, nil), nil, slow)
	firstDone := make(chan error, 1)
	go func() { _, err := first.Up(ctx); firstDone <- err }()

	// Wait until the first migrator holds the advisory lock.
	require.Eventually(t, func() bool {
		var n int
		_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
		return n > 0
	}, 10*time.Second, 10*time.Millisecond)

	second := newMigrator(t, db.Connect(t, nil), nil)
	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = second.Up(waitCtx)
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "migration lock")

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, <-firstDone)
}

func TestCustomVersionTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	// The host's own migration table is never touched.
	_, err := db.Pool.Exec(ctx, `CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO schema_migrations VALUES (20240101, false);`)
	require.NoError(t, err)

	cfg := &migrations.Config{Schema: "meterbase_meta", Table: "versions"}
	res, err := migrations.Migrate(ctx, db.Pool, cfg)
	require.NoError(t, err)
	require.Equal(t, uint(len(migrations.List())), res.To)

	var version int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT version FROM meterbase_meta.versions`).Scan(&version))
	require.Equal(t, int64(res.To), version)
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT version FROM schema_migrations`).Scan(&version))
	require.Equal(t, int64(20240101), version)
	var defaultTable bool
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT to_regclass('meterbase_schema_migrations') IS NOT NULL`).Scan(&defaultTable))
	require.False(t, defaultTable)
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	_, err := migrations.New(nil, nil)
	require.ErrorIs(t, err, migrations.ErrInvalidConfig)

	db := pgtest.NewEmptyDB(t)
	for _, cfg := range []*migrations.Config{
		{Table: "Bad Name"},
		{Table: "x; DROP TABLE users"},
		{Schema: "1abc"},
	} {
		_, err := migrations.New(db.Pool, cfg)
		require.ErrorIs(t, err, migrations.ErrInvalidConfig, "%+v", cfg)
	}
}

// cancelOn cancels a context when the pool sends a statement containing
// needle: a way to end the caller's context at an exact point of a run.
type cancelOn struct {
	needle string
	cancel context.CancelFunc
}

func (c cancelOn) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, c.needle) {
		c.cancel()
	}
	return ctx
}

func (c cancelOn) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A context that ends after the lock is taken but before the first file
// runs stops the run, and the caller hears of it: a host must never start
// against a schema that was not brought up to date.
func TestCancelledRunIsNotSuccess(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := db.Connect(t, func(c *pgxpool.Config) {
		// Once it has the lock, the migrator looks for its version table.
		c.ConnConfig.Tracer = cancelOn{needle: "to_regclass", cancel: cancel}
	})
	res, err := migrations.Migrate(ctx, pool, nil)
	require.ErrorIs(t, err, context.Canceled)
	st, err := newMigrator(t, db.Pool, nil).Status(context.Background())
	require.NoError(t, err)
	require.Less(t, st.Version, uint(len(migrations.List())))
	require.False(t, st.Dirty)
	if res != nil {
		require.Equal(t, res.To, st.Version)
	}
}

// Many callers on a pool of one connection: the run needs no more than the
// one that holds the lock, and a caller waiting for the lock gives its
// connection back between tries, so the one holding the lock can finish.
func TestConcurrentMigrateOnOneConnection(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	pool := db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = migrations.Migrate(ctx, pool, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "caller %d", i)
	}
	require.Zero(t, pool.Stat().AcquiredConns())
}

// A Config.Schema that exists already is used without CREATE SCHEMA, which
// needs a privilege on the database that a host's role may not have.
func TestExistingSchemaNeedsNoCreatePrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	_, err := db.Pool.Exec(ctx, `CREATE SCHEMA meta; REVOKE CREATE ON DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` FROM PUBLIC`)
	require.NoError(t, err)
	role := fmt.Sprintf("mbt_%d_nocreate", os.Getpid()) // swept by the harness if this process dies
	_, err = db.Pool.Exec(ctx, `CREATE ROLE `+role+` LOGIN; GRANT USAGE, CREATE ON SCHEMA meta, public TO `+role)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE IF EXISTS `+role)
	})
	pool := db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.User = role })
	_, err = migrations.Migrate(ctx, pool, &migrations.Config{Schema: "meta"})
	require.NoError(t, err)
}

// The wait for a connection of a pool that the host keeps busy ends with
// the caller's context, and a run once the host lets go succeeds.
func TestWaitForConnectionEndsWithContext(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	pool := db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 2 })
	var held []*pgxpool.Conn
	for range 2 {
		conn, err := pool.Acquire(context.Background())
		require.NoError(t, err)
		held = append(held, conn)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := migrations.Migrate(ctx, pool, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second, "the caller's context bounds the wait")
	require.Equal(t, int32(2), pool.Stat().AcquiredConns(), "only the host's connections are out")

	for _, conn := range held {
		conn.Release()
	}
	_, err = migrations.Migrate(context.Background(), pool, nil)
	require.NoError(t, err)
}
