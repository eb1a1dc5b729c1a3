package tenancy_test

import (
	"context"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// libraryCall is one call of the library made as a tenant.
type libraryCall func(ctx context.Context, tn *tenancy.Tenant) (any, error)

// Every statement the tenancy package sends, made as tenant A in a host's
// transaction, neither reads nor writes a row of B or C: as the owner with
// row-level security bypassed, and as the application role (see
// pgtest.CheckIsolation for how that is proven). Another package lists its
// own calls the same way.
func TestEveryLibraryCallIsIsolated(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	rows := func(r pgx.Rows, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(r, pgx.RowToMap)
	}
	calls := map[string]libraryCall{
		"workspaces.Get": func(ctx context.Context, tn *tenancy.Tenant) (any, error) { return workspaces.Get(ctx, tn) },
		"workspaces.Rename": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return workspaces.Rename(ctx, tn, tenancy.RenameWorkspaceParams{Name: "Renamed"})
		},
		"workspaces.Delete": func(ctx context.Context, tn *tenancy.Tenant) (any, error) { return nil, workspaces.Delete(ctx, tn) },
		"members.Add": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.Add(ctx, tn, tenancy.AddMemberParams{User: w.outside.ID, Role: tenancy.RoleMember})
		},
		"members.Add of a member of B only": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.Add(ctx, tn, tenancy.AddMemberParams{User: w.owners[1].ID, Role: tenancy.RoleAdmin})
		},
		"members.SetRole": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.SetRole(ctx, tn, tenancy.SetRoleParams{User: w.shared[0].ID, Role: tenancy.RoleAdmin})
		},
		"members.SetRole of B's owner": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.SetRole(ctx, tn, tenancy.SetRoleParams{User: w.owners[1].ID, Role: tenancy.RoleMember})
		},
		"members.Remove": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return nil, members.Remove(ctx, tn, w.shared[0].ID)
		},
		"members.Remove last owner": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return nil, members.Remove(ctx, tn, w.owners[0].ID)
		},
		"members.Get": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.Get(ctx, tn, w.shared[1].ID)
		},
		"members.List": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 2, WithTotal: true}})
		},
		"members.Authorize": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: w.shared[2].ID, MinRole: tenancy.RoleAdmin})
		},
		"statement: count members": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Query(ctx, countMembersWritten, nil))
		},
		"statement: touch memberships": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			tag, err := tn.Exec(ctx, touchEveryMembership, nil)
			return tag.RowsAffected(), err
		},
		"statement: users": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Query(ctx, tenancy.MustPrepare("users", `SELECT email FROM {users} ORDER BY email`), nil))
		},
		"builder: select with OR": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Select(tenancy.MembershipsTable, "user_id", "role").Where("true OR true").OrderBy("user_id").Query(ctx))
		},
		"builder: join users on true": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Select(tenancy.WorkspacesTable, "users.email").Join(tenancy.UsersTable, "true").OrderBy("users.email").Query(ctx))
		},
		"builder: update with OR": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			tag, err := tn.Update(tenancy.MembershipsTable).Set("updated_at", sq.Expr("now()")).
				Where(sq.Or{sq.Eq{"role": "admin"}, sq.Eq{"workspace_id": w.ws[1]}}).Exec(ctx)
			return tag.RowsAffected(), err
		},
		"builder: delete": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			tag, err := tn.Delete(tenancy.MembershipsTable).Where(sq.Eq{"user_id": w.shared[1].ID}).Exec(ctx)
			return tag.RowsAffected(), err
		},
	}
	mine, others := w.ws[0].UUID(), []uuid.UUID{w.ws[1].UUID(), w.ws[2].UUID()}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			db.CheckIsolation(t, mine, others, func(ctx context.Context, tx pgx.Tx) (any, error) {
				return call(ctx, tenantOf(t, tx, w.ws[0]))
			})
		})
	}
}
