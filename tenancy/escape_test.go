package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// Attempts to reach another tenant's rows through the builders' fragments
// are refused before any SQL is sent.
func TestFragmentsCannotEscape(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	m, w := tenancy.MembershipsTable, tenancy.WorkspacesTable
	victim := tenancy.NewWorkspaceID()
	for name, err := range map[string]error{
		// A spare ? before WHERE would take the tenant's argument, and an
		// extra argument would take the tenant's place.
		"placeholder in a column":         errOf(tenancy.SQLOf(tn.Select(m, "role", "?::text").Where("true", victim))),
		"orphan argument":                 errOf(tenancy.SQLOf(tn.Select(m, "role").Where("true", victim))),
		"placeholder in a join":           errOf(tenancy.SQLOf(tn.Select(m, "role").Join(tenancy.UsersTable, "users.user_id = memberships.user_id AND ? IS NOT NULL"))),
		"placeholder in a set expression": errOf(tenancy.SQLOf(tn.Update(m).Set("role", sq.Expr("CASE WHEN ?::text IS NULL THEN role END")).Where(sq.Expr("true", victim)))),
		"placeholder in order by":         errOf(tenancy.SQLOf(tn.Select(m, "role").OrderBy("?"))),
		"placeholder in returning":        errOf(tenancy.SQLOf(tn.Delete(m).Where("true").Returning("?"))),
		"missing argument":                errOf(tenancy.SQLOf(tn.Select(m, "role").Where("role = ? OR role = ?", "owner"))),
		"E-string breaks the parentheses": errOf(tenancy.SQLOf(tn.Select(m, "count(*)").Where(`E'\'' <> '' ) OR ( E'\'' <> ''`))),
		"backslash in a literal":          errOf(tenancy.SQLOf(tn.Select(m, "role").Where(`role = 'a\'`))),
		"subquery in a column":            errOf(tenancy.SQLOf(tn.Select(w, "(SELECT string_agg(workspace_id::text, ',') FROM workspaces)"))),
		"subquery in order by":            errOf(tenancy.SQLOf(tn.Select(w, "name").OrderBy("(SELECT count(*) FROM memberships)"))),
		"subquery in a predicate":         errOf(tenancy.SQLOf(tn.Select(m, "role").Where("user_id IN (select user_id FROM memberships)"))),
		"TABLE subquery":                  errOf(tenancy.SQLOf(tn.Select(m, "role").Where("(role) IN (TABLE x)"))),
		"VALUES subquery":                 errOf(tenancy.SQLOf(tn.Select(m, "role").Where("role IN (VALUES ('a'))"))),
		"subquery in a set expression":    errOf(tenancy.SQLOf(tn.Update(w).Set("name", sq.Expr("(SELECT name FROM workspaces LIMIT 1)")).All())),
		"subquery in an insert value":     errOf(tenancy.SQLOf(tn.Insert(m).Columns("role").Values(sq.Expr("(SELECT 'owner')")))),
		"set_config in a column":          errOf(tenancy.SQLOf(tn.Select(w, "set_config('meterbase.operator', 'x', true)"))),
		"query_to_xml":                    errOf(tenancy.SQLOf(tn.Select(w, "query_to_xml('x', true, true, '')"))),
		"update without where":            errOf(tenancy.SQLOf(tn.Update(m).Set("role", "member"))),
		"delete without where":            errOf(tenancy.SQLOf(tn.Delete(m))),
		"delete with an empty where only": errOf(tenancy.SQLOf(tn.Delete(m).Where(""))),
		"dollar quote":                    errOf(tenancy.SQLOf(tn.Select(m, "role").Where("role = $$x$$"))),
	} {
		require.Error(t, err, name)
		require.True(t, errors.Is(err, tenancy.ErrUnsafeSQL) || errors.Is(err, tenancy.ErrInvalidInput), "%s: %v", name, err)
	}

	// Quoted text is data: a ? or ; inside a literal is neither a
	// placeholder nor a separator, and keeps its meaning.
	sql, args, err := tenancy.SQLOf(tn.Select(m, "role").Where("role <> 'what?;' AND role = ?", "owner"))
	require.NoError(t, err)
	require.Equal(t, "SELECT role FROM memberships WHERE memberships.workspace_id = $1 AND (role <> 'what?;' AND role = $2)", sql)
	require.Equal(t, []any{wsA, "owner"}, args)
	// ?? is squirrel's literal question mark (the jsonb operator).
	sql, _, err = tenancy.SQLOf(tn.Select(m, "role").Where("meta ?? 'k'"))
	require.NoError(t, err)
	require.Contains(t, sql, "(meta ? 'k')")
	// Words that merely contain a denied one are fine.
	_, _, err = tenancy.SQLOf(tn.Select(m, "selected_at", "table_name", "updated_at").Where("deleted_at IS NULL"))
	require.NoError(t, err)
}

