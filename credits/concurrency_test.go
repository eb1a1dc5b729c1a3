package credits_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// loadConfig shapes a concurrent load.
type loadConfig struct {
	workers int
	ops     int // per worker
	// faults: backends terminated in the middle of the load (a storm
	// that ends when three quarters of the calls are answered, or after
	// stormLimit) and calls made with contexts that end mid-call; clients
	// retry with the same key until they get an answer.
	faults bool
	// noCoalescing runs every call alone (Config.NoCoalescing).
	noCoalescing bool
}

// call is one keyed call: what it did (kind of its entry, for counting)
// and how to make it (again, with the same key).
type call struct {
	key  string
	kind credits.EntryKind
	do   func(ctx context.Context) (any, error)
}

// outcome is a call's definitive answer: its result or a typed refusal.
type outcome struct {
	res any
	err error
}

// loadRun records every key's calls and answers.
type loadRun struct {
	mu       sync.Mutex
	answers  map[string][]outcome
	kinds    map[string]credits.EntryKind
	attempts atomic.Int64
	lost     atomic.Int64 // attempts that ended without an answer (faults)
	longest  atomic.Int64 // the most attempts one call took
	answered atomic.Int64 // calls that got their answer
	// storming is true while backends are being terminated. A storm can
	// starve a call (on a slow machine a call that waits its turn on a
	// busy account outlives its backend again and again); it cannot
	// once the storm is over, so a call is only held to a bound there.
	storming atomic.Bool
}

// stormLimit bounds a storm in time, whatever the load's progress.
const stormLimit = 15 * time.Second

// calmLosses is how many attempts a call may lose after the storm (to
// contexts that end mid-call, one in four attempts) before the test gives
// up on it.
const calmLosses = 100

func (r *loadRun) record(c call, o outcome) {
	r.answered.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[c.key] = append(r.answers[c.key], o)
	r.kinds[c.key] = c.kind
}

// definitive reports whether err is an answer (success or a refusal the
// ledger means) rather than a lost call.
func definitive(err error) bool {
	return err == nil ||
		errors.Is(err, credits.ErrInsufficientCredits) ||
		errors.Is(err, credits.ErrHoldResolved) ||
		errors.Is(err, credits.ErrRefundExceeds) ||
		// A grant retried past the expiry it asked for.
		errors.Is(err, credits.ErrInvalidInput)
}

// run makes a call until it gets an answer: at once without faults (any
// other error fails the test), retrying with the same key with them.
func (r *loadRun) run(t *testing.T, cfg loadConfig, rnd *rand.Rand, c call) outcome {
	lostTo := map[string]int{} // why attempts were lost, for a starved call's report
	lostInCalm := 0
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if cfg.faults && rnd.IntN(4) == 0 {
			ctx, cancel = context.WithTimeout(ctx, time.Duration(rnd.IntN(3000))*time.Microsecond)
		}
		res, err := c.do(ctx)
		cancel()
		r.attempts.Add(1)
		if n := int64(attempt + 1); n > r.longest.Load() {
			r.longest.Store(n) // a report's figure: a lost race between two calls is harmless
		}
		if definitive(err) {
			o := outcome{res: res, err: err}
			r.record(c, o)
			return o
		}
		if !cfg.faults {
			t.Errorf("call %s: %v", c.key, err)
			return outcome{err: err}
		}
		r.lost.Add(1)
		lostTo[err.Error()]++
		if !r.storming.Load() {
			lostInCalm++
		}
		if lostInCalm > calmLosses {
			t.Errorf("call %s: no answer after %d attempts, %d of them after the storm: %v; lost to: %v", c.key, attempt+1, lostInCalm, err, lostTo)
			return outcome{err: err}
		}
		time.Sleep(time.Duration(rnd.IntN(2000)) * time.Microsecond)
	}
}

func replayOf(res any) bool {
	v := reflect.ValueOf(res)
	if !v.IsValid() {
		return false
	}
	return v.FieldByName("Replay").Bool()
}

