package migrations_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/migrations"
)

// A point of a step at which a run is interrupted.
type phase string

const (
	// golang-migrate's write of the dirty marker, before the file.
	atMarker phase = "marker"
	// The file, at its very end: its version record waits for the version
	// table after every other statement of the file has run.
	atFile phase = "file"
	// golang-migrate's write of the clean version, after the file.
	atRecord phase = "record"
	// Between the first step and the next: the session that holds the
	// migration lock is terminated while idle.
	atLock phase = "lock"
)

// A way to interrupt it.
type interruption string

const (
	// Another session holds the version table; the statement gives up
	// after its lock_timeout.
	byLockTimeout interruption = "lock timeout"
	// Another session holds the version table; the waiting statement is
	// cancelled (pg_cancel_backend).
	byCancel interruption = "pg_cancel_backend"
	// Another session holds the version table; the waiting backend is
	// terminated (pg_terminate_backend), and the run's session, holding
	// the migration lock, is gone.
	byTerminate interruption = "pg_terminate_backend"
	// The caller's context ends as the statement is sent.
	byContext interruption = "context"
)

// outcome is what an interrupted run must leave.
type outcome struct {
	version uint
	dirty   bool
	err     error // nil: success; else an error the run's must match
}

// errAny matches any error.
var errAny = fmt.Errorf("any error")

// expected says what interrupting the first step (from -> to) of a run
// towards target must leave. The rule behind every line: a file and its
// version commit together, so the version table says whether it committed;
// only what cannot be known stays dirty.
func expected(ph phase, by interruption, from, to, target uint) outcome {
	stopped := func(v uint) outcome { // the step completed; ctx stops the run after it
		if v == target {
			return outcome{version: v}
		}
		return outcome{version: v, err: context.Canceled}
	}
	switch ph {
	case atMarker:
		if by == byContext {
			return stopped(to) // a step that has begun runs to its end
		}
		return outcome{version: from, err: errAny} // the marker never committed: nothing ran
	case atFile:
		switch by {
		case byLockTimeout:
			return outcome{version: from, err: migrations.ErrLockTimeout} // rolled back with its record
		case byCancel:
			return outcome{version: from, err: errAny}
		case byTerminate:
			// Rolled back, but the session that could say so is gone, and
			// with it the lock: no other session may guess.
			return outcome{version: to, dirty: true, err: migrations.ErrDirty}
		}
		return stopped(to)
	case atRecord:
		switch by {
		case byLockTimeout, byCancel:
			return outcome{version: target} // the file had recorded its version; the run goes on
		case byTerminate:
			return outcome{version: to, err: errAny} // recorded, but the session is gone
		}
		return stopped(to)
	case atLock:
		return outcome{version: to, err: errAny}
	}
	panic(ph)
}

// Every step of a run, interrupted in every way, leaves the database either
// clean with exactly the schema of the version it records, or reported
// dirty at the version of the step; never clean and wrong. Then, once
// repaired as the README says, the run completes.
func TestInterruptedRunIsCorrectOrDirty(t *testing.T) {
	t.Parallel()
	schemaAtEachVersion(t) // built once, before the cases run in parallel
	latest := uint(len(migrations.List()))
	for _, run := range []struct{ start, target uint }{
		{0, latest},          // up from nothing, on through every version
		{latest - 1, latest}, // up, the last step
		{latest, 0},          // down from row-level security, on to nothing
		{1, 0},               // down to no version
	} {
		for _, ph := range []phase{atMarker, atFile, atRecord, atLock} {
			for _, by := range []interruption{byLockTimeout, byCancel, byTerminate, byContext} {
				if ph == atLock && (by != byTerminate || run.target-run.start == 1 || run.start-run.target == 1) {
					continue // only a run with a next step has a "between"
				}
				t.Run(fmt.Sprintf("%d to %d, %s, %s", run.start, run.target, ph, by), func(t *testing.T) {
					t.Parallel()
					interruptRun(t, run.start, run.target, ph, by)
				})
			}
		}
	}
}