// Every adversarial predicate, run against a real database as tenant A on
// the owner's connection (no row-level security), is refused or reaches
// only A's rows; a delete with it, rolled back, touches only A's rows.
func TestAdversarialPredicatesAgainstPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	corpus := []string{
		`true`, `true OR true`, `true) OR (true`, `'x' = 'x' OR workspace_id IS NOT NULL`,
		`E'\'' <> '' ) OR ( E'\'' <> ''`, `U&'\0027' <> ''`, `'' = '' ) OR ( true`,
		`"role" = 'member' OR "workspace_id" IS NOT NULL`, `role = 'member' OR 1 = 1`,
		`(((true)))`, `NOT (workspace_id IS NULL)`, `workspace_id <> '00000000-0000-0000-0000-000000000000'`,
		`user_id IN (SELECT user_id FROM memberships)`, `EXISTS (TABLE memberships)`,
		`true; DELETE FROM memberships`, `true -- `, `true /* */`,
	}
	for _, pred := range corpus {
		rows, err := tn.Select(tenancy.MembershipsTable, "workspace_id").Where(pred).Query(ctx)
		if err != nil {
			require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, pred)
			continue
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.WorkspaceID])
		require.NoError(t, err, pred)
		for _, ws := range got {
			require.Equal(t, w.ws[0], ws, "%q read another tenant's row", pred)
		}
		err = tn.InTx(ctx, func(tx *tenancy.Tenant) error {
			rows, err := tx.Delete(tenancy.MembershipsTable).Where(pred).Returning("workspace_id").Query(ctx)
			if err != nil {
				return err
			}
			gone, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.WorkspaceID])
			for _, ws := range gone {
				require.Equal(t, w.ws[0], ws, "%q deleted another tenant's row", pred)
			}
			if err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			// The last-owner trigger may refuse; nothing else may fail.
			require.ErrorIs(t, err, tenancy.ErrCheckViolation, pred)
		}
	}
}

// The handle's row-level security settings, and the operator's, end with
// the call even inside the host's own transaction, so the host's later
// statements in that transaction get no tenant's (or every tenant's) rows.
func TestContextDoesNotOutliveCallInHostTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	app := db.AppPool(t)

	// The host's own raw SQL after a call: no tenant's context is left, so
	// a bound role is refused outright.
	visible := func(tx pgx.Tx) int {
		requireNothingVisible(t, tx, "memberships")
		return 0
	}
	tx, err := app.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	tn := tenantOf(t, tx, w.ws[0])

	_, err = workspaces.Get(ctx, tn)
	require.NoError(t, err)
	require.Zero(t, visible(tx), "after a single statement")

	rows, err := tn.Select(tenancy.MembershipsTable, "user_id").Where("true").Query(ctx)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.UserID])
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Zero(t, visible(tx), "after a query")

	require.NoError(t, tn.InTx(ctx, func(inner *tenancy.Tenant) error {
		_, err := workspaces.Rename(ctx, inner, tenancy.RenameWorkspaceParams{Name: "inside"})
		return err
	}))
	require.Zero(t, visible(tx), "after InTx")

	op, err := tenancy.NewOperator(tx, "test: operator in a host transaction")
	require.NoError(t, err)
	all, err := op.ListWorkspaces(ctx, tenancy.Page{})
	require.NoError(t, err)
	require.Len(t, all.Items, 3)
	require.Zero(t, visible(tx), "after the operator")
}

