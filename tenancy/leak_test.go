package tenancy_test

import (
	"context"
	"fmt"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// world is three tenants with overlapping data: the same three users belong
// to every workspace (with different roles), each workspace has an owner of
// its own, and all three carry the same name.
type world struct {
	ws      [3]tenancy.WorkspaceID
	owners  [3]tenancy.User
	shared  [3]tenancy.User
	outside tenancy.User
}

func buildWorld(t *testing.T, db tenancy.DBTX) world {
	t.Helper()
	ctx := context.Background()
	var w world
	for i := range 3 {
		w.shared[i] = newUser(t, db, fmt.Sprintf("shared%d@example.com", i))
	}
	w.outside = newUser(t, db, "outside@example.com")
	roles := []tenancy.Role{tenancy.RoleMember, tenancy.RoleAdmin, tenancy.RoleOwner}
	for i := range 3 {
		w.owners[i] = newUser(t, db, fmt.Sprintf("owner%d@example.com", i))
		ws, err := workspaces.Create(ctx, db, tenancy.CreateWorkspaceParams{Name: "Shared name", Owner: w.owners[i].ID})
		require.NoError(t, err)
		w.ws[i] = ws.ID
		tn := tenantOf(t, db, ws.ID)
		for j, u := range w.shared {
			_, err := members.Add(ctx, tn, tenancy.AddMemberParams{User: u.ID, Role: roles[(i+j)%3]})
			require.NoError(t, err)
		}
	}
	return w
}

// rowsOf renders every row of workspaces B and C as text, read as the
// owner, which row-level security does not filter.
func rowsOf(t *testing.T, raw *pgxpool.Pool, ids ...tenancy.WorkspaceID) []string {
	t.Helper()
	rows, err := raw.Query(context.Background(), `
		SELECT format('workspace %s %s %s', workspace_id, name, updated_at) FROM workspaces WHERE workspace_id = ANY($1)
		UNION ALL
		SELECT format('membership %s %s %s %s', workspace_id, user_id, role, updated_at) FROM memberships WHERE workspace_id = ANY($1)
		ORDER BY 1`, ids)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// Every repository method and builder, called as tenant A, never returns,
// counts, updates or deletes a row of B or C: with the handle's predicates
// alone, with row-level security alone, and with both.
func TestTenantLeakSuite(t *testing.T) {
	t.Parallel()
	modes := []struct {
		name  string
		app   bool // connect as the unprivileged application role (row-level security applies)
		owner bool // connect as the tables' owner, which the forced tables bind too
		omit  bool // drop the handle's own predicate
	}{
		{name: "handle predicates, row-level security bypassed by a superuser", app: false},
		{name: "row-level security alone", app: true, omit: true},
		{name: "both", app: true},
		{name: "the tables' owner (one role for everything), row-level security alone", owner: true, omit: true},
		{name: "the tables' owner, both", owner: true},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			raw := db.RawPool(t)
			w := buildWorld(t, db.Pool)
			pool := db.Pool
			switch {
			case mode.app:
				pool = db.AppPool(t)
			case mode.owner:
				pool = db.OwnerPool(t)
			}
			if mode.omit {
				db.Tracer.Disable()
			}
			if !mode.app && !mode.owner {
				var bypass bool
				require.NoError(t, raw.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls OR current_user = (SELECT tableowner FROM pg_tables WHERE tablename = 'memberships') FROM pg_roles WHERE rolname = current_user`).Scan(&bypass))
				require.True(t, bypass, "this mode must test the handle without row-level security")
			}
			tn := tenantOf(t, pool, w.ws[0])
			if mode.omit {
				tn = tenancy.OmitTenantPredicate(tn)
			}
			others := rowsOf(t, raw, w.ws[1], w.ws[2])
			require.NotEmpty(t, others)

			ws, err := workspaces.Get(ctx, tn)
			require.NoError(t, err)
			require.Equal(t, w.ws[0], ws.ID)

			list, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Limit: tenancy.MaxPageLimit}})
			require.NoError(t, err)
			require.Len(t, list.Items, 4)
			for _, m := range list.Items {
				require.Equal(t, w.ws[0], m.WorkspaceID)
			}

			m, err := members.Get(ctx, tn, w.shared[1].ID)
			require.NoError(t, err)
			require.Equal(t, tenancy.RoleAdmin, m.Role, "A's role, not B's or C's")
			_, err = members.Get(ctx, tn, w.owners[1].ID)
			require.ErrorIs(t, err, tenancy.ErrNotMember)
			_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: w.owners[2].ID, MinRole: tenancy.RoleMember})
			require.ErrorIs(t, err, tenancy.ErrNotMember)
			_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: w.owners[1].ID, Role: tenancy.RoleMember})
			require.ErrorIs(t, err, tenancy.ErrNotMember)
			require.ErrorIs(t, members.Remove(ctx, tn, w.owners[2].ID), tenancy.ErrNotMember)

			_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: w.shared[0].ID, Role: tenancy.RoleAdmin})
			require.NoError(t, err)
			require.NoError(t, members.Remove(ctx, tn, w.shared[1].ID))
			_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: w.outside.ID, Role: tenancy.RoleMember})
			require.NoError(t, err)
			_, err = workspaces.Rename(ctx, tn, tenancy.RenameWorkspaceParams{Name: "Renamed"})
			require.NoError(t, err)

			// The builders, with predicates that would match everywhere.
			var count int
			require.NoError(t, tn.Select(tenancy.MembershipsTable, "count(*)").Where("true OR true").QueryRow(ctx).Scan(&count))
			require.Equal(t, 4, count)
			tag, err := tn.Update(tenancy.MembershipsTable).Set("role", "member").
				Where(sq.Or{sq.Eq{"role": "admin"}, sq.Eq{"workspace_id": w.ws[1]}}).Exec(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, tag.RowsAffected())
			tag, err = tn.Delete(tenancy.MembershipsTable).Where(sq.Eq{"user_id": w.shared[2].ID}).Exec(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, tag.RowsAffected())
			// Hand-written SQL, whose filters an OR or a CTE cannot defeat.
			rows, err := tn.Query(ctx, countMembersWritten, nil)
			require.NoError(t, err)
			counted, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
			require.NoError(t, err)
			require.EqualValues(t, 3, counted)
			tag, err = tn.Exec(ctx, touchEveryMembership, nil)
			require.NoError(t, err)
			require.EqualValues(t, 3, tag.RowsAffected())
			require.NoError(t, tn.InTx(ctx, func(tx *tenancy.Tenant) error {
				return tx.Select(tenancy.WorkspacesTable, "count(*)").QueryRow(ctx).Scan(&count)
			}))
			require.Equal(t, 1, count)

			require.NoError(t, workspaces.Delete(ctx, tn))
			require.Equal(t, others, rowsOf(t, raw, w.ws[1], w.ws[2]), "B and C must be untouched")
			require.Empty(t, rowsOf(t, raw, w.ws[0]), "A is gone")
		})
	}
}

// Raw SQL as the application role, with a wrong or missing tenant setting,
// reads and writes no foreign row.
func TestRowLevelSecurityForRawSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	w := buildWorld(t, db.Pool)
	app := db.AppPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
	before := rowsOf(t, raw, w.ws[:]...)

	count := func(tx pgx.Tx, sql string, args ...any) int {
		var n int
		require.NoError(t, tx.QueryRow(ctx, sql, args...).Scan(&n))
		return n
	}
	// as runs fn in a transaction with the given tenant setting ("" for
	// none) and rolls it back.
	as := func(setting string, fn func(tx pgx.Tx)) {
		tx, err := app.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		if setting != "" {
			_, err := tx.Exec(ctx, `SELECT set_config('meterbase.workspace_id', $1, true)`, setting)
			require.NoError(t, err)
		}
		fn(tx)
	}
	exec := func(tx pgx.Tx, sql string, args ...any) int64 {
		tag, err := tx.Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
		return tag.RowsAffected()
	}

	for _, sql := range []string{`SELECT count(*) FROM workspaces`, `SELECT count(*) FROM memberships`,
		`UPDATE memberships SET role = 'member'`, `DELETE FROM memberships`, `DELETE FROM workspaces`} {
		as("", func(tx pgx.Tx) {
			_, err := tx.Exec(ctx, sql)
			requireNoTenantContext(t, err, sql)
		})
	}
	for _, setting := range []string{tenancy.NewWorkspaceID().String()} {
		as(setting, func(tx pgx.Tx) {
			require.Zero(t, count(tx, `SELECT count(*) FROM workspaces`))
			require.Zero(t, count(tx, `SELECT count(*) FROM memberships`))
			require.Zero(t, exec(tx, `UPDATE memberships SET role = 'member'`))
			require.Zero(t, exec(tx, `DELETE FROM memberships`))
			require.Zero(t, exec(tx, `DELETE FROM workspaces`))
		})
	}
	as(w.ws[0].String(), func(tx pgx.Tx) {
		require.Equal(t, 1, count(tx, `SELECT count(*) FROM workspaces`))
		require.Equal(t, 4, count(tx, `SELECT count(*) FROM memberships`))
		require.Zero(t, count(tx, `SELECT count(*) FROM memberships WHERE workspace_id = $1`, w.ws[1]))
		require.Zero(t, exec(tx, `UPDATE memberships SET role = 'member' WHERE workspace_id = $1`, w.ws[1]))
		require.Zero(t, exec(tx, `DELETE FROM workspaces WHERE workspace_id <> $1`, w.ws[0]))
	})
	as(w.ws[0].String(), func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, 'member')`, w.ws[1], w.outside.ID)
		require.ErrorContains(t, err, "row-level security")
	})
	as(w.ws[0].String(), func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `UPDATE memberships SET workspace_id = $1`, w.ws[1])
		require.ErrorContains(t, err, "row-level security", "a row cannot be moved to another tenant")
	})
	as("not-a-uuid", func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `SELECT count(*) FROM memberships`)
		require.Error(t, err, "a malformed setting fails rather than matching")
	})
	require.Equal(t, before, rowsOf(t, raw, w.ws[:]...))
}

