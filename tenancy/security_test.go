package tenancy_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// (a) The report tells each role what Postgres does: the superuser is never
// bound, the owner is bound because the tables are forced (and no longer
// once a table is not), the application role is bound.
func TestCheckRowLevelSecurity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := db.OwnerPool(t)
	app := db.AppPool(t)
	tables := func(r tenancy.RowLevelSecurityReport) []string {
		var names []string
		for _, tb := range r.Tables {
			names = append(names, tb.Table)
		}
		return names
	}

	super, err := tenancy.CheckRowLevelSecurity(ctx, db.Pool)
	require.NoError(t, err)
	require.True(t, super.Superuser)
	require.False(t, super.Bound)
	require.Equal(t, []string{"users", "workspaces", "memberships"}, tables(super))
	for _, tb := range super.Tables {
		require.False(t, tb.Bound, tb.Table)
		require.True(t, tb.Enabled && tb.Forced, tb.Table)
	}
	require.Contains(t, super.String(), "does not bind role "+super.Role+": it is a superuser")

	o, err := tenancy.CheckRowLevelSecurity(ctx, owner)
	require.NoError(t, err)
	require.Equal(t, pgtest.OwnerRole(), o.Role)
	require.False(t, o.Superuser || o.BypassRLS)
	require.True(t, o.Bound, o.String())
	for _, tb := range o.Tables {
		require.Equal(t, tenancy.TableSecurity{Table: tb.Table, Enabled: true, Forced: true, Owner: true, Bound: true}, tb)
	}
	require.Equal(t, "row-level security binds role "+o.Role+" on users, workspaces, memberships", o.String())

	a, err := tenancy.CheckRowLevelSecurity(ctx, app)
	require.NoError(t, err)
	require.Equal(t, pgtest.AppRole(), a.Role)
	require.True(t, a.Bound, a.String())
	for _, tb := range a.Tables {
		require.False(t, tb.Owner, tb.Table)
	}

	// Without FORCE the owner is exempt again; the application role is not.
	_, err = db.Pool.Exec(ctx, `ALTER TABLE workspaces NO FORCE ROW LEVEL SECURITY`)
	require.NoError(t, err)
	o, err = tenancy.CheckRowLevelSecurity(ctx, owner)
	require.NoError(t, err)
	require.False(t, o.Bound)
	for _, tb := range o.Tables {
		require.Equal(t, tb.Table != "workspaces", tb.Bound, tb.Table)
	}
	require.Equal(t, "row-level security binds role "+o.Role+" on users, memberships, but not on workspaces (owner, not forced)"+
		"; on its connections only the tenancy handles' own predicates keep tenants apart", o.String())
	a, err = tenancy.CheckRowLevelSecurity(ctx, app)
	require.NoError(t, err)
	require.True(t, a.Bound)

	// What counts is the role statements run as: in a host's transaction
	// after SET ROLE, a BYPASSRLS role is exempt, and a member of the
	// owning role owns the tables as Postgres sees it.
	for _, tc := range []struct {
		create string
		check  func(r tenancy.RowLevelSecurityReport)
	}{
		{`CREATE ROLE %s NOLOGIN BYPASSRLS`, func(r tenancy.RowLevelSecurityReport) {
			require.True(t, r.BypassRLS)
			require.False(t, r.Bound)
			require.Contains(t, r.String(), "it has BYPASSRLS")
		}},
		{`CREATE ROLE %s NOLOGIN IN ROLE ` + pgx.Identifier{pgtest.OwnerRole()}.Sanitize(), func(r tenancy.RowLevelSecurityReport) {
			for _, tb := range r.Tables {
				require.True(t, tb.Owner, tb.Table)
				require.Equal(t, tb.Table != "workspaces", tb.Bound, tb.Table)
			}
		}},
		{`CREATE ROLE %s NOLOGIN`, func(r tenancy.RowLevelSecurityReport) {
			require.True(t, r.Bound, r.String())
		}},
	} {
		role := pgtest.AppRole() + "_probe"
		rlsTx(t, db.Pool, nil, func(tx pgx.Tx) {
			_, err := tx.Exec(ctx, strings.Replace(tc.create, "%s", pgx.Identifier{role}.Sanitize(), 1)+`; SET LOCAL ROLE `+pgx.Identifier{role}.Sanitize())
			require.NoError(t, err)
			r, err := tenancy.CheckRowLevelSecurity(ctx, tx)
			require.NoError(t, err)
			require.Equal(t, role, r.Role)
			tc.check(r)
		})
	}

	// Before the migrations there is nothing to report on.
	empty := pgtest.NewEmptyDB(t)
	_, err = tenancy.CheckRowLevelSecurity(ctx, empty.Pool)
	require.ErrorContains(t, err, "no table users, workspaces, memberships on the connection's search_path; run meterbase's migrations first")
}

