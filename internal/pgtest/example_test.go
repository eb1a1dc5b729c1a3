package pgtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

// ExampleDB gives a migrated database of its own, and its cleanup drops it.
func TestExampleDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, drop := pgtest.ExampleDB()
	var name string
	var users int
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_database(), (SELECT count(*) FROM users)`).Scan(&name, &users))
	require.Zero(t, users)
	other, dropOther := pgtest.ExampleDB()
	defer dropOther()
	var otherName string
	require.NoError(t, other.QueryRow(ctx, `SELECT current_database()`).Scan(&otherName))
	require.NotEqual(t, name, otherName)
	drop()
	var exists bool
	require.NoError(t, other.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists))
	require.False(t, exists, "the database is dropped")
}
