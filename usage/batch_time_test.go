package usage_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/usage"
)

// With the database's clock (no Config.Clock), an event dated in 586,579
// AD is refused in Go, at its index: the database cannot judge it, since
// its microseconds wrap around int64 on the way (in StageRows, and in pgx
// for Record) into 2025-06-01, which it would check and store.
func TestRecordBatchRefusesTimesPastYear9999(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil) // the database's clock
	a := w.tenant(t, w.db.Pool, 0)
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	far := time.Unix(base.Unix()+18446744073709, 551616000).UTC() // 2^64 µs after base
	res, err := s.RecordBatch(ctx, a, []usage.RecordParams{{User: w.owners[0], OperationType: usage.ChatCompletion,
		Quantity: 1, Unit: "output_tokens", IdempotencyKey: "far", OccurredAt: far}})
	require.NoError(t, err)
	stored := rawCount(t, w.db.Pool, w.ws[0], "occurred_at = $2", base)
	require.Zero(t, stored, "an event of year %d stored as %s (result %+v)", far.Year(), base, res)
	require.Len(t, res.Rejected, 1)
}
