package credits_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// blockAccount holds the account's queue lock (the advisory lock every
// ledger write takes first) from another session, until release is called.
func blockAccount(t *testing.T, w *world, account credits.AccountID) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := w.pool.Acquire(ctx)
	require.NoError(t, err)
	const lock = `('x' || substr(replace($1::text, '-', ''), 17, 16))::bit(64)::bigint`
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock(`+lock+`)`, account.UUID())
	require.NoError(t, err)
	var once sync.Once
	release = func() {
		once.Do(func() {
			_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lock+`)`, account.UUID())
			require.NoError(t, err)
			conn.Release()
		})
	}
	t.Cleanup(release)
	return release
}

// lockWaiters counts the backends of raw's database waiting on a lock.
func lockWaiters(t *testing.T, raw *pgxpool.Pool) (n int) {
	t.Helper()
	require.NoError(t, raw.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n))
	return n
}

// keyRecords counts the idempotency records of key in raw's database: 1
// once a request with it has been applied.
func keyRecords(t *testing.T, raw *pgxpool.Pool, key string) (n int) {
	t.Helper()
	require.NoError(t, raw.QueryRow(context.Background(), `SELECT count(*) FROM credit_idempotency WHERE key = $1`, key).Scan(&n))
	return n
}

// startLeader makes a turn of tn's workspace busy with a leader's spend
// on blocked, held by a host's lock; l has run nothing before. The leader
// goes on at release.
func startLeader(t *testing.T, w *world, l *credits.Ledger, tn *tenancy.Tenant, blocked credits.AccountID) (release func(), leader chan spendAnswer) {
	t.Helper()
	release = blockAccount(t, w, blocked)
	leader = spendAsync(context.Background(), l, tn, credits.SpendParams{Account: blocked, Amount: 1, Key: key("leader")})
	waitFor(t, "the leader to run", func() bool { return l.CoalescingStats().Alone == 1 })
	return release, leader
}

// queueBehindLeader starts a leader on blocked (startLeader) and queues
// the requests behind it, in order.
func queueBehindLeader(t *testing.T, w *world, l *credits.Ledger, tn *tenancy.Tenant, blocked credits.AccountID, queued []credits.SpendParams) (release func(), leader chan spendAnswer, answers []chan spendAnswer) {
	t.Helper()
	ctx := context.Background()
	release, leader = startLeader(t, w, l, tn, blocked)
	for i, p := range queued {
		answers = append(answers, spendAsync(ctx, l, tn, p))
		waitFor(t, "the request to queue", func() bool { return credits.Pending(l) == i+1 })
	}
	return release, leader, answers
}

// pauseFirstBatch holds l's first batch before it is sent: sending is
// closed when it gets there, and it goes on once proceed is closed. Later
// batches (a retry that finds its account's turn not yet over goes as a
// batch of its own) do not wait.
func pauseFirstBatch(l *credits.Ledger) (sending, proceed chan struct{}) {
	sending, proceed = make(chan struct{}), make(chan struct{})
	var once sync.Once
	credits.SetBeforeSend(l, func() { once.Do(func() { close(sending); <-proceed }) })
	return sending, proceed
}

// holdBatchOf queues the requests behind a leader on blocked, lets the
// leader finish, and holds their batch just before it is sent: the
// test does what it will to the database, then closes proceed.
func holdBatchOf(t *testing.T, w *world, l *credits.Ledger, tn *tenancy.Tenant, blocked credits.AccountID, queued []credits.SpendParams) (answers []chan spendAnswer, proceed chan struct{}) {
	t.Helper()
	release, leader, answers := queueBehindLeader(t, w, l, tn, blocked, queued)
	sending, proceed := pauseFirstBatch(l)
	release()
	require.NoError(t, answer(t, leader).err)
	<-sending
	return answers, proceed
}

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type spendAnswer struct {
	res credits.SpendResult
	err error
}

func spendAsync(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant, p credits.SpendParams) chan spendAnswer {
	ch := make(chan spendAnswer, 1)
	go func() {
		res, err := l.Spend(ctx, tn, p)
		ch <- spendAnswer{res, err}
	}()
	return ch
}

func answer(t *testing.T, ch chan spendAnswer) spendAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
		return spendAnswer{}
	}
}

// A caller that gives up while its request waits in the queue leaves
// without effect, with its context's error; one that gives up after its
// request was sent gets an *OutcomeUnknownError, and its retry with the
// same key returns what the batch did; the neighbours of both are served.
func TestCancelledCallersOfABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(nil)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 1000)

	release, leader := startLeader(t, w, l, tn, account)

	queuedCtx, cancelQueued := context.WithCancel(ctx)
	sentCtx, cancelSent := context.WithCancel(ctx)
	queued := credits.SpendParams{Account: account, Amount: 10, Key: key("queued")}
	sent := credits.SpendParams{Account: account, Amount: 20, Key: key("sent")}
	neighbour := credits.SpendParams{Account: account, Amount: 30, Key: key("neighbour")}
	queuedCh := spendAsync(queuedCtx, l, tn, queued)
	waitFor(t, "a queued request", func() bool { return credits.Pending(l) == 1 })
	sentCh := spendAsync(sentCtx, l, tn, sent)
	neighbourCh := spendAsync(ctx, l, tn, neighbour)
	waitFor(t, "three queued requests", func() bool { return credits.Pending(l) == 3 })

	// Given up in the queue: gone at once, without effect.
	cancelQueued()
	a := answer(t, queuedCh)
	require.ErrorIs(t, a.err, context.Canceled)
	require.NotErrorIs(t, a.err, credits.ErrOutcomeUnknown)
	require.Equal(t, 2, credits.Pending(l))

	// Given up once sent: the batch waits in the hook until the caller has
	// its answer, then runs for the neighbour.
	sending, proceed := pauseFirstBatch(l)
	release()
	require.NoError(t, answer(t, leader).err)
	<-sending
	cancelSent()
	a = answer(t, sentCh)
	require.ErrorIs(t, a.err, credits.ErrOutcomeUnknown)
	require.ErrorIs(t, a.err, context.Canceled)
	var unknown *credits.OutcomeUnknownError
	require.ErrorAs(t, a.err, &unknown)
	require.Equal(t, sent.Key, unknown.Key)
	require.Equal(t, "spend", unknown.Operation)
	close(proceed)
	n := answer(t, neighbourCh)
	require.NoError(t, n.err)
	require.False(t, n.res.Replay)
	stats := l.CoalescingStats()
	require.Equal(t, int64(1), stats.Batches)
	require.Equal(t, int64(2), stats.Batched)

	// The batch went on after the caller left: its retry is a replay.
	retry, err := l.Spend(ctx, tn, sent)
	require.NoError(t, err)
	require.True(t, retry.Replay, "the batch applied the request of the caller who gave up")
	require.Equal(t, int64(-20), retry.Entry.Amount)
	// The request given up in the queue was never applied: its retry is
	// a first application.
	first, err := l.Spend(ctx, tn, queued)
	require.NoError(t, err)
	require.False(t, first.Replay)

	bal, err := l.Balance(ctx, tn, credits.BalanceParams{Account: account})
	require.NoError(t, err)
	require.Equal(t, int64(1000-1-10-20-30), bal.Total)
	w.reconcile(t, 0)
}

// When every caller of a batch gives up before it is sent, the batch is
// not sent (its context has ended): each caller has an
// *OutcomeUnknownError, and a retry applies the request once.
func TestBatchWhoseCallersAllGaveUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(nil)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 100)

	release, leader := startLeader(t, w, l, tn, account)
	callerCtx, cancel := context.WithCancel(ctx)
	p := credits.SpendParams{Account: account, Amount: 5, Key: key("gave-up")}
	ch := spendAsync(callerCtx, l, tn, p)
	waitFor(t, "a queued request", func() bool { return credits.Pending(l) == 1 })
	sending, proceed := pauseFirstBatch(l)
	release()
	require.NoError(t, answer(t, leader).err)
	<-sending
	cancel()
	require.ErrorIs(t, answer(t, ch).err, credits.ErrOutcomeUnknown)
	close(proceed)
	waitFor(t, "the queue to empty", func() bool { return credits.Pending(l) == 0 })

	require.Zero(t, keyRecords(t, w.db.RawPool(t), p.Key), "a batch none of whose callers waits is not sent")
	res, err := l.Spend(ctx, tn, p)
	require.NoError(t, err)
	require.False(t, res.Replay)
	w.reconcile(t, 0)
}

// A lone caller runs at once, alone: no batch, no wait. A handle bound to
// a transaction never joins a batch, however many run at once.
func TestLoneCallersAndTransactionsRunAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(nil)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 1000)
	for range 5 {
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: key("lone")})
		require.NoError(t, err)
	}
	require.Equal(t, credits.CoalescingStats{Alone: 5}, l.CoalescingStats())

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- tn.InTx(ctx, func(tx *tenancy.Tenant) error {
				_, err := l.Spend(ctx, tx, credits.SpendParams{Account: account, Amount: 1, Key: key("in-tx")})
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	stats := l.CoalescingStats()
	require.Zero(t, stats.Batches)
	require.Equal(t, int64(5+16), stats.Alone)
}

// Coalescing off: every call alone, whatever the concurrency.
func TestNoCoalescing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(&credits.Config{NoCoalescing: true})
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 1000)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: key("off")})
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Equal(t, credits.CoalescingStats{Alone: 32}, l.CoalescingStats())
}

// A pool that runs dry in the middle of a batch: the spends it can pay
// succeed, in journal order, and each of the others gets its own
// insufficient-credits error with what was left when its turn came; a
// refused request never fails its neighbours.
func TestPoolRunsDryMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	l := credits.New(&credits.Config{MaxBatch: 64})
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 100)

	release, leader := startLeader(t, w, l, tn, account)
	var chans []chan spendAnswer
	for i := range 40 {
		chans = append(chans, spendAsync(ctx, l, tn, credits.SpendParams{Account: account, Amount: int64(1 + i%7), Key: key("dry")}))
	}
	waitFor(t, "forty queued requests", func() bool { return credits.Pending(l) == 40 })
	release()
	require.NoError(t, answer(t, leader).err)

	var spent, ok int64
	var refusals []*credits.InsufficientCreditsError
	for _, ch := range chans {
		a := answer(t, ch)
		var insufficient *credits.InsufficientCreditsError
		switch {
		case a.err == nil:
			ok++
			spent -= a.res.Entry.Amount
		case errors.As(a.err, &insufficient):
			refusals = append(refusals, insufficient)
		default:
			t.Fatalf("unexpected error: %v", a.err)
		}
	}
	require.NotEmpty(t, refusals)
	require.Equal(t, 40, int(ok)+len(refusals))
	require.Equal(t, int64(1), l.CoalescingStats().Batches, "%+v", l.CoalescingStats())
	bal, err := l.Balance(ctx, tn, credits.BalanceParams{Account: account})
	require.NoError(t, err)
	require.Equal(t, 100-1-spent, bal.Total)

	// Every refusal was right at its turn in the serial order the journal
	// shows: what it was told was left is a balance the journal passed
	// through, and less than it asked.
	rows, err := w.db.RawPool(t).Query(ctx, `SELECT balance_after FROM credit_entries WHERE account_id = $1 AND kind = 'spend' ORDER BY entry_seq`, account.UUID())
	require.NoError(t, err)
	after, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Len(t, after, int(ok)+1)
	for _, r := range refusals {
		require.Contains(t, after, r.Available)
		require.Less(t, r.Available, r.Requested)
		require.Less(t, bal.Total, r.Requested)
	}
	w.reconcile(t, 0)
}

// The sweeper skips an account whose queue another transaction holds (a
// batch between two passes, say), as it skips one whose row is locked,
// and settles it once the queue is free.
func TestSweepSkipsAnAccountWhoseQueueIsHeld(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn := w.tenants[0]
	account := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, account, 100, func(p *credits.GrantParams) { p.ExpiresAt = w.clock.Now().Add(time.Minute) })
	w.clock.Advance(time.Hour)
	release := blockAccount(t, w, account)
	res, err := w.ledger.Sweep(ctx, tn, credits.SweepParams{Account: account})
	require.NoError(t, err)
	require.Equal(t, credits.SweepResult{}, res)
	release()
	res, err = w.ledger.Sweep(ctx, tn, credits.SweepParams{Account: account})
	require.NoError(t, err)
	require.Equal(t, credits.SweepResult{Accounts: 1, Entries: 1}, res)
	w.reconcile(t, 0)
}

// A batch sent through tenant A's handle on a pool, as the application
// role, on B's account (the leak tests send batches in a host's
// transaction; this is the pool's own path): every request is not found,
// and B's ledger is as it was.
func TestABatchOnAnotherTenantsAccountFindsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 2)
	app := w.db.AppPool(t)
	a := w.tenantOver(t, app, 0)
	theirs := w.account(t, 1, tenancy.UserID{}, 100)
	w.grant(t, 1, theirs, 50)
	l := credits.New(nil)
	before, err := l.Reconcile(ctx, w.tenants[1], credits.ReconcileParams{})
	require.NoError(t, err)

	release, leader := startLeader(t, w, l, a, theirs)
	var chans []chan spendAnswer
	for range 5 {
		chans = append(chans, spendAsync(ctx, l, a, credits.SpendParams{Account: theirs, Amount: 10, Key: key("theirs")}))
	}
	waitFor(t, "five queued requests", func() bool { return credits.Pending(l) == 5 })
	release()
	require.ErrorIs(t, answer(t, leader).err, credits.ErrNotFound)
	for _, ch := range chans {
		require.ErrorIs(t, answer(t, ch).err, credits.ErrNotFound)
	}
	require.Equal(t, int64(1), l.CoalescingStats().Batches, "%+v", l.CoalescingStats())
	after, err := l.Reconcile(ctx, w.tenants[1], credits.ReconcileParams{})
	require.NoError(t, err)
	require.Equal(t, before, after)
}
