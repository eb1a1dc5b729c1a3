package tenancy_test

// Regression tests of the second independent review of the tenant
// boundary. Each asserts what the README promises, and each once failed:
// a finding, reproduced, then fixed.

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// ownerlessWorkspaces lists, as the superuser, the workspaces that have no
// owner membership.
func ownerlessWorkspaces(t *testing.T, raw *pgxpool.Pool) []string {
	t.Helper()
	rows, err := raw.Query(context.Background(), `
		SELECT w.workspace_id::text FROM workspaces w
		 WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.workspace_id = w.workspace_id AND m.role = 'owner')
		 ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// FINDING A2-1 (high, integrity). Neither owner trigger looks at a change
// of workspaces.workspace_id. The owner-at-birth check runs AFTER INSERT
// only and, at commit, finds no row under the key it was inserted with
// ("deleted again, needs no owner"); the last-owner trigger's UPDATE of
// the workspace row finds nothing under OLD.workspace_id and takes the
// workspace for one being deleted. A workspace re-keyed in the same
// statement (or transaction) keeps no owner: both rules are defeated by
// plain row changes, not TRUNCATE. As a superuser or BYPASSRLS role it is
// two ordinary statements; a bound role needs its setting switched to the
// new key within the UPDATE (raw SQL).
func TestReview2WorkspaceRekeyDefeatsOwnerRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	require.Empty(t, ownerlessWorkspaces(t, raw))

	t.Run("owner at birth, superuser", func(t *testing.T) {
		born, moved := tenancy.NewWorkspaceID(), tenancy.NewWorkspaceID()
		tx, err := raw.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		_, err = tx.Exec(ctx, `INSERT INTO workspaces (workspace_id, name) VALUES ($1, 'no owner')`, born)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE workspaces SET workspace_id = $2 WHERE workspace_id = $1`, born, moved)
		if err == nil {
			err = tx.Commit(ctx)
		}
		require.Error(t, err, "a workspace with no owner was committed (as %s)", moved)
	})

	t.Run("last owner, superuser", func(t *testing.T) {
		moved := tenancy.NewWorkspaceID()
		// Workspace B also has shared members; take them out first
		// (they are not owners, except shared users whose role there is
		// owner, which the CTE removes together with the real owner).
		_, err := raw.Exec(ctx, `
			WITH gone AS (DELETE FROM memberships WHERE workspace_id = $1)
			UPDATE workspaces SET workspace_id = $2 WHERE workspace_id = $1`, w.ws[1], moved)
		require.Error(t, err, "workspace B lost every owner (now %s, owners: none)", moved)
	})

	t.Run("both rules, application role", func(t *testing.T) {
		app := db.AppPool(t, rlsNoTracer)
		moved := tenancy.NewWorkspaceID()
		tx, err := app.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		_, err = tx.Exec(ctx, `SELECT set_config('meterbase.workspace_id', $1, true)`, w.ws[2].String())
		require.NoError(t, err)
		// The main DELETE runs first, under C's context; the CTE's UPDATE
		// after it, switching the setting to the new key for its WITH
		// CHECK.
		_, err = tx.Exec(ctx, `
			WITH u AS (UPDATE workspaces SET workspace_id = $2::uuid,
			           name = name || left(set_config('meterbase.workspace_id', $3, true), 0)
			           WHERE workspace_id = $1)
			DELETE FROM memberships WHERE workspace_id = $1`, w.ws[2], moved, moved.String())
		if err == nil {
			err = tx.Commit(ctx)
		}
		require.Error(t, err, "the application role left workspace C (now %s) with no owner", moved)
	})

	require.Empty(t, ownerlessWorkspaces(t, raw), "workspaces without an owner were committed")
}

