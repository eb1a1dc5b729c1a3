package credits_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// No batch leaves multixacts on the account's row (they slowed a hot
// account's batches from 120 to 14 a second): neither a mixed batch, nor a
// batch of spends that misses the fast path (spends on credit) and runs
// the passes, whose subtransaction updates the row; the fast-path check
// must not lock the row from the parent transaction.
func TestBatchesMakeNoMultixacts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	_, err := raw.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pageinspect`)
	require.NoError(t, err)
	tn := w.tenants[0]
	multis := func() int {
		var n int
		require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM generate_series(0, pg_relation_size('credit_accounts') / 8192 - 1) p,
		     heap_page_items(get_raw_page('credit_accounts', p::int)) WHERE t_infomask & 4096 <> 0`).Scan(&n))
		return n
	}
	// A mixed batch, past the check: no multixact.
	mixed := w.account(t, 0, w.members[0].ID, 1000)
	w.grant(t, 0, mixed, 10)
	res, err := credits.RunBatch(ctx, w.ledger, tn, mixed,
		credits.HoldParams{Account: mixed, Amount: 1, TTL: 3600e9, Key: key("m")},
		credits.SpendParams{Account: mixed, Amount: 30, Key: key("m")},
		credits.SpendParams{Account: mixed, Amount: 30, Key: key("m")})
	require.NoError(t, err)
	for _, r := range res {
		_, bad := r.(error)
		require.False(t, bad, "%v", r)
	}
	require.Zero(t, multis(), "a mixed batch")

	// Spends on credit: the check fails (lots too few), the loop runs.
	spends := w.account(t, 0, tenancy.UserID{}, 1000)
	w.grant(t, 0, spends, 10)
	res, err = credits.RunBatch(ctx, w.ledger, tn, spends,
		credits.SpendParams{Account: spends, Amount: 30, Key: key("s")},
		credits.SpendParams{Account: spends, Amount: 30, Key: key("s")})
	require.NoError(t, err)
	for _, r := range res {
		_, bad := r.(error)
		require.False(t, bad, "%v", r)
	}
	require.Zero(t, multis(), "a batch of spends that missed the fast path left the account's row versions with multixacts")
}