// Errors of the statements a handle runs come back translated.
func TestBuilderErrorsAreTranslated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])

	_, err := tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role").Values(w.shared[0].ID, "member").Exec(ctx)
	require.ErrorIs(t, err, tenancy.ErrUniqueViolation)
	var ce *tenancy.ConstraintError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "memberships_pkey", ce.Constraint)

	_, err = tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role").Values(w.outside.ID, "root").Exec(ctx)
	require.ErrorIs(t, err, tenancy.ErrCheckViolation)

	err = tn.Select(tenancy.MembershipsTable, "role").Where(sq.Eq{"user_id": w.owners[1].ID}).QueryRow(ctx).Scan(new(string))
	require.ErrorIs(t, err, tenancy.ErrNotFound)

	// Values may be expressions, checked like every fragment.
	var created string
	require.NoError(t, tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role", "created_at").
		Values(w.outside.ID, "member", sq.Expr("now() - ?::interval", "1 day")).
		Returning("to_char(created_at, 'YYYY')").QueryRow(ctx).Scan(&created))
	require.Len(t, created, 4)
}

// A self-join through aliases stays within the tenant on both sides.
func TestSelfJoinStaysInTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	a, b := tenancy.MembershipsTable.As("a"), tenancy.MembershipsTable.As("b")
	rows, err := tn.Select(a, "a.workspace_id", "b.workspace_id").
		Join(b, "b.user_id = a.user_id").Query(ctx)
	require.NoError(t, err)
	pairs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]tenancy.WorkspaceID, error) {
		var p [2]tenancy.WorkspaceID
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	require.NoError(t, err)
	require.Len(t, pairs, 4, "each of A's members with itself, though the shared users belong to B and C too")
	for _, p := range pairs {
		require.Equal(t, [2]tenancy.WorkspaceID{w.ws[0], w.ws[0]}, p)
	}
}

// pgx reads a first argument of certain types as an option: NamedArgs would
// renumber every placeholder, the tenant's included. Such arguments are
// refused wherever a caller gives values, and the tenant's own arguments
// always come first.
func TestOptionArgumentsAreRefused(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	w, m := tenancy.WorkspacesTable, tenancy.MembershipsTable
	victim := tenancy.NewWorkspaceID()
	named := pgx.NamedArgs{"a": "pwned", "b": victim}
	for name, err := range map[string]error{
		"named args as a SET value": errOf(tenancy.SQLOf(tn.Update(w).Set("name", named).Where("@a::text IS NOT NULL AND @b::uuid IS NOT NULL"))),
		"named args in a join":      errOf(tenancy.SQLOf(tn.Select(m, "role").Join(tenancy.UsersTable, "users.user_id = memberships.user_id AND ? IS NOT NULL", named))),
		"named args in a where":     errOf(tenancy.SQLOf(tn.Select(m, "role").Where("? IS NOT NULL", named))),
		"named args as a value":     errOf(tenancy.SQLOf(tn.Insert(m).Columns("role").Values(named))),
		"exec mode as a value":      errOf(tenancy.SQLOf(tn.Insert(m).Columns("role").Values(pgx.QueryExecModeSimpleProtocol))),
	} {
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, name)
	}
	_, args, err := tenancy.SQLOf(tn.Update(w).Set("name", "x").Where("name <> ?", "y"))
	require.NoError(t, err)
	require.Equal(t, wsA, args[0], "the tenant's argument is always the first")
}

