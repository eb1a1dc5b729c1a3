package credits_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// The benchmarks compare the ledger with hand-written pgx doing the same
// work, in the same run: each benchmark sets up once, then runs its
// variants in alternation, $MB_BENCH_ROUNDS rounds (default 5; a shared
// machine's noise comes and goes, so compare medians of interleaved
// repeats, not one run of each):
//
//	go test -run '^$' -bench 'Spend|Reads' -benchtime 3000x ./credits/
//
// Each reports ops/s and the p99 latency of one operation (ms) besides
// ns/op. The setup (10,000 accounts, say) happens only when a benchmark
// runs.

// benchDB is a database set up for benchmarks: one workspace, accounts
// whose every lot, entry and figure is what the ledger would have written
// (a grant of 10^12 each), and pools without the tests' tracer.
type benchDB struct {
	w        *world
	ws       uuid.UUID
	tn       *tenancy.Tenant
	bypass   *tenancy.Tenant // WithoutRowLevelSecurity: the pool's role bypasses it
	pool     *pgxpool.Pool
	accounts []uuid.UUID
	ids      []credits.AccountID // the same accounts, as the ledger takes them
	ledger   *credits.Ledger
}

func newBenchDB(b *testing.B, accounts, conns int) *benchDB {
	b.Helper()
	ctx := context.Background()
	w := newWorld(b, 1)
	raw := w.db.RawPool(b)
	_, err := raw.Exec(ctx, `
		WITH a AS (
		    INSERT INTO credit_accounts (workspace_id, account_id, kind, balance, entry_seq, settled_at, created_at, updated_at)
		    SELECT $1, gen_random_uuid(), 'member', 1000000000000, 1, now(), now(), now() FROM generate_series(1, $2)
		    RETURNING account_id),
		g AS (
		    INSERT INTO credit_grants (workspace_id, grant_id, account_id, amount, remaining, effective_at, category, journaled, created_at)
		    SELECT $1, gen_random_uuid(), a.account_id, 1000000000000, 1000000000000, now(), 'purchase', true, now() FROM a
		    RETURNING grant_id, account_id)
		INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, grant_id, effective_at, recorded_at)
		SELECT $1, gen_random_uuid(), g.account_id, 1, 'grant', 1000000000000, 1000000000000, 0, 0, g.grant_id, now(), now() FROM g`,
		w.ws[0].UUID(), accounts)
	require.NoError(b, err)
	_, err = raw.Exec(ctx, `ANALYZE credit_accounts, credit_grants, credit_entries`)
	require.NoError(b, err)
	rows, err := raw.Query(ctx, `SELECT account_id FROM credit_accounts WHERE workspace_id = $1 ORDER BY account_id`, w.ws[0].UUID())
	require.NoError(b, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(b, err)
	pool := w.db.Connect(b, func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = nil
		c.MaxConns = int32(conns)
		c.MinConns = int32(conns)
	})
	scope, _ := tenancy.NewScope(w.ws[0])
	tn, err := tenancy.NewTenant(pool, scope)
	require.NoError(b, err)
	bypass, err := tenancy.NewTenant(pool, scope, tenancy.WithoutRowLevelSecurity())
	require.NoError(b, err)
	d := &benchDB{w: w, ws: w.ws[0].UUID(), tn: tn, bypass: bypass, pool: pool, accounts: ids, ledger: credits.New(nil)}
	for _, id := range ids {
		a, err := credits.ParseAccountID(id.String())
		require.NoError(b, err)
		d.ids = append(d.ids, a)
	}
	return d
}

// concurrently runs b.N operations on clients goroutines and reports
// ops/s and the p99 latency.
func concurrently(b *testing.B, clients int, op func(ctx context.Context, rnd *rand.Rand) error) {
	b.Helper()
	concurrentlyByClient(b, clients, func(ctx context.Context, _ int, rnd *rand.Rand) error { return op(ctx, rnd) })
}

