package tenancy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// A stage of user ids and roles, to add members in bulk.
var memberStage = tenancy.DefineStage("test_members",
	tenancy.StageColumn{Name: "user_id", Type: "uuid"},
	tenancy.StageColumn{Name: "role", Type: "text"},
)

var (
	addStagedMembers = tenancy.MustPrepare("add staged members",
		`INSERT INTO {memberships} (user_id, role) SELECT s.user_id, s.role FROM pg_temp.meterbase_stage_test_members s ON CONFLICT (workspace_id, user_id) DO NOTHING`)
	countStaged = tenancy.MustPrepare("count staged",
		`SELECT count(*) FROM pg_temp.meterbase_stage_test_members WHERE @workspace_id::uuid IS NOT NULL`)
)

func stagedRows(users ...tenancy.User) pgx.CopyFromSource {
	rows := make([][]any, len(users))
	for i, u := range users {
		rows[i] = []any{u.ID, "member"}
	}
	return pgx.CopyFromRows(rows)
}

func countMembers(t *testing.T, db *pgtest.DB, ws tenancy.WorkspaceID) int {
	t.Helper()
	var n int
	require.NoError(t, db.RawPool(t).QueryRow(context.Background(), `SELECT count(*) FROM memberships WHERE workspace_id = $1`, ws).Scan(&n))
	return n
}

func TestCopyIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	// One connection, so that every call below shares one session and its
	// temporary stage.
	pool := db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 1 })
	w := buildWorld(t, pool)
	a, b := tenantOf(t, pool, w.ws[0]), tenantOf(t, pool, w.ws[1])
	before := countMembers(t, db, w.ws[0])

	var copied, staged int64
	err := a.CopyIn(ctx, memberStage, stagedRows(w.outside, w.owners[1]), func(tx *tenancy.Tenant, n int64) error {
		copied = n
		if err := tx.QueryRow(ctx, countStaged, nil).Scan(&staged); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, addStagedMembers, nil)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), copied)
	require.Equal(t, int64(2), staged)
	require.Equal(t, before+2, countMembers(t, db, w.ws[0]), "the staged rows were added to A, through the handle")

	// B, on the same session, finds the stage empty of A's rows.
	err = b.CopyIn(ctx, memberStage, stagedRows(), func(tx *tenancy.Tenant, n int64) error {
		return tx.QueryRow(ctx, countStaged, nil).Scan(&staged)
	})
	require.NoError(t, err)
	require.Zero(t, staged)

	// A failure in fn undoes everything, and leaves the stage empty.
	boom := errors.New("boom")
	err = a.CopyIn(ctx, memberStage, stagedRows(w.owners[2]), func(tx *tenancy.Tenant, n int64) error {
		if _, err := tx.Exec(ctx, addStagedMembers, nil); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, before+2, countMembers(t, db, w.ws[0]))
	err = a.CopyIn(ctx, memberStage, stagedRows(), func(tx *tenancy.Tenant, n int64) error {
		return tx.QueryRow(ctx, countStaged, nil).Scan(&staged)
	})
	require.NoError(t, err)
	require.Zero(t, staged)

	// In a host's transaction, each call sees only its own rows: the stage
	// is emptied before the copy, not only at commit.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	inTx := tenantOf(t, tx, w.ws[0])
	for _, users := range [][]tenancy.User{{w.owners[1], w.owners[2]}, {w.outside}} {
		err = inTx.CopyIn(ctx, memberStage, stagedRows(users...), func(tx *tenancy.Tenant, n int64) error {
			return tx.QueryRow(ctx, countStaged, nil).Scan(&staged)
		})
		require.NoError(t, err)
		require.Equal(t, int64(len(users)), staged)
	}
}