// Quoted or Unicode-escaped names spell denied words as well as bare ones.
func TestDeniedWordsInEveryShape(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	w := tenancy.WorkspacesTable
	for _, column := range []string{
		`"query_to_xml"('select 1', true, true, '')`,
		`pg_catalog."table_to_xml"('memberships', true, true, '')`,
		`U&"query!005fto!005fxml" UESCAPE '!' ('x', true, true, '')`,
		`u&'x'`,
		`"set_config"('meterbase.operator', 'x', false)`,
		`"SET_CONFIG"('meterbase.operator', 'x', false)`,
		`ts_stat('x')`,
		`ts_rewrite('a'::tsquery, 'x')`,
		`dblink('x', 'y')`,
		`"select"`,
	} {
		_, _, err := tenancy.SQLOf(tn.Select(w, column))
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, column)
	}
	for _, ok := range []string{
		`created_at::timestamp with time zone`,
		`"name"`, `"Weird Column"`, `coalesce(name, 'select')`,
	} {
		_, _, err := tenancy.SQLOf(tn.Select(w, ok))
		require.NoError(t, err, ok)
	}
}

// Having, ForUpdate with a left join, and an upsert without a target run
// on Postgres.
func TestMoreClausesAgainstPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])

	rows, err := tn.Select(tenancy.MembershipsTable, "role", "count(*)").GroupBy("role").
		Having("count(*) >= ?", 1).OrderBy("role").Query(ctx)
	require.NoError(t, err)
	type roleCount struct {
		Role  string
		Count int64
	}
	counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[roleCount])
	require.NoError(t, err)
	require.Equal(t, []roleCount{{"admin", 1}, {"member", 1}, {"owner", 2}}, counts)

	require.NoError(t, tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		rows, err := tx.Select(tenancy.MembershipsTable, "memberships.user_id").
			LeftJoin(tenancy.UsersTable, "users.user_id = memberships.user_id").
			ForUpdate().Query(ctx)
		if err != nil {
			return err
		}
		locked, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.UserID])
		require.Len(t, locked, 4)
		return err
	}))

	tag, err := tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role").
		Values(w.shared[0].ID, "member").OnConflictDoNothing().Exec(ctx)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected())
}

// A SET or VALUES expression is one value: a comma in it cannot assign
// workspace_id, nor a FROM bring in another table. On the owner's
// connection, where row-level security would not stop them.
func TestAssignedExpressionsStayOneValue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	before := rowsOf(t, raw, w.ws[:]...)

	_, err := tn.Update(tenancy.MembershipsTable).Set("role", sq.Expr("'owner', workspace_id = ?", w.ws[1])).
		Where(sq.Eq{"user_id": w.shared[0].ID}).Exec(ctx)
	require.Error(t, err)
	rows, err := tn.Update(tenancy.WorkspacesTable).Set("name", sq.Expr("workspaces.name FROM memberships m")).
		Where("m.workspace_id = ?", w.ws[1]).Returning("m.user_id").Query(ctx)
	if err == nil {
		_, err = pgx.CollectRows(rows, pgx.RowTo[tenancy.UserID])
	}
	require.Error(t, err)
	_, err = tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role").
		Values(w.outside.ID, sq.Expr("'member'), (?, ?, 'owner'", w.ws[1], w.outside.ID)).Exec(ctx)
	require.Error(t, err)

	require.Equal(t, before, rowsOf(t, raw, w.ws[:]...))

	sql, _, err := tenancy.SQLOf(tn.Update(tenancy.MembershipsTable).Set("updated_at", sq.Expr("now()")).All())
	require.NoError(t, err)
	require.Equal(t, "UPDATE memberships SET updated_at = (now()) WHERE memberships.workspace_id = $1", sql)
}