// concurrentlyByClient is concurrently, with the client's number.
func concurrentlyByClient(b *testing.B, clients int, op func(ctx context.Context, client int, rnd *rand.Rand) error) {
	b.Helper()
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(ctx, c, rnd); err != nil {
					failed.Store(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// rounds runs the variants in alternation, benchRounds() times.
func rounds(b *testing.B, variants ...variant) {
	b.Helper()
	for range benchRounds() {
		for _, v := range variants {
			b.Run(v.name, v.run)
		}
	}
}

type variant struct {
	name string
	run  func(b *testing.B)
}

func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("MB_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

var benchKeys atomic.Int64

func benchKey() string { return fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), benchKeys.Add(1)) }

// The same spend written by hand with pgx, in one round trip: the
// account's row locked by a first statement, then one statement (whose
// snapshot follows the lock) that looks the idempotency key up and, if it
// is new, takes the amount from the account's lots in burn order (as many
// as it needs), moves the account's figures, journals the entry and its
// trace, records the key, and returns the entry and the trace; the two are
// sent as one batch (one implicit transaction). It does less than the
// ledger: no settling of expiries, no overdraft, no typed refusal (a
// spend the lots cannot cover just writes nothing).
const rawLock = `SELECT credit_limit, debt FROM credit_accounts WHERE workspace_id = $1 AND account_id = $2 FOR UPDATE`

const rawSpendAfterLock = `
WITH seen AS (
    SELECT result FROM credit_idempotency WHERE workspace_id = $1 AND key = $4),
lots AS (
    SELECT g.grant_id, g.category, g.remaining - g.held AS free,
           coalesce(sum(g.remaining - g.held) OVER (ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id
                                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
      FROM credit_grants g
     WHERE g.workspace_id = $1 AND g.account_id = $2 AND NOT g.depleted AND g.journaled AND g.voided_at IS NULL
       AND g.remaining > g.held AND g.effective_at <= now() AND (g.expires_at IS NULL OR g.expires_at > now())
       AND NOT EXISTS (SELECT FROM seen)),
takes AS (
    SELECT grant_id, category, least(free, $3 - before) AS take FROM lots WHERE before < $3),
debit AS (
    UPDATE credit_grants g SET remaining = g.remaining - t.take FROM takes t
     WHERE g.workspace_id = $1 AND g.grant_id = t.grant_id
       AND (SELECT sum(take) FROM takes) = $3),
acct AS (
    UPDATE credit_accounts c SET balance = c.balance - $3, entry_seq = c.entry_seq + 1, settled_at = now(), updated_at = now()
     WHERE c.workspace_id = $1 AND c.account_id = $2 AND (SELECT sum(take) FROM takes) = $3
    RETURNING c.balance, c.held, c.debt, c.entry_seq),
e AS (
    INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, reference, effective_at, recorded_at)
    SELECT $1, $5, $2, acct.entry_seq, 'spend', -$3, acct.balance, acct.held, acct.debt, $4, now(), now() FROM acct
    RETURNING entry_id, entry_seq, balance_after, held_after, debt_after, recorded_at),
el AS (
    INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
    SELECT $1, e.entry_id, t.grant_id, t.take FROM e, takes t),
k AS (
    INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
    SELECT $1, $4, 'spend', $6, jsonb_build_object('entryId', e.entry_id), now() FROM e)
SELECT e.entry_id, e.entry_seq, e.balance_after, e.held_after, e.debt_after, e.recorded_at,
       array_agg(t.grant_id), array_agg(t.take), array_agg(t.category), (SELECT result FROM seen)
  FROM e, takes t
 GROUP BY 1, 2, 3, 4, 5, 6`

func doRawSpend(ctx context.Context, pool *pgxpool.Pool, ws, account uuid.UUID, amount int64) error {
	k := benchKey()
	hash := sha256.Sum256([]byte(k))
	batch := &pgx.Batch{}
	batch.Queue(rawLock, ws, account)
	batch.Queue(rawSpendAfterLock, ws, account, amount, k, uuid.Must(uuid.NewV7()), hash[:])
	br := pool.SendBatch(ctx, batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	var e credits.Entry
	var ids []uuid.UUID
	var takes []int64
	var categories []string
	var seen []byte
	if err := br.QueryRow().Scan(&e.ID, &e.Seq, &e.BalanceAfter, &e.HeldAfter, &e.DebtAfter, &e.RecordedAt, &ids, &takes, &categories, &seen); err != nil {
		return err
	}
	return br.Close()
}

// rawOneLotLock and rawOneLot are a shortcut: one lot only (the first in
// burn order that covers the whole amount), no replay lookup, nothing
// returned. A reference point, not the same effect.
const rawOneLot = `
WITH lot AS (
    SELECT g.grant_id FROM credit_grants g
     WHERE g.workspace_id = $1 AND g.account_id = $2 AND NOT g.depleted AND g.journaled
       AND g.voided_at IS NULL AND g.remaining - g.held >= $3 AND g.effective_at <= now()
       AND (g.expires_at IS NULL OR g.expires_at > now())
     ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id LIMIT 1),
debit AS (
    UPDATE credit_grants g SET remaining = g.remaining - $3 FROM lot
     WHERE g.workspace_id = $1 AND g.grant_id = lot.grant_id RETURNING g.grant_id),
acct AS (
    UPDATE credit_accounts c SET balance = c.balance - $3, entry_seq = c.entry_seq + 1, settled_at = now(), updated_at = now()
      FROM debit WHERE c.workspace_id = $1 AND c.account_id = $2
    RETURNING c.balance, c.held, c.debt, c.entry_seq),
e AS (
    INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, reference, effective_at, recorded_at)
    SELECT $1, $5, $2, acct.entry_seq, 'spend', -$3, acct.balance, acct.held, acct.debt, $4, now(), now() FROM acct
    RETURNING entry_id),
el AS (
    INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
    SELECT $1, e.entry_id, debit.grant_id, $3 FROM e, debit)
INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
SELECT $1, $4, 'spend', $6, jsonb_build_object('entryId', e.entry_id), now() FROM e
RETURNING 1`

func doRawOneLot(ctx context.Context, pool *pgxpool.Pool, ws, account uuid.UUID, amount int64) error {
	k := benchKey()
	hash := sha256.Sum256([]byte(k))
	batch := &pgx.Batch{}
	batch.Queue(rawLock, ws, account)
	batch.Queue(rawOneLot, ws, account, amount, k, uuid.Must(uuid.NewV7()), hash[:])
	br := pool.SendBatch(ctx, batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	var one int
	if err := br.QueryRow().Scan(&one); err != nil {
		return err
	}
	return br.Close()
}

// rawSpendOneStatement does the same in one statement, the lock taken in
// a CTE. It is faster, and wrong under contention: the statement's
// snapshot predates the lock it waits for, so after a concurrent spend of
// the same account it acts on the lots as they were (only the lots' CHECK
// constraints stop it, with an error). Kept as a reference point.
const rawSpendOneStatement = `
WITH a AS (
    SELECT account_id FROM credit_accounts WHERE workspace_id = $1 AND account_id = $2 FOR UPDATE),
lot AS (
    SELECT g.grant_id FROM credit_grants g, a
     WHERE g.workspace_id = $1 AND g.account_id = a.account_id AND NOT g.depleted AND g.journaled
       AND g.voided_at IS NULL AND g.remaining - g.held >= $3 AND g.effective_at <= now()
       AND (g.expires_at IS NULL OR g.expires_at > now())
     ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id LIMIT 1),
debit AS (
    UPDATE credit_grants g SET remaining = g.remaining - $3 FROM lot
     WHERE g.workspace_id = $1 AND g.grant_id = lot.grant_id RETURNING g.grant_id),
acct AS (
    UPDATE credit_accounts c SET balance = c.balance - $3, entry_seq = c.entry_seq + 1, settled_at = now(), updated_at = now()
      FROM debit WHERE c.workspace_id = $1 AND c.account_id = $2
    RETURNING c.balance, c.held, c.debt, c.entry_seq),
e AS (
    INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, reference, effective_at, recorded_at)
    SELECT $1, $5, $2, acct.entry_seq, 'spend', -$3, acct.balance, acct.held, acct.debt, $4, now(), now() FROM acct
    RETURNING entry_id),
el AS (
    INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
    SELECT $1, e.entry_id, debit.grant_id, $3 FROM e, debit)
INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
SELECT $1, $4, 'spend', $6, jsonb_build_object('entryId', e.entry_id), now() FROM e
RETURNING 1`

func doRawSpendOneStatement(ctx context.Context, pool *pgxpool.Pool, ws, account uuid.UUID, amount int64) error {
	k := benchKey()
	hash := sha256.Sum256([]byte(k))
	var one int
	return pool.QueryRow(ctx, rawSpendOneStatement, ws, account, amount, k, uuid.Must(uuid.NewV7()), hash[:]).Scan(&one)
}

// 1. Spends spread over 10,000 accounts by 16 clients: the ledger against
// the same effect written by hand (and against the one-statement shortcut
// that is only right without contention).
func BenchmarkSpendSpread(b *testing.B) {
	const clients = 16
	d := newBenchDB(b, 10_000, clients)
	spend := func(tn *tenancy.Tenant) func(b *testing.B) {
		return func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				id := d.ids[rnd.IntN(len(d.ids))]
				_, err := d.ledger.Spend(ctx, tn, credits.SpendParams{Account: id, Amount: 1, Reference: "bench", Key: benchKey()})
				return err
			})
		}
	}
	rounds(b,
		variant{"ledger", spend(d.tn)},
		variant{"ledger-no-rls-context", spend(d.bypass)},
		variant{"raw-pgx", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				return doRawSpend(ctx, d.pool, d.ws, d.accounts[rnd.IntN(len(d.accounts))], 1)
			})
		}},
		variant{"raw-pgx-one-lot", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				return doRawOneLot(ctx, d.pool, d.ws, d.accounts[rnd.IntN(len(d.accounts))], 1)
			})
		}},
		variant{"raw-pgx-one-statement", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				return doRawSpendOneStatement(ctx, d.pool, d.ws, d.accounts[rnd.IntN(len(d.accounts))], 1)
			})
		}})
}

