package pgtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestTenantTracerRule(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	tr := db.Tracer
	for _, sql := range []string{
		`SELECT * FROM memberships`,
		`SELECT * FROM memberships WHERE user_id = $1`,
		`UPDATE workspaces SET name = $1`,
		`DELETE FROM "memberships" WHERE role = $1`,
		`INSERT INTO memberships (user_id, role) VALUES ($1, $2)`,
		`SELECT u.email FROM users u JOIN memberships m ON m.user_id = u.user_id`,
		`SELECT * FROM workspaces WHERE workspace_id IN ($1, $2)`,
		`UPDATE memberships SET workspace_id = $1 WHERE role = $2`,
		`SELECT * FROM memberships WHERE @workspace_id = @workspace_id`,
		`SELECT * FROM public.memberships`,
		`SELECT * FROM ONLY memberships`,
		`SELECT * FROM users u, memberships m WHERE u.user_id = m.user_id`,
		`TABLE memberships`,
		"-- a comment first\nSELECT * FROM memberships",
		`INSERT INTO memberships (user_id, workspace_id, role) VALUES ($1, $2, $3)`,
		`WITH w AS (INSERT INTO workspaces (workspace_id, name) VALUES ($1, $2)) INSERT INTO memberships (user_id, role) VALUES ($3, 'owner')`,
		`INSERT INTO workspaces (workspace_id, name) SELECT workspace_id, name FROM workspaces`,
		`SELECT E'\'', (SELECT count(*) FROM memberships) --' WHERE workspace_id = $1`,
	} {
		require.NotEmpty(t, tr.Violation(sql), sql)
	}
	for _, sql := range []string{
		`SELECT * FROM users`,
		`SELECT set_config('meterbase.workspace_id', $1, true)`,
		`SELECT * FROM memberships WHERE memberships.workspace_id = $1 AND (role = $2)`,
		`INSERT INTO memberships (workspace_id,user_id,role) VALUES ($1,$2,$3)`,
		`WITH x AS (SELECT 1) SELECT * FROM workspaces WHERE workspace_id = @workspace_id`,
		`/* meterbase:operator */ SELECT * FROM workspaces`,
		`SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'memberships'`,
		`SELECT memberships.role FROM memberships WHERE memberships.workspace_id = $1`,
		`ALTER TABLE workspaces ADD COLUMN x int`,
		`SELECT * FROM memberships WHERE $1 = memberships.workspace_id`,
		`WITH w AS (INSERT INTO workspaces (workspace_id, name) VALUES ($1, $2) RETURNING name) INSERT INTO memberships AS m (workspace_id, user_id, role) VALUES ($1, $3, 'owner')`,
		`INSERT INTO workspaces (workspace_id, name) SELECT $1, name FROM workspaces WHERE workspaces.workspace_id = $1`,
	} {
		require.Empty(t, tr.Violation(sql), sql)
	}
}

// The tracer really is on the pools NewDB returns: a violation reaches the
// test. A stand-in testing.TB records it instead of failing this test.
func TestTenantTracerIsInstalled(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	before := db.Tracer.Checked()
	_, err := db.Pool.Exec(context.Background(), `SELECT count(*) FROM memberships WHERE workspace_id = $1`, "00000000-0000-0000-0000-000000000001")
	require.NoError(t, err)
	require.Equal(t, before+1, db.Tracer.Checked())
}
