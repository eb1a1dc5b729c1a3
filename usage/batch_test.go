package usage_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func TestRecordBatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s := newService(t, &usage.Config{Clock: newClock(now).Now})
	a := w.tenant(t, w.db.Pool, 0)
	ev := func(key string, q int64) usage.RecordParams {
		return usage.RecordParams{User: w.owners[0], OperationType: usage.ChatCompletion, Quantity: q, Unit: "output_tokens",
			IdempotencyKey: key, OccurredAt: now.Add(-time.Duration(q) * time.Minute)}
	}
	_, err := s.Record(ctx, a, ev("stored", 1))
	require.NoError(t, err)
	_, err = s.Record(ctx, a, ev("stored-other", 2))
	require.NoError(t, err)

	unknown := ev("unknown", 3)
	unknown.OperationType = "acme.unknown"
	future := ev("future", 4)
	future.OccurredAt = now.Add(time.Hour)
	negative := ev("negative", 5)
	negative.Quantity = -5
	noKey := ev("", 6)
	batch := []usage.RecordParams{
		ev("a", 10),           // 0 new
		ev("stored", 1),       // 1 duplicate of a stored event
		ev("b", 11),           // 2 new
		ev("a", 10),           // 3 duplicate inside the batch
		ev("a", 12),           // 4 conflict inside the batch
		ev("stored-other", 9), // 5 conflict with a stored event
		unknown,               // 6
		future,                // 7
		negative,              // 8
		noKey,                 // 9 new
		noKey,                 // 10 new too: no key, no dedup
	}
	res, err := s.RecordBatch(ctx, a, batch)
	require.NoError(t, err)
	require.Equal(t, 4, res.Inserted)
	require.Equal(t, 2, res.Duplicates)
	require.Len(t, res.Rejected, 5)
	want := map[int]error{4: usage.ErrIdempotencyConflict, 5: usage.ErrIdempotencyConflict, 6: usage.ErrUnknownOperationType,
		7: usage.ErrFutureEvent, 8: tenancy.ErrInvalidInput}
	for i, r := range res.Rejected {
		if i > 0 {
			require.Less(t, res.Rejected[i-1].Index, r.Index, "rejections are in batch order")
		}
		require.ErrorIs(t, r, want[r.Index], "event %d", r.Index)
		require.Equal(t, batch[r.Index].IdempotencyKey, r.Key)
	}
	require.Equal(t, 6, rawCount(t, w.db.Pool, w.ws[0], "true"))

	// The same batch again: nothing new.
	res, err = s.RecordBatch(ctx, a, batch[:4])
	require.NoError(t, err)
	require.Equal(t, usage.BatchResult{Duplicates: 4}, res)
	require.Equal(t, 6, rawCount(t, w.db.Pool, w.ws[0], "true"))

	// In the host's transaction, a batch that repeats a stored key is
	// undone to its savepoint and inserted again with ON CONFLICT; the
	// transaction goes on, and commits what it recorded.
	tx, err := w.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	inTx := w.tenant(t, tx, 0)
	res, err = s.RecordBatch(ctx, inTx, []usage.RecordParams{ev("c", 13), ev("stored", 1), ev("d", 14)})
	require.NoError(t, err)
	require.Equal(t, usage.BatchResult{Inserted: 2, Duplicates: 1}, res)
	res, err = s.RecordBatch(ctx, inTx, []usage.RecordParams{ev("e", 15)})
	require.NoError(t, err)
	require.Equal(t, usage.BatchResult{Inserted: 1}, res)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 9, rawCount(t, w.db.Pool, w.ws[0], "true"))

	res, err = s.RecordBatch(ctx, a, nil)
	require.NoError(t, err)
	require.Zero(t, res.Inserted)
	_, err = s.RecordBatch(ctx, a, make([]usage.RecordParams, usage.MaxBatchSize+1))
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}
