package tenancy_test

import (
	"strings"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
)

var (
	wsA = mustWorkspaceID("0190c8a0-0000-7000-8000-00000000000a")
	usX = mustUserID("0190c8a0-0000-7000-8000-0000000000ff")
)

func mustWorkspaceID(s string) tenancy.WorkspaceID {
	id, err := tenancy.ParseWorkspaceID(s)
	if err != nil {
		panic(err)
	}
	return id
}

func mustUserID(s string) tenancy.UserID {
	id, err := tenancy.ParseUserID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// offlineTenant renders SQL without a database; nothing is ever sent.
func offlineTenant(t testing.TB) *tenancy.Tenant {
	scope, err := tenancy.NewScope(wsA)
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(noDB{}, scope)
	require.NoError(t, err)
	return tn
}

type noDB struct{ tenancy.DBTX }

func TestScopeIsValidByConstruction(t *testing.T) {
	t.Parallel()
	_, err := tenancy.NewScope(tenancy.WorkspaceID{})
	var inv *tenancy.InvalidIDError
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "workspace", inv.Kind)
	_, err = tenancy.NewUserScope(wsA, tenancy.UserID{})
	require.ErrorAs(t, err, &inv)
	require.Equal(t, "user", inv.Kind)
	_, err = tenancy.NewTenant(noDB{}, tenancy.Scope{})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput, "the zero Scope is refused")
	_, err = tenancy.NewTenant(nil, tenancy.Scope{})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)

	for _, bad := range []string{"", "nope", "00000000-0000-0000-0000-000000000000", "0190c8a0-0000-7000-8000-00000000000"} {
		_, err := tenancy.ParseWorkspaceID(bad)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, bad)
	}
	id := tenancy.NewWorkspaceID()
	parsed, err := tenancy.ParseWorkspaceID(strings.ToUpper(id.String()))
	require.NoError(t, err)
	require.Equal(t, id, parsed)
	text, err := id.MarshalText()
	require.NoError(t, err)
	var back tenancy.WorkspaceID
	require.NoError(t, back.UnmarshalText(text))
	require.Equal(t, id, back)
	require.Error(t, back.UnmarshalText([]byte("00000000-0000-0000-0000-000000000000")))
}

func TestSelectRendersTenantFirst(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	sql, args, err := tenancy.SQLOf(tn.Select(tenancy.MembershipsTable, "user_id", "role").
		Where("role = ? OR role = ?", "owner", "admin").
		Where(sq.Eq{"user_id": nil}).
		OrderBy("user_id").Limit(5))
	require.NoError(t, err)
	require.Equal(t, "SELECT user_id, role FROM memberships WHERE memberships.workspace_id = $1 AND (role = $2 OR role = $3) AND (user_id IS NULL) ORDER BY user_id LIMIT 5", sql)
	require.Equal(t, []any{wsA, "owner", "admin"}, args)
}

func TestJoinScopesBothSides(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	sql, _, err := tenancy.SQLOf(tn.Select(tenancy.WorkspacesTable, "workspaces.name", "users.email").
		Join(tenancy.MembershipsTable, "memberships.role = ?", "owner").
		Join(tenancy.UsersTable, "users.user_id = memberships.user_id"))
	require.NoError(t, err)
	require.Equal(t, "SELECT workspaces.name, users.email FROM workspaces "+
		"JOIN memberships ON memberships.workspace_id = workspaces.workspace_id AND (memberships.role = $2) "+
		"JOIN users ON "+usersGate+" AND (users.user_id = memberships.user_id) "+
		"WHERE workspaces.workspace_id = $1", sql)
}

