package pg_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pg"
	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestInTxNestsAsSavepoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE t (v int)`)
	require.NoError(t, err)

	boom := errors.New("boom")
	err = pg.InTx(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
			return err
		}
		// The inner failure rolls back only its own work.
		inner := pg.InTx(ctx, tx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (2)`); err != nil {
				return err
			}
			return boom
		})
		require.ErrorIs(t, inner, boom)
		_, err := tx.Exec(ctx, `INSERT INTO t VALUES (3)`)
		return err
	})
	require.NoError(t, err)

	rows, err := db.Pool.Query(ctx, `SELECT v FROM t ORDER BY v`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	require.Equal(t, []int32{1, 3}, got)

	// A failing outer function leaves nothing.
	err = pg.InTx(ctx, db.Pool, func(tx pgx.Tx) error {
		_, _ = tx.Exec(ctx, `INSERT INTO t VALUES (4)`)
		return boom
	})
	require.ErrorIs(t, err, boom)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Equal(t, 2, n)
}

func TestMapError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
		CREATE TABLE parent (id int PRIMARY KEY);
		CREATE TABLE child (id int NOT NULL CONSTRAINT child_id_check CHECK (id > 0) REFERENCES parent (id));
		INSERT INTO parent VALUES (1);`)
	require.NoError(t, err)

	cases := []struct {
		sql        string
		kind       error
		constraint string
	}{
		{`INSERT INTO parent VALUES (1)`, pg.ErrUniqueViolation, "parent_pkey"},
		{`INSERT INTO child VALUES (2)`, pg.ErrForeignKeyViolation, "child_id_fkey"},
		{`INSERT INTO child VALUES (-1)`, pg.ErrCheckViolation, "child_id_check"},
		{`INSERT INTO child VALUES (NULL)`, pg.ErrNotNullViolation, ""},
	}
	for _, c := range cases {
		_, err := db.Pool.Exec(ctx, c.sql)
		mapped := pg.MapError(err)
		require.ErrorIs(t, mapped, c.kind, c.sql)
		var ce *pg.ConstraintError
		require.ErrorAs(t, mapped, &ce)
		require.Equal(t, c.constraint, ce.Constraint, c.sql)
	}

	err = db.Pool.QueryRow(ctx, `SELECT id FROM parent WHERE id = 42`).Scan(new(int))
	require.ErrorIs(t, pg.MapError(err), pg.ErrNoRows)

	_, err = db.Pool.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`)
	require.ErrorIs(t, pg.MapError(err), pg.ErrSerialization)
	require.True(t, pg.IsRetryable(err))
	_, err = db.Pool.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$`)
	require.True(t, pg.IsRetryable(err))
	_, err = db.Pool.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '55P03'; END $$`)
	require.ErrorIs(t, pg.MapError(err), pg.ErrLockNotAvailable)
	_, err = db.Pool.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'no tenant' USING ERRCODE = 'MB001'; END $$`)
	require.ErrorIs(t, pg.MapError(err), pg.ErrNoTenantContext)
	require.Equal(t, pg.MapError(err), pg.MapError(pg.MapError(err)), "mapped once")

	other := errors.New("other")
	require.Equal(t, other, pg.MapError(other))
	require.NoError(t, pg.MapError(nil))
}

// Translation keeps what wrapped the error, and translating twice changes
// nothing.
func TestMapErrorKeepsContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO u VALUES (1)`)
	wrapped := fmt.Errorf("load invoice 42: %w", err)
	mapped := pg.MapError(wrapped)
	require.ErrorIs(t, mapped, pg.ErrUniqueViolation)
	require.Contains(t, mapped.Error(), "load invoice 42")
	require.Equal(t, mapped, pg.MapError(mapped))

	noRows := fmt.Errorf("load invoice 42: %w", pgx.ErrNoRows)
	require.ErrorIs(t, pg.MapError(noRows), pg.ErrNoRows)
	require.Contains(t, pg.MapError(noRows).Error(), "load invoice 42")
	require.Equal(t, pg.ErrNoRows, pg.MapError(pgx.ErrNoRows))
}