var (
	countMembersWritten = tenancy.MustPrepare("count members",
		`WITH mine AS (SELECT user_id FROM {memberships} WHERE role <> 'x' OR true) SELECT count(*) FROM mine`)
	touchEveryMembership = tenancy.MustPrepare("touch memberships",
		`UPDATE {memberships} SET updated_at = now() WHERE true OR workspace_id IS NOT NULL -- every row, it says`)
)

// The handle's setting lasts for its statement's transaction only: the next
// user of the pooled connection starts with no tenant.
func TestRowLevelSecurityContextDoesNotLeak(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	app := db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	tn := tenantOf(t, app, w.ws[0])
	for _, use := range []func() error{
		func() error { _, err := workspaces.Get(ctx, tn); return err },
		func() error {
			_, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{}})
			return err
		},
		func() error {
			_, err := workspaces.Rename(ctx, tn, tenancy.RenameWorkspaceParams{Name: "x"})
			return err
		},
		func() error {
			return tn.InTx(ctx, func(tx *tenancy.Tenant) error { _, err := workspaces.Get(ctx, tx); return err })
		},
	} {
		require.NoError(t, use())
		var setting *string
		require.NoError(t, app.QueryRow(ctx, `SELECT current_setting('meterbase.workspace_id', true)`).Scan(&setting))
		require.True(t, setting == nil || *setting == "", "leaked %v", setting)
		var visible int
		err := app.QueryRow(ctx, `SELECT count(*) FROM workspaces WHERE workspace_id = $1`, w.ws[0]).Scan(&visible)
		requireNoTenantContext(t, err, "the next user of the connection has no tenant: refused, not answered")
	}
}

func TestOperatorReadsAcrossTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	app := db.AppPool(t)

	_, err := tenancy.NewOperator(app, "  ")
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	op, err := tenancy.NewOperator(app, "support ticket 42")
	require.NoError(t, err)
	require.Equal(t, "support ticket 42", op.Reason())

	var seen []tenancy.WorkspaceID
	page := tenancy.Page{Limit: 2}
	for {
		list, err := op.ListWorkspaces(ctx, page)
		require.NoError(t, err)
		for _, ws := range list.Items {
			seen = append(seen, ws.ID)
		}
		if list.Next == "" {
			break
		}
		page.Cursor = list.Next
	}
	require.ElementsMatch(t, w.ws[:], seen, "the operator sees every tenant, through row-level security")

	ws, err := op.WorkspaceOf(ctx, w.ws[2])
	require.NoError(t, err)
	require.Equal(t, w.ws[2], ws.ID)
	_, err = op.WorkspaceOf(ctx, tenancy.NewWorkspaceID())
	require.ErrorIs(t, err, tenancy.ErrNotFound)

	// The operator's setting opens reads only.
	tx, err := app.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT set_config('meterbase.operator', 'x', true)`)
	require.NoError(t, err)
	tag, err := tx.Exec(ctx, tenancy.OperatorMarker+`UPDATE workspaces SET name = 'hijacked'`)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
}
