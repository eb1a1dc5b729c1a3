package credits_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// A request on a free account, with a free turn, goes at once, even with a
// request of a busy account pending ahead of it (it used to wait as long
// as the other account was locked).
func TestSchedulerFreeAccountDoesNotWaitBehindBusyOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(nil) // MaxInFlight 2
	tn := w.tenants[0]
	accounts := workspaceAccounts(t, w, 100)
	a, b := accounts[0], accounts[1]

	release := blockAccount(t, w, a) // a host's transaction on a, say
	leader := spendAsync(ctx, l, tn, credits.SpendParams{Account: a, Amount: 1, Key: key("a1")})
	waitFor(t, "a's leader in flight", func() bool { return l.CoalescingStats().Alone == 1 })
	a2 := spendAsync(ctx, l, tn, credits.SpendParams{Account: a, Amount: 1, Key: key("a2")})
	waitFor(t, "a2 to queue", func() bool { return credits.Pending(l) == 1 })

	// b is free and one of the two turns is free.
	bAns := spendAsync(ctx, l, tn, credits.SpendParams{Account: b, Amount: 1, Key: key("b")})
	select {
	case got := <-bAns:
		require.NoError(t, got.err)
	case <-time.After(30 * time.Second): // a is held until release: a stall never ends
		t.Errorf("a spend on free account b, with a free turn, did not run in 30 s: stalled behind account a (pending=%d, stats=%+v)",
			credits.Pending(l), l.CoalescingStats())
	}
	release()
	require.NoError(t, answer(t, leader).err)
	require.NoError(t, answer(t, a2).err)
}

// Many callers on several accounts, interleaved, in one batch: each spend
// gets an entry of its own account with its own amount and reference, each
// hold a hold on its own account.
func TestSchedulerMultiAccountBatchAnswersEachCaller(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(&credits.Config{MaxInFlight: 1, MaxBatch: 64})
	tn := w.tenants[0]
	accounts := workspaceAccounts(t, w, 1000)
	blocker := accounts[len(accounts)-1]
	accounts = accounts[:len(accounts)-1]
	release, leader := startLeader(t, w, l, tn, blocker)

	type res struct {
		account credits.AccountID
		amount  int64
		ref     string
		hold    bool
		spend   credits.SpendResult
		held    credits.HoldResult
		err     error
	}
	var mu sync.Mutex
	var results []*res
	var wg sync.WaitGroup
	n := 0
	for i := range 40 {
		acct := accounts[(i*7)%len(accounts)]
		r := &res{account: acct, amount: int64(1 + i), ref: fmt.Sprintf("r%d", i), hold: i%3 == 0}
		results = append(results, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.hold {
				h, err := l.Hold(ctx, tn, credits.HoldParams{Account: r.account, Amount: r.amount, TTL: time.Hour, Reference: r.ref, Key: key("h")})
				mu.Lock()
				r.held, r.err = h, err
				mu.Unlock()
				return
			}
			s, err := l.Spend(ctx, tn, credits.SpendParams{Account: r.account, Amount: r.amount, Reference: r.ref, Key: key("s")})
			mu.Lock()
			r.spend, r.err = s, err
			mu.Unlock()
		}()
		n++
		waitFor(t, "queued", func() bool { return credits.Pending(l) == n })
	}
	release()
	require.NoError(t, answer(t, leader).err)
	wg.Wait()
	require.Equal(t, int64(1), l.CoalescingStats().Batches)
	for _, r := range results {
		require.NoError(t, r.err, r.ref)
		page, err := l.Journal(ctx, tn, credits.JournalParams{Account: r.account, Reference: r.ref})
		require.NoError(t, err)
		var id credits.EntryID
		if r.hold {
			require.Equal(t, r.account, r.held.Hold.AccountID, r.ref)
			require.Equal(t, r.amount, r.held.Hold.Amount, r.ref)
			require.Equal(t, r.ref, r.held.Hold.Reference)
			id = r.held.Entry.ID
		} else {
			require.Equal(t, -r.amount, r.spend.Entry.Amount, r.ref)
			require.Equal(t, r.ref, r.spend.Entry.Reference)
			id = r.spend.Entry.ID
		}
		found := false
		for _, e := range page.Items {
			if e.ID == id {
				found = true
				require.Equal(t, r.ref, e.Reference)
			}
		}
		require.True(t, found, "%s: entry not in its account's journal", r.ref)
	}
	w.reconcile(t, 0)
}

