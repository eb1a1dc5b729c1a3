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

// A GenericPlan statement on a pool leaves neither plan_cache_mode
// nor the tenant context on the connection, whatever the pool's exec mode,
// when the statement fails mid-batch, when its rows are closed unread, and
// QueryRow maps no row to ErrNotFound on a pool too.
func TestGenericPlanLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "gp-owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		one := db.OwnerPool(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.DefaultQueryExecMode = mode })
		tn := tenantOf(t, one, ws.ID)
		check := func(what string) {
			t.Helper()
			var pcm, w, u string
			require.NoError(t, one.QueryRow(ctx, `SELECT current_setting('plan_cache_mode'), coalesce(current_setting('meterbase.workspace_id', true), ''), coalesce(current_setting('meterbase.user_id', true), '')`).Scan(&pcm, &w, &u), "%v %s", mode, what)
			require.Equal(t, [3]string{"auto", "", ""}, [3]string{pcm, w, u}, "%v %s", mode, what)
		}
		b := tn.Select(tenancy.MembershipsTable, "role").GenericPlan()
		rows, err := b.Query(ctx)
		require.NoError(t, err, mode)
		_, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, mode)
		check("after a list")

		rows, err = b.Query(ctx)
		require.NoError(t, err, mode)
		rows.Close()
		check("after rows closed unread")

		bad := tn.Select(tenancy.MembershipsTable, "role").Where("1 / (length(role) - length(role)) = 1").GenericPlan()
		rows, err = bad.Query(ctx)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
			rows.Close()
		}
		require.Error(t, err, mode)
		check("after an error")

		var none string
		err = tn.Select(tenancy.MembershipsTable, "role").Where("role = ?", "nobody").GenericPlan().QueryRow(ctx).Scan(&none)
		require.ErrorIs(t, err, tenancy.ErrNotFound, mode)
		check("after QueryRow, no row")

		cctx, cancel := context.WithCancel(ctx)
		rows, err = b.Query(cctx)
		require.NoError(t, err, mode)
		cancel()
		rows.Close()
		check("after a cancelled context")
	}
}
