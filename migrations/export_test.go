package migrations

import (
	"io/fs"
	"testing"

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
	m.fsys, m.migrations = fsys, list
	return m
}

var Load = load

var IsTransactional = isTransactional
