package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

func newUser(t *testing.T, db tenancy.DBTX, email string) tenancy.User {
	t.Helper()
	u, err := users.Create(context.Background(), db, tenancy.CreateUserParams{Email: email, DisplayName: email})
	require.NoError(t, err)
	return u
}

func tenantOf(t *testing.T, db tenancy.DBTX, ws tenancy.WorkspaceID, opts ...tenancy.Option) *tenancy.Tenant {
	t.Helper()
	scope, err := tenancy.NewScope(ws)
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(db, scope, opts...)
	require.NoError(t, err)
	return tn
}

func TestUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	users := tenancy.NewUsers(nil)

	u, err := users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: "  Ada@Example.COM ", DisplayName: " Ada "})
	require.NoError(t, err)
	require.Equal(t, "ada@example.com", u.Email)
	require.Equal(t, "Ada", u.DisplayName)
	require.False(t, u.ID.IsZero())
	require.False(t, u.CreatedAt.IsZero())

	_, err = users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: "ADA@example.com"})
	require.ErrorIs(t, err, tenancy.ErrEmailTaken)

	got, err := users.GetByEmail(ctx, db.Pool, "ada@EXAMPLE.com")
	require.NoError(t, err)
	require.Equal(t, u, got)
	got, err = users.Get(ctx, db.Pool, u.ID)
	require.NoError(t, err)
	require.Equal(t, u, got)

	_, err = users.Get(ctx, db.Pool, tenancy.NewUserID())
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	_, err = users.GetByEmail(ctx, db.Pool, "nobody@example.com")
	require.ErrorIs(t, err, tenancy.ErrNotFound)

	for _, bad := range []string{"", "no-at-sign", "@example.com", "a@", "a b@example.com", "a@b@c"} {
		_, err := users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: bad})
		var inv *tenancy.InvalidInputError
		require.ErrorAs(t, err, &inv, "%q", bad)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	}
	_, err = users.Get(ctx, db.Pool, tenancy.UserID{})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)

	require.NoError(t, users.Delete(ctx, db.Pool, u.ID))
	require.ErrorIs(t, users.Delete(ctx, db.Pool, u.ID), tenancy.ErrNotFound)
}

func TestWorkspaceLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	member := newUser(t, db.Pool, "member@example.com")

	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: " Acme ", Owner: owner.ID})
	require.NoError(t, err)
	require.Equal(t, "Acme", ws.Name)
	tn := tenantOf(t, db.Pool, ws.ID)

	got, err := workspaces.Get(ctx, tn)
	require.NoError(t, err)
	require.Equal(t, ws, got)

	m, err := members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: owner.ID, MinRole: tenancy.RoleOwner})
	require.NoError(t, err)
	require.Equal(t, tenancy.RoleOwner, m.Role, "the creator is the first owner")

	renamed, err := workspaces.Rename(ctx, tn, tenancy.RenameWorkspaceParams{Name: "Acme Inc"})
	require.NoError(t, err)
	require.Equal(t, "Acme Inc", renamed.Name)
	require.False(t, renamed.UpdatedAt.Before(ws.UpdatedAt))

	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.RoleMember})
	require.NoError(t, err)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.RoleAdmin})
	require.ErrorIs(t, err, tenancy.ErrAlreadyMember)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: tenancy.NewUserID(), Role: tenancy.RoleMember})
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.Role("root")})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)

	_, err = workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Ghost", Owner: tenancy.NewUserID()})
	require.ErrorIs(t, err, tenancy.ErrNotFound, "the owner must exist")
	_, err = workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "   ", Owner: owner.ID})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)

	require.NoError(t, workspaces.Delete(ctx, tn))
	_, err = workspaces.Get(ctx, tn)
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	require.ErrorIs(t, workspaces.Delete(ctx, tn), tenancy.ErrNotFound)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.RoleMember})
	require.ErrorIs(t, err, tenancy.ErrNotFound, "a deleted workspace takes no members")

	// The memberships went with the workspace; the users stay.
	raw := db.RawPool(t)
	var n int
	require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE workspace_id = $1`, ws.ID).Scan(&n))
	require.Zero(t, n)
	_, err = users.Get(ctx, db.Pool, member.ID)
	require.NoError(t, err)
}

func TestMembersAndRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	admin := newUser(t, db.Pool, "admin@example.com")
	member := newUser(t, db.Pool, "member@example.com")
	stranger := newUser(t, db.Pool, "stranger@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	tn := tenantOf(t, db.Pool, ws.ID)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: admin.ID, Role: tenancy.RoleAdmin})
	require.NoError(t, err)
	_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.RoleMember})
	require.NoError(t, err)

	// Authorization.
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: admin.ID, MinRole: tenancy.RoleAdmin})
	require.NoError(t, err)
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: admin.ID, MinRole: tenancy.RoleMember})
	require.NoError(t, err)
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: member.ID, MinRole: tenancy.RoleAdmin})
	var forbidden *tenancy.ForbiddenError
	require.ErrorAs(t, err, &forbidden)
	require.Equal(t, tenancy.RoleMember, forbidden.Have)
	require.Equal(t, tenancy.RoleAdmin, forbidden.Need)
	require.ErrorIs(t, err, tenancy.ErrForbidden)
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: stranger.ID, MinRole: tenancy.RoleMember})
	require.ErrorIs(t, err, tenancy.ErrNotMember)

	// The last owner can be neither demoted nor removed.
	_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: owner.ID, Role: tenancy.RoleAdmin})
	require.ErrorIs(t, err, tenancy.ErrLastOwner)
	require.ErrorIs(t, members.Remove(ctx, tn, owner.ID), tenancy.ErrLastOwner)
	require.ErrorIs(t, users.Delete(ctx, db.Pool, owner.ID), tenancy.ErrLastOwner, "nor deleted as a user")

	// With a second owner, the first may go.
	m, err := members.SetRole(ctx, tn, tenancy.SetRoleParams{User: admin.ID, Role: tenancy.RoleOwner})
	require.NoError(t, err)
	require.Equal(t, tenancy.RoleOwner, m.Role)
	_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: owner.ID, Role: tenancy.RoleMember})
	require.NoError(t, err)
	require.NoError(t, members.Remove(ctx, tn, owner.ID))
	require.ErrorIs(t, members.Remove(ctx, tn, owner.ID), tenancy.ErrNotMember)
	_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: stranger.ID, Role: tenancy.RoleAdmin})
	require.ErrorIs(t, err, tenancy.ErrNotMember)

	got, err := members.Get(ctx, tn, member.ID)
	require.NoError(t, err)
	require.Equal(t, "member@example.com", got.Email)
	require.Equal(t, tenancy.RoleMember, got.Role)
	_, err = members.Get(ctx, tn, stranger.ID)
	require.ErrorIs(t, err, tenancy.ErrNotMember)

	// Deleting a user removes their memberships.
	require.NoError(t, users.Delete(ctx, db.Pool, member.ID))
	_, err = members.Get(ctx, tn, member.ID)
	require.ErrorIs(t, err, tenancy.ErrNotMember)
}

func TestListMembersPaginates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	tn := tenantOf(t, db.Pool, ws.ID)
	want := map[tenancy.UserID]bool{owner.ID: true}
	for i := range 24 {
		u := newUser(t, db.Pool, fmt.Sprintf("user%02d@example.com", i))
		_, err := members.Add(ctx, tn, tenancy.AddMemberParams{User: u.ID, Role: tenancy.RoleMember})
		require.NoError(t, err)
		want[u.ID] = true
	}

	var seen []tenancy.Member
	page := tenancy.Page{Limit: 10}
	pages := 0
	for {
		list, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: page})
		require.NoError(t, err)
		pages++
		seen = append(seen, list.Items...)
		if list.Next == "" {
			break
		}
		page.Cursor = list.Next
	}
	require.Equal(t, 3, pages)
	require.Len(t, seen, 25)
	for i, m := range seen {
		require.True(t, want[m.UserID])
		delete(want, m.UserID)
		if i > 0 {
			require.Less(t, seen[i-1].UserID.String(), m.UserID.String(), "stable order")
		}
	}

	_, err = members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Limit: -1}})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Limit: tenancy.MaxPageLimit + 1}})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Cursor: "not-a-cursor"}})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}

// Two owners removing each other at once: exactly one succeeds, and the
// workspace keeps an owner. Run many rounds to give the race its chances.
func TestLastOwnerUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	for round := range 20 {
		a := newUser(t, db.Pool, fmt.Sprintf("a%d@example.com", round))
		b := newUser(t, db.Pool, fmt.Sprintf("b%d@example.com", round))
		ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Race", Owner: a.ID})
		require.NoError(t, err)
		tn := tenantOf(t, db.Pool, ws.ID)
		_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: b.ID, Role: tenancy.RoleOwner})
		require.NoError(t, err)

		ops := []func() error{
			func() error { return members.Remove(ctx, tn, a.ID) },
			func() error {
				_, err := members.SetRole(ctx, tn, tenancy.SetRoleParams{User: b.ID, Role: tenancy.RoleMember})
				return err
			},
			func() error { return users.Delete(ctx, db.Pool, a.ID) },
		}
		first, second := ops[round%3], ops[(round+1)%3]
		if round%3 == 2 {
			second = ops[1]
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, op := range []func() error{first, second} {
			wg.Go(func() { <-start; errs[i] = op() })
		}
		close(start)
		wg.Wait()

		requireOneOwnerOneRefusal(t, raw, ws.ID, errs, tenancy.ErrLastOwner)
	}
}

// The last-owner rule holds for the application role too, whose deletes
// row-level security would otherwise hide from the trigger.
func TestLastOwnerHoldsForApplicationRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t)
	owner := newUser(t, db.Pool, "solo@example.com")
	ws, err := workspaces.Create(ctx, app, tenancy.CreateWorkspaceParams{Name: "Solo", Owner: owner.ID})
	require.NoError(t, err)

	require.ErrorIs(t, users.Delete(ctx, app, owner.ID), tenancy.ErrLastOwner)
	tn := tenantOf(t, app, ws.ID)
	require.ErrorIs(t, members.Remove(ctx, tn, owner.ID), tenancy.ErrLastOwner)
	_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: owner.ID, Role: tenancy.RoleMember})
	require.ErrorIs(t, err, tenancy.ErrLastOwner)

	// Deleting the workspace takes its memberships, owners included.
	require.NoError(t, workspaces.Delete(ctx, tn))
	require.NoError(t, users.Delete(ctx, app, owner.ID))
}

// Under REPEATABLE READ, as the application role, two owners demoting and
// removing each other at once: one wins, the other is refused or told to
// retry, and the workspace keeps an owner.
func TestLastOwnerUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t)
	raw := db.RawPool(t)
	for round := range 10 {
		a := newUser(t, db.Pool, fmt.Sprintf("rr-a%d@example.com", round))
		b := newUser(t, db.Pool, fmt.Sprintf("rr-b%d@example.com", round))
		ws, err := workspaces.Create(ctx, app, tenancy.CreateWorkspaceParams{Name: "RR", Owner: a.ID})
		require.NoError(t, err)
		_, err = members.Add(ctx, tenantOf(t, app, ws.ID), tenancy.AddMemberParams{User: b.ID, Role: tenancy.RoleOwner})
		require.NoError(t, err)

		ops := []func(tn *tenancy.Tenant) error{
			func(tn *tenancy.Tenant) error { return members.Remove(ctx, tn, a.ID) },
			func(tn *tenancy.Tenant) error {
				_, err := members.SetRole(ctx, tn, tenancy.SetRoleParams{User: b.ID, Role: tenancy.RoleMember})
				return err
			},
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, op := range ops {
			wg.Go(func() {
				tx, err := app.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
				if err != nil {
					errs[i] = err
					return
				}
				defer tx.Rollback(ctx) //nolint:errcheck
				<-start
				if errs[i] = op(tenantOf(t, tx, ws.ID)); errs[i] == nil {
					errs[i] = tx.Commit(ctx)
				}
			})
		}
		close(start)
		wg.Wait()

		requireOneOwnerOneRefusal(t, raw, ws.ID, errs, tenancy.ErrLastOwner, tenancy.ErrRetryable)
	}
}

// The last-owner trigger runs as the tables' owner; a caller's temporary
// table of the same name cannot stand in for the real one (with the
// trigger's search_path open to pg_temp, this empty one would have made it
// believe the workspace was being deleted).
func TestLastOwnerTriggerIgnoresTemporaryTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t, func(c *pgxpool.Config) {
		c.MaxConns = 1 // one session, so that the temporary table is seen
		c.ConnConfig.Tracer = nil
	})
	owner := newUser(t, db.Pool, "solo@example.com")
	ws, err := workspaces.Create(ctx, app, tenancy.CreateWorkspaceParams{Name: "Solo", Owner: owner.ID})
	require.NoError(t, err)
	_, err = app.Exec(ctx, `CREATE TEMP TABLE workspaces (workspace_id uuid, updated_at timestamptz)`)
	require.NoError(t, err)

	require.ErrorIs(t, members.Remove(ctx, tenantOf(t, app, ws.ID), owner.ID), tenancy.ErrLastOwner)
}

// Moving the last owner's membership to another workspace is refused too.
func TestLastOwnerCannotBeMovedAway(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	owner := newUser(t, db.Pool, "solo@example.com")
	other := newUser(t, db.Pool, "other@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Solo", Owner: owner.ID})
	require.NoError(t, err)
	dest, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Dest", Owner: other.ID})
	require.NoError(t, err)
	_, err = raw.Exec(ctx, `UPDATE memberships SET workspace_id = $1 WHERE workspace_id = $2 AND user_id = $3`, dest.ID, ws.ID, owner.ID)
	require.ErrorContains(t, err, "would be left without an owner")
}

// requireOneOwnerOneRefusal checks the outcome of two racing removals of a
// workspace's two owners: one owner is left, and exactly one of the two
// calls failed, with one of the errors allowed.
func requireOneOwnerOneRefusal(t *testing.T, raw *pgxpool.Pool, ws tenancy.WorkspaceID, errs []error, allowed ...error) {
	t.Helper()
	var owners int
	require.NoError(t, raw.QueryRow(context.Background(),
		`SELECT count(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'`, ws).Scan(&owners))
	require.Equal(t, 1, owners, "errors: %v", errs)
	failed := 0
	for _, err := range errs {
		if err != nil {
			require.True(t, slices.ContainsFunc(allowed, func(e error) bool { return errors.Is(err, e) }), "unexpected: %v", err)
			failed++
		}
	}
	require.Equal(t, 1, failed, "exactly one of the two must be refused: %v", errs)
}

// The trigger's function runs as the owner, so nobody else may attach it to
// a table of their own.
func TestLastOwnerFunctionCannotBeBorrowed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.Tracer = nil
	})
	_, err := app.Exec(ctx, `CREATE TEMP TABLE fake (workspace_id uuid, role text)`)
	require.NoError(t, err)
	_, err = app.Exec(ctx, `CREATE TRIGGER borrowed AFTER DELETE ON pg_temp.fake FOR EACH ROW EXECUTE FUNCTION meterbase_keep_an_owner()`)
	require.ErrorContains(t, err, "permission denied")

	// Even the owner, attaching it elsewhere, finds it refuses.
	raw := db.RawPool(t)
	_, err = raw.Exec(ctx, `CREATE TABLE fake (workspace_id uuid, role text);
		CREATE TRIGGER borrowed AFTER DELETE ON fake FOR EACH ROW EXECUTE FUNCTION meterbase_keep_an_owner();
		INSERT INTO fake VALUES (gen_random_uuid(), 'owner')`)
	require.NoError(t, err)
	_, err = raw.Exec(ctx, `DELETE FROM fake`)
	require.ErrorContains(t, err, "a trigger of memberships only")
}