// A session may change roles between calls: the stage one role created
// serves the other.
func TestCopyInAcrossRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	roles := db.IsolationRoles(t)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, role := range []string{"", pgtest.AppRole(), ""} {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		if role != "" {
			_, err = tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize())
			require.NoError(t, err)
		}
		var staged int64
		err = tenantOf(t, tx, w.ws[0]).CopyIn(ctx, memberStage, stagedRows(w.outside), func(tx *tenancy.Tenant, n int64) error {
			return tx.QueryRow(ctx, countStaged, nil).Scan(&staged)
		})
		require.NoError(t, err, "as %q", role)
		require.Equal(t, int64(1), staged)
		require.NoError(t, tx.Commit(ctx))
	}
	require.Len(t, roles, len(db.IsolationRoles(t)))
}

func TestCopyInRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tn := offlineTenant(t)
	noop := func(*tenancy.Tenant, int64) error { return nil }
	require.ErrorIs(t, tn.CopyIn(ctx, tenancy.Stage{}, stagedRows(), noop), tenancy.ErrInvalidInput)
	require.ErrorIs(t, tn.CopyIn(ctx, memberStage, nil, noop), tenancy.ErrInvalidInput)
	require.ErrorIs(t, tn.CopyIn(ctx, memberStage, stagedRows(), nil), tenancy.ErrInvalidInput)
	var zero *tenancy.Tenant
	require.ErrorIs(t, zero.CopyIn(ctx, memberStage, stagedRows(), noop), tenancy.ErrInvalidInput)

	require.Equal(t, "pg_temp.meterbase_stage_test_members", memberStage.Table())
	require.Equal(t, []string{"user_id", "role"}, memberStage.Columns())
	for name, define := range map[string]func(){
		"bad name": func() { tenancy.DefineStage("Bad Name", tenancy.StageColumn{Name: "a", Type: "int"}) },
		"long name": func() {
			tenancy.DefineStage("a_name_far_too_long_for_a_stage_table_name_here_x", tenancy.StageColumn{Name: "a", Type: "int"})
		},
		"no column":    func() { tenancy.DefineStage("x") },
		"bad column":   func() { tenancy.DefineStage("x", tenancy.StageColumn{Name: "a b", Type: "int"}) },
		"type escapes": func() { tenancy.DefineStage("x", tenancy.StageColumn{Name: "a", Type: "int); DROP TABLE users; --"}) },
		"type default": func() { tenancy.DefineStage("x", tenancy.StageColumn{Name: "a", Type: "int default 1"}) },
		"column twice": func() {
			tenancy.DefineStage("x", tenancy.StageColumn{Name: "a", Type: "int"}, tenancy.StageColumn{Name: "a", Type: "text"})
		},
		"quoted column": func() { tenancy.DefineStage("x", tenancy.StageColumn{Name: `"a"`, Type: "int"}) },
	} {
		require.Panics(t, define, name)
	}
	require.NotPanics(t, func() {
		tenancy.DefineStage("ok", tenancy.StageColumn{Name: "a", Type: "numeric(20,0)"}, tenancy.StageColumn{Name: "b", Type: "timestamp with time zone"},
			tenancy.StageColumn{Name: "c", Type: "bytea[]"})
	})
}

// CopyIn, made as tenant A in a host's transaction, reaches no row of B or
// C, as the owner and as the application role.
func TestCopyInIsIsolated(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	db.CheckIsolation(t, w.ws[0].UUID(), []uuid.UUID{w.ws[1].UUID(), w.ws[2].UUID()}, func(ctx context.Context, tx pgx.Tx) (any, error) {
		var added int64
		err := tenantOf(t, tx, w.ws[0]).CopyIn(ctx, memberStage, stagedRows(w.outside, w.owners[1], w.shared[0]), func(tx *tenancy.Tenant, n int64) error {
			tag, err := tx.Exec(ctx, addStagedMembers, nil)
			added = tag.RowsAffected()
			return err
		})
		require.NoError(t, err)
		require.Equal(t, int64(2), added, "the outsider and B's owner; the shared member was there")
		return added, err
	})
}
