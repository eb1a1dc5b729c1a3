package tenancy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// The tests of migration 5 run as each role row-level security binds once
// the tables are forced: the tables' owner (the one role of a host that
// connects its service as the owner) and the application role. Some also
// run as the superuser, whom nothing binds.

// A host's own handle on meterbase's tables, as a host could define it:
// same names, same scope, so DefineTable accepts them.
var (
	rlsHostWorkspaces  = tenancy.DefineTable("workspaces", tenancy.WorkspaceScoped)
	rlsHostMemberships = tenancy.DefineTable("memberships", tenancy.WorkspaceScoped)
)

// rlsRole is a connection as one role, made for one test's database.
type rlsRole struct {
	name string
	pool func(t *testing.T, db *pgtest.DB, configure ...func(*pgxpool.Config)) *pgxpool.Pool
}

var (
	rlsSuperuser = rlsRole{"superuser", func(t *testing.T, db *pgtest.DB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
		return db.Connect(t, func(c *pgxpool.Config) {
			for _, f := range configure {
				f(c)
			}
		})
	}}
	rlsOwner = rlsRole{"forced owner", func(t *testing.T, db *pgtest.DB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
		return db.OwnerPool(t, configure...)
	}}
	rlsApp = rlsRole{"application role", func(t *testing.T, db *pgtest.DB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
		return db.AppPool(t, configure...)
	}}
	rlsBoundRoles = []rlsRole{rlsOwner, rlsApp}
)

// rlsNoTracer is for raw SQL that leaves out the tenant predicate on purpose.
func rlsNoTracer(c *pgxpool.Config) { c.ConnConfig.Tracer = nil }

// rlsTx runs fn in a transaction of db whose meterbase settings are
// settings (name without the "meterbase." prefix), and rolls it back.
func rlsTx(t *testing.T, db tenancy.DBTX, settings map[string]string, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	for name, value := range settings {
		_, err := tx.Exec(ctx, `SELECT set_config('meterbase.' || $1, $2, true)`, name, value)
		require.NoError(t, err)
	}
	fn(tx)
}

func rlsSQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// rlsRows renders a workspace's row and memberships and whether each
// user exists, read as the superuser, to show that a refused change
// changed nothing.
func rlsRows(t *testing.T, raw *pgxpool.Pool, ws tenancy.WorkspaceID, users ...tenancy.UserID) []string {
	t.Helper()
	rows, err := raw.Query(context.Background(), `
		SELECT format('workspace %s %s %s', workspace_id, name, updated_at) FROM workspaces WHERE workspace_id = $1
		UNION ALL
		SELECT format('membership %s %s %s', user_id, role, updated_at) FROM memberships WHERE workspace_id = $1
		UNION ALL
		SELECT format('user %s %s', user_id, email) FROM users WHERE user_id = ANY($2)
		ORDER BY 1`, ws, users)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// (b) With FORCE on, the last-owner trigger runs as a bound owner: it sets
// the tenant for its own queries, so it still sees the workspace and its
// owners when the statement that fired it (a user's deletion through the
// directory, say) has no tenant of its own.
func TestLastOwnerUnderForce(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			raw := db.RawPool(t)
			pool := role.pool(t, db)
			users := tenancy.NewUsers(nil)
			owner := newUser(t, pool, "owner@example.com")
			second := newUser(t, pool, "second@example.com")
			ws, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Solo", Owner: owner.ID})
			require.NoError(t, err)
			tn := tenantOf(t, pool, ws.ID)
			_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: second.ID, Role: tenancy.RoleMember})
			require.NoError(t, err)
			before := rlsRows(t, raw, ws.ID, owner.ID, second.ID)

			require.ErrorIs(t, users.Delete(ctx, pool, owner.ID), tenancy.ErrLastOwner, "the user's cascade would take the last owner")
			require.ErrorIs(t, members.Remove(ctx, tn, owner.ID), tenancy.ErrLastOwner)
			_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: owner.ID, Role: tenancy.RoleAdmin})
			require.ErrorIs(t, err, tenancy.ErrLastOwner)
			require.Equal(t, before, rlsRows(t, raw, ws.ID, owner.ID, second.ID), "the refusals changed nothing")

			// With a second owner the first may go, as a user too.
			_, err = members.SetRole(ctx, tn, tenancy.SetRoleParams{User: second.ID, Role: tenancy.RoleOwner})
			require.NoError(t, err)
			require.NoError(t, users.Delete(ctx, pool, owner.ID))
			_, err = users.Get(ctx, pool, owner.ID)
			require.ErrorIs(t, err, tenancy.ErrNotFound)
			list, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{}})
			require.NoError(t, err)
			require.Len(t, list.Items, 1)
			require.Equal(t, second.ID, list.Items[0].UserID)
			require.ErrorIs(t, users.Delete(ctx, pool, second.ID), tenancy.ErrLastOwner)

			// Deleting the workspace takes its memberships, the last
			// owner's included; then its last owner may leave.
			require.NoError(t, workspaces.Delete(ctx, tn))
			require.Empty(t, rlsRows(t, raw, ws.ID))
			require.NoError(t, users.Delete(ctx, pool, second.ID))
		})
	}
}