// The rows a handle returns lend no connection.
func TestRowsLendNoConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	require.NoError(t, tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		rows, err := tx.Select(tenancy.MembershipsTable, "role").Where("true").Query(ctx)
		if err != nil {
			return err
		}
		defer rows.Close()
		require.Nil(t, rows.Conn())
		return nil
	}))
}

// InTx gives back the caller's own error as the caller made it.
func TestInTxKeepsCallersError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	mine := fmt.Errorf("load invoice 42: %w", pgx.ErrNoRows)
	err := tn.InTx(ctx, func(*tenancy.Tenant) error { return mine })
	require.Same(t, mine, err)

	err = tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		err := tx.Select(tenancy.MembershipsTable, "role").Where(sq.Eq{"user_id": w.outside.ID}).QueryRow(ctx).Scan(new(string))
		return fmt.Errorf("find the outsider: %w", err)
	})
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	require.Contains(t, err.Error(), "find the outsider")
}

// Handles sharing a host's transaction put back each other's context: a
// call through one, or through the operator, inside another's InTx leaves
// the outer handle's tenant in place, no wider and no narrower.
func TestHandlesShareHostTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	app := db.AppPool(t)
	tx, err := app.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck

	members := func(tn *tenancy.Tenant) []tenancy.WorkspaceID {
		rows, err := tn.Select(tenancy.MembershipsTable, "workspace_id").Where("true").Query(ctx)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.WorkspaceID])
		require.NoError(t, err)
		return got
	}
	only := func(ws tenancy.WorkspaceID, got []tenancy.WorkspaceID) {
		t.Helper()
		require.Len(t, got, 4)
		for _, g := range got {
			require.Equal(t, ws, g)
		}
	}
	a := tenantOf(t, tx, w.ws[0])
	require.NoError(t, a.InTx(ctx, func(inA *tenancy.Tenant) error {
		only(w.ws[0], members(inA))
		only(w.ws[1], members(tenantOf(t, tx, w.ws[1]))) // another tenant's handle, one statement
		only(w.ws[0], members(inA))
		require.NoError(t, tenantOf(t, tx, w.ws[2]).InTx(ctx, func(inC *tenancy.Tenant) error {
			only(w.ws[2], members(inC))
			return nil
		}))
		only(w.ws[0], members(inA))
		op, err := tenancy.NewOperator(tx, "test: operator inside a tenant's unit of work")
		require.NoError(t, err)
		all, err := op.ListWorkspaces(ctx, tenancy.Page{})
		require.NoError(t, err)
		require.Len(t, all.Items, 3)
		only(w.ws[0], members(inA))
		return nil
	}))
}

