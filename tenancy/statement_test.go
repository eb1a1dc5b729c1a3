package tenancy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// Hand-written SQL that names a tenant table bare, in any spelling, or that
// could reach past itself, is refused when it is prepared. The list holds
// every escape earlier reviews found in the old filter-counting check, the
// three of the last review (a quoted name against a keyword, a one-row
// VALUES nested in an INSERT ... SELECT, a data-modifying CTE filtered
// outside) among them.
func TestPrepareRefuses(t *testing.T) {
	t.Parallel()
	for _, sql := range []string{
		// Bare tenant tables, however written.
		`SELECT count(*) FROM memberships WHERE workspace_id = @workspace_id`,
		`SELECT count(*) FROM public.memberships WHERE true`,
		`SELECT count(*) FROM ONLY memberships`,
		`SELECT count(*) FROM "memberships"`,
		`SELECT count(*) FROM {workspaces} w JOIN"memberships" m ON true`,
		`SELECT count(*) FROM {workspaces} w, memberships m WHERE w.workspace_id = @workspace_id`,
		`INSERT INTO {memberships} (user_id, role) SELECT user_id, 'member' FROM memberships WHERE workspace_id = (SELECT x FROM (VALUES (@workspace_id)) v(x))`,
		`INSERT INTO memberships (workspace_id, user_id, role) SELECT @other, @u, 'member' FROM (VALUES (@workspace_id, 1)) v(a, b)`,
		`WITH x AS (DELETE FROM memberships RETURNING workspace_id) SELECT count(*) FROM x WHERE workspace_id = @workspace_id`,
		`UPDATE workspaces SET name = 'x' WHERE @workspace_id = @workspace_id`,
		`SELECT email FROM users`,
		`SELECT count(*) FROM {memberships} m JOIN users u USING (user_id)`,
		// What would make the reading unreliable, or the statement more than one.
		`SELECT 1 FROM {memberships}; SELECT 1`,
		`SELECT $1 FROM {memberships}`,
		`DO $$ BEGIN END $$`,
		`SELECT E'\'' FROM {memberships}`,
		`SELECT U&"set!005fconfig" UESCAPE '!' ('meterbase.operator', 'x', false)`,
		`SELECT 1 FROM {memberships} /* unterminated`,
		`SELECT 1 FROM {memberships} WHERE role = 'owner`,
		`SELECT 1 FROM {memberships} WHERE (role = 'x'`,
		`SELECT 1 FROM {memberships} WHERE role = 'x')`,
		`SELECT "a""b" FROM {memberships}`,
		`SELECT 1 FROM {nonesuch}`,
		`SELECT 1 FROM {users}x JOIN {Memberships} m ON true`,
		`SELECT 1 FROM {operation_types}`,
		// Statements other than one query or write.
		`SET SESSION meterbase.operator = 'x'`,
		`RESET meterbase.workspace_id`,
		`TABLE memberships`,
		`MERGE INTO {memberships} m USING {workspaces} w ON true WHEN MATCHED THEN DELETE`,
		`COPY (SELECT 1) TO STDOUT`,
		`SELECT m.workspace_id INTO TEMP mine FROM {memberships} m`,
		`UPDATE {memberships} SET role = 'x' WHERE CURRENT OF c`,
		// Settings, other sessions, files: not even through {table}.
		`SELECT set_config('meterbase.operator', 'x', true) FROM {memberships}`,
		`SELECT pg_advisory_lock(1) FROM {memberships}`,
		`SELECT "pg_advisory_lock"(1)`,
		`SELECT pg_catalog.pg_terminate_backend(1)`,
		`SELECT pg_sleep (1)`,
		`SELECT query_to_xml('SELECT 1', true, true, '')`,
		`SELECT pg_read_binary_file('x')`,
		`SELECT setval('s', 1)`,
		`SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'memberships'`,
		`SELECT relname FROM pg_catalog.pg_class`,
		`SELECT most_common_vals::text FROM "pg_stats"`,
		`SELECT table_name FROM information_schema.tables`,
		// Tenant columns are the handle's to fill, and never change.
		`UPDATE {memberships} SET workspace_id = @other`,
		`UPDATE {memberships} m SET (role, workspace_id) = ('x', @other)`,
		`INSERT INTO {memberships} (workspace_id, user_id, role) VALUES (@other, @u, 'member')`,
		`INSERT INTO {memberships} (user_id, role) VALUES (@u, 'member') ON CONFLICT (workspace_id, user_id) DO UPDATE SET workspace_id = @other`,
		`INSERT INTO {memberships} (user_id, role) SELECT @u, 'member' UNION ALL SELECT @other, @u`,
		`INSERT INTO {memberships} (user_id, role) SELECT DISTINCT @u, 'member'`,
		`INSERT INTO {memberships} VALUES (@u, 'member')`,
		`INSERT INTO {memberships} (user_id, role) DEFAULT VALUES`,
		`UPDATE {users} SET email = 'x'`,
		// The handle's parameters in another spelling.
		`SELECT 1 FROM {memberships} WHERE workspace_id = @WORKSPACE_ID`,
		// Too long, too deep.
		`SELECT 1 FROM {memberships} WHERE ` + strings.Repeat("1 + ", tenancy.MaxStatementBytes/4) + `1 = 1`,
		`SELECT ` + strings.Repeat("(", 100) + `1` + strings.Repeat(")", 100),
	} {
		_, err := tenancy.Prepare("t", sql)
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "%.200s", sql)
	}
	for _, sql := range []string{"SELECT 1 FROM {memberships} WHERE role = 'a\x00'", "SELECT 1 FROM {memberships} WHERE role = '\xff'"} {
		_, err := tenancy.Prepare("t", sql)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, "text Postgres cannot store")
	}
	_, err := tenancy.Prepare("", `SELECT 1`)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	require.Panics(t, func() { tenancy.MustPrepare("t", `SELECT 1 FROM memberships`) })
}

