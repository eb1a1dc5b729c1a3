package tenancy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

var reviewTSStage = tenancy.DefineStage("review_ts",
	tenancy.StageColumn{Name: "i4", Type: "int4"}, tenancy.StageColumn{Name: "ts", Type: "timestamptz"})

var readReviewTS = tenancy.MustPrepare("read review ts stage",
	`SELECT ts FROM pg_temp.meterbase_stage_review_ts WHERE @workspace_id::uuid IS NOT NULL ORDER BY i4`)

// farFuture is 2^64 microseconds after at: its microseconds since 2000
// do not fit in an int64, and wrap back to at's.
func farFuture(at time.Time) time.Time {
	return time.Unix(at.Unix()+18446744073709, int64(at.Nanosecond())+551616000).UTC()
}

// A time Postgres's timestamptz cannot hold (after 294276 AD) is refused
// (an InvalidInputError from CopyInRows, before any SQL), as the other
// malformed rows are: its microseconds would wrap around int64 into
// another, valid, time (586,579 AD would be copied as 2025).
func TestStageRowsRefuseTimesOutOfRange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	owner := newUser(t, db.Pool, "ts-owner@example.com")
	ws, err := workspaces.Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: owner.ID})
	require.NoError(t, err)
	tn := tenantOf(t, db.OwnerPool(t), ws.ID)

	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	far := farFuture(base)
	require.Greater(t, far.Year(), 586000)
	require.Equal(t, base.UnixMicro(), far.UnixMicro(), "the microseconds wrap")

	rows := reviewTSStage.NewRows(0)
	rows.Int4(1)
	rows.Timestamptz(far)
	var got []time.Time
	err = tn.CopyInRows(ctx, reviewTSStage, rows, func(tx *tenancy.Tenant, _ int64) error {
		r, err := tx.Query(ctx, readReviewTS, nil)
		if err != nil {
			return err
		}
		got, err = pgx.CollectRows(r, pgx.RowTo[time.Time])
		return err
	})
	if err == nil {
		require.Len(t, got, 1)
		t.Fatalf("a time of year %d was copied, and the stage holds %s", far.Year(), got[0].UTC())
	}
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}

// A stage name is one table per connection: a second definition with
// other columns is refused (its rows, encoded by its own types, would be
// read as the first one's), and the same definition again is the same
// stage.
func TestStageNameDefinedTwice(t *testing.T) {
	t.Parallel()
	cols := []tenancy.StageColumn{{Name: "v", Type: "int8"}}
	tenancy.DefineStage("defined_twice", cols...)
	require.NotPanics(t, func() { tenancy.DefineStage("defined_twice", cols...) })
	require.PanicsWithValue(t,
		"tenancy: stage defined_twice defined twice, with other columns (v int8, then v timestamptz)",
		func() { tenancy.DefineStage("defined_twice", tenancy.StageColumn{Name: "v", Type: "timestamptz"}) })
}