// naiveSpend is the pattern the ledger replaces: the account's row locked
// by one round trip, the work done by the next ones, the lock held until
// the commit's.
func naiveSpend(ctx context.Context, pool *pgxpool.Pool, ws, account, lot uuid.UUID, amount int64) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var balance, seq int64
		if err := tx.QueryRow(ctx, `SELECT balance, entry_seq FROM credit_accounts WHERE workspace_id = $1 AND account_id = $2 FOR UPDATE`,
			ws, account).Scan(&balance, &seq); err != nil {
			return err
		}
		if balance < amount {
			return fmt.Errorf("insufficient")
		}
		if _, err := tx.Exec(ctx, `UPDATE credit_grants SET remaining = remaining - $3 WHERE workspace_id = $1 AND grant_id = $2`, ws, lot, amount); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE credit_accounts SET balance = balance - $3, entry_seq = entry_seq + 1, updated_at = now() WHERE workspace_id = $1 AND account_id = $2`,
			ws, account, amount); err != nil {
			return err
		}
		k := benchKey()
		_, err := tx.Exec(ctx, `INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, reference, effective_at, recorded_at)
			VALUES ($1, $2, $3, $4, 'spend', -$5::bigint, $6, 0, 0, $7, now(), now())`, ws, uuid.Must(uuid.NewV7()), account, seq+1, amount, balance-amount, k)
		return err
	})
}

// 2. One hot account among 10,000, 32 concurrent spenders: the ledger
// (coalescing, the default) against the naive pattern, against itself
// with coalescing off, as two processes (two Ledgers, each with its own
// pool and 16 of the spenders), and against the ceiling of one hot row
// that Postgres gives without batching: a bare guarded single-row UPDATE
// run by pgbench with as many clients.
func BenchmarkSpendHot(b *testing.B) {
	const clients = 32
	d := newBenchDB(b, 10_000, clients)
	account := d.accounts[0]
	var lot uuid.UUID
	require.NoError(b, d.pool.QueryRow(context.Background(), `SELECT grant_id FROM credit_grants WHERE account_id = $1`, account).Scan(&lot))
	id := d.ids[0]
	spendWith := func(ledgers ...*credits.Ledger) func(b *testing.B) {
		// Ledger i serves the spenders c with c % len(ledgers) == i: one
		// Ledger over the benchmark's pool, or each over a pool of its own,
		// as so many processes (closed after each run, so that pgbench
		// finds its connections).
		return func(b *testing.B) {
			tenants := []*tenancy.Tenant{d.tn}
			if len(ledgers) > 1 {
				tenants = tenants[:0]
				for range ledgers {
					pool := d.w.db.Connect(b, func(c *pgxpool.Config) {
						c.ConnConfig.Tracer = nil
						c.MaxConns = int32(clients / len(ledgers))
					})
					defer pool.Close()
					scope, _ := tenancy.NewScope(d.w.ws[0])
					tn, err := tenancy.NewTenant(pool, scope)
					require.NoError(b, err)
					tenants = append(tenants, tn)
				}
			}
			concurrentlyByClient(b, clients, func(ctx context.Context, client int, _ *rand.Rand) error {
				i := client % len(ledgers)
				_, err := ledgers[i].Spend(ctx, tenants[i], credits.SpendParams{Account: id, Amount: 1, Reference: "bench", Key: benchKey()})
				return err
			})
		}
	}
	coalescing := credits.New(nil)
	rounds(b,
		variant{"naive", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, _ *rand.Rand) error {
				return naiveSpend(ctx, d.pool, d.ws, account, lot, 1)
			})
		}},
		variant{"ledger", spendWith(coalescing)},
		variant{"ledger-coalescing-off", spendWith(credits.New(&credits.Config{NoCoalescing: true}))},
		variant{"ledger-two-processes", spendWith(credits.New(nil), credits.New(nil))},
		variant{"pgbench-guarded-update", func(b *testing.B) { pgbenchHotRow(b, d, clients) }})
	b.Logf("coalescing of the one-process ledger: %+v", coalescing.CoalescingStats())
}

// 4. A lone caller, one spend at a time on one account: its latency with
// coalescing on (the default) and off.
func BenchmarkSpendLone(b *testing.B) {
	d := newBenchDB(b, 1000, 1)
	id := d.ids[0]
	spend := func(l *credits.Ledger) func(b *testing.B) {
		return func(b *testing.B) {
			concurrently(b, 1, func(ctx context.Context, _ *rand.Rand) error {
				_, err := l.Spend(ctx, d.tn, credits.SpendParams{Account: id, Amount: 1, Reference: "bench", Key: benchKey()})
				return err
			})
		}
	}
	rounds(b,
		variant{"coalescing-on", spend(credits.New(nil))},
		variant{"coalescing-off", spend(credits.New(&credits.Config{NoCoalescing: true}))})
}

// pgbenchHotRow runs b.N transactions of a bare guarded UPDATE of one row
// (a balance and nothing else: no journal, no key, no lots) through
// pgbench with clients connections, and reports its ops/s and p99 from
// its per-transaction log.
func pgbenchHotRow(b *testing.B, d *benchDB, clients int) {
	ctx := context.Background()
	_, err := d.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_hot_row (id int PRIMARY KEY, balance bigint NOT NULL);
		INSERT INTO bench_hot_row VALUES (1, 1000000000000) ON CONFLICT DO NOTHING`)
	require.NoError(b, err)
	dir := b.TempDir()
	script := filepath.Join(dir, "update.sql")
	require.NoError(b, os.WriteFile(script, []byte("UPDATE bench_hot_row SET balance = balance - 1 WHERE id = 1 AND balance >= 1;\n"), 0o600))
	cc := d.w.db.Config.ConnConfig
	perClient := max(1, b.N/clients)
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2",
		"-t", strconv.Itoa(perClient), "-f", script, "--log", "--log-prefix", filepath.Join(dir, "log"),
		"-h", cc.Host, "-p", strconv.Itoa(int(cc.Port)), "-U", cc.User, cc.Database)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cc.Password)
	b.ResetTimer()
	out, err := cmd.CombinedOutput()
	b.StopTimer()
	require.NoError(b, err, "pgbench (from the PostgreSQL client package) must be installed: %s", out)
	m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindSubmatch(out)
	require.NotNil(b, m, "%s", out)
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(b, err)
	logs, err := filepath.Glob(filepath.Join(dir, "log*"))
	require.NoError(b, err)
	var lat []int64
	for _, f := range logs {
		data, err := os.ReadFile(f)
		require.NoError(b, err)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			// client_id transaction_no time(µs) script_no time_epoch time_us
			fields := strings.Fields(line)
			if len(fields) >= 3 {
				us, err := strconv.ParseInt(fields[2], 10, 64)
				require.NoError(b, err)
				lat = append(lat, us)
			}
		}
	}
	require.Len(b, lat, perClient*clients)
	slices.Sort(lat)
	b.ReportMetric(tps, "ops/s")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1000, "p99-ms")
}

