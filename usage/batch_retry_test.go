package usage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// A batch whose key another transaction holds uncommitted waits
// for it, then (committed) fails its first insert and is inserted again
// with ON CONFLICT: a duplicate (same request) or a conflict (another),
// reported at its index, never an error for the batch, and one row per
// key; rolled back, the batch inserts the key itself. In a host's
// transaction the retry undoes only the library's savepoint: the host's
// earlier work and settings stay.
func TestRecordBatchRetriesOnATakenKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	pool := w.db.Pool
	a := w.tenant(t, pool, 0)
	base := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	ev := func(key string, q int64) usage.RecordParams {
		return usage.RecordParams{User: w.owners[0], OperationType: usage.ChatCompletion, Quantity: q, Unit: "output_tokens",
			IdempotencyKey: key, OccurredAt: base.Add(time.Duration(q) * time.Minute)}
	}
	raw := w.db.RawPool(t)
	waitBlocked := func() {
		t.Helper()
		// Generous: the batch connects, stages and copies before it
		// waits, on a machine that may be busy.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var n int
			require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n))
			if n > 0 {
				return
			}
		}
		t.Fatal("the batch never waited")
	}
	for ci, c := range []struct {
		name   string
		commit bool
		q      int64 // the held key's quantity in the batch (1: the same request)
		want   usage.BatchResult
	}{
		{"committed, same request", true, 1, usage.BatchResult{Inserted: 2, Duplicates: 1}},
		{"committed, other request", true, 2, usage.BatchResult{Inserted: 2}},
		{"rolled back", false, 1, usage.BatchResult{Inserted: 3}},
	} {
		p := fmt.Sprintf("c%d-", ci)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		res, err := s.RecordBatch(ctx, w.tenant(t, tx, 0), []usage.RecordParams{ev(p+"k1", 1)})
		require.NoError(t, err)
		require.Equal(t, usage.BatchResult{Inserted: 1}, res, "%v", res.Rejected)

		type out struct {
			res usage.BatchResult
			err error
		}
		done := make(chan out, 1)
		go func() {
			res, err := s.RecordBatch(ctx, a, []usage.RecordParams{ev(p+"k0", 3), ev(p+"k1", c.q), ev(p+"k2", 4)})
			done <- out{res, err}
		}()
		waitBlocked()
		if c.commit {
			require.NoError(t, tx.Commit(ctx))
		} else {
			require.NoError(t, tx.Rollback(ctx))
		}
		o := <-done
		require.NoError(t, o.err, c.name)
		if c.q != 1 && c.commit {
			require.Len(t, o.res.Rejected, 1, c.name)
			require.Equal(t, 1, o.res.Rejected[0].Index, c.name)
			require.ErrorIs(t, o.res.Rejected[0], usage.ErrIdempotencyConflict, c.name)
			o.res.Rejected = nil
		}
		require.Equal(t, c.want, o.res, c.name)
		for _, k := range []string{"k0", "k1", "k2"} {
			require.Equal(t, 1, rawCount(t, pool, w.ws[0], "idempotency_key = $2", p+k), "%s: %s", c.name, k)
		}
	}

	// In the host's transaction.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT set_config('app.host', 'mine', true)`)
	require.NoError(t, err)
	inTx := w.tenant(t, tx, 0)
	_, err = s.Record(ctx, inTx, ev("host-1", 7))
	require.NoError(t, err)
	res, err := s.RecordBatch(ctx, inTx, []usage.RecordParams{ev("host-0", 6), ev("host-1", 7), ev("host-2", 8)})
	require.NoError(t, err)
	require.Equal(t, usage.BatchResult{Inserted: 2, Duplicates: 1}, res)
	// And through InTx's handle (a savepoint in a savepoint).
	err = inTx.InTx(ctx, func(sp *tenancy.Tenant) error {
		res, err := s.RecordBatch(ctx, sp, []usage.RecordParams{ev("host-2", 8), ev("host-3", 9)})
		require.NoError(t, err)
		require.Equal(t, usage.BatchResult{Inserted: 1, Duplicates: 1}, res)
		return nil
	})
	require.NoError(t, err)
	var host, wsSetting string
	require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('app.host'), coalesce(current_setting('meterbase.workspace_id', true), '')`).Scan(&host, &wsSetting))
	require.Equal(t, "mine", host)
	require.Equal(t, "", wsSetting, "no tenant context left in the host's transaction")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 4, rawCount(t, pool, w.ws[0], "idempotency_key LIKE 'host-%'"))
}
