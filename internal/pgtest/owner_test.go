package pgtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

// NewDB's tables belong to OwnerRole, as they would to a host's migration
// role: no superuser, no BYPASSRLS, so that FORCE ROW LEVEL SECURITY binds
// it. OwnerPool connects as it, through the tenant tracer.
func TestOwnerPoolIsTheTablesOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := db.OwnerPool(t)
	var user string
	var super, bypass bool
	require.NoError(t, owner.QueryRow(ctx, `SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super, &bypass))
	require.Equal(t, pgtest.OwnerRole(), user)
	require.False(t, super)
	require.False(t, bypass)

	var notOwned []string
	rows, err := db.Pool.Query(ctx, `SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1 ORDER BY 1`, user)
	require.NoError(t, err)
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		notOwned = append(notOwned, name)
	}
	require.NoError(t, rows.Err())
	require.Empty(t, notOwned, "every table, the version table included, belongs to the owner role")
	var dbOwner string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()`).Scan(&dbOwner))
	require.Equal(t, user, dbOwner)

	// It may change the schema. Row-level security binds it (the tables
	// are forced) and not the superuser's Pool.
	_, err = owner.Exec(ctx, `ALTER TABLE workspaces ADD COLUMN x int`)
	require.NoError(t, err)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n))
	_, err = owner.Exec(ctx, `SELECT count(*) FROM users`)
	require.ErrorContains(t, err, "MB001")

	tx, err := owner.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	ws := "00000000-0000-0000-0000-000000000001"
	_, err = tx.Exec(ctx, `SELECT set_config('meterbase.workspace_id', $1, true)`, ws)
	require.NoError(t, err)
	before := db.Tracer.Checked()
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE workspace_id = $1`, ws).Scan(&n))
	require.Equal(t, before+1, db.Tracer.Checked(), "the tenant tracer is on the owner's pool")
}