// The trigger's tenant setting is its own: the statement's transaction
// finds its settings as they were.
func TestLastOwnerTriggerPutsBackTheSetting(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			pool := role.pool(t, db, rlsNoTracer)
			a := newUser(t, db.Pool, "a@example.com")
			b := newUser(t, db.Pool, "b@example.com")
			ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Two owners", Owner: a.ID})
			require.NoError(t, err)
			_, err = members.Add(ctx, tenantOf(t, db.Pool, ws.ID), tenancy.AddMemberParams{User: b.ID, Role: tenancy.RoleOwner})
			require.NoError(t, err)
			other := tenancy.NewWorkspaceID().String()

			for _, before := range []string{"", other} {
				rlsTx(t, pool, map[string]string{"workspace_id": before, "directory": "on"}, func(tx pgx.Tx) {
					tag, err := tx.Exec(ctx, `DELETE FROM users WHERE user_id = $1`, b.ID) // fires the trigger on b's membership
					require.NoError(t, err)
					require.EqualValues(t, 1, tag.RowsAffected())
					var after string
					require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('meterbase.workspace_id')`).Scan(&after))
					require.Equal(t, before, after)
				})
			}
		})
	}
}

// (b) A workspace must have an owner from the start: one inserted without
// an owner membership is refused at commit, whoever inserts it and however
// (raw SQL, a host's own handle on workspaces); the owner may come later in
// the same transaction, and a workspace deleted again needs none.
func TestWorkspaceNeedsAnOwnerAtCommit(t *testing.T) {
	t.Parallel()
	for _, role := range []rlsRole{rlsSuperuser, rlsOwner, rlsApp} {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			raw := db.RawPool(t)
			pool := role.pool(t, db)
			owner := newUser(t, db.Pool, "owner@example.com")
			count := func(ws tenancy.WorkspaceID) int {
				var n int
				require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM workspaces WHERE workspace_id = $1`, ws).Scan(&n))
				return n
			}
			requireNoOwner := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, tenancy.ErrCheckViolation)
				var ce *tenancy.ConstraintError
				require.ErrorAs(t, err, &ce)
				require.Equal(t, "workspaces_have_an_owner", ce.Constraint)
				require.Equal(t, "workspaces", ce.Table)
			}

			// Raw SQL: the statement passes, the commit does not.
			ws := tenancy.NewWorkspaceID()
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SELECT set_config('meterbase.workspace_id', $1, true)`, ws.String())
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO workspaces (workspace_id, name) VALUES ($1, 'no owner')`, ws)
			require.NoError(t, err)
			err = tx.Commit(ctx)
			require.Equal(t, "23514", rlsSQLState(err), "%v", err)
			require.ErrorContains(t, err, "has no owner")
			require.Zero(t, count(ws))

			// The host's handle on workspaces: its one-statement
			// transaction commits with the statement, and fails with it.
			ws = tenancy.NewWorkspaceID()
			_, err = tenantOf(t, pool, ws).Insert(rlsHostWorkspaces).Columns("name").Values("no owner").Exec(ctx)
			requireNoOwner(err)
			require.Zero(t, count(ws))
			// In the host's transaction the commit is where it fails.
			ws = tenancy.NewWorkspaceID()
			tx, err = pool.Begin(ctx)
			require.NoError(t, err)
			_, err = tenantOf(t, tx, ws).Insert(rlsHostWorkspaces).Columns("name").Values("no owner").Exec(ctx)
			require.NoError(t, err)
			err = tx.Commit(ctx)
			require.Equal(t, "23514", rlsSQLState(err), "%v", err)
			require.Zero(t, count(ws))

			// The owner after the workspace, in one transaction: fine.
			ws = tenancy.NewWorkspaceID()
			require.NoError(t, tenantOf(t, pool, ws).InTx(ctx, func(tx *tenancy.Tenant) error {
				if _, err := tx.Insert(rlsHostWorkspaces).Columns("name").Values("owned").Exec(ctx); err != nil {
					return err
				}
				_, err := tx.Insert(rlsHostMemberships).Columns("user_id", "role").Values(owner.ID, tenancy.RoleOwner).Exec(ctx)
				return err
			}))
			require.Equal(t, 1, count(ws))
			// Inserted and deleted again before the commit: nothing to own.
			ws = tenancy.NewWorkspaceID()
			require.NoError(t, tenantOf(t, pool, ws).InTx(ctx, func(tx *tenancy.Tenant) error {
				if _, err := tx.Insert(rlsHostWorkspaces).Columns("name").Values("gone").Exec(ctx); err != nil {
					return err
				}
				_, err := tx.Delete(rlsHostWorkspaces).All().Exec(ctx)
				return err
			}))
			require.Zero(t, count(ws))

			// The library's own way, on the pool and in a host transaction.
			created, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
			require.NoError(t, err)
			require.Equal(t, 1, count(created.ID))
			tx, err = pool.Begin(ctx)
			require.NoError(t, err)
			created, err = workspaces.Create(ctx, tx, tenancy.CreateWorkspaceParams{Name: "Globex", Owner: owner.ID})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
			require.Equal(t, 1, count(created.ID))

			// Checked early (SET CONSTRAINTS ... IMMEDIATE), the check
			// puts back the tenant setting it found.
			ws = tenancy.NewWorkspaceID()
			rlsTx(t, pool, map[string]string{"workspace_id": ws.String()}, func(tx pgx.Tx) {
				_, err := tx.Exec(ctx, `INSERT INTO workspaces (workspace_id, name) VALUES ($1, 'early')`, ws)
				require.NoError(t, err)
				_, err = tx.Exec(ctx, `INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, 'owner')`, ws, owner.ID)
				require.NoError(t, err)
				_, err = tx.Exec(ctx, `SELECT set_config('meterbase.workspace_id', $1, true)`, "")
				require.NoError(t, err)
				_, err = tx.Exec(ctx, `SET CONSTRAINTS workspaces_have_an_owner IMMEDIATE`)
				require.NoError(t, err)
				var after string
				require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('meterbase.workspace_id')`).Scan(&after))
				require.Empty(t, after)
			})
		})
	}
}

// The owner check runs as the tables' owner, so, like the last-owner
// trigger, nobody else may attach it to a table of their own, and it
// refuses to serve any table but workspaces.
func TestOwnerCheckFunctionCannotBeBorrowed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	app := db.AppPool(t, func(c *pgxpool.Config) {
		c.MaxConns = 1 // one session, which sees its temporary table
		c.ConnConfig.Tracer = nil
	})
	_, err := app.Exec(ctx, `CREATE TEMP TABLE fake (workspace_id uuid)`)
	require.NoError(t, err)
	_, err = app.Exec(ctx, `CREATE TRIGGER borrowed AFTER INSERT ON pg_temp.fake FOR EACH ROW EXECUTE FUNCTION meterbase_workspace_has_an_owner()`)
	require.ErrorContains(t, err, "permission denied")

	raw := db.RawPool(t)
	_, err = raw.Exec(ctx, `CREATE TABLE fake (workspace_id uuid);
		CREATE TRIGGER borrowed AFTER INSERT ON fake FOR EACH ROW EXECUTE FUNCTION meterbase_workspace_has_an_owner()`)
	require.NoError(t, err)
	_, err = raw.Exec(ctx, `INSERT INTO fake VALUES (gen_random_uuid())`)
	require.ErrorContains(t, err, "a trigger of workspaces only")
}

// (c) users is global, but a tenant context reaches only its own members
// (and the user it acts as), and writes none; the directory (the Users
// repository) reads and writes every user; the operator reads every user.
func TestUsersReachedThroughMemberships(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			pool := role.pool(t, db, rlsNoTracer)
			a1 := newUser(t, db.Pool, "a1@example.com")
			a2 := newUser(t, db.Pool, "a2@example.com")
			b1 := newUser(t, db.Pool, "b1@example.com")
			outsider := newUser(t, db.Pool, "outsider@example.com")
			wsA, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "A", Owner: a1.ID})
			require.NoError(t, err)
			_, err = members.Add(ctx, tenantOf(t, db.Pool, wsA.ID), tenancy.AddMemberParams{User: a2.ID, Role: tenancy.RoleMember})
			require.NoError(t, err)
			_, err = workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "B", Owner: b1.ID})
			require.NoError(t, err)
			tenantA := map[string]string{"workspace_id": wsA.ID.String()}

			emails := func(tx pgx.Tx, sql string, args ...any) []string {
				rows, err := tx.Query(ctx, sql, args...)
				require.NoError(t, err)
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				return got
			}
			rlsTx(t, pool, tenantA, func(tx pgx.Tx) {
				require.Equal(t, []string{"a1@example.com", "a2@example.com"}, emails(tx, `SELECT email FROM users ORDER BY email`))
				require.Empty(t, emails(tx, `SELECT email FROM users WHERE user_id = $1 OR email = $2`, b1.ID, outsider.Email))
			})
			// The user the context acts as, member or not.
			rlsTx(t, pool, map[string]string{"workspace_id": wsA.ID.String(), "user_id": outsider.ID.String()}, func(tx pgx.Tx) {
				require.Equal(t, []string{"a1@example.com", "a2@example.com", "outsider@example.com"}, emails(tx, `SELECT email FROM users ORDER BY email`))
			})
			// No writes, not even to its own members.
			rlsTx(t, pool, tenantA, func(tx pgx.Tx) {
				_, err := tx.Exec(ctx, `INSERT INTO users (user_id, email) VALUES (gen_random_uuid(), 'new@example.com')`)
				require.ErrorContains(t, err, "row-level security")
			})
			rlsTx(t, pool, tenantA, func(tx pgx.Tx) {
				for _, sql := range []string{
					`UPDATE users SET display_name = 'hijacked'`,
					`UPDATE users SET email = 'x' || email WHERE user_id = '` + a1.ID.String() + `'`,
					`DELETE FROM users`,
				} {
					tag, err := tx.Exec(ctx, sql)
					require.NoError(t, err, sql)
					require.Zero(t, tag.RowsAffected(), sql)
				}
			})
			// The operator reads every user, and writes none.
			rlsTx(t, pool, map[string]string{"operator": "test: every user"}, func(tx pgx.Tx) {
				require.Len(t, emails(tx, `SELECT email FROM users`), 4)
				tag, err := tx.Exec(ctx, `UPDATE users SET display_name = 'hijacked'`)
				require.NoError(t, err)
				require.Zero(t, tag.RowsAffected())
			})

			// The tenant handle lists its members with their emails, and
			// adds a user it cannot see (the foreign key's check passes row
			// security by), who then becomes visible to it.
			tn := tenantOf(t, pool, wsA.ID)
			list, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{}})
			require.NoError(t, err)
			require.Len(t, list.Items, 2)
			for _, m := range list.Items {
				require.NotEmpty(t, m.Email)
			}
			_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: outsider.ID, Role: tenancy.RoleMember})
			require.NoError(t, err)
			member, err := members.Get(ctx, tn, outsider.ID)
			require.NoError(t, err)
			require.Equal(t, "outsider@example.com", member.Email)
		})
	}
}

// (c) The Users repository is the directory: it creates, finds (a user of
// any tenant, for sign-in) and deletes users as the bound roles, on a pool
// and in the host's transaction, where the setting that admits it ends with
// each call.
func TestUsersRepositoryIsTheDirectory(t *testing.T) {
	t.Parallel()
	for _, role := range rlsBoundRoles {
		t.Run(role.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t)
			pool := role.pool(t, db, func(c *pgxpool.Config) { c.MaxConns = 1 })
			users := tenancy.NewUsers(nil)

			u, err := users.Create(ctx, pool, tenancy.CreateUserParams{Email: "Ada@Example.com", DisplayName: "Ada"})
			require.NoError(t, err)
			_, err = users.Create(ctx, pool, tenancy.CreateUserParams{Email: "ada@example.com"})
			require.ErrorIs(t, err, tenancy.ErrEmailTaken)
			got, err := users.GetByEmail(ctx, pool, "ADA@example.com")
			require.NoError(t, err)
			require.Equal(t, u, got)
			got, err = users.Get(ctx, pool, u.ID)
			require.NoError(t, err)
			require.Equal(t, u, got)
			_, err = users.Get(ctx, pool, tenancy.NewUserID())
			require.ErrorIs(t, err, tenancy.ErrNotFound)
			// On a pool the setting ended with the call's own transaction.
			var leaked *string
			require.NoError(t, pool.QueryRow(ctx, `SELECT current_setting('meterbase.directory', true)`).Scan(&leaked))
			require.True(t, leaked == nil || *leaked == "", "leaked %v", leaked)

			// In the host's transaction, with another tenant's context: the
			// directory finds the user; the host's next statement is back
			// in the tenant's context, and a value set before is put back.
			other := newUser(t, db.Pool, "other@example.com")
			ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Other's", Owner: other.ID})
			require.NoError(t, err)
			for _, before := range []string{"", "set by the host"} {
				rlsTx(t, pool, map[string]string{"workspace_id": ws.ID.String(), "directory": before}, func(tx pgx.Tx) {
					got, err := users.GetByEmail(ctx, tx, "ada@example.com")
					require.NoError(t, err)
					require.Equal(t, u.ID, got.ID)
					var directory string
					require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('meterbase.directory')`).Scan(&directory))
					require.Equal(t, before, directory)
					if before == "" {
						var visible []string
						rows, err := tx.Query(ctx, `SELECT email FROM users`)
						require.NoError(t, err)
						visible, err = pgx.CollectRows(rows, pgx.RowTo[string])
						require.NoError(t, err)
						require.Equal(t, []string{"other@example.com"}, visible, "only the tenant's members again")
					}
				})
			}

			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			require.NoError(t, users.Delete(ctx, tx, u.ID))
			require.NoError(t, tx.Commit(ctx))
			_, err = users.Get(ctx, pool, u.ID)
			require.ErrorIs(t, err, tenancy.ErrNotFound)
			require.ErrorIs(t, users.Delete(ctx, pool, u.ID), tenancy.ErrNotFound)
		})
	}
}