func interruptRun(t *testing.T, start, target uint, ph phase, by interruption) {
	ctx := context.Background()
	schemas := schemaAtEachVersion(t)
	db := pgtest.NewEmptyDB(t)
	_, err := newMigrator(t, db.Pool, nil).To(ctx, start)
	require.NoError(t, err)

	from, to, path := start, start-1, ""
	if target > start {
		to, path = start+1, migrations.List()[start].Up.Path
	} else {
		path = migrations.List()[start-1].Down.Path
	}
	want := expected(ph, by, from, to, target)

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var (
		mu        sync.Mutex
		fired     bool
		fileEnded bool
		locker    *holder
		signals   sync.WaitGroup
	)
	// at reports whether sql is the statement the interruption aims at.
	at := func(sql string) bool {
		switch ph {
		case atMarker:
			return !fileEnded && writesVersion(sql) && strings.Contains(sql, "true);")
		case atFile:
			return isFile(sql, path)
		default: // atRecord, atLock: golang-migrate's write after the file
			return fileEnded && writesVersion(sql)
		}
	}
	h := &hooks{}
	h.start = func(conn *pgx.Conn, sql string) {
		mu.Lock()
		defer mu.Unlock()
		if fired || ph == atLock || !at(sql) {
			return
		}
		fired = true
		if by == byContext {
			cancelRun()
			return
		}
		locker = hold(t, db.Pool, `LOCK TABLE `+migrations.DefaultTable+` IN ACCESS EXCLUSIVE MODE`)
		if by == byLockTimeout {
			return
		}
		pid := conn.PgConn().PID()
		fn := map[interruption]string{byCancel: "pg_cancel_backend", byTerminate: "pg_terminate_backend"}[by]
		signals.Go(func() {
			if waitUntilBlocked(t, db.Pool, pid) {
				signal(t, db.Pool, fn, pid)
			}
		})
	}
	h.end = func(conn *pgx.Conn, sql string, _ error) {
		mu.Lock()
		defer mu.Unlock()
		if locker != nil && at(sql) {
			locker.release() // what it held is free again for what follows
		}
		if ph == atLock && !fired && at(sql) {
			fired = true
			signal(t, db.Pool, "pg_terminate_backend", conn.PgConn().PID())
		}
		if isFile(sql, path) {
			fileEnded = true
		}
	}
	pool := db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = h })
	m := newMigrator(t, pool, nil)
	if by == byLockTimeout {
		migrations.SetLockTimeout(m, 100*time.Millisecond)
	}
	res, runErr := m.To(runCtx, target)
	signals.Wait()
	require.True(t, fired, "the interruption never happened")
	t.Logf("run: %+v, %v", res, runErr)

	st := requireCorrectOrDirty(t, db)
	require.Equal(t, want.version, st.Version, "version")
	require.Equal(t, want.dirty, st.Dirty, "dirty")
	switch want.err {
	case nil:
		require.NoError(t, runErr)
	case errAny:
		require.Error(t, runErr)
	default:
		require.ErrorIs(t, runErr, want.err)
	}
	if runErr != nil && !st.Dirty {
		require.NotErrorIs(t, runErr, migrations.ErrDirty, "a clean database is not reported dirty")
	}
	if res != nil {
		require.Equal(t, st.Version, res.To, "the result says where the run left the database")
	}
	require.Eventually(t, func() bool { return pool.Stat().AcquiredConns() == 0 }, 2*time.Second, 10*time.Millisecond,
		"the run left a connection checked out")

	// The repair the README gives: dirty at the version of a transactional
	// step that was cut off means its file did not commit.
	m = newMigrator(t, db.Pool, nil)
	if st.Dirty {
		require.NoError(t, m.Force(ctx, from))
		require.Equal(t, schemas[from], schemaOf(t, db.Pool), "a dirty step's file did not commit")
	}
	res, err = m.To(ctx, target)
	require.NoError(t, err, "the next run completes")
	require.Equal(t, target, res.To)
	require.Equal(t, schemas[target], schemaOf(t, db.Pool))
}
