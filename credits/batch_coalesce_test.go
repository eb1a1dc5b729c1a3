package credits_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// Each refused request of a batch must get its own refusal (its own
// "requested"), as it would alone.
func TestBatchRefusalsAreEachCallersOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	k1 := key("k1")
	reqs := []credits.BatchRequest{
		credits.SpendParams{Account: account, Amount: 1, Key: k1},
		credits.SpendParams{Account: account, Amount: 2, Key: key("k2")},
		credits.SpendParams{Account: account, Amount: 3, Key: key("k3")},
		credits.SpendParams{Account: account, Amount: 4, Key: key("k4")},
		credits.SpendParams{Account: account, Amount: 1, Key: k1},
	}
	res, err := credits.RunBatch(ctx, w.ledger, tn, account, reqs...)
	require.NoError(t, err)
	for i, r := range res {
		var ie *credits.InsufficientCreditsError
		e, _ := r.(error)
		require.True(t, errors.As(e, &ie), "request %d: %v", i, r)
		require.Equal(t, reqs[i].(credits.SpendParams).Amount, ie.Requested, "request %d got %v", i, r)
	}
}

// A caller whose single call panics (here the host's Clock; a pgx tracer
// or any bug in the call would do the same) must not leave its account's
// queue marked busy: the panic is the caller's, recovered by it (as
// net/http recovers a handler's), and the account must keep working.
func TestPanickingLeaderDoesNotWedgeTheAccount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 100)
	var panicNow atomic.Bool
	l := credits.New(&credits.Config{Clock: func() time.Time {
		if panicNow.CompareAndSwap(true, false) {
			panic("clock broke once")
		}
		return w.clock.Now()
	}})

	panicNow.Store(true)
	func() {
		defer func() { require.NotNil(t, recover()) }()
		_, _ = l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: key("panics")})
	}()

	// The next spend on the account, long after: nothing is in flight. (A
	// wedged queue never lets it run; the bound only ends the test.)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := l.Spend(cctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: key("after")})
	require.NoError(t, err, "the account's queue stayed busy after the panic: pending=%d", credits.Pending(l))
}

// A batch runs with its first request's handle, so requests coalesce only
// with those of the same scope user: a host whose row-level security reads
// the user (as tenancy's own user-scoped policies do), here "a member
// reaches only the pool and their own account", must see a member's spend
// refused whether it runs alone or while the owner's spends are batched.
func TestBatchesRunEachRequestAsItsOwnUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	_, err := raw.Exec(ctx, `CREATE POLICY review_own_account ON credit_accounts AS RESTRICTIVE
	    USING (user_id IS NULL OR user_id = meterbase_user_id() OR meterbase_user_id() IS NULL)`)
	require.NoError(t, err)
	app := w.db.AppPool(t)
	owner, intruder := w.members[0], w.members[1]
	account := w.account(t, 0, owner.ID, 0) // the owner's own account
	w.grant(t, 0, account, 100)
	handle := func(u tenancy.User) *tenancy.Tenant {
		scope, err := tenancy.NewUserScope(w.ws[0], u.ID)
		require.NoError(t, err)
		tn, err := tenancy.NewTenant(app, scope)
		require.NoError(t, err)
		return tn
	}
	tOwner, tIntruder := handle(owner), handle(intruder)
	l := credits.New(nil)

	// Alone, the policy refuses the intruder.
	_, err = l.Spend(ctx, tIntruder, credits.SpendParams{Account: account, Amount: 1, Key: key("alone")})
	require.ErrorIs(t, err, credits.ErrNotFound)

	// Behind the owner's spends.
	release := blockAccount(t, w, account)
	leader := spendAsync(ctx, l, tOwner, credits.SpendParams{Account: account, Amount: 1, Key: key("owner")})
	waitFor(t, "the leader", func() bool { return l.CoalescingStats().Alone == 2 })
	first := spendAsync(ctx, l, tOwner, credits.SpendParams{Account: account, Amount: 1, Key: key("owner")})
	waitFor(t, "the owner's queued spend", func() bool { return credits.Pending(l) == 1 })
	intruding := spendAsync(ctx, l, tIntruder, credits.SpendParams{Account: account, Amount: 50, Key: key("intruder")})
	waitFor(t, "the intruder's spend (queued, or alone in its own queue)", func() bool {
		return credits.Pending(l) == 2 || l.CoalescingStats().Alone == 3
	})
	release()
	require.NoError(t, answer(t, leader).err)
	require.NoError(t, answer(t, first).err)
	a := answer(t, intruding)
	require.ErrorIs(t, a.err, credits.ErrNotFound, "the intruder spent %d from the owner's account", -a.res.Entry.Amount)
}
