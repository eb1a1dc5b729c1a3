package migrations_test

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/migrations"
)

// lockModes in order of strength, as pg_locks names them and as headers
// write them.
var lockModes = []struct{ pg, header string }{
	{"AccessShareLock", "ACCESS SHARE"},
	{"RowShareLock", "ROW SHARE"},
	{"RowExclusiveLock", "ROW EXCLUSIVE"},
	{"ShareUpdateExclusiveLock", "SHARE UPDATE EXCLUSIVE"},
	{"ShareLock", "SHARE"},
	{"ShareRowExclusiveLock", "SHARE ROW EXCLUSIVE"},
	{"ExclusiveLock", "EXCLUSIVE"},
	{"AccessExclusiveLock", "ACCESS EXCLUSIVE"},
}

// headerLockMode finds the lock modes a header names, longest name first.
var headerLockMode = regexp.MustCompile(`\b(ACCESS EXCLUSIVE|SHARE UPDATE EXCLUSIVE|SHARE ROW EXCLUSIVE|ROW EXCLUSIVE|ROW SHARE|ACCESS SHARE|EXCLUSIVE|SHARE)\b`)

// effect is what one migration file did to the tables that existed before it.
type effect struct {
	locks     map[string]string // table -> strongest lock mode taken, as headers write it
	rewritten []string          // tables given a new relfilenode
	scanned   []string          // tables read by a sequential scan
}

// runAndRollBack runs a migration file in a transaction on a database that
// holds the tables the file expects, records its effect on those tables,
// and rolls it back.
func runAndRollBack(t *testing.T, db *pgtest.DB, sql string) effect {
	t.Helper()
	ctx := context.Background()
	type table struct {
		name     string
		filenode uint32
	}
	rows, err := db.Pool.Query(ctx, `
		SELECT oid, relname::text, relfilenode FROM pg_class
		 WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p') AND relname <> $1`, migrations.DefaultTable)
	require.NoError(t, err)
	existing := map[uint32]table{}
	var oid uint32
	var tb table
	_, err = pgx.ForEachRow(rows, []any{&oid, &tb.name, &tb.filenode}, func() error { existing[oid] = tb; return nil })
	require.NoError(t, err)

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, sql)
	require.NoError(t, err)

	eff := effect{locks: map[string]string{}}
	rank := func(header string) int {
		return slices.IndexFunc(lockModes, func(m struct{ pg, header string }) bool { return m.header == header })
	}
	rows, err = tx.Query(ctx, `SELECT relation, mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted`)
	require.NoError(t, err)
	var mode string
	_, err = pgx.ForEachRow(rows, []any{&oid, &mode}, func() error {
		tb, ok := existing[oid]
		if !ok {
			return nil // a new table, an index, a catalog
		}
		i := slices.IndexFunc(lockModes, func(m struct{ pg, header string }) bool { return m.pg == mode })
		require.GreaterOrEqual(t, i, 0, "lock mode %s", mode)
		if prev, ok := eff.locks[tb.name]; !ok || rank(prev) < i {
			eff.locks[tb.name] = lockModes[i].header
		}
		return nil
	})
	require.NoError(t, err)

	for oid, tb := range existing {
		var filenode *uint32
		var scans *int64
		require.NoError(t, tx.QueryRow(ctx, `SELECT (SELECT relfilenode FROM pg_class WHERE oid = $1), pg_stat_get_xact_numscans($1)`, oid).Scan(&filenode, &scans))
		if filenode != nil && *filenode != tb.filenode {
			eff.rewritten = append(eff.rewritten, tb.name)
		}
		if scans != nil && *scans > 0 {
			eff.scanned = append(eff.scanned, tb.name)
		}
	}
	slices.Sort(eff.rewritten)
	slices.Sort(eff.scanned)
	return eff
}