// 3. A balance read and a journal page (50 entries with their trace) of
// 10,000 accounts, by 4 clients: the ledger against the same SQL sent by
// hand with pgx, without the handle (and its row-level security context).
func BenchmarkReads(b *testing.B) {
	const clients = 4
	d := newBenchDB(b, 10_000, clients)
	ctx := context.Background()
	// 60 entries on a tenth of the accounts, for the journal pages.
	busy, busyIDs := d.accounts[:1000], d.ids[:1000]
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < len(busy); i += 8 {
				id := busyIDs[i]
				for range 60 {
					_, err := d.ledger.Spend(ctx, d.tn, credits.SpendParams{Account: id, Amount: 1, Key: benchKey()})
					require.NoError(b, err)
				}
			}
		}()
	}
	wg.Wait()
	_, err := d.pool.Exec(ctx, `ANALYZE credit_accounts, credit_grants, credit_entries, credit_entry_lots`)
	require.NoError(b, err)
	balanceSQL, journalSQL := credits.StatementSQL()["balances"], credits.StatementSQL()["journal"]
	accountID := func(rnd *rand.Rand, ids []credits.AccountID) credits.AccountID { return ids[rnd.IntN(len(ids))] }
	balance := func(tn *tenancy.Tenant) func(b *testing.B) {
		return func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				_, err := d.ledger.Balance(ctx, tn, credits.BalanceParams{Account: accountID(rnd, d.ids)})
				return err
			})
		}
	}
	journal := func(tn *tenancy.Tenant) func(b *testing.B) {
		return func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				list, err := d.ledger.Journal(ctx, tn, credits.JournalParams{Account: accountID(rnd, busyIDs)})
				if err == nil && len(list.Items) != 50 {
					err = fmt.Errorf("%d entries", len(list.Items))
				}
				return err
			})
		}
	}
	rounds(b,
		variant{"balance/ledger", balance(d.tn)},
		variant{"balance/ledger-no-rls-context", balance(d.bypass)},
		variant{"balance/raw-pgx", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				rows, err := d.pool.Query(ctx, balanceSQL, d.ws, nil, false, []uuid.UUID{d.accounts[rnd.IntN(len(d.accounts))]})
				if err != nil {
					return err
				}
				n := 0
				for rows.Next() {
					var id uuid.UUID
					var limit, total, held, debt, free, scheduled int64
					var at time.Time
					var past bool
					var items []byte
					if err := rows.Scan(&id, &limit, &at, &past, &total, &held, &debt, &free, &scheduled, &items); err != nil {
						return err
					}
					n++
				}
				if n != 1 {
					return fmt.Errorf("%d rows", n)
				}
				return rows.Err()
			})
		}},
		variant{"journal/ledger", journal(d.tn)},
		variant{"journal/ledger-no-rls-context", journal(d.bypass)},
		variant{"journal/raw-pgx", func(b *testing.B) {
			concurrently(b, clients, func(ctx context.Context, rnd *rand.Rand) error {
				rows, err := d.pool.Query(ctx, journalSQL, d.ws, busy[rnd.IntN(len(busy))], int64(1<<62), []string{}, "", nil, nil, int64(51))
				if err != nil {
					return err
				}
				entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (credits.Entry, error) { return scanBenchEntry(row) })
				if err == nil && len(entries) != 51 {
					err = fmt.Errorf("%d entries", len(entries))
				}
				return err
			})
		}})
}

// scanBenchEntry reads a journal row as the ledger does, so that the
// hand-written read does the same work.
func scanBenchEntry(row pgx.Row) (credits.Entry, error) {
	var e credits.Entry
	var grant, hold, refunded *uuid.UUID
	var lots []byte
	err := row.Scan(&e.ID, &e.AccountID, &e.Seq, &e.Kind, &e.Amount, &e.HeldDelta, &e.DebtDelta,
		&e.BalanceAfter, &e.HeldAfter, &e.DebtAfter, &grant, &hold, &refunded, &e.Reference, &e.EffectiveAt, &e.RecordedAt, &lots)
	if err != nil {
		return e, err
	}
	if len(lots) > 0 {
		err = json.Unmarshal(lots, &e.Lots)
	}
	return e, err
}