// What the handle sends for each place a {table} may stand.
func TestPrepareExpands(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, out string }{
		{`SELECT count(*) FROM {memberships} WHERE role = @role OR true`,
			`SELECT count(*) FROM (SELECT * FROM memberships WHERE memberships.workspace_id = $1) AS memberships WHERE role = $2 OR true`},
		{`SELECT m.role FROM {memberships} m JOIN {workspaces} AS w ON w.workspace_id = m.workspace_id`,
			`SELECT m.role FROM (SELECT * FROM memberships WHERE memberships.workspace_id = $1) m JOIN (SELECT * FROM workspaces WHERE workspaces.workspace_id = $1) AS w ON w.workspace_id = m.workspace_id`},
		{`UPDATE {memberships} m SET role = @role WHERE m.user_id = @u OR true RETURNING m.role`,
			`UPDATE memberships m SET role = $2 WHERE m.workspace_id = $1 AND ( m.user_id = $3 OR true )RETURNING m.role`},
		{`DELETE FROM {memberships} -- every row`,
			`DELETE FROM memberships   WHERE memberships.workspace_id = $1 `},
		{`WITH gone AS (DELETE FROM {memberships} WHERE role = 'x' RETURNING user_id) SELECT count(*) FROM gone`,
			`WITH gone AS (DELETE FROM memberships WHERE memberships.workspace_id = $1 AND ( role = 'x' )RETURNING user_id) SELECT count(*) FROM gone`},
		{`WITH gone AS (DELETE FROM {memberships}) SELECT 1`,
			`WITH gone AS (DELETE FROM memberships WHERE memberships.workspace_id = $1 ) SELECT 1`},
		{`INSERT INTO {memberships} (user_id, role) VALUES (@u, 'member'), (@v, 'admin') ON CONFLICT (workspace_id, user_id) DO NOTHING`,
			`INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, 'member'), ($1, $3, 'admin') ON CONFLICT (workspace_id, user_id) DO NOTHING`},
		{`INSERT INTO {memberships} AS m (user_id, role) SELECT user_id, 'member' FROM {memberships} WHERE role = 'owner'`,
			`INSERT INTO memberships AS m (workspace_id, user_id, role) SELECT $1, user_id, 'member' FROM (SELECT * FROM memberships WHERE memberships.workspace_id = $1) AS memberships WHERE role = 'owner'`},
		{`SELECT email FROM {users} WHERE user_id = @u`,
			`SELECT email FROM (SELECT * FROM users WHERE users.user_id IN (SELECT memberships.user_id FROM memberships WHERE memberships.workspace_id = $1)) AS users WHERE user_id = $2`},
		{`SELECT @a, @b, @a, @workspace_id FROM {workspaces} WHERE a <@ b`,
			`SELECT $2, $3, $2, $1 FROM (SELECT * FROM workspaces WHERE workspaces.workspace_id = $1) AS workspaces WHERE a <@ b`},
	}
	for _, c := range cases {
		st, err := tenancy.Prepare("t", c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.out, st.SQL(), c.in)
	}
	_, err := tenancy.Prepare("stage", `SELECT count(*) FROM pg_temp.meterbase_stage_events`)
	require.NoError(t, err, "a library's stage is a temporary table of its own")
	_, err = tenancy.Prepare("temp", `SELECT count(*) FROM pg_temp.memberships`)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	st := tenancy.MustPrepare("params", `SELECT @b, @a, @b FROM {memberships}`)
	require.Equal(t, []string{"b", "a"}, st.Params())
	require.Equal(t, []string{"memberships"}, st.Tables())
	require.Equal(t, "params", st.Name())
}

// Arguments are strict: a missing, misspelt or extra one, or one the
// handle supplies, is an error before any SQL is sent; so is text Postgres
// cannot store.
func TestStatementArgumentsAreStrict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tn := offlineTenant(t) // its connection fails the test if anything is sent
	st := tenancy.MustPrepare("by role", `SELECT count(*) FROM {memberships} WHERE role = @role`)
	for _, args := range []tenancy.Args{
		nil,
		{"rol": "owner"},
		{"role": "owner", "extra": 1},
		{"role": "owner", "workspace_id": wsA},
		{"role": "own\x00er"},
		{"role": "\xff"},
		{"role": pgx.NamedArgs{"x": 1}},
	} {
		_, err := tn.Exec(ctx, st, args)
		require.Error(t, err, "%v", args)
		require.True(t, errorsIsAny(err, tenancy.ErrInvalidInput, tenancy.ErrUnsafeSQL), "%v: %v", args, err)
	}
	_, err := tn.Exec(ctx, nil, nil)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = tn.Exec(ctx, &tenancy.Statement{}, nil)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var zero *tenancy.Tenant
	_, err = zero.Exec(ctx, st, tenancy.Args{"role": "owner"})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}