// A list item (column, ORDER BY, GROUP BY, RETURNING) is written bare, so
// it may not begin a clause of its own outside parentheses.
func TestListItemsCannotBeginClauses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	m := tenancy.MembershipsTable
	for name, err := range map[string]error{
		"FROM in a column": errOf(tenancy.SQLOf(tn.Select(m,
			"DISTINCT o.workspace_id FROM memberships AS o JOIN memberships ON o IS NOT NULL OR o IS DISTINCT"))),
		"JOIN in a column":        errOf(tenancy.SQLOf(tn.Select(m, "1 JOIN x ON true"))),
		"UNION in a column":       errOf(tenancy.SQLOf(tn.Select(m, "1 UNION ALL (TABLE x)"))),
		"WHERE in group by":       errOf(tenancy.SQLOf(tn.Select(m, "role").GroupBy("role WHERE true"))),
		"LIMIT in order by":       errOf(tenancy.SQLOf(tn.Select(m, "role").OrderBy("role LIMIT 1"))),
		"FOR in order by":         errOf(tenancy.SQLOf(tn.Select(m, "role").OrderBy("role FOR UPDATE"))),
		"FROM in returning":       errOf(tenancy.SQLOf(tn.Delete(m).Where("true").Returning("role FROM x"))),
		"IS DISTINCT FROM, bare":  errOf(tenancy.SQLOf(tn.Select(m, "role IS DISTINCT FROM 'x'"))),
		"RETURNING in returning":  errOf(tenancy.SQLOf(tn.Delete(m).Where("true").Returning("role RETURNING x"))),
		"WINDOW in a column":      errOf(tenancy.SQLOf(tn.Select(m, "1 WINDOW w AS ()"))),
		"EXCEPT in order by":      errOf(tenancy.SQLOf(tn.Select(m, "role").OrderBy("1 EXCEPT (TABLE x)"))),
		"OFFSET in group by":      errOf(tenancy.SQLOf(tn.Select(m, "role").GroupBy("role OFFSET 1"))),
		"HAVING in group by":      errOf(tenancy.SQLOf(tn.Select(m, "role").GroupBy("role HAVING true"))),
		"USING in returning":      errOf(tenancy.SQLOf(tn.Delete(m).Where("true").Returning("role USING x"))),
		"INTERSECT in a column":   errOf(tenancy.SQLOf(tn.Select(m, "1 INTERSECT (TABLE x)"))),
		"FETCH in order by":       errOf(tenancy.SQLOf(tn.Select(m, "role").OrderBy("role FETCH FIRST 1 ROWS ONLY"))),
		"ORDER in a column":       errOf(tenancy.SQLOf(tn.Select(m, "role ORDER BY 1"))),
		"GROUP in a column":       errOf(tenancy.SQLOf(tn.Select(m, "role GROUP BY 1"))),
		"backslash in a literal":  errOf(tenancy.SQLOf(tn.Select(m, "role").Where(`role ~ '^\w+$'`))),
		"backslash in a column":   errOf(tenancy.SQLOf(tn.Select(m, `'\'`))),
		"quoted FROM in a column": errOf(tenancy.SQLOf(tn.Select(m, `"from"`))), // harmless, but a quoted name is still a name
	} {
		if name == "quoted FROM in a column" {
			require.NoError(t, err, name)
			continue
		}
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, name)
	}

	// In parentheses they are part of an expression, and run.
	var n int
	require.NoError(t, tn.Select(m, "count(DISTINCT (role IS DISTINCT FROM 'owner'))", "max(extract(year FROM created_at))::int").
		QueryRow(ctx).Scan(&n, new(int)))
	require.Equal(t, 2, n)
}

// Fifth review: file-reading functions, nested empty filters, ?? in list
// items.
func TestFifthReviewFindings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	m := tenancy.MembershipsTable
	for _, column := range []string{
		"pg_read_binary_file(pg_relation_filepath('memberships'))", "pg_read_file('x')", "lo_import('x')",
		"pg_ls_dir('.')", "pg_stat_get_activity(NULL)",
	} {
		_, _, err := tenancy.SQLOf(tn.Select(m, column))
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, column)
	}
	for _, empty := range []any{sq.And{sq.Eq{}}, sq.Or{sq.Eq{}, sq.Eq{}}, sq.And{sq.Or{sq.Eq{}}, sq.Eq{}}, map[string]any{}} {
		_, _, err := tenancy.SQLOf(tn.Delete(m).Where(empty))
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, "%#v", empty)
	}
	sql, _, err := tenancy.SQLOf(tn.Select(m, "to_jsonb(role) ?? 'k'").OrderBy("to_jsonb(role) ?? 'k'"))
	require.NoError(t, err)
	require.Equal(t, "SELECT to_jsonb(role) ? 'k' FROM memberships WHERE memberships.workspace_id = $1 ORDER BY to_jsonb(role) ? 'k'", sql)
	var has bool
	require.NoError(t, tn.Select(m, "to_jsonb(role) ?? 'k'").Where(sq.Eq{"user_id": w.owners[0].ID}).QueryRow(ctx).Scan(&has))
	require.False(t, has)
}