func TestUserScopedTable(t *testing.T) {
	t.Parallel()
	notes := tenancy.DefineTable("user_notes", tenancy.UserScoped)
	_, _, err := tenancy.SQLOf(offlineTenant(t).Select(notes, "*"))
	require.ErrorIs(t, err, tenancy.ErrInvalidInput, "a user-scoped table needs a user in the scope")

	scope, err := tenancy.NewUserScope(wsA, usX)
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(noDB{}, scope)
	require.NoError(t, err)
	sql, args, err := tenancy.SQLOf(tn.Select(notes, "body").Where("pinned"))
	require.NoError(t, err)
	require.Equal(t, "SELECT body FROM user_notes WHERE user_notes.workspace_id = $1 AND user_notes.user_id = $2 AND (pinned)", sql)
	require.Equal(t, []any{wsA, usX}, args)

	sql, args, err = tenancy.SQLOf(tn.Insert(notes).Columns("body").Values("hi"))
	require.NoError(t, err)
	require.Equal(t, "INSERT INTO user_notes (workspace_id, user_id, body) VALUES ($1, $2, $3)", sql)
	require.Equal(t, []any{wsA, usX, "hi"}, args)
	_, _, err = tenancy.SQLOf(tn.Insert(notes).Columns("user_id", "body").Values(usX, "hi"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	_, _, err = tenancy.SQLOf(tn.Update(notes).Set("user_id", usX))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
}

func TestWritesKeepTenantColumns(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	m := tenancy.MembershipsTable

	sql, args, err := tenancy.SQLOf(tn.Insert(m).Columns("user_id", "role").Values(usX, "member").
		OnConflictDoUpdate([]string{"user_id"}, "role").Returning("role"))
	require.NoError(t, err)
	require.Equal(t, "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = EXCLUDED.role RETURNING role", sql)
	require.Equal(t, []any{wsA, usX, "member"}, args)

	sql, _, err = tenancy.SQLOf(tn.Insert(m).SetMap(map[string]any{"user_id": usX, "role": "member"}).OnConflictDoNothing("user_id"))
	require.NoError(t, err)
	require.Equal(t, "INSERT INTO memberships (workspace_id, role, user_id) VALUES ($1, $2, $3) ON CONFLICT (workspace_id, user_id) DO NOTHING", sql)

	for name, err := range map[string]error{
		"insert sets workspace_id":    errOf(tenancy.SQLOf(tn.Insert(m).Columns("workspace_id", "role").Values(wsA, "x"))),
		"insert qualified column":     errOf(tenancy.SQLOf(tn.Insert(m).SetMap(map[string]any{"memberships.workspace_id": wsA}))),
		"upsert updates workspace_id": errOf(tenancy.SQLOf(tn.Insert(m).Columns("role").Values("x").OnConflictDoUpdate(nil, "workspace_id"))),
		"update sets workspace_id":    errOf(tenancy.SQLOf(tn.Update(m).Set("workspace_id", wsA))),
		"update via map":              errOf(tenancy.SQLOf(tn.Update(m).SetMap(map[string]any{"role": "x", "workspace_id": wsA}))),
		"update column expression":    errOf(tenancy.SQLOf(tn.Update(m).Set("role = 'x', workspace_id", wsA))),
		"set expression escapes":      errOf(tenancy.SQLOf(tn.Update(m).Set("role", sq.Expr("'x') --")))),
		"where comment":               errOf(tenancy.SQLOf(tn.Delete(m).Where("true --"))),
		"where unbalanced":            errOf(tenancy.SQLOf(tn.Delete(m).Where("true) OR (true"))),
		"where statement":             errOf(tenancy.SQLOf(tn.Select(m, "*").Where("true; DELETE FROM memberships"))),
		"where dollar placeholder":    errOf(tenancy.SQLOf(tn.Select(m, "*").Where("user_id = $1", usX))),
		"column escapes":              errOf(tenancy.SQLOf(tn.Select(m, "1) FROM memberships --"))),
		"order by statement":          errOf(tenancy.SQLOf(tn.Select(m, "*").OrderBy("1; SELECT 1"))),
		"global table":                errOf(tenancy.SQLOf(tn.Select(tenancy.UsersTable, "*"))),
		"insert without rows":         errOf(tenancy.SQLOf(tn.Insert(m).Columns("role"))),
		"update without set":          errOf(tenancy.SQLOf(tn.Update(m).Where("true"))),
		"row of wrong width":          errOf(tenancy.SQLOf(tn.Insert(m).Columns("role", "user_id").Values("x"))),
	} {
		require.Error(t, err, name)
	}

	sql, args, err = tenancy.SQLOf(tn.Update(m).Set("role", "admin").Where(sq.Or{sq.Eq{"role": "member"}, sq.Expr("true")}))
	require.NoError(t, err)
	require.Equal(t, "UPDATE memberships SET role = $2 WHERE memberships.workspace_id = $1 AND ((role = $3 OR true))", sql)
	require.Equal(t, []any{wsA, "admin", "member"}, args)

	// Empty filters narrow nothing and are no Where: the write needs All().
	_, _, err = tenancy.SQLOf(tn.Delete(m).Where(map[string]any{}).Where(sq.And{}).Where(sq.Eq{}))
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, _, err = tenancy.SQLOf(tn.Update(m).Set("role", "x").Where(map[string]any{}))
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	sql, _, err = tenancy.SQLOf(tn.Delete(m).Where(map[string]any{}).All().Returning("user_id"))
	require.NoError(t, err)
	require.Equal(t, "DELETE FROM memberships WHERE memberships.workspace_id = $1 RETURNING user_id", sql)
}

func errOf(_ string, _ []any, err error) error { return err }

func TestSelectClauses(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	sql, args, err := tenancy.SQLOf(tn.Select(tenancy.MembershipsTable, "role", "count(*)").
		LeftJoin(tenancy.WorkspacesTable, "workspaces.name <> ?", "x").
		Where(map[string]any{"role": []string{"admin", "member"}}).
		GroupBy("role").OrderBy("role").Limit(10).Offset(20).ForUpdate())
	require.NoError(t, err)
	require.Equal(t, "SELECT role, count(*) FROM memberships "+
		"LEFT JOIN workspaces ON workspaces.workspace_id = memberships.workspace_id AND (workspaces.name <> $2) "+
		"WHERE memberships.workspace_id = $1 AND (role IN ($3,$4)) GROUP BY role ORDER BY role LIMIT 10 OFFSET 20 FOR UPDATE OF memberships", sql)
	require.Equal(t, []any{wsA, "x", "admin", "member"}, args)

	sql, args, err = tenancy.SQLOf(tn.Insert(tenancy.MembershipsTable).Columns("user_id", "role").
		Values(usX, "member").Values(usX, "admin"))
	require.NoError(t, err)
	require.Equal(t, "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3), ($1, $4, $5)", sql)
	require.Equal(t, []any{wsA, usX, "member", usX, "admin"}, args)

	// Builders are values: a derived builder does not change its parent.
	base := tn.Select(tenancy.MembershipsTable, "role")
	_ = base.Where("role = ?", "owner")
	sql, _, err = tenancy.SQLOf(base)
	require.NoError(t, err)
	require.Equal(t, "SELECT role FROM memberships WHERE memberships.workspace_id = $1", sql)
}

func TestAliases(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	a, b := tenancy.MembershipsTable.As("a"), tenancy.MembershipsTable.As("b")
	sql, args, err := tenancy.SQLOf(tn.Select(a, "a.user_id", "b.user_id").
		Join(b, "b.role = a.role AND b.user_id <> a.user_id").Where("a.role = ?", "admin"))
	require.NoError(t, err)
	require.Equal(t, "SELECT a.user_id, b.user_id FROM memberships AS a "+
		"JOIN memberships AS b ON b.workspace_id = a.workspace_id AND (b.role = a.role AND b.user_id <> a.user_id) "+
		"WHERE a.workspace_id = $1 AND (a.role = $2)", sql)
	require.Equal(t, []any{wsA, "admin"}, args)

	sql, _, err = tenancy.SQLOf(tn.Update(a).Set("role", "member").Where("a.role = ?", "admin"))
	require.NoError(t, err)
	require.Equal(t, "UPDATE memberships AS a SET role = $2 WHERE a.workspace_id = $1 AND (a.role = $3)", sql)
	sql, _, err = tenancy.SQLOf(tn.Delete(a).All())
	require.NoError(t, err)
	require.Equal(t, "DELETE FROM memberships AS a WHERE a.workspace_id = $1", sql)
	// A bad alias is a typed error of the builder that uses it, not a panic.
	bad := tenancy.MembershipsTable.As("x; --")
	_, _, err = tenancy.SQLOf(tn.Select(bad, "role"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	_, _, err = tenancy.SQLOf(tn.Select(a, "role").Join(bad, "true"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	_, _, err = tenancy.SQLOf(tn.Select(a, "role").Join(tenancy.UsersTable.As("u u"), "true"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "a global table's bad alias too")
}

func TestTableDefinitionsAreConsistent(t *testing.T) {
	t.Parallel()
	require.Panics(t, func() { tenancy.DefineTable("memberships", tenancy.Global) }, "a tenant table cannot be redeclared global")
	require.NotPanics(t, func() { tenancy.DefineTable("memberships", tenancy.WorkspaceScoped) })
	require.Panics(t, func() { tenancy.DefineTable("Bad Name", tenancy.WorkspaceScoped) })
	_, _, err := tenancy.SQLOf(offlineTenant(t).Select(tenancy.Table{}, "1"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "the zero Table")
	_, _, err = tenancy.SQLOf(offlineTenant(t).Select(tenancy.MembershipsTable, "role").Join(tenancy.Table{}, "true"))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "the zero Table in a join")
}
