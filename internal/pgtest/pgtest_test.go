package pgtest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Two parallel tests get two different migrated databases, and both are
// dropped when the tests end.
func TestParallelTestsGetOwnDatabases(t *testing.T) {
	names := make(chan string, 2)
	t.Run("group", func(t *testing.T) {
		for i := range 2 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				db := pgtest.NewDB(t)
				var current string
				require.NoError(t, db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&current))
				require.Equal(t, db.Name, current)
				// Migrated: the schema is there, and empty.
				var users int
				require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&users))
				require.Zero(t, users)
				// A write in one database is not seen by the other.
				_, err := db.Pool.Exec(ctx, `INSERT INTO users (user_id, email) VALUES (gen_random_uuid(), $1)`, fmt.Sprintf("u%d@example.com", i))
				require.NoError(t, err)
				require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&users))
				require.Equal(t, 1, users)
				names <- db.Name
			})
		}
	})
	close(names)
	a, b := <-names, <-names
	require.NotEqual(t, a, b)

	probe := pgtest.NewEmptyDB(t)
	var left int
	require.NoError(t, probe.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_database WHERE datname IN ($1, $2)`, a, b).Scan(&left))
	require.Zero(t, left, "the tests' databases must be dropped when they end")
}

func TestAppPoolIsAnUnprivilegedRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t)
	var user string
	var super, bypass bool
	require.NoError(t, app.QueryRow(ctx, `SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super, &bypass))
	require.Equal(t, pgtest.AppRole(), user)
	require.False(t, super)
	require.False(t, bypass)
	var owner string
	require.NoError(t, app.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE tablename = 'workspaces'`).Scan(&owner))
	require.NotEqual(t, user, owner)
	// It may read and write the tables, but not change the schema.
	tx, err := app.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT set_config('meterbase.directory', 'on', true)`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT count(*) FROM users`)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	_, err = app.Exec(ctx, `ALTER TABLE workspaces ADD COLUMN x int`)
	require.ErrorContains(t, err, "must be owner")
}