// Two batches whose accounts' queue keys (the ids' last 8 bytes) collide
// crosswise do not deadlock: batches take the locks in key order, not id
// order (which did deadlock).
func TestSchedulerCollidingQueueKeysDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	l := credits.New(nil)
	tn := w.tenants[0]
	mk := func(hi, lo string) credits.AccountID {
		id := uuid.MustParse(hi + "-0000-7000-8000-" + lo)
		u, err := tenancy.NewUsers(nil).Create(ctx, w.db.Pool, tenancy.CreateUserParams{Email: hi + "@example.com"})
		require.NoError(t, err)
		_, err = tenancy.NewMembers(nil).Add(ctx, tn, tenancy.AddMemberParams{User: u.ID, Role: tenancy.RoleMember})
		require.NoError(t, err)
		_, err = raw.Exec(ctx, `SELECT meterbase_credit_open_account($1, $2, $3, 0, NULL)`, w.ws[0].UUID(), id, u.ID.UUID())
		require.NoError(t, err)
		a, err := credits.ParseAccountID(id.String())
		require.NoError(t, err)
		w.grant(t, 0, a, 100)
		return a
	}
	// Sorted A < B < C < D; key(A) = key(D) = K1, key(B) = key(C) = K2.
	A := mk("00000001", "000000000001")
	B := mk("00000002", "000000000002")
	C := mk("00000003", "000000000002")
	D := mk("00000004", "000000000001")

	// X = {A, B} takes K1, then waits on A's row, held by a host.
	tx, err := raw.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SELECT 1 FROM credit_accounts WHERE account_id = $1 FOR UPDATE`, A.UUID())
	require.NoError(t, err)
	errs := make(chan error, 2)
	go func() {
		_, err := credits.RunBatches(ctx, l, tn, credits.SpendParams{Account: A, Amount: 1, Key: key("x")}, credits.SpendParams{Account: B, Amount: 1, Key: key("x")})
		errs <- err
	}()
	waitFor(t, "X to wait on A's row", func() bool { return lockWaiters(t, raw) == 1 })
	// Y = {C, D} takes K2, then waits on K1.
	go func() {
		_, err := credits.RunBatches(ctx, l, tn, credits.SpendParams{Account: C, Amount: 1, Key: key("y")}, credits.SpendParams{Account: D, Amount: 1, Key: key("y")})
		errs <- err
	}()
	waitFor(t, "Y to wait on K1", func() bool { return lockWaiters(t, raw) == 2 })
	require.NoError(t, tx.Rollback(ctx)) // X goes on to K2, held by Y
	for range 2 {
		select {
		case err := <-errs:
			require.NoError(t, err, "a batch failed")
		case <-time.After(10 * time.Second):
			t.Fatal("no answer")
		}
	}
}

// A batch that fails whole (here its connection is gone) sends its callers
// to run alone within the batch's turn: each is applied once, and a
// request queued meanwhile on one of its accounts does not overtake them.
func TestSchedulerFailedBatchFallsBackWithinItsTurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	// One connection, never pinged: the batch gets the one its backend
	// was terminated under.
	pool := w.db.Connect(t, func(cfg *pgxpool.Config) {
		cfg.MaxConns = 1
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	})
	tn := w.tenantOver(t, pool, 0)
	l := credits.New(&credits.Config{MaxInFlight: 1})
	accounts := workspaceAccounts(t, w, 100)
	a, b := accounts[0], accounts[1]
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	pid := conn.Conn().PgConn().PID()
	conn.Release()

	queued := []credits.SpendParams{
		{Account: a, Amount: 2, Key: key("a1")},
		{Account: b, Amount: 3, Key: key("b1")},
		{Account: a, Amount: 4, Key: key("a2")},
	}
	answers, proceed := holdBatchOf(t, w, l, tn, a, queued)
	_, err = raw.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	waitFor(t, "the backend to end", func() bool {
		var n int
		require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n))
		return n == 0
	})
	late := spendAsync(ctx, l, tn, credits.SpendParams{Account: a, Amount: 5, Key: key("late")})
	waitFor(t, "the late request to queue", func() bool { return credits.Pending(l) == 1 })
	close(proceed)

	var got []credits.SpendResult
	for i, ch := range answers {
		ans := answer(t, ch)
		require.NoError(t, ans.err, queued[i].Key)
		require.False(t, ans.res.Replay, "%s: the failed batch applied nothing", queued[i].Key)
		require.Equal(t, -queued[i].Amount, ans.res.Entry.Amount)
		got = append(got, ans.res)
	}
	lateAns := answer(t, late)
	require.NoError(t, lateAns.err)

	stats := l.CoalescingStats()
	require.Equal(t, int64(3), stats.Fallbacks, "%+v", stats)
	require.Equal(t, int64(2), stats.Batches, "the failed batch, then the late request's: %+v", stats)
	require.Equal(t, int64(1), stats.SpanningBatches, "%+v", stats)
	// Account a's journal: grant, leader, a1 and a2 (racing each other
	// as the fallbacks they are), then the late request.
	require.ElementsMatch(t, []int64{3, 4}, []int64{got[0].Entry.Seq, got[2].Entry.Seq})
	require.Equal(t, int64(5), lateAns.res.Entry.Seq, "the late request after the fallbacks")
	require.Equal(t, int64(2), got[1].Entry.Seq, "b1 after b's grant")
	var applied int
	require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM credit_entries WHERE kind = 'spend'`).Scan(&applied))
	require.Equal(t, 5, applied, "each request applied once")
	w.reconcile(t, 0)
}