// A tenant table defined after a statement was prepared is still found
// bare in it, before the statement first runs.
func TestStatementRecheckedForLaterTables(t *testing.T) {
	t.Parallel()
	st := tenancy.MustPrepare("late", `SELECT count(*) FROM late_notes_for_recheck`)
	tenancy.DefineTable("late_notes_for_recheck", tenancy.WorkspaceScoped)
	_, err := offlineTenant(t).Exec(context.Background(), st, nil)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
}

func TestPrepareFS(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"sql/count_members.sql": {Data: []byte(`SELECT count(*) FROM {memberships} -- all of them`)},
		"sql/rename.sql":        {Data: []byte(`UPDATE {workspaces} SET name = @name`)},
		"sql/notes.txt":         {Data: []byte(`not a statement`)},
	}
	st, err := tenancy.PrepareFS(fsys, "sql")
	require.NoError(t, err)
	require.Len(t, st, 2)
	require.Equal(t, []string{"name"}, st["rename"].Params())
	_, err = tenancy.PrepareFS(fsys, "none")
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	fsys["sql/bad.sql"] = &fstest.MapFile{Data: []byte(`SELECT 1 FROM memberships`)}
	_, err = tenancy.PrepareFS(fsys, "sql")
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	require.Contains(t, err.Error(), "bad")
}

// Against a real database, as the owner (row-level security bypassed), so
// that only the expansion stands between the tenants: statements that try
// to reach every tenant's rows reach only A's.
func TestStatementsStayInTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	others := rowsOf(t, raw, w.ws[1], w.ws[2])

	count := func(sql string, args tenancy.Args) int64 {
		var n int64
		require.NoError(t, tn.QueryRow(ctx, tenancy.MustPrepare("t", sql), args).Scan(&n), sql)
		return n
	}
	require.EqualValues(t, 4, count(`SELECT count(*) FROM {memberships} WHERE role = 'owner' OR true`, nil))
	require.EqualValues(t, 4, count(`SELECT count(*) FROM {memberships} a, {workspaces} b WHERE a.workspace_id = b.workspace_id OR true`, nil))
	require.EqualValues(t, 4, count(`SELECT count(*) FROM {memberships} m WHERE m.workspace_id IN (SELECT workspace_id FROM {workspaces})`, nil))
	require.EqualValues(t, 4, count(`SELECT count(*) FROM {users}`, nil), "A's members only, of 10 users")
	require.EqualValues(t, 0, count(`SELECT count(*) FROM {users} WHERE user_id = @u`, tenancy.Args{"u": w.outside.ID}))
	var locked int64
	require.NoError(t, tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		return tx.QueryRow(ctx, tenancy.MustPrepare("lock", `SELECT count(*) FROM (SELECT 1 FROM {memberships} m FOR UPDATE OF m) x`), nil).Scan(&locked)
	}))
	require.EqualValues(t, 4, locked)

	// Writes that say "every row" change A's rows only.
	exec := func(sql string, args tenancy.Args) int64 {
		tag, err := tn.Exec(ctx, tenancy.MustPrepare("t", sql), args)
		require.NoError(t, err, sql)
		return tag.RowsAffected()
	}
	require.EqualValues(t, 4, exec(`UPDATE {memberships} SET updated_at = now() WHERE role = 'x' OR true`, nil))
	require.EqualValues(t, 1, exec(`UPDATE {workspaces} SET name = @name -- no WHERE at all`, tenancy.Args{"name": "Renamed"}))
	require.EqualValues(t, 1, exec(`INSERT INTO {memberships} (user_id, role) SELECT user_id, 'member' FROM (VALUES (@u::uuid)) v(user_id)`, tenancy.Args{"u": w.outside.ID}))
	err := tn.QueryRow(ctx, tenancy.MustPrepare("cte",
		`WITH x AS (DELETE FROM {memberships} WHERE role = 'member' OR true RETURNING workspace_id) SELECT count(*) FROM x WHERE true`), nil).Scan(new(int64))
	require.ErrorIs(t, err, tenancy.ErrCheckViolation, "emptying A would leave it without an owner; no other tenant's row was even a candidate")
	_, err = tn.Exec(ctx, tenancy.MustPrepare("t", `DELETE FROM {memberships} -- every row`), nil)
	require.ErrorIs(t, err, tenancy.ErrCheckViolation)
	require.EqualValues(t, 3, exec(`DELETE FROM {memberships} WHERE role <> 'owner' OR user_id IS NULL`, nil))

	require.Equal(t, others, rowsOf(t, raw, w.ws[1], w.ws[2]), "B and C must be untouched")
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