// runLoad runs the load on a few accounts of a workspace, through the
// application role's pool (row-level security binds every statement),
// then checks that every key applied exactly once, that no account went
// below its overdraft limit, and that every account reconciles.
func runLoad(t *testing.T, cfg loadConfig) {
	ctx := context.Background()
	w := newWorld(t, 1)
	app := w.db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 16 })
	tn := w.tenantOver(t, app, 0)
	// The database's clock: holds and lots expire for real.
	ledger := credits.New(&credits.Config{NoCoalescing: cfg.noCoalescing})
	limits := map[credits.AccountID]int64{}
	var accounts []credits.AccountID
	for _, p := range []credits.OpenAccountParams{{CreditLimit: 300}, {User: w.members[0].ID}, {User: w.members[1].ID, CreditLimit: 50}} {
		res, err := ledger.OpenAccount(ctx, tn, p)
		require.NoError(t, err)
		accounts = append(accounts, res.ID)
		limits[res.ID] = p.CreditLimit
		seed := key("seed")
		_, err = ledger.Grant(ctx, tn, credits.GrantParams{Account: res.ID, Amount: 2000, Category: credits.CategoryPurchase, Key: seed, Reference: seed})
		require.NoError(t, err)
	}

	run := &loadRun{}
	stop := make(chan struct{})
	var killed atomic.Int64
	var stormLasted time.Duration
	var answeredInStorm int64
	var killer sync.WaitGroup
	if cfg.faults {
		run.storming.Store(true)
		killer.Add(1)
		go func() {
			defer killer.Done()
			defer run.storming.Store(false)
			began := time.Now()
			defer func() { stormLasted, answeredInStorm = time.Since(began), run.answered.Load() }()
			for run.answered.Load() < int64(cfg.workers*cfg.ops*3/4) && time.Since(began) < stormLimit {
				select {
				case <-stop:
					return
				case <-time.After(25 * time.Millisecond):
				}
				var n int64
				err := w.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE datname = current_database() AND usename = $1 AND pid <> pg_backend_pid() ORDER BY random() LIMIT 3) k`,
					pgtest.AppRole()).Scan(&n)
				if err == nil {
					killed.Add(n)
				}
			}
		}()
	}

	run.answers, run.kinds = map[string][]outcome{}, map[string]credits.EntryKind{}
	var wg sync.WaitGroup
	for g := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			var holds []credits.HoldID
			var spends []credits.EntryID
			for range cfg.ops {
				account := accounts[rnd.IntN(len(accounts))]
				k := key(fmt.Sprintf("w%d", g))
				var c call
				switch n := rnd.IntN(100); {
				case n < 45:
					p := credits.SpendParams{Account: account, Amount: 1 + rnd.Int64N(40), Reference: k, Key: k}
					c = call{k, credits.EntrySpend, func(ctx context.Context) (any, error) { return ledger.Spend(ctx, tn, p) }}
				case n < 60:
					p := credits.HoldParams{Account: account, Amount: 1 + rnd.Int64N(30), TTL: time.Duration(20+rnd.IntN(2000)) * time.Millisecond, Reference: k, Key: k}
					c = call{k, credits.EntryHold, func(ctx context.Context) (any, error) { return ledger.Hold(ctx, tn, p) }}
				case n < 72 && len(holds) > 0:
					p := credits.CaptureParams{Hold: holds[rnd.IntN(len(holds))], Amount: 1 + rnd.Int64N(45), Reference: k, Key: k}
					c = call{k, credits.EntryCapture, func(ctx context.Context) (any, error) { return ledger.Capture(ctx, tn, p) }}
				case n < 78 && len(holds) > 0:
					p := credits.ReleaseParams{Hold: holds[rnd.IntN(len(holds))], Key: k}
					c = call{k, credits.EntryRelease, func(ctx context.Context) (any, error) { return ledger.Release(ctx, tn, p) }}
				case n < 88 && len(spends) > 0:
					p := credits.RefundParams{Entry: spends[rnd.IntN(len(spends))], Amount: 1 + rnd.Int64N(20), Reference: k, Key: k}
					c = call{k, credits.EntryRefund, func(ctx context.Context) (any, error) { return ledger.Refund(ctx, tn, p) }}
				case n < 97:
					p := credits.GrantParams{Account: account, Amount: 1 + rnd.Int64N(60), Priority: rnd.IntN(3), Category: credits.CategoryPromotional, Reference: k, Key: k}
					if rnd.IntN(2) == 0 {
						p.ExpiresAt = time.Now().Add(time.Duration(500+rnd.IntN(3000)) * time.Millisecond)
					}
					c = call{k, credits.EntryGrant, func(ctx context.Context) (any, error) { return ledger.Grant(ctx, tn, p) }}
				default:
					if _, err := ledger.Sweep(ctx, tn, credits.SweepParams{}); err != nil && !cfg.faults {
						t.Errorf("sweep: %v", err)
					}
					continue
				}
				var o outcome
				if rnd.IntN(10) == 0 {
					// Two first attempts at once: one applies, the other
					// returns its result.
					var pair [2]outcome
					var race sync.WaitGroup
					for i := range pair {
						race.Add(1)
						go func() {
							defer race.Done()
							pair[i] = run.run(t, cfg, rand.New(rand.NewPCG(uint64(g), uint64(i))), c)
						}()
					}
					race.Wait()
					o = pair[0]
				} else {
					o = run.run(t, cfg, rnd, c)
				}
				if o.err == nil && rnd.IntN(5) == 0 {
					run.run(t, cfg, rnd, c) // a retry after the answer
				}
				if o.err != nil {
					continue
				}
				switch r := o.res.(type) {
				case credits.HoldResult:
					holds = append(holds, r.Hold.ID)
				case credits.SpendResult:
					spends = append(spends, r.Entry.ID)
				case credits.CaptureResult:
					spends = append(spends, r.Entry.ID)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	killer.Wait()
	if t.Failed() {
		return
	}
	// The killer's last backends may still sit idle in the pool, dead
	// without knowing it: the checks below start on fresh connections.
	app.Reset()

	// Every key: all answers agree, at most one applied; a key is recorded
	// (and its entry written once) exactly when some answer was a success.
	raw := w.db.RawPool(t)
	recorded := map[string]bool{}
	rows, err := raw.Query(ctx, `SELECT key FROM credit_idempotency`)
	require.NoError(t, err)
	keysStored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	for _, k := range keysStored {
		recorded[k] = true
	}
	counts := map[string]int{}
	rows, err = raw.Query(ctx, `SELECT reference, kind, count(*) FROM credit_entries
		WHERE kind IN ('spend', 'hold', 'capture', 'refund', 'grant') GROUP BY 1, 2`)
	require.NoError(t, err)
	var ref, kind string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&ref, &kind, &n}, func() error { counts[ref+"/"+kind] = n; return nil })
	require.NoError(t, err)
	applied, replays := 0, 0
	for k, answers := range run.answers {
		var first *outcome
		fresh := 0
		for i := range answers {
			a := answers[i]
			if a.err != nil {
				continue
			}
			if first == nil {
				first = &a
			}
			if !replayOf(a.res) {
				fresh++
			} else {
				replays++
			}
			// Every success answers with the same result.
			require.Equal(t, withReplay(first.res), withReplay(a.res), "key %s", k)
		}
		succeeded := first != nil
		require.Equal(t, succeeded, recorded[k], "key %s recorded", k)
		if !succeeded {
			require.Zero(t, fresh)
			continue
		}
		applied++
		// Without faults the one that applied answered; with them it may
		// have been lost on its way back, and every answer is a replay.
		if !cfg.faults {
			require.Equal(t, 1, fresh, "key %s applied by exactly one answer", k)
		} else {
			require.LessOrEqual(t, fresh, 1, "key %s", k)
		}
		if kind := run.kinds[k]; kind != credits.EntryRelease {
			require.Equal(t, 1, counts[k+"/"+string(kind)], "key %s: %s entries", k, kind)
		}
	}
	for k := range recorded {
		if _, ok := run.answers[k]; !ok && counts[k+"/grant"] == 0 {
			require.Failf(t, "stray key", "key %s recorded but never answered", k)
		}
	}

	// Never below the overdraft limit, at any entry.
	var worst int64
	for _, id := range accounts {
		require.NoError(t, raw.QueryRow(ctx, `SELECT coalesce(max(debt_after), 0) FROM credit_entries WHERE account_id = $1`, id.UUID()).Scan(&worst))
		require.LessOrEqual(t, worst, limits[id], "account %s overdrew", id)
		require.NoError(t, raw.QueryRow(ctx, `SELECT coalesce(min(balance_after), 0) FROM credit_entries WHERE account_id = $1`, id.UUID()).Scan(&worst))
		require.GreaterOrEqual(t, worst, -limits[id], "account %s went below its limit", id)
	}
	_, err = ledger.Sweep(ctx, tn, credits.SweepParams{Limit: 1000})
	require.NoError(t, err)
	res, err := ledger.Reconcile(ctx, tn, credits.ReconcileParams{})
	require.NoError(t, err)
	require.True(t, res.OK, "%+v", res)
	var entries int64
	require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM credit_entries`).Scan(&entries))
	stats := ledger.CoalescingStats()
	t.Logf("%d keys, %d applied, %d replays answered, %d attempts (at most %d for one call), %d lost to faults, %d journal entries; coalescing: %+v",
		len(run.answers), applied, replays, run.attempts.Load(), run.longest.Load(), run.lost.Load(), entries, stats)
	if cfg.faults {
		t.Logf("storm: %d backends terminated in %v, until %d of %d answers", killed.Load(), stormLasted.Round(time.Millisecond), answeredInStorm, run.answered.Load())
		require.Positive(t, killed.Load())
	}
	if cfg.noCoalescing {
		require.Zero(t, stats.Batches)
	} else {
		// The load went through batches, not only single calls.
		require.Greater(t, stats.Batched, int64(cfg.workers*cfg.ops/10), "%+v", stats)
		require.Greater(t, stats.Batched, stats.Batches, "%+v", stats)
		require.Positive(t, stats.SpanningBatches, "batches over several accounts: %+v", stats)
		if cfg.faults {
			// Batches were cut off by the faults, and their callers ran alone.
			require.Positive(t, stats.Fallbacks, "%+v", stats)
		}
	}
}

