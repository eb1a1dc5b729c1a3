package usage_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func TestRetention(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	clk := newClock(now)
	s := newService(t, &usage.Config{Clock: clk.Now})
	a := w.tenant(t, w.db.Pool, 0)
	users := []tenancy.UserID{w.owners[0], w.shared}
	base := now.Add(-100 * time.Hour)
	seed(t, s, a, users, base, 6000, "r") // one a minute: 100 hours
	list, err := s.List(ctx, a, usage.ListParams{Order: usage.OldestFirst, Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	_, err = s.Void(ctx, a, usage.VoidParams{Event: list.Items[0].ID, Reason: "old mistake"})
	require.NoError(t, err)
	whole := usage.SummaryParams{From: base, To: now, Window: usage.Daily, By: usage.ByModel}
	before, err := s.Summarize(ctx, a, whole)
	require.NoError(t, err)
	require.Equal(t, int64(5999), before.Total.Events)

	cut := base.Add(50 * time.Hour)
	res, err := s.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: cut, BatchSize: 700})
	require.NoError(t, err)
	require.Equal(t, int64(3000), res.Deleted)
	require.Equal(t, 5, res.Batches) // 700 × 4, then 200
	require.True(t, cut.Equal(res.Horizon))
	require.Zero(t, rawCount(t, w.db.Pool, w.ws[0], "occurred_at < $2", cut))
	require.Equal(t, 3000, rawCount(t, w.db.Pool, w.ws[0], "true"))
	var adjustments int
	require.NoError(t, w.db.RawPool(t).QueryRow(ctx, `SELECT count(*) FROM usage_adjustments WHERE workspace_id = $1`, w.ws[0]).Scan(&adjustments))
	require.Zero(t, adjustments, "an event's adjustments go with it")

	// The rollups remain: the summary is what it was.
	after, err := s.Summarize(ctx, a, whole)
	require.NoError(t, err)
	requireSameSummary(t, before, after)

	// Events dated before the horizon are refused, one by one and in a
	// batch, so that a retry of a deleted event is not counted twice.
	late := usage.RecordParams{User: w.shared, OperationType: usage.Embedding, Quantity: 1, IdempotencyKey: "r-10", OccurredAt: base.Add(10 * time.Minute)}
	_, err = s.Record(ctx, a, late)
	require.ErrorIs(t, err, usage.ErrRetained)
	var te *usage.TimeError
	require.ErrorAs(t, err, &te)
	require.True(t, cut.Equal(te.Limit))
	batch, err := s.RecordBatch(ctx, a, []usage.RecordParams{late, {User: w.shared, OperationType: usage.Embedding, Quantity: 1, OccurredAt: cut}})
	require.NoError(t, err)
	require.Equal(t, 1, batch.Inserted)
	require.Len(t, batch.Rejected, 1)
	require.ErrorIs(t, batch.Rejected[0], usage.ErrRetained)

	// The horizon never moves back; a cut-off in the future is refused.
	res, err = s.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: base})
	require.NoError(t, err)
	require.Zero(t, res.Deleted)
	require.True(t, cut.Equal(res.Horizon))
	_, err = s.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: now.Add(time.Hour)})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	_, err = s.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: cut, BatchSize: usage.MaxDeleteBatch + 1})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	// With the database's clock, a future cut-off is refused by the
	// database.
	dbClock := newService(t, nil)
	_, err = dbClock.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)

	// Other workspaces keep everything.
	b := w.tenant(t, w.db.Pool, 1)
	seed(t, s, b, users, base, 100, "r")
	require.Equal(t, 100, rawCount(t, w.db.Pool, w.ws[1], "true"))
}

// Retention deletes in small batches while events are recorded: neither
// waits for nor fails the other, nothing recent is deleted, nothing old is
// left, and the summaries stay exact.
func TestRetentionWhileRecording(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	users := []tenancy.UserID{w.owners[0], w.shared}
	now := time.Now().UTC().Truncate(time.Hour)
	base := now.Add(-48 * time.Hour)
	seed(t, s, a, users, base, 2000, "old")
	cut := base.Add(1000 * time.Minute)

	var wg sync.WaitGroup
	recorded := 0
	wg.Go(func() {
		for i := range 40 {
			var batch []usage.RecordParams
			for j := range 25 {
				batch = append(batch, usage.RecordParams{User: w.shared, OperationType: usage.ToolCall, Quantity: 2,
					IdempotencyKey: fmt.Sprintf("new-%d-%d", i, j), OccurredAt: cut.Add(time.Duration(i*25+j) * time.Second)})
			}
			res, err := s.RecordBatch(ctx, a, batch)
			require.NoError(t, err)
			require.Equal(t, 25, res.Inserted)
			recorded += res.Inserted
		}
	})
	var deleted int64
	wg.Go(func() {
		res, err := s.DeleteBefore(ctx, a, usage.DeleteBeforeParams{Before: cut, BatchSize: 50})
		require.NoError(t, err)
		deleted = res.Deleted
	})
	wg.Wait()
	require.Equal(t, int64(1000), deleted)
	require.Equal(t, 1000, recorded)
	require.Zero(t, rawCount(t, w.db.Pool, w.ws[0], "occurred_at < $2", cut))
	require.Equal(t, 2000, rawCount(t, w.db.Pool, w.ws[0], "true"))
	sum, err := s.Summarize(ctx, a, usage.SummaryParams{From: base, To: now})
	require.NoError(t, err)
	require.Equal(t, int64(3000), sum.Total.Events)
}
