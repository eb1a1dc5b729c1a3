package credits_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// A context that ends while a spend waits in Postgres (here on its
// account's lock, held by a host) is ErrOutcomeUnknown: the statement was
// sent. Once Postgres has acted on the cancel request pgx sends as it
// closes the connection, nothing is written, through a pool and in a
// host's transaction alike: no entry, no key, the balance as it was; a
// retry with the key is applied, once. (Had the lock been let go before
// the cancel landed, the spend could have committed: that is why the
// answer is "unknown", and the retry a replay; see
// TestFallbackThatCannotConnectAfterItsBatchCommitted.)
func TestContextEndingMidCallLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 100)
	cases := map[string]func(ctx context.Context, p credits.SpendParams) error{
		"pool": func(ctx context.Context, p credits.SpendParams) error {
			_, err := w.ledger.Spend(ctx, w.tenants[0], p)
			return err
		},
		"host transaction": func(ctx context.Context, p credits.SpendParams) error {
			tx, err := w.pool.Begin(context.Background())
			require.NoError(t, err)
			defer tx.Rollback(context.Background()) //nolint:errcheck
			_, err = w.ledger.Spend(ctx, w.tenantOver(t, tx, 0), p)
			if err != nil {
				return err
			}
			return tx.Commit(ctx)
		},
	}
	balance := func() int64 {
		bal, err := w.ledger.Balance(ctx, w.tenants[0], credits.BalanceParams{Account: account})
		require.NoError(t, err)
		return bal.Total
	}
	for name, spend := range cases {
		p := credits.SpendParams{Account: account, Amount: 7, Key: key("mid-call")}
		before := balance()
		release := blockAccount(t, w, account)
		callCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- spend(callCtx, p) }()
		waitFor(t, name+": the spend to wait on its account", func() bool { return lockWaiters(t, raw) == 1 })
		cancel()
		var err error
		select {
		case err = <-errc:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the spend did not return when its context ended", name)
		}
		waitFor(t, name+": Postgres to cancel the spend", func() bool { return lockWaiters(t, raw) == 0 })
		release()
		require.ErrorIs(t, err, context.Canceled, name)
		require.ErrorIs(t, err, credits.ErrOutcomeUnknown, "%s: it was sent", name)
		require.Zero(t, keyRecords(t, raw, p.Key), "%s: the key was recorded", name)
		require.Equal(t, before, balance(), "%s: the balance changed", name)

		res, err := w.ledger.Spend(ctx, w.tenants[0], p)
		require.NoError(t, err, name)
		require.False(t, res.Replay, "%s: the cut-off call applied nothing", name)
		require.Equal(t, before-7, balance(), name)
		require.Equal(t, 1, keyRecords(t, raw, p.Key), name)
	}
	w.reconcile(t, 0)
}
