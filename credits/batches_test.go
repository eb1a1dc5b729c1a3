package credits_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// workspaceAccounts opens the workspace's pool and an account for each of
// its owner and members, each granted amount.
func workspaceAccounts(t *testing.T, w *world, amount int64) []credits.AccountID {
	t.Helper()
	accounts := []credits.AccountID{w.account(t, 0, tenancy.UserID{}, 0), w.account(t, 0, w.owners[0].ID, 0)}
	for _, m := range w.members {
		accounts = append(accounts, w.account(t, 0, m.ID, 0))
	}
	for _, a := range accounts {
		w.grant(t, 0, a, amount)
	}
	return accounts
}

// While the workspace's turns are taken, requests on other accounts queue
// too, and go as one batch over their accounts: one statement, each
// request answered as if alone (a refusal its own), each account's
// requests in the order they came.
func TestABatchSpansAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(&credits.Config{MaxInFlight: 1})
	tn := w.tenants[0]
	accounts := workspaceAccounts(t, w, 100)
	a, b, c := accounts[0], accounts[1], accounts[2]

	queued := []credits.SpendParams{
		{Account: b, Amount: 60, Key: key("b1")},
		{Account: c, Amount: 101, Key: key("c-refused")},
		{Account: a, Amount: 9, Key: key("a")},
		{Account: b, Amount: 50, Key: key("b2-refused")},
		{Account: c, Amount: 100, Key: key("c")},
		{Account: b, Amount: 40, Key: key("b3")},
	}
	release, leader, answers := queueBehindLeader(t, w, l, tn, a, queued)
	release()
	require.NoError(t, answer(t, leader).err)

	refused := map[string]bool{queued[1].Key: true, queued[3].Key: true}
	for i, p := range queued {
		got := answer(t, answers[i])
		if refused[p.Key] {
			var insufficient *credits.InsufficientCreditsError
			require.ErrorAs(t, got.err, &insufficient, p.Key)
			continue
		}
		require.NoError(t, got.err, p.Key)
		require.False(t, got.res.Replay)
		require.Equal(t, -p.Amount, got.res.Entry.Amount)
	}
	stats := l.CoalescingStats()
	require.Equal(t, int64(1), stats.Alone)
	require.Equal(t, int64(1), stats.Batches, "one batch over three accounts")
	require.Equal(t, int64(len(queued)), stats.Batched)

	// b's requests ran in the order they came: 60, then 50 refused (40
	// left), then 40.
	page, err := l.Journal(ctx, tn, credits.JournalParams{Account: b})
	require.NoError(t, err)
	var balances []int64
	for _, e := range page.Items {
		balances = append(balances, e.BalanceAfter)
	}
	require.Equal(t, []int64{0, 40, 100}, balances, "newest first")
	for account, want := range map[credits.AccountID]int64{a: 90, b: 0, c: 0} {
		bal, err := l.Balance(ctx, tn, credits.BalanceParams{Account: account})
		require.NoError(t, err)
		require.Equal(t, want, bal.Total)
	}
	w.reconcile(t, 0)
}

// Two processes (two Ledgers, each with its own pool) spend on the same
// accounts at once: their batches over several accounts lock them in the
// same order, so none deadlocks, and every spend applies once.
func TestBatchesOfTwoProcessesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	accounts := workspaceAccounts(t, w, 1_000_000)
	const perProcess, spends = 12, 40
	type process struct {
		l  *credits.Ledger
		tn *tenancy.Tenant
	}
	var procs []process
	for range 2 {
		pool := w.db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = perProcess })
		tn := w.tenantOver(t, pool, 0)
		procs = append(procs, process{credits.New(nil), tn})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	spent := make(map[credits.AccountID]int64)
	errs := make(chan error, 2*perProcess*spends)
	for p, proc := range procs {
		for g := range perProcess {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(p), uint64(g)))
				for i := range spends {
					account := accounts[rnd.IntN(len(accounts))]
					amount := int64(1 + rnd.IntN(9))
					_, err := proc.l.Spend(ctx, proc.tn, credits.SpendParams{Account: account, Amount: amount, Key: fmt.Sprintf("p%d-g%d-%d", p, g, i)})
					if err != nil {
						errs <- err
						continue
					}
					mu.Lock()
					spent[account] += amount
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var batched int64
	for _, proc := range procs {
		stats := proc.l.CoalescingStats()
		require.Zero(t, stats.Fallbacks, "no batch failed (a deadlock would make one fail)")
		batched += stats.Batched
	}
	require.Positive(t, batched, "the processes' requests were batched")
	for _, account := range accounts {
		bal, err := procs[0].l.Balance(ctx, procs[0].tn, credits.BalanceParams{Account: account})
		require.NoError(t, err)
		require.Equal(t, 1_000_000-spent[account], bal.Total)
	}
	w.reconcile(t, 0)
}