func TestCheckRowLevelSecurityRefusesNilDB(t *testing.T) {
	t.Parallel()
	var tx pgx.Tx
	for name, db := range map[string]tenancy.DBTX{
		"nil":             nil,
		"nil pool":        (*pgxpool.Pool)(nil),
		"nil conn":        (*pgx.Conn)(nil),
		"nil transaction": tx,
	} {
		_, err := tenancy.CheckRowLevelSecurity(context.Background(), db)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
		var invalid *tenancy.InvalidInputError
		require.ErrorAs(t, err, &invalid, name)
		require.Equal(t, "db", invalid.Field)
	}
}

// (a) A handle made WithoutRowLevelSecurity sends no context. On a role the
// wall binds, every statement fails with ErrNoTenantContext rather than
// seeing no rows; on the superuser it works, and so do the default handles
// on the bound roles.
func TestWithoutRowLevelSecurityOnABoundRoleFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)

	for _, role := range []rlsRole{rlsSuperuser, rlsOwner, rlsApp} {
		pool := role.pool(t, db)
		bare := tenantOf(t, pool, ws.ID, tenancy.WithoutRowLevelSecurity())
		calls := map[string]error{}
		rows, err := bare.Select(rlsHostWorkspaces, "name").Where("true").Query(ctx)
		if err == nil {
			var names []string
			names, err = pgx.CollectRows(rows, pgx.RowTo[string])
			if err == nil && len(names) != 1 {
				err = errors.New("got " + strings.Join(names, ", "))
			}
		}
		calls["Select.Query"] = err
		_, calls["Workspace"] = workspaces.Get(ctx, bare)
		_, calls["ListMembers"] = members.List(ctx, bare, tenancy.ListMembersParams{Page: tenancy.Page{}})
		_, calls["Authorize"] = members.Authorize(ctx, bare, tenancy.AuthorizeParams{User: owner.ID, MinRole: tenancy.RoleOwner})
		_, calls["RenameWorkspace"] = workspaces.Rename(ctx, bare, tenancy.RenameWorkspaceParams{Name: "Acme"})
		calls["InTx"] = bare.InTx(ctx, func(tx *tenancy.Tenant) error {
			var n int
			return tx.Select(rlsHostMemberships, "count(*)").Where("true").QueryRow(ctx).Scan(&n)
		})
		for call, err := range calls {
			if role.name == rlsSuperuser.name {
				require.NoError(t, err, "%s as %s", call, role.name)
				continue
			}
			require.ErrorIs(t, err, tenancy.ErrNoTenantContext, "%s as %s", call, role.name)
			require.ErrorContains(t, err, "row-level security binds this role and no tenant context is set", "%s as %s", call, role.name)
		}

		// The default handle sets the context with every statement.
		got, err := workspaces.Get(ctx, tenantOf(t, pool, ws.ID))
		require.NoError(t, err, role.name)
		require.Equal(t, ws.ID, got.ID)
	}
}