// FINDING A2-2 (low). users_directory, the only policy for UPDATE and
// DELETE on users, does not call the tenant helper: a bound role with no
// context that writes users without reading a column (no WHERE, no
// RETURNING) gets "UPDATE 0" / "DELETE 0" instead of MB001, while rows
// exist. The README promises MB001 wherever row-level security hides rows
// from a context-less statement.
func TestReview2UsersWriteWithoutContextIsSilent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	buildWorld(t, db.Pool)
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			pool := role.pool(t, db, rlsNoTracer)
			for _, sql := range []string{`DELETE FROM users`, `UPDATE users SET display_name = 'x'`} {
				rlsTx(t, pool, nil, func(tx pgx.Tx) {
					tag, err := tx.Exec(ctx, sql)
					if err == nil {
						t.Errorf("%s with no context: %q, no error; every user was hidden", sql, tag.String())
						return
					}
					requireNoTenantContext(t, err)
				})
			}
		})
	}
}

// FINDING A2-3 (medium; needs contrib tablefunc, a common extension). The
// deny-list refuses dblink* and query_to_xml (SQL given as text) but not
// tablefunc's crosstab and connectby (nor xml2's xpath_table), which run
// SQL given as text too. The SQL sits in a string literal, which Prepare
// does not look into. As a superuser (where only the expansion stands
// between tenants) a prepared statement reads every tenant's rows; as the
// application role it sets meterbase.operator for the session, and the
// pooled connection then reads every tenant for whoever uses it next.
func TestReview2PreparedCrosstabRunsSQLText(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	_, err := raw.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS tablefunc`)
	require.NoError(t, err)

	t.Run("reads every tenant as the superuser", func(t *testing.T) {
		st, ok := prepareAttack(t, `SELECT count(*) FROM crosstab('SELECT workspace_id::text, ''n'', name FROM workspaces') AS ct(w text, n text) WHERE @workspace_id::uuid IS NOT NULL`)
		if !ok {
			return
		}
		var seen int
		require.NoError(t, tenantOf(t, raw, w.ws[0]).QueryRow(ctx, st, nil).Scan(&seen))
		require.Equal(t, 1, seen, "tenant A's prepared statement read %d workspaces", seen)
	})

	t.Run("leaves operator reach on a pooled application-role connection", func(t *testing.T) {
		st, ok := prepareAttack(t, `SELECT n FROM crosstab('SELECT ''a''::text, ''b''::text, set_config(''meterbase.operator'', ''planted'', false)') AS ct(w text, n text) WHERE @workspace_id::uuid IS NOT NULL`)
		if !ok {
			return
		}
		app := db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = nil })
		var n string
		require.NoError(t, tenantOf(t, app, w.ws[0]).QueryRow(ctx, st, nil).Scan(&n))
		var visible int
		err := app.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&visible)
		if err == nil {
			t.Errorf("the host's next raw statement, with no context, reads %d workspaces (operator reach left on the session)", visible)
			return
		}
		requireNoTenantContext(t, err)
	})
}

// FINDING A2-4 (medium, host transactions). The README lets the host lend
// "its own transaction (a pgx.Tx, or a *pgx.Conn)". On a *pgx.Conn whose
// transaction the host opened with BEGIN, InTx (and the Operator, and
// Workspaces.Create, which share pg.InTx) calls conn.Begin: Postgres only
// warns "there is already a transaction in progress", and the COMMIT that
// ends the handle's unit of work commits the host's transaction, or its
// ROLLBACK (on an error) rolls the whole of it back, and the host's later
// statements run outside any transaction.
func TestReview2InTxOnConnCommitsHostTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	pc, err := raw.Acquire(ctx)
	require.NoError(t, err)
	defer pc.Release()
	conn := pc.Conn()

	_, err = conn.Exec(ctx, `BEGIN`)
	require.NoError(t, err)
	before, err := users.Create(ctx, conn, tenancy.CreateUserParams{Email: "host-tx@example.com"})
	require.NoError(t, err)
	err = tenantOf(t, conn, w.ws[0]).InTx(ctx, func(*tenancy.Tenant) error { return nil })
	require.ErrorIs(t, err, tenancy.ErrInvalidInput, "pgx cannot nest in a raw BEGIN: refused, not committed")
	_, err = conn.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)

	_, err = users.Get(ctx, raw, before.ID)
	require.ErrorIs(t, err, tenancy.ErrNotFound, "the host rolled its transaction back, but InTx had committed it: the user it created stays")
}
