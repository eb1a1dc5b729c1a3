package tenancy_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// A stage of every type StageRows encodes. (Rows are read back in the
// order of i4.)
var typesStage = tenancy.DefineStage("test_types",
	tenancy.StageColumn{Name: "i4", Type: "int4"}, tenancy.StageColumn{Name: "i8", Type: "bigint"},
	tenancy.StageColumn{Name: "t", Type: "text"}, tenancy.StageColumn{Name: "u", Type: "uuid"},
	tenancy.StageColumn{Name: "b", Type: "bytea"}, tenancy.StageColumn{Name: "j", Type: "jsonb"},
	tenancy.StageColumn{Name: "ts", Type: "timestamptz"}, tenancy.StageColumn{Name: "n", Type: "numeric"},
)

var readTypes = tenancy.MustPrepare("read staged types",
	`SELECT i4, i8, t, u, b, j::text, ts, n::text FROM pg_temp.meterbase_stage_test_types WHERE @workspace_id::uuid IS NOT NULL ORDER BY i4`)

type typesRow struct {
	I4 *int32
	I8 *int64
	T  *string
	U  *uuid.UUID
	B  []byte
	J  *string
	TS *time.Time
	N  *string
}

func ptr[T any](v T) *T { return &v }

// copyCounter counts the COPYs the tracer is told of.
type copyCounter struct {
	pgx.QueryTracer
	copies atomic.Int64
	tables atomic.Value
}

func (c *copyCounter) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	c.copies.Add(1)
	c.tables.Store(d.TableName.Sanitize())
	return ctx
}

func (c *copyCounter) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// CopyInRows copies each type StageRows encodes, NULLs and extreme values
// included, as the server reads them; the connection's tracer is told of
// the COPY; and rows of another type, unfinished, or of another stage are
// refused before any SQL.
func TestCopyInRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "rows-owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	counter := &copyCounter{QueryTracer: db.Tracer}
	pool := db.OwnerPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter })
	tn := tenantOf(t, pool, ws.ID)

	u := uuid.MustParse("0190c8a0-0000-7000-8000-0000000000aa")
	at := time.Date(2025, 3, 30, 1, 2, 3, 456789000, time.UTC)
	old := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	want := []typesRow{
		{ptr(int32(-2147483648)), ptr(int64(-9223372036854775808)), ptr(""), nil, []byte{}, ptr(`{}`), &old, nil},
		{ptr(int32(1)), ptr(int64(1) << 50), ptr("héllo, wörld ✓"), &u, []byte{0, 1, 0xff}, ptr(`{"a": [1, "x"]}`), &at, nil},
		{ptr(int32(2147483647)), nil, nil, nil, nil, nil, nil, nil},
	}
	rows := typesStage.NewRows(0)
	for _, w := range want {
		rows.Int4(*w.I4)
		if w.I8 != nil {
			rows.Int8(*w.I8)
		} else {
			rows.Null()
		}
		if w.T != nil {
			rows.Text(*w.T)
		} else {
			rows.Null()
		}
		if w.U != nil {
			rows.UUID(*w.U)
		} else {
			rows.Null()
		}
		if w.B != nil {
			rows.Bytea(w.B)
		} else {
			rows.Null()
		}
		if w.J != nil {
			rows.JSONB(*w.J)
		} else {
			rows.Null()
		}
		if w.TS != nil {
			rows.Timestamptz(*w.TS)
		} else {
			rows.Null()
		}
		rows.Null()
	}
	require.Equal(t, int64(3), rows.Len())
	var got []typesRow
	var copied int64
	err = tn.CopyInRows(ctx, typesStage, rows, func(tx *tenancy.Tenant, n int64) error {
		copied = n
		r, err := tx.Query(ctx, readTypes, nil)
		if err != nil {
			return err
		}
		got, err = pgx.CollectRows(r, pgx.RowToStructByPos[typesRow])
		return err
	})
	require.NoError(t, err)
	require.Equal(t, int64(3), copied)
	require.Len(t, got, 3)
	for i := range want {
		if got[i].TS != nil {
			*got[i].TS = got[i].TS.UTC()
		}
	}
	require.Equal(t, want, got)
	require.Equal(t, int64(1), counter.copies.Load(), "the tracer is told of the COPY")
	require.Equal(t, `"pg_temp"."meterbase_stage_test_types"`, counter.tables.Load())

	// The same rows again: they can be sent twice, and the stage holds
	// only them.
	err = tn.CopyInRows(ctx, typesStage, rows, func(tx *tenancy.Tenant, n int64) error {
		copied = n
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, int64(3), copied)

	// Refusals, before any SQL.
	noop := func(*tenancy.Tenant, int64) error { return nil }
	wrongType := typesStage.NewRows(0)
	wrongType.Int8(1)
	require.ErrorIs(t, tn.CopyInRows(ctx, typesStage, wrongType, noop), tenancy.ErrInvalidInput)
	numeric := typesStage.NewRows(0)
	numeric.Int4(1)
	numeric.Int8(1)
	numeric.Text("")
	numeric.Null()
	numeric.Null()
	numeric.Null()
	numeric.Null()
	numeric.Int8(1) // numeric takes NULLs only
	require.ErrorIs(t, tn.CopyInRows(ctx, typesStage, numeric, noop), tenancy.ErrInvalidInput)
	unfinished := typesStage.NewRows(0)
	unfinished.Int4(1)
	require.ErrorIs(t, tn.CopyInRows(ctx, typesStage, unfinished, noop), tenancy.ErrInvalidInput)
	other := memberStage.NewRows(0)
	other.UUID(u)
	other.Text("member")
	require.ErrorIs(t, tn.CopyInRows(ctx, typesStage, other, noop), tenancy.ErrInvalidInput)
	require.ErrorIs(t, tn.CopyInRows(ctx, typesStage, nil, noop), tenancy.ErrInvalidInput)
	require.ErrorIs(t, tn.CopyInRows(ctx, tenancy.Stage{}, rows, noop), tenancy.ErrInvalidInput)
	require.Equal(t, int64(2), counter.copies.Load(), "no COPY for refused rows")

	// Text the server cannot store fails the copy, and the transaction.
	bad := typesStage.NewRows(0)
	bad.Int4(1)
	bad.Null()
	bad.Text("nul \x00 byte")
	for range 5 {
		bad.Null()
	}
	require.Error(t, tn.CopyInRows(ctx, typesStage, bad, noop))
}