// (a) Raw SQL as a bound role, with no meterbase setting at all, fails with
// MB001 on every table under the policies, for reads and writes: on empty
// tables too when the statement is planned in that transaction (the
// planner's estimate evaluates the helper), and whenever a row reaches the
// policy. The operator's or the directory's setting alone is a context,
// and never meets the error.
func TestRawSQLWithoutContextFails(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			pool := role.pool(t, db, rlsNoTracer)
			user := pgtest.AppRole()
			if role.name == rlsOwner.name {
				user = pgtest.OwnerRole()
			}
			statements := []string{
				`SELECT count(*) FROM workspaces`,
				`SELECT count(*) FROM memberships`,
				`SELECT count(*) FROM users`,
				`UPDATE memberships SET role = role`,
				`DELETE FROM workspaces`,
				`INSERT INTO memberships (workspace_id, user_id, role) VALUES (gen_random_uuid(), gen_random_uuid(), 'member')`,
			}
			check := func(when string, settings map[string]string) {
				for _, sql := range statements {
					rlsTx(t, pool, settings, func(tx pgx.Tx) {
						_, err := tx.Exec(ctx, sql)
						var pgErr *pgconn.PgError
						require.ErrorAs(t, err, &pgErr, "%s: %s", when, sql)
						require.Equal(t, "MB001", pgErr.Code, "%s: %s: %v", when, sql, err)
						require.Equal(t, "meterbase: row-level security binds this role and no tenant context is set", pgErr.Message)
						require.Contains(t, pgErr.Detail, "Role "+user+" set none of meterbase.workspace_id, meterbase.operator, meterbase.directory")
						require.Contains(t, pgErr.Hint, "do not use WithoutRowLevelSecurity on a role that does not bypass row-level security")
					})
				}
			}
			check("empty tables", nil)
			owner := newUser(t, db.Pool, "owner@example.com")
			ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
			require.NoError(t, err)
			check("with rows", nil)
			check("empty settings", map[string]string{"workspace_id": "", "operator": "", "directory": ""})
			check("a user without a workspace", map[string]string{"user_id": owner.ID.String()})

			count := func(tx pgx.Tx, sql string) int {
				var n int
				require.NoError(t, tx.QueryRow(ctx, sql).Scan(&n), sql)
				return n
			}
			rlsTx(t, pool, map[string]string{"operator": "test"}, func(tx pgx.Tx) {
				require.Equal(t, 1, count(tx, `SELECT count(*) FROM workspaces`))
				require.Equal(t, 1, count(tx, `SELECT count(*) FROM memberships`))
				require.Equal(t, 1, count(tx, `SELECT count(*) FROM users`))
				require.Zero(t, count(tx, `WITH d AS (DELETE FROM workspaces RETURNING 1) SELECT count(*) FROM d`))
			})
			rlsTx(t, pool, map[string]string{"directory": "on"}, func(tx pgx.Tx) {
				require.Equal(t, 1, count(tx, `SELECT count(*) FROM users`))
				require.Zero(t, count(tx, `SELECT count(*) FROM workspaces`))
				require.Zero(t, count(tx, `SELECT count(*) FROM memberships`))
			})
			rlsTx(t, pool, map[string]string{"workspace_id": ws.ID.String()}, func(tx pgx.Tx) {
				require.Equal(t, 1, count(tx, `SELECT count(*) FROM workspaces`))
			})
		})
	}
}

// The policies keep the tenant's reads on the workspace_id indexes: the
// handle's own predicate, and the policy's helper alone (an UPDATE or a
// DELETE, which the operator's policy does not widen), are index
// conditions, and users reaches memberships through its primary key.
func TestPoliciesUseTheTenantIndexes(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			pool := role.pool(t, db, rlsNoTracer)
			ws := tenancy.NewWorkspaceID().String()
			plan := func(tx pgx.Tx, sql string) string {
				rows, err := tx.Query(ctx, `EXPLAIN (COSTS OFF) `+sql)
				require.NoError(t, err)
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				return strings.Join(lines, "\n")
			}
			rlsTx(t, pool, map[string]string{"workspace_id": ws}, func(tx pgx.Tx) {
				// The tables are tiny: ask whether an index can serve, not
				// whether the planner would rather scan.
				_, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`)
				require.NoError(t, err)
				p := plan(tx, `SELECT user_id, role FROM memberships WHERE memberships.workspace_id = '`+ws+`' AND (role = 'owner')`)
				require.Regexp(t, `Index (Only )?Scan on memberships_pkey|Index Scan using memberships_pkey`, p)
				require.Contains(t, p, "Index Cond: (workspace_id = '"+ws+"'::uuid)")
				p = plan(tx, `SELECT name FROM workspaces WHERE workspaces.workspace_id = '`+ws+`'`)
				require.Contains(t, p, "workspaces_pkey")
				require.Contains(t, p, "Index Cond: (workspace_id = '"+ws+"'::uuid)")
				p = plan(tx, `DELETE FROM memberships`)
				require.Contains(t, p, "memberships_pkey")
				require.Regexp(t, `Index Cond: \(workspace_id = CASE`, p, "the policy's own condition is an index condition")
				p = plan(tx, `SELECT email FROM users`)
				require.Contains(t, p, "memberships_pkey", "users finds the tenant's members by index")
			})
		})
	}
}