// The locks, rewrites and scans headers of every migration file say what
// the file really does to the tables that exist when it runs, as Postgres
// reports it.
func TestHeadersNameTheLocksTaken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	// The migrator gets a pool of its own: Postgres 15 counts a session's
	// scans in pg_stat_get_xact_numscans until it flushes its statistics,
	// which may be after several transactions, so a file checked on the
	// session that just created its tables would seem to scan them.
	m, err := migrations.New(db.Connect(t, nil), nil)
	require.NoError(t, err)

	checkFile := func(f migrations.File) {
		eff := runAndRollBack(t, db, f.SQL)
		header := f.Header["locks"]
		claimed := headerLockMode.FindAllString(header, -1)
		if len(eff.locks) == 0 {
			require.True(t, strings.HasPrefix(header, "none on existing tables"), "%s locks no existing table; its header should say %q, not %q", f.Path, "none on existing tables", header)
			require.Empty(t, claimed, "%s: %q names a lock it does not take", f.Path, header)
		}
		taken := map[string]bool{}
		for _, table := range slices.Sorted(maps.Keys(eff.locks)) {
			mode := eff.locks[table]
			taken[mode] = true
			require.Contains(t, claimed, mode, "%s takes %s on %s; its locks header %q does not say so", f.Path, mode, table, header)
			require.Regexp(t, `\b`+table+`\b`, header, "%s locks %s (%s); its locks header %q does not name it", f.Path, table, mode, header)
		}
		for _, mode := range claimed {
			require.True(t, taken[mode], "%s: its locks header %q names %s, but that is not the strongest lock it takes on any table (%v)", f.Path, header, mode, eff.locks)
		}
		for key, tables := range map[string][]string{"rewrites": eff.rewritten, "scans": eff.scanned} {
			value := f.Header[key]
			if len(tables) == 0 {
				require.True(t, strings.HasPrefix(value, "none"), "%s %s no existing table; its header says %q", f.Path, key, key+": "+value)
				continue
			}
			require.False(t, strings.HasPrefix(value, "none"), "%s %s %v; its header says %q", f.Path, key, tables, key+": "+value)
			for _, table := range tables {
				require.Regexp(t, `\b`+table+`\b`, value, "%s %s %s; its %s header does not name it", f.Path, key, table, key)
			}
		}
	}
	for _, mig := range migrations.List() {
		checkFile(mig.Up)
		_, err := m.To(ctx, mig.Version)
		require.NoError(t, err)
		checkFile(mig.Down)
	}
}

// While another session holds a long lock on every meterbase table, each
// migration that needs one of them gives up after its lock_timeout with an
// error that says so, leaves the database clean, and succeeds once the lock
// is released. A migration whose header says it locks no existing table
// runs regardless.
func TestBusyTableFailsFast(t *testing.T) {
	t.Parallel()
	const lockTimeout = 100 * time.Millisecond
	db := pgtest.NewEmptyDB(t)
	for _, mig := range migrations.List() {
		t.Run(fmt.Sprintf("%04d_%s", mig.Version, mig.Name), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := newSchema(t, db)
			m, err := migrations.New(pool, nil)
			require.NoError(t, err)
			migrations.SetLockTimeout(m, lockTimeout)
			_, err = m.To(ctx, mig.Version-1)
			require.NoError(t, err)

			for _, step := range []struct {
				file     migrations.File
				from, to uint
			}{{mig.Up, mig.Version - 1, mig.Version}, {mig.Down, mig.Version, mig.Version - 1}} {
				release := lockEveryTable(t, pool)
				start := time.Now()
				_, err := m.To(ctx, step.to)
				elapsed := time.Since(start)
				if strings.HasPrefix(step.file.Header["locks"], "none on existing tables") {
					release()
					require.NoError(t, err, "%s says it locks no existing table", step.file.Path)
					continue
				}
				require.ErrorIs(t, err, migrations.ErrLockTimeout, "%s", step.file.Path)
				require.Less(t, elapsed, 5*time.Second, "%s must give up after its lock_timeout, not queue", step.file.Path)
				var fileErr *migrations.FileError
				require.ErrorAs(t, err, &fileErr)
				require.Equal(t, step.file.Path, fileErr.Path)
				var lockErr *migrations.LockTimeoutError
				require.ErrorAs(t, err, &lockErr)
				require.Equal(t, "100ms", lockErr.Timeout)
				require.Contains(t, err.Error(), step.file.Path)
				require.Contains(t, err.Error(), "lock_timeout 100ms")
				require.Contains(t, err.Error(), "SQLSTATE 55P03")

				st, err := m.Status(ctx)
				require.NoError(t, err)
				require.Equal(t, step.from, st.Version, "a file that timed out changes nothing")
				require.False(t, st.Dirty, "a file that timed out leaves the database clean for a retry")

				release()
				res, err := m.To(ctx, step.to)
				require.NoError(t, err, "retry of %s once the lock is released", step.file.Path)
				require.Equal(t, step.to, res.To)
			}
		})
	}
}

// lockEveryTable takes ACCESS EXCLUSIVE on every meterbase table from
// another connection, as a long transaction or a VACUUM FULL would, and
// returns the function that releases the locks.
func lockEveryTable(t *testing.T, pool *pgxpool.Pool) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	var tables []string
	rows, err := conn.Query(ctx, `
		SELECT quote_ident(relname) FROM pg_class
		 WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p') AND relname <> $1`, migrations.DefaultTable)
	require.NoError(t, err)
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	if len(tables) > 0 {
		_, err = tx.Exec(ctx, `LOCK TABLE `+strings.Join(tables, ", ")+` IN ACCESS EXCLUSIVE MODE`)
		require.NoError(t, err)
	}
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		require.NoError(t, tx.Rollback(ctx))
		conn.Release()
	}
	t.Cleanup(release)
	return release
}
