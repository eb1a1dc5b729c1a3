package tenancy_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// groupEnd returns the index of the parenthesis that closes the one at
// s[0], skipping quoted text, or -1.
func groupEnd(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return -1
			}
			i += end + 1
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// usersGate is what a join of users carries: a tenant reaches only its
// own members.
const usersGate = "users.user_id IN (SELECT memberships.user_id FROM memberships WHERE memberships.workspace_id = $1)"

// requireTenantHolds checks the shape of a rendered statement: the tenant
// predicate comes first, and each caller predicate is one parenthesised
// group ANDed after it, so that nothing the caller wrote can OR around it.
func requireTenantHolds(t *testing.T, sql string, args []any, prefix string) {
	t.Helper()
	require.True(t, strings.HasPrefix(sql, prefix), sql)
	require.Equal(t, wsA, args[0], sql)
	rest := sql[len(prefix):]
	for rest != "" {
		require.True(t, strings.HasPrefix(rest, " AND ("), "caller predicate not ANDed as a group: %s", sql)
		group := rest[len(" AND "):]
		end := groupEnd(group)
		require.Positive(t, end, "unbalanced group: %s", sql)
		rest = group[end+1:]
	}
}

// requireOneGroup checks that rest opens with prefix, then one
// parenthesised group, then exactly suffix: the fragment inside cannot have
// closed the group early.
func requireOneGroup(t *testing.T, sql, prefix, suffix string) {
	t.Helper()
	require.True(t, strings.HasPrefix(sql, prefix), sql)
	group := sql[len(prefix):]
	end := groupEnd(group)
	require.Positive(t, end, "unbalanced group: %s", sql)
	require.Equal(t, suffix, group[end+1:], "the fragment escaped its group: %s", sql)
}

// FuzzFragments feeds one caller fragment to every place the builders take
// one. Whatever it is, the handle either refuses it with ErrUnsafeSQL or
// renders a statement whose tenant predicate stands first and whose
// fragment stays inside its own group.
//
//	go test -run '^$' -fuzz FuzzFragments -fuzztime 1m ./tenancy
func FuzzFragments(f *testing.F) {
	for _, seed := range []string{
		"role = ?", "a OR b", "true) OR (true", "x = 'it''s' OR (y)", "(((a)))", "a = ')' OR b",
		"1=1 --", "a; DROP TABLE users", `"weird"")" = 1`, "$1 = $1", "", "  ", "/* c */ a", "a ? b",
		`E'\'' <> '' ) OR ( E'\'' <> ''`, "'owner', workspace_id = ?", "workspaces.name FROM memberships m",
		`"set_config"('x', 'y', false)`, "(SELECT 1)", "a ?? b", "now()",
		"DISTINCT o.workspace_id FROM memberships AS o JOIN memberships ON o IS NOT NULL OR o IS DISTINCT",
		"count(*) FILTER (WHERE role = 'owner')", "role DESC NULLS LAST",
	} {
		f.Add(seed)
	}
	tn := offlineTenant(f)
	m := tenancy.MembershipsTable
	refused := func(t *testing.T, err error) bool {
		if err != nil {
			require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
			return true
		}
		return false
	}
	f.Fuzz(func(t *testing.T, frag string) {
		const where = "SELECT user_id FROM memberships WHERE memberships.workspace_id = $1"
		for _, args := range [][]any{nil, {1}, {1, 2}} {
			sql, got, err := tenancy.SQLOf(tn.Select(m, "user_id").Where(frag, args...))
			if !refused(t, err) {
				requireTenantHolds(t, sql, got, where)
			}
			sql, got, err = tenancy.SQLOf(tn.Delete(m).Where(frag, args...).All())
			if !refused(t, err) {
				requireTenantHolds(t, sql, got, "DELETE FROM memberships WHERE memberships.workspace_id = $1")
			}
			sql, got, err = tenancy.SQLOf(tn.Update(m).Set("role", sq.Expr(frag, args...)).Where("true"))
			if !refused(t, err) {
				require.Equal(t, wsA, got[0])
				requireOneGroup(t, sql, "UPDATE memberships SET role = ", " WHERE memberships.workspace_id = $1 AND (true)")
			}
			sql, got, err = tenancy.SQLOf(tn.Select(m, "user_id").Join(tenancy.UsersTable, frag, args...))
			if !refused(t, err) {
				require.Equal(t, wsA, got[0])
				requireOneGroup(t, sql, "SELECT user_id FROM memberships JOIN users ON "+usersGate+" AND ", " WHERE memberships.workspace_id = $1")
			}
		}
		sql, got, err := tenancy.SQLOf(tn.Select(m, "user_id").OrderBy(frag))
		if !refused(t, err) {
			require.Equal(t, []any{wsA}, got)
			require.True(t, strings.HasPrefix(sql, where+" ORDER BY "), sql)
			requireNoTopLevelClause(t, frag)
		}
		// A column is written bare, before the handle's own FROM.
		sql, got, err = tenancy.SQLOf(tn.Select(m, frag))
		if !refused(t, err) {
			require.Equal(t, []any{wsA}, got)
			require.True(t, strings.HasPrefix(sql, "SELECT "), sql)
			require.True(t, strings.HasSuffix(sql, " FROM memberships WHERE memberships.workspace_id = $1"), sql)
			requireNoTopLevelClause(t, frag)
		}
		_, _, err = tenancy.SQLOf(tn.Select(m, "role").GroupBy(frag))
		if !refused(t, err) {
			requireNoTopLevelClause(t, frag)
		}
		_, _, err = tenancy.SQLOf(tn.Delete(m).All().Returning(frag))
		if !refused(t, err) {
			requireNoTopLevelClause(t, frag)
		}
	})
}

