package tenancy_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// plans says how often the one connection of pool planned sql generically
// and how often with the call's values.
func plans(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string) (generic, custom int64) {
	t.Helper()
	err := q.QueryRow(context.Background(), `SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)
	                                          FROM pg_prepared_statements WHERE statement = $1`, sql).Scan(&generic, &custom)
	require.NoError(t, err)
	return generic, custom
}

// A statement marked GenericPlan runs with its generic plan on a pool, with
// the row-level security context or without it, and returns what it would
// without the mark, leaving no setting behind; in a transaction (the
// host's, or InTx's) it runs as any other, and sets nothing there.
func TestGenericPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "generic-owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	for _, email := range []string{"g1@example.com", "g2@example.com", "g3@example.com"} {
		u := newUser(t, db.Pool, email)
		_, err := members.Add(ctx, tenantOf(t, db.Pool, ws.ID), tenancy.AddMemberParams{User: u.ID, Role: tenancy.RoleMember})
		require.NoError(t, err)
	}
	// The tables' owner, whom row-level security binds (forced).
	one := db.OwnerPool(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	tn := tenantOf(t, one, ws.ID)
	list := func(tn *tenancy.Tenant, column string) tenancy.SelectBuilder {
		return tn.Select(tenancy.MembershipsTable, column).Where("role <> ?", "nobody").OrderBy(column)
	}
	read := func(b tenancy.SelectBuilder) []string {
		rows, err := b.Query(ctx)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return got
	}
	want := read(list(tn, "user_id::text"))
	require.Len(t, want, 4)

	genericSQL, _, err := tenancy.SQLOf(list(tn, "role || user_id::text").GenericPlan())
	require.NoError(t, err)
	for range 8 {
		require.Len(t, read(list(tn, "role || user_id::text").GenericPlan()), 4)
	}
	g, c := plans(t, one, genericSQL)
	require.Equal(t, [2]int64{8, 0}, [2]int64{g, c}, "generic, custom plans on a pool")
	// The same without the mark: Postgres plans the first calls with
	// their values.
	customSQL, _, err := tenancy.SQLOf(list(tn, "user_id::text"))
	require.NoError(t, err)
	for range 7 {
		require.Equal(t, want, read(list(tn, "user_id::text")))
	}
	_, c = plans(t, one, customSQL)
	require.GreaterOrEqual(t, c, int64(5), "custom plans without the mark")
	require.Equal(t, want, read(list(tn, "user_id::text").GenericPlan()))

	// In the host's transaction, and inside InTx, the statement runs as
	// any other, and the transaction's settings are as they were: none
	// is set there, even to put it back.
	settings := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		var out string
		require.NoError(t, q.QueryRow(ctx, `SELECT coalesce(string_agg(name || '=' || setting || ':' || source, ',' ORDER BY name), '')
		                                      FROM pg_settings WHERE source NOT IN ('default', 'override', 'configuration file', 'environment variable', 'client')`).Scan(&out))
		return out
	}
	tx, err := one.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	before := settings(tx)
	g0, c0 := plans(t, tx, genericSQL)
	inTx := tenantOf(t, tx, ws.ID)
	all := read(list(inTx, "role || user_id::text").GenericPlan())
	require.Len(t, all, 4)
	var row string
	require.NoError(t, list(inTx, "role || user_id::text").GenericPlan().QueryRow(ctx).Scan(&row))
	require.Equal(t, all[0], row, "QueryRow reads the first row")
	err = inTx.InTx(ctx, func(sp *tenancy.Tenant) error {
		require.Equal(t, want, read(list(sp, "user_id::text").GenericPlan()))
		var none string
		err := sp.Select(tenancy.MembershipsTable, "role").Where("role = ?", "nobody").GenericPlan().QueryRow(ctx).Scan(&none)
		require.ErrorIs(t, err, tenancy.ErrNotFound)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, before, settings(tx), "the transaction's settings after the calls")
	g, c = plans(t, tx, genericSQL)
	require.Equal(t, int64(2), g+c-g0-c0, "plans of the two calls in the transaction")
	require.NoError(t, tx.Rollback(ctx))

	// Without the context, on a role that bypasses row-level security.
	raw := db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	var bypass bool
	require.NoError(t, raw.QueryRow(ctx, "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&bypass))
	require.True(t, bypass, "the test server's role bypasses row-level security")
	plain := tenantOf(t, raw, ws.ID, tenancy.WithoutRowLevelSecurity())
	for range 3 {
		require.Equal(t, want, read(list(plain, "user_id::text").GenericPlan()))
	}
	plainSQL, _, err := tenancy.SQLOf(list(plain, "user_id::text").GenericPlan())
	require.NoError(t, err)
	g, c = plans(t, raw, plainSQL)
	require.Equal(t, [2]int64{3, 0}, [2]int64{g, c}, "without the context")
	var mode string
	require.NoError(t, raw.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&mode))
	require.Equal(t, "auto", mode, "the session's setting after the calls")
}

// A GenericPlan read on a pool reaches the tenant's rows only, like the
// same read without the mark, as the superuser (the handle's predicate
// alone), the owner and the application role (row-level security too):
// the leak tests run in a host's transaction, where the mark does nothing,
// so the pool's own path is checked here, among three tenants that share
// members.
func TestGenericPlanReadsOnlyTheTenantsRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	for name, pool := range map[string]*pgxpool.Pool{"superuser": db.Pool, "owner": db.OwnerPool(t), "application role": db.AppPool(t)} {
		for i, ws := range w.ws {
			tn := tenantOf(t, pool, ws)
			list := tn.Select(tenancy.MembershipsTable, "workspace_id::text", "user_id::text", "role").OrderBy("user_id")
			read := func(b tenancy.SelectBuilder) [][]string {
				rows, err := b.Query(ctx)
				require.NoError(t, err)
				got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
					var ws, user, role string
					err := r.Scan(&ws, &user, &role)
					return []string{ws, user, role}, err
				})
				require.NoError(t, err)
				return got
			}
			generic := read(list.GenericPlan())
			require.Equal(t, read(list), generic, "%s, workspace %d", name, i)
			require.Len(t, generic, 4, "%s, workspace %d: its owner and the three shared members", name, i)
			for _, row := range generic {
				require.Equal(t, ws.String(), row[0], "%s, workspace %d", name, i)
			}
		}
	}
}
