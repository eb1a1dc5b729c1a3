package tenancy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// A context that ends inside InTx, in the host's transaction: the work is
// rolled back and the tenant's row-level security context is gone, so the
// host's later raw SQL sees no tenant's rows and its commit keeps nothing
// of the failed call.
func TestInTxUndoneWhenContextEndsInHostTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	// The host's own raw SQL below names no tenant, on purpose.
	app := db.AppPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
	raw := db.RawPool(t)
	bg := context.Background()

	host, err := app.Begin(bg)
	require.NoError(t, err)
	defer host.Rollback(bg) //nolint:errcheck
	tn := tenantOf(t, host, w.ws[0])
	ctx, cancel := context.WithCancel(bg)
	err = tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		if _, err := workspaces.Rename(ctx, tx, tenancy.RenameWorkspaceParams{Name: "Half done"}); err != nil {
			return err
		}
		cancel() // the client goes away mid-call
		_, err := members.Add(ctx, tx, tenancy.AddMemberParams{User: w.outside.ID, Role: tenancy.RoleMember})
		return err
	})
	require.ErrorIs(t, err, context.Canceled)

	requireNothingVisible(t, host, "memberships")
	require.NoError(t, host.Commit(bg))
	var name string
	require.NoError(t, raw.QueryRow(bg, `SELECT name FROM workspaces WHERE workspace_id = $1`, w.ws[0]).Scan(&name))
	require.Equal(t, "Shared name", name, "the host's commit kept part of a failed call")

	// The same with a context that ends just as fn returns success: the
	// call either finishes whole (nil) or not at all (an error).
	host, err = app.Begin(bg)
	require.NoError(t, err)
	tn = tenantOf(t, host, w.ws[0])
	ctx, cancel = context.WithCancel(bg)
	err = tn.InTx(ctx, func(tx *tenancy.Tenant) error {
		_, err := workspaces.Rename(ctx, tx, tenancy.RenameWorkspaceParams{Name: "Renamed"})
		cancel()
		return err
	})
	requireNothingVisible(t, host, "memberships")
	require.NoError(t, host.Commit(bg))
	require.NoError(t, raw.QueryRow(bg, `SELECT name FROM workspaces WHERE workspace_id = $1`, w.ws[0]).Scan(&name))
	if err != nil {
		require.Equal(t, "Shared name", name)
	} else {
		require.Equal(t, "Renamed", name)
	}
}

// Creating a workspace in the host's transaction with a context that ends
// midway (after each of its statements in turn) leaves no workspace behind
// once the host commits, owner or not.
func TestCreateWorkspaceCancelledInHostTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	raw := db.RawPool(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	bg := context.Background()
	canceller := &cancelAfter{}
	pool := db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = canceller })
	reached := false
	for n := 1; n <= 20 && !reached; n++ {
		host, err := pool.Begin(bg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(bg)
		canceller.arm(n, cancel)
		_, err = workspaces.Create(ctx, host, tenancy.CreateWorkspaceParams{Name: "Doomed", Owner: owner.ID})
		canceller.arm(0, nil)
		cancel()
		reached = err == nil
		_ = host.Commit(bg) // whatever the call said, the host commits
		var orphans int
		require.NoError(t, raw.QueryRow(bg, `SELECT count(*) FROM workspaces w WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.workspace_id = w.workspace_id AND m.role = 'owner')`).Scan(&orphans))
		require.Zero(t, orphans, "cancelled at statement %d", n)
	}
	require.True(t, reached, "the loop must reach an uncancelled run")
}