// requireNoTopLevelClause checks, independently of the handle's lexer,
// that a bare list item holds no word outside quotes and parentheses that
// could begin a clause of its own.
func requireNoTopLevelClause(t *testing.T, frag string) {
	t.Helper()
	depth := 0
	for i := 0; i < len(frag); i++ {
		switch c := frag[i]; {
		case c == '\'' || c == '"':
			end := strings.IndexByte(frag[i+1:], c)
			require.GreaterOrEqual(t, end, 0, "unterminated quote accepted: %q", frag)
			i += end + 1
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && (c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'):
			j := i
			for j < len(frag) && (frag[j] == '_' || frag[j] >= '0' && frag[j] <= '9' || frag[j] >= 'A' && frag[j] <= 'Z' || frag[j] >= 'a' && frag[j] <= 'z' || frag[j] >= 0x80) {
				j++
			}
			switch strings.ToLower(frag[i:j]) {
			case "from", "join", "using", "where", "window", "union", "intersect", "except", "limit", "offset", "fetch", "for", "having", "group", "order", "returning":
				t.Fatalf("clause word %q accepted at the top level of %q", frag[i:j], frag)
			}
			i = j - 1
		}
	}
}

// randomPredicate builds a predicate tree of the kinds callers write: ORs,
// nested And/Or, empty maps, nil values, and conditions that name other
// tenants outright.
func randomPredicate(r *rand.Rand, depth int, others []tenancy.WorkspaceID) sq.Sqlizer {
	leaves := []func() sq.Sqlizer{
		func() sq.Sqlizer { return sq.Eq{"role": []string{"owner", "admin", "member"}[r.IntN(3)]} },
		func() sq.Sqlizer { return sq.Eq{"workspace_id": others[r.IntN(len(others))]} },
		func() sq.Sqlizer { return sq.Eq{} },
		func() sq.Sqlizer { return sq.Eq{"user_id": nil} },
		func() sq.Sqlizer { return sq.NotEq{"role": nil} },
		func() sq.Sqlizer { return sq.Expr("true") },
		func() sq.Sqlizer { return sq.Expr("workspace_id = ? OR true", others[r.IntN(len(others))]) },
		func() sq.Sqlizer { return sq.Or{} },
		func() sq.Sqlizer { return sq.And{} },
	}
	if depth == 0 || r.IntN(3) == 0 {
		return leaves[r.IntN(len(leaves))]()
	}
	n := r.IntN(4)
	parts := make([]sq.Sqlizer, n)
	for i := range parts {
		parts[i] = randomPredicate(r, depth-1, others)
	}
	if r.IntN(2) == 0 {
		return sq.Or(parts)
	}
	return sq.And(parts)
}

// Random caller predicates run against a real database with three tenants
// never reach beyond tenant A, with the handle's predicate alone (as the
// owner, whom row-level security does not filter).
func TestRandomPredicatesStayInTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	others := w.ws[1:]
	r := rand.New(rand.NewPCG(1, 2))

	for i := range 300 {
		preds := []sq.Sqlizer{randomPredicate(r, 3, others), randomPredicate(r, 2, others)}
		q := tn.Select(tenancy.MembershipsTable, "workspace_id")
		for _, p := range preds {
			q = q.Where(p)
		}
		rows, err := q.Query(ctx)
		require.NoError(t, err, "case %d", i)
		got, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.WorkspaceID])
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), 4)
		for _, ws := range got {
			require.Equal(t, w.ws[0], ws, "case %d leaked a row of another tenant", i)
		}

		// The same predicates on a write, rolled back.
		err = tn.InTx(ctx, func(tx *tenancy.Tenant) error {
			u := tx.Update(tenancy.MembershipsTable).Set("updated_at", sq.Expr("now()")).All().Returning("workspace_id")
			for _, p := range preds {
				u = u.Where(p)
			}
			rows, err := u.Query(ctx)
			if err != nil {
				return err
			}
			touched, err := pgx.CollectRows(rows, pgx.RowTo[tenancy.WorkspaceID])
			if err != nil {
				return err
			}
			for _, ws := range touched {
				require.Equal(t, w.ws[0], ws, "case %d updated a row of another tenant", i)
			}
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
	}
}

var errRollback = errorString("rollback")

type errorString string

func (e errorString) Error() string { return string(e) }
