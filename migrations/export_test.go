package migrations

import (
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// NewWithFS returns a Migrator over a test's own migration files, so that
// tests can run migrations that fail on purpose.
func NewWithFS(tb testing.TB, pool *pgxpool.Pool, cfg *Config, fsys fs.FS) *Migrator {
	tb.Helper()
	m, err := New(pool, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	list, err := load(fsys)
	if err != nil {
		tb.Fatal(err)
	}
	m.migrations = list
	return m
}

// SetLockTimeout makes every file m runs wait at most d for a lock instead
// of the lock_timeout the file sets, so that lock tests run quickly.
func SetLockTimeout(m *Migrator, d time.Duration) {
	m.lockTimeout = fmt.Sprintf("%dms", d.Milliseconds())
}

var Load = load

var IsTransactional = isTransactional

var LockKey = lockKey

var (
	SQLCode       = sqlCode
	SQLStatements = sqlStatements
	LockTimeoutOf = lockTimeoutOf
)