// 64 goroutines on three accounts (one with a credit limit), a share of
// calls raced or retried with the same key.
func TestConcurrentLoad(t *testing.T) {
	t.Parallel()
	runLoad(t, loadConfig{workers: 64, ops: 40})
}

// The same load with coalescing off: every call alone.
func TestConcurrentLoadAlone(t *testing.T) {
	t.Parallel()
	runLoad(t, loadConfig{workers: 64, ops: 20, noCoalescing: true})
}

// The same load while backends are terminated under it and calls are
// cancelled midway; clients retry with the same keys.
func TestLoadUnderFaults(t *testing.T) {
	t.Parallel()
	runLoad(t, loadConfig{workers: 64, ops: 25, faults: true})
}

// The same key used at the same moment for requests on two accounts: one
// applies, the other gets a typed conflict, never a raw error, and nothing
// of it is written.
func TestSameKeyOnTwoAccountsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], credits.New(nil)
	a := w.account(t, 0, tenancy.UserID{}, 0)
	b := w.account(t, 0, w.members[0].ID, 0)
	w.grant(t, 0, a, 1_000_000)
	w.grant(t, 0, b, 1_000_000)
	for range 150 {
		k := key("race")
		var errs [2]error
		var wg sync.WaitGroup
		for i, acct := range []credits.AccountID{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = l.Spend(ctx, tn, credits.SpendParams{Account: acct, Amount: 1, Reference: k, Key: k})
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
				continue
			}
			var c *credits.IdempotencyConflictError
			require.ErrorAs(t, err, &c)
			require.Equal(t, k, c.Key)
		}
		require.Equal(t, 1, ok, "key %s", k)
	}
	var spends int
	require.NoError(t, w.db.RawPool(t).QueryRow(ctx, `SELECT count(*) FROM credit_entries WHERE kind = 'spend'`).Scan(&spends))
	require.Equal(t, 150, spends)
	w.reconcile(t, 0)
}