// A workspace and its owner go in one statement, so a host that checks its
// constraints immediately can still create one.
func TestCreateWorkspaceUnderImmediateConstraints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "owner@example.com")
	for _, pool := range []*pgxpool.Pool{db.AppPool(t), db.OwnerPool(t)} {
		host, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = host.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`)
		require.NoError(t, err)
		ws, err := workspaces.Create(ctx, host, tenancy.CreateWorkspaceParams{Name: "Immediate", Owner: owner.ID})
		require.NoError(t, err)
		require.NoError(t, host.Commit(ctx))
		_, err = members.Authorize(ctx, tenantOf(t, pool, ws.ID), tenancy.AuthorizeParams{User: owner.ID, MinRole: tenancy.RoleOwner})
		require.NoError(t, err)
	}
}

// cancelAfter is a tracer that cancels a context when the n-th statement
// (or batch) is about to be sent, so that it is never sent.
type cancelAfter struct {
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) arm(n int, cancel context.CancelFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n, c.cancel = n, cancel
}

func (c *cancelAfter) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel == nil {
		return
	}
	if c.n--; c.n == 0 {
		c.cancel()
	}
}

func (c *cancelAfter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.tick()
	return ctx
}

func (c *cancelAfter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *cancelAfter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.tick()
	return ctx
}

func (c *cancelAfter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *cancelAfter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// When even the rollback cannot run (rows left open by fn keep the
// connection busy), the host's connection is closed: its transaction
// cannot commit what fn did.
func TestInTxClosesHostConnectionWhenRollbackFails(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	bg := context.Background()
	conn, err := db.Pool.Acquire(bg)
	require.NoError(t, err)
	defer conn.Release()
	host, err := conn.Begin(bg)
	require.NoError(t, err)
	tn := tenantOf(t, host, w.ws[0])
	boom := errors.New("boom")
	err = tn.InTx(bg, func(tx *tenancy.Tenant) error {
		if _, err := workspaces.Rename(bg, tx, tenancy.RenameWorkspaceParams{Name: "Leaked"}); err != nil {
			return err
		}
		_, err := tx.Select(tenancy.MembershipsTable, "user_id").Query(bg) // never closed
		require.NoError(t, err)
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Error(t, host.Commit(bg), "the host's transaction must not commit")
	var name string
	require.NoError(t, raw.QueryRow(bg, `SELECT name FROM workspaces WHERE workspace_id = $1`, w.ws[0]).Scan(&name))
	require.Equal(t, "Shared name", name)
}

// The operator's reach ends with its call even when the context ends
// inside it.
func TestOperatorContextEndsInHostTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	buildWorld(t, db.Pool)
	app := db.AppPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
	bg := context.Background()
	host, err := app.Begin(bg)
	require.NoError(t, err)
	defer host.Rollback(bg) //nolint:errcheck
	op, err := tenancy.NewOperator(host, "test: cancelled read")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = op.ListWorkspaces(ctx, tenancy.Page{})
	require.ErrorIs(t, err, context.Canceled)
	requireNothingVisible(t, host, "workspaces")
}

// Zero values and typed nils are typed errors, never panics.
func TestZeroValuesAreTypedErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nilPool *pgxpool.Pool
	scope, err := tenancy.NewScope(wsA)
	require.NoError(t, err)
	_, err = tenancy.NewTenant(nilPool, scope)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput, "typed nil pool")
	var nilTx pgx.Tx
	_, err = tenancy.NewTenant(nilTx, scope)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = tenancy.NewOperator(nilPool, "reason")
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = workspaces.Create(ctx, nilPool, tenancy.CreateWorkspaceParams{Name: "x", Owner: usX})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = tenancy.NewTenant(noDB{}, tenancy.Scope{})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput, "zero scope")

	var zero tenancy.Tenant
	var nilTenant *tenancy.Tenant
	for _, tn := range []*tenancy.Tenant{&zero, nilTenant} {
		_, err = workspaces.Get(ctx, tn)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = members.List(ctx, tn, tenancy.ListMembersParams{})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: usX, Role: tenancy.RoleMember})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		require.ErrorIs(t, tn.InTx(ctx, func(*tenancy.Tenant) error { return nil }), tenancy.ErrInvalidInput)
		_, err = tn.Select(tenancy.MembershipsTable, "role").Query(ctx)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = tn.Update(tenancy.MembershipsTable).Set("role", "x").All().Exec(ctx)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		require.ErrorIs(t, tn.Delete(tenancy.MembershipsTable).All().QueryRow(ctx).Scan(), tenancy.ErrInvalidInput)
		_, err = tn.Insert(tenancy.MembershipsTable).Columns("role").Values("x").Exec(ctx)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		require.Equal(t, tenancy.Scope{}, tn.Scope())
	}
	var sel tenancy.SelectBuilder
	_, err = sel.Query(ctx)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var upd tenancy.UpdateBuilder
	_, err = upd.Exec(ctx)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var del tenancy.DeleteBuilder
	_, err = del.Exec(ctx)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var ins tenancy.InsertBuilder
	require.ErrorIs(t, ins.QueryRow(ctx).Scan(), tenancy.ErrInvalidInput)

	var op tenancy.Operator
	_, err = op.ListWorkspaces(ctx, tenancy.Page{})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var nilOp *tenancy.Operator
	_, err = nilOp.WorkspaceOf(ctx, wsA)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}

// Text Postgres cannot store (a NUL byte, invalid UTF-8) is a typed error
// before any SQL, in every text input. offlineTenant's connection fails the
// test if anything reaches it.
func TestTextPostgresCannotStoreIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tn := offlineTenant(t)
	m := tenancy.MembershipsTable
	for _, bad := range []string{"a\x00b", "\xff\xfe", "ok\xc3"} {
		_, err := workspaces.Create(ctx, noDB{}, tenancy.CreateWorkspaceParams{Name: bad, Owner: usX})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = workspaces.Rename(ctx, tn, tenancy.RenameWorkspaceParams{Name: bad})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = tenancy.NewOperator(noDB{}, bad)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = members.Add(ctx, tn, tenancy.AddMemberParams{User: usX, Role: tenancy.Role(bad)})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		_, err = members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{Cursor: bad}})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
		for _, b := range []interface{ QueryRow(context.Context) pgx.Row }{
			tn.Select(m, "role").Where("role = ?", bad),
			tn.Select(m, "role").Where(sq.Eq{"role": bad}),
			tn.Select(m, "role").Where(sq.Eq{"role": []string{"ok", bad}}),
			tn.Select(m, "role").Where("role = '" + bad + "'"),
			tn.Insert(m).Columns("role").Values(bad),
			tn.Update(m).Set("role", bad).All(),
			tn.Delete(m).Where("role = ?", &bad),
		} {
			require.ErrorIs(t, b.QueryRow(ctx).Scan(), tenancy.ErrInvalidInput)
		}
		_, err = tn.Exec(ctx, tenancy.MustPrepare("t", `SELECT 1 FROM {memberships} WHERE role = @r`), tenancy.Args{"r": bad})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	}
}

// Fragments may not call the server's administration functions (locks,
// signals, sleeps, files), however spelt; a column named like one is fine.
// Oversized or deeply nested fragments are refused before Postgres spends
// time parsing them.
func TestFragmentsThatChangeSessionState(t *testing.T) {
	t.Parallel()
	tn := offlineTenant(t)
	m := tenancy.MembershipsTable
	for _, frag := range []string{
		"pg_advisory_lock(1) IS NOT NULL", "pg_catalog.pg_try_advisory_lock(1)", `"pg_advisory_lock"(1)`,
		"pg_terminate_backend(1)", "pg_cancel_backend (1)", "pg_sleep(1) IS NULL", "pg_notify('c', 'x') IS NULL",
		"setval('s', 1) > 0", "set_config('a', 'b', false) = ''", "lo_import('x') > 0",
	} {
		_, _, err := tenancy.SQLOf(tn.Select(m, "role").Where(frag))
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, frag)
		_, _, err = tenancy.SQLOf(tn.Select(m, frag))
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, frag)
		_, _, err = tenancy.SQLOf(tn.Select(m, "role").OrderBy(frag))
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, frag)
	}
	for _, ok := range []string{"lo_limit", "pg_size", "x.pg_column", `"lo_limit" > 0`} {
		_, _, err := tenancy.SQLOf(tn.Select(m, "role").Where(ok))
		require.NoError(t, err, ok)
	}
	long := strings.Repeat("1 + ", tenancy.MaxFragmentBytes/4) + "1 = 1"
	_, _, err := tenancy.SQLOf(tn.Select(m, "role").Where(long))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	deep := strings.Repeat("(", 70) + "true" + strings.Repeat(")", 70)
	_, _, err = tenancy.SQLOf(tn.Select(m, "role").Where(deep))
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
}

// Cursors are bound to their workspace and list and checked: a foreign, a
// changed, a cut or a stale cursor is a *CursorError, never another
// position.
func TestCursors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	a, b := tenantOf(t, db.Pool, w.ws[0]), tenantOf(t, db.Pool, w.ws[1])
	first, err := members.List(ctx, a, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 2, WithTotal: true}})
	require.NoError(t, err)
	require.Len(t, first.Items, 2)
	require.NotEmpty(t, first.Next)
	require.EqualValues(t, 4, *first.Total)

	second, err := members.List(ctx, a, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 2, Cursor: first.Next}})
	require.NoError(t, err)
	require.Len(t, second.Items, 2)
	require.Less(t, first.Items[1].UserID.String(), second.Items[0].UserID.String())

	raw, err := base64.RawURLEncoding.DecodeString(first.Next)
	require.NoError(t, err)
	var bad []string
	for i := range raw { // every single changed byte
		c := append([]byte(nil), raw...)
		c[i] ^= 0x01
		bad = append(bad, base64.RawURLEncoding.EncodeToString(c))
	}
	for n := 1; n < len(first.Next); n += 3 { // every cut
		bad = append(bad, first.Next[:n])
	}
	bad = append(bad, first.Next+"A", "not a cursor", strings.Repeat("A", 5000))
	for _, c := range bad {
		_, err := members.List(ctx, a, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 2, Cursor: c}})
		require.ErrorIs(t, err, tenancy.ErrInvalidCursor, "%q", c)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	}
	_, err = members.List(ctx, b, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 2, Cursor: first.Next}})
	var ce *tenancy.CursorError
	require.ErrorAs(t, err, &ce, "A's cursor used by B")
	require.Contains(t, ce.Reason, "another workspace")
	op, err := tenancy.NewOperator(db.Pool, "test: cursors")
	require.NoError(t, err)
	_, err = op.ListWorkspaces(ctx, tenancy.Page{Cursor: first.Next})
	require.ErrorAs(t, err, &ce, "a members cursor used for the workspaces list")

	// Offset pages, with a total, and their limits.
	page, err := members.List(ctx, a, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 3, Offset: 2, WithTotal: true}})
	require.NoError(t, err)
	require.Len(t, page.Items, 2)
	require.Equal(t, second.Items, page.Items)
	require.Zero(t, page.NextOffset)
	require.Empty(t, page.Next)
	page, err = members.List(ctx, a, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 1, Offset: 1}})
	require.NoError(t, err)
	require.Equal(t, 2, page.NextOffset)
	for _, p := range []tenancy.Page{{Offset: -1}, {Offset: 1, Cursor: first.Next}, {Limit: -1}, {Limit: tenancy.MaxPageLimit + 1}} {
		_, err := members.List(ctx, a, tenancy.ListMembersParams{Page: p})
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, "%+v", p)
	}
}
