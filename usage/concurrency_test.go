package usage_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// Many goroutines record overlapping keys at once, one by one, in batches
// and through a shared Recorder: every key ends up recorded exactly once,
// nobody gets an error (no deadlock, no conflict: a key always carries the
// same request), and the summaries equal the events.
func TestDedupUnderConcurrency(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	base := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	const keys = 400
	event := func(k int) usage.RecordParams {
		return usage.RecordParams{User: []tenancy.UserID{w.owners[0], w.shared}[k%2], OperationType: usage.ChatCompletion,
			Quantity: int64(k), Credits: int64(k % 9), IdempotencyKey: fmt.Sprintf("key-%d", k),
			OccurredAt: base.Add(time.Duration(k*7) * time.Minute)}
	}
	rec, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 50, FlushInterval: 10 * time.Millisecond})
	require.NoError(t, err)

	var wg sync.WaitGroup
	var mu sync.Mutex
	inserted, replays := 0, 0
	for g := range 9 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 30 {
				switch g % 3 {
				case 0: // one by one
					res, err := s.Record(ctx, a, event(r.IntN(keys)))
					require.NoError(t, err)
					mu.Lock()
					if res.Replay {
						replays++
					} else {
						inserted++
					}
					mu.Unlock()
				case 1: // a batch of overlapping keys, in any order, some twice
					var batch []usage.RecordParams
					for range 1 + r.IntN(60) {
						batch = append(batch, event(r.IntN(keys)))
					}
					res, err := s.RecordBatch(ctx, a, batch)
					require.NoError(t, err)
					require.Empty(t, res.Rejected)
					require.Equal(t, len(batch), res.Inserted+res.Duplicates)
					mu.Lock()
					inserted += res.Inserted
					mu.Unlock()
				case 2: // through the recorder
					for range 1 + r.IntN(20) {
						require.NoError(t, rec.Record(ctx, w.ws[0], event(r.IntN(keys))))
					}
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, rec.Close(ctx))
	stats := rec.Stats()
	require.Zero(t, stats.Rejected)
	inserted += int(stats.Written)

	raw := w.db.RawPool(t)
	var rows, distinct, maxPerKey int
	require.NoError(t, raw.QueryRow(ctx, `SELECT count(*), count(DISTINCT idempotency_key), coalesce(max(n), 0)
		FROM (SELECT idempotency_key, count(*) OVER (PARTITION BY idempotency_key) AS n FROM usage_events WHERE workspace_id = $1) e`,
		w.ws[0]).Scan(&rows, &distinct, &maxPerKey))
	require.Equal(t, distinct, rows)
	require.Equal(t, 1, maxPerKey)
	require.Equal(t, rows, inserted, "every insert counted once, by whoever made it")
	require.Positive(t, replays)

	p := usage.SummaryParams{From: base, To: base.Add(keys * 7 * time.Minute), Window: usage.Hourly, By: usage.ByUser}
	got, err := s.Summarize(ctx, a, p)
	require.NoError(t, err)
	requireSameSummary(t, rawSummary(t, raw, "usage_events", w.ws[0], p), got)
	require.Equal(t, int64(rows), got.Total.Events)
}
