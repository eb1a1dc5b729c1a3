package credits_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
)

// cutConn, once cut, lets the server answer and commit, then loses the
// answer: the client sees its connection end mid-statement.
type cutConn struct {
	net.Conn
	cut       *atomic.Bool
	committed func() bool
	executing *atomic.Bool
	lost      *atomic.Bool
}

func (c cutConn) Write(b []byte) (int, error) {
	if c.cut.Load() && len(b) > 0 && b[0] == 'B' { // Bind: the statements are being executed
		c.executing.Store(true)
	}
	return c.Conn.Write(b)
}

func (c cutConn) Read(b []byte) (int, error) {
	if c.lost.Load() {
		return 0, errors.New("connection lost")
	}
	if c.executing.Load() {
		c.lost.Store(true)
		deadline := time.Now().Add(60 * time.Second) // the test checks it committed
		for !c.committed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		c.Conn.Close()
		return 0, errors.New("connection lost")
	}
	return c.Conn.Read(b)
}

// A batch is sent and commits, its answer is lost, and the database is
// then unreachable: the callers' fallbacks cannot connect. Their requests
// were applied, so each gets ErrOutcomeUnknown, not the connection's
// error (which says nothing was sent: a retry with a new key would spend
// twice); once the database is back, a retry with the key is a replay.
func TestFallbackThatCannotConnectAfterItsBatchCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	raw := w.db.RawPool(t)
	var cut, down atomic.Bool
	spends := func() int {
		var n int
		require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM credit_entries WHERE kind = 'spend'`).Scan(&n))
		return n
	}
	const queuedN = 3
	pool := w.db.Connect(t, func(cfg *pgxpool.Config) {
		cfg.MaxConns = 1
		cfg.ConnConfig.Fallbacks = nil
		dial := cfg.ConnConfig.DialFunc
		cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, errors.New("the database is unreachable")
			}
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return cutConn{Conn: c, cut: &cut, committed: func() bool { return spends() == 1+queuedN }, executing: new(atomic.Bool), lost: new(atomic.Bool)}, nil
		}
	})
	tn := w.tenantOver(t, pool, 0)
	l := credits.New(&credits.Config{MaxInFlight: 1})
	accounts := workspaceAccounts(t, w, 100)
	a, b := accounts[0], accounts[1]

	queued := []credits.SpendParams{
		{Account: a, Amount: 2, Key: key("a1")},
		{Account: b, Amount: 3, Key: key("b1")},
		{Account: a, Amount: 4, Key: key("a2")},
	}
	answers, proceed := holdBatchOf(t, w, l, tn, a, queued)
	cut.Store(true)
	down.Store(true)
	close(proceed)

	for i, ch := range answers {
		ans := answer(t, ch)
		require.ErrorIs(t, ans.err, credits.ErrOutcomeUnknown, "caller %d: its batch was sent (and committed), so its outcome is unknown to it", i)
	}
	require.Equal(t, 1+queuedN, spends(), "the batch committed")
	require.Equal(t, int64(queuedN), l.CoalescingStats().Fallbacks)

	cut.Store(false)
	down.Store(false)
	for _, p := range queued {
		res, err := l.Spend(ctx, tn, p)
		require.NoError(t, err, p.Key)
		require.True(t, res.Replay, "%s: applied once, by the batch", p.Key)
		require.Equal(t, -p.Amount, res.Entry.Amount)
	}
	require.Equal(t, 1+queuedN, spends())
	w.reconcile(t, 0)
}