// When the database becomes unreachable as a batch is sent, the batch and
// then each of its callers, falling back, fail to connect. A call that
// could not connect sent nothing: its error is the connection's, not
// ErrOutcomeUnknown, and nothing was applied.
func TestSchedulerFailedBatchOnAnUnreachableDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	const dialDelay = 200 * time.Millisecond
	var down atomic.Bool
	var dials atomic.Int64
	pool := w.db.Connect(t, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.Fallbacks = nil
		dial := cfg.ConnConfig.DialFunc
		cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if !down.Load() {
				return dial(ctx, network, addr)
			}
			dials.Add(1)
			select {
			case <-time.After(dialDelay):
			case <-ctx.Done():
			}
			return nil, errors.New("the database is unreachable")
		}
	})
	tn := w.tenantOver(t, pool, 0)
	l := credits.New(&credits.Config{MaxInFlight: 1})
	accounts := workspaceAccounts(t, w, 1000)
	a, b, c, other := accounts[0], accounts[1], accounts[2], accounts[3]

	var queued []credits.SpendParams
	for i := range 8 {
		queued = append(queued, credits.SpendParams{Account: []credits.AccountID{a, b, c}[i%3], Amount: 1, Key: key("q")})
	}
	answers, proceed := holdBatchOf(t, w, l, tn, a, queued)
	down.Store(true)
	pool.Reset()
	late := spendAsync(ctx, l, tn, credits.SpendParams{Account: other, Amount: 1, Key: key("late")})
	waitFor(t, "the late request to queue", func() bool { return credits.Pending(l) == 1 })
	close(proceed)

	for i, ch := range answers {
		ans := answer(t, ch)
		_, connect := errors.AsType[*pgconn.ConnectError](ans.err)
		require.True(t, connect, "caller %d: %v", i, ans.err)
		require.NotErrorIs(t, ans.err, credits.ErrOutcomeUnknown, "caller %d: nothing was sent", i)
	}
	require.Error(t, answer(t, late).err)
	stats := l.CoalescingStats()
	// Each of the failed batch's callers tried again, and so did the late
	// request, whose batch of one failed too.
	require.Equal(t, int64(len(queued)+1), stats.Fallbacks, "%+v", stats)
	require.GreaterOrEqual(t, dials.Load(), stats.Fallbacks+2, "%+v", stats)

	down.Store(false)
	var spent int
	require.NoError(t, w.db.RawPool(t).QueryRow(ctx, `SELECT count(*) FROM credit_entries WHERE kind = 'spend'`).Scan(&spent))
	require.Equal(t, 1, spent, "only the leader's spend")
	w.reconcile(t, 0)
}
