package credits_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// ledgerWorld is three workspaces with the same ledger history: accounts,
// spent and unspent lots (expiring, scheduled, voided), holds in every
// state, spends into debt, captures and refunds, so that every credit
// table holds rows of every workspace.
type ledgerWorld struct {
	*world
	at       time.Time // when the calls under test are made
	pools    []credits.AccountID
	members  []credits.AccountID
	grants   []credits.GrantID // an unspent lot per workspace
	holds    []credits.HoldID  // an active hold per workspace
	captured []credits.HoldID
	spends   []credits.EntryID
	refunds  []credits.EntryID
}

func newLedgerWorld(t *testing.T) *ledgerWorld {
	t.Helper()
	ctx := context.Background()
	w := &ledgerWorld{world: newWorld(t, 3)}
	l := w.ledger
	for i, tn := range w.tenants {
		pool := w.account(t, i, tenancy.UserID{}, 100)
		member, err := l.OpenAccount(ctx, tn, credits.OpenAccountParams{User: w.owners[i].ID})
		require.NoError(t, err)
		now := w.clock.Now()
		g := w.grant(t, i, pool, 1000, func(p *credits.GrantParams) { p.ExpiresAt = now.Add(48 * time.Hour) })
		w.grant(t, i, pool, 300, func(p *credits.GrantParams) { p.Priority = -1; p.Category = credits.CategoryPromotional })
		w.grant(t, i, pool, 50, func(p *credits.GrantParams) { p.EffectiveAt = now.Add(72 * time.Hour) })
		w.grant(t, i, member.ID, 20, func(p *credits.GrantParams) { p.ExpiresAt = now.Add(time.Hour) })
		voided := w.grant(t, i, member.ID, 5)
		_, err = l.Void(ctx, tn, credits.VoidParams{Grant: voided.Grant.ID, Key: key("void")})
		require.NoError(t, err)
		spend, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 400, Reference: "job", Key: key("spend")})
		require.NoError(t, err)
		refund, err := l.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 10, Key: key("refund")})
		require.NoError(t, err)
		h, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 60, TTL: 6 * time.Hour, Key: key("hold")})
		require.NoError(t, err)
		c, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 40, TTL: time.Hour, Key: key("hold")})
		require.NoError(t, err)
		_, err = l.Capture(ctx, tn, credits.CaptureParams{Hold: c.Hold.ID, Amount: 45, Key: key("capture")})
		require.NoError(t, err)
		_, err = l.Hold(ctx, tn, credits.HoldParams{Account: member.ID, Amount: 5, TTL: time.Minute, Key: key("hold")})
		require.NoError(t, err)
		w.pools = append(w.pools, pool)
		w.members = append(w.members, member.ID)
		w.grants = append(w.grants, g.Grant.ID)
		w.holds = append(w.holds, h.Hold.ID)
		w.captured = append(w.captured, c.Hold.ID)
		w.spends = append(w.spends, spend.Entry.ID)
		w.refunds = append(w.refunds, refund.Entry.ID)
	}
	// The calls run later: a hold and a lot have expired since, unswept.
	w.at = w.clock.Advance(2 * time.Hour)
	return w
}

// ledgerCall is one call of the ledger made as a tenant.
type ledgerCall func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error)

// ledgerCalls are every call the ledger makes, as workspace 0, on its own
// rows and on workspace 1's ids.
func (w *ledgerWorld) ledgerCalls() map[string]ledgerCall {
	a, b := 0, 1
	return map[string]ledgerCall{
		"OpenAccount pool": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.OpenAccount(ctx, tn, credits.OpenAccountParams{})
		},
		"OpenAccount of a member": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.OpenAccount(ctx, tn, credits.OpenAccountParams{User: w.world.members[0].ID, CreditLimit: 5})
		},
		"OpenAccount of B's owner": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.OpenAccount(ctx, tn, credits.OpenAccountParams{User: w.owners[b].ID})
		},
		"SetCreditLimit": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.SetCreditLimit(ctx, tn, credits.SetCreditLimitParams{Account: w.pools[a], CreditLimit: 7})
		},
		"SetCreditLimit on B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.SetCreditLimit(ctx, tn, credits.SetCreditLimitParams{Account: w.pools[b], CreditLimit: 7})
		},
		"Grant": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Grant(ctx, tn, credits.GrantParams{Account: w.pools[a], Amount: 5, Category: credits.CategoryPlan, Key: "iso-grant"})
		},
		"Grant on B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Grant(ctx, tn, credits.GrantParams{Account: w.pools[b], Amount: 5, Category: credits.CategoryPlan, Key: "iso-grant"})
		},
		"Spend": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Spend(ctx, tn, credits.SpendParams{Account: w.pools[a], Amount: 900, Key: "iso-spend"})
		},
		"Spend refused": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Spend(ctx, tn, credits.SpendParams{Account: w.pools[a], Amount: 100_000, Key: "iso-spend"})
		},
		"Spend replayed": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			if _, err := l.Spend(ctx, tn, credits.SpendParams{Account: w.pools[a], Amount: 1, Key: "iso-spend"}); err != nil {
				return nil, err
			}
			return l.Spend(ctx, tn, credits.SpendParams{Account: w.pools[a], Amount: 1, Key: "iso-spend"})
		},
		"Spend on B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Spend(ctx, tn, credits.SpendParams{Account: w.pools[b], Amount: 1, Key: "iso-spend"})
		},
		"Hold": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Hold(ctx, tn, credits.HoldParams{Account: w.pools[a], Amount: 100, TTL: time.Hour, Key: "iso-hold"})
		},
		"Hold on B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Hold(ctx, tn, credits.HoldParams{Account: w.pools[b], Amount: 1, TTL: time.Hour, Key: "iso-hold"})
		},
		"Capture over the held amount": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Capture(ctx, tn, credits.CaptureParams{Hold: w.holds[a], Amount: 500, Key: "iso-capture"})
		},
		"Capture of a captured hold": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Capture(ctx, tn, credits.CaptureParams{Hold: w.captured[a], Amount: 5, Key: "iso-capture"})
		},
		"Capture of B's hold": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Capture(ctx, tn, credits.CaptureParams{Hold: w.holds[b], Amount: 5, Key: "iso-capture"})
		},
		"Release": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Release(ctx, tn, credits.ReleaseParams{Hold: w.holds[a], Key: "iso-release"})
		},
		"Release of B's hold": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Release(ctx, tn, credits.ReleaseParams{Hold: w.holds[b], Key: "iso-release"})
		},
		"Batch": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			res, err := credits.RunBatch(ctx, l, tn, w.pools[a],
				credits.SpendParams{Account: w.pools[a], Amount: 30, Key: "iso-batch-1"},
				credits.SpendParams{Account: w.pools[a], Amount: 100_000, Key: "iso-batch-2"},
				credits.HoldParams{Account: w.pools[a], Amount: 20, TTL: time.Hour, Key: "iso-batch-3"},
				credits.CaptureParams{Hold: w.holds[a], Amount: 70, Key: "iso-batch-4"},
				credits.CaptureParams{Hold: w.holds[b], Amount: 1, Key: "iso-batch-5"},
				credits.ReleaseParams{Hold: w.captured[a], Key: "iso-batch-6"},
				credits.SpendParams{Account: w.pools[a], Amount: 30, Key: "iso-batch-1"})
			return outcomes(res, err, nil, credits.ErrInsufficientCredits, nil, nil, credits.ErrNotFound, credits.ErrHoldCaptured, nil)
		},
		"Batch on B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			res, err := credits.RunBatch(ctx, l, tn, w.pools[b],
				credits.SpendParams{Account: w.pools[b], Amount: 1, Key: "iso-batch-1"},
				credits.HoldParams{Account: w.pools[b], Amount: 1, TTL: time.Hour, Key: "iso-batch-2"},
				credits.ReleaseParams{Hold: w.holds[b], Key: "iso-batch-3"})
			return outcomes(res, err, credits.ErrNotFound, credits.ErrNotFound, credits.ErrNotFound)
		},
		"Batch on two accounts": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			res, err := credits.RunBatches(ctx, l, tn,
				credits.SpendParams{Account: w.pools[a], Amount: 30, Key: "iso-batches-1"},
				credits.SpendParams{Account: w.members[a], Amount: 1_000, Key: "iso-batches-2"},
				credits.HoldParams{Account: w.pools[a], Amount: 2, TTL: time.Hour, Key: "iso-batches-3"},
				credits.SpendParams{Account: w.pools[a], Amount: 30, Key: "iso-batches-1"})
			return outcomes(res, err, nil, credits.ErrInsufficientCredits, nil, nil)
		},
		"Batch on A's and B's accounts": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			res, err := credits.RunBatches(ctx, l, tn,
				credits.SpendParams{Account: w.pools[b], Amount: 1, Key: "iso-batches-1"},
				credits.SpendParams{Account: w.pools[a], Amount: 1, Key: "iso-batches-2"},
				credits.HoldParams{Account: w.members[b], Amount: 1, TTL: time.Hour, Key: "iso-batches-3"})
			return outcomes(res, err, credits.ErrNotFound, nil, credits.ErrNotFound)
		},
		"Refund": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Refund(ctx, tn, credits.RefundParams{Entry: w.spends[a], Amount: 390, Key: "iso-refund"})
		},
		"Refund above what is left": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Refund(ctx, tn, credits.RefundParams{Entry: w.spends[a], Amount: 391, Key: "iso-refund"})
		},
		"Refund of a refund": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Refund(ctx, tn, credits.RefundParams{Entry: w.refunds[a], Amount: 1, Key: "iso-refund"})
		},
		"Refund of B's spend": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Refund(ctx, tn, credits.RefundParams{Entry: w.spends[b], Amount: 1, Key: "iso-refund"})
		},
		"Void": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Void(ctx, tn, credits.VoidParams{Grant: w.grants[a], Key: "iso-void"})
		},
		"Void of B's grant": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Void(ctx, tn, credits.VoidParams{Grant: w.grants[b], Key: "iso-void"})
		},
		"Sweep": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Sweep(ctx, tn, credits.SweepParams{})
		},
		"Sweep of B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Sweep(ctx, tn, credits.SweepParams{Account: w.members[b]})
		},
		"Balance with lots": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Balance(ctx, tn, credits.BalanceParams{Account: w.pools[a], WithLots: true})
		},
		"Balance of B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Balance(ctx, tn, credits.BalanceParams{Account: w.pools[b]})
		},
		"Balances": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Balances(ctx, tn, credits.BalancesParams{Accounts: []credits.AccountID{w.members[a], w.pools[a]}})
		},
		"Balances with B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Balances(ctx, tn, credits.BalancesParams{Accounts: []credits.AccountID{w.pools[a], w.pools[b]}})
		},
		"BalanceAt": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.BalanceAt(ctx, tn, credits.BalanceAtParams{Account: w.pools[a], At: w.at.Add(-90 * time.Minute)})
		},
		"ListAccounts": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.ListAccounts(ctx, tn, credits.ListAccountsParams{Page: tenancy.Page{Limit: 1, WithTotal: true}})
		},
		"GetAccount": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetAccount(ctx, tn, w.members[a])
		},
		"GetAccount of B's": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetAccount(ctx, tn, w.members[b])
		},
		"GetGrant": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetGrant(ctx, tn, w.grants[a])
		},
		"GetGrant of B's": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetGrant(ctx, tn, w.grants[b])
		},
		"GetHold": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetHold(ctx, tn, w.holds[a])
		},
		"GetHold of B's": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetHold(ctx, tn, w.holds[b])
		},
		"GetEntry": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetEntry(ctx, tn, w.spends[a])
		},
		"GetEntry of B's": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.GetEntry(ctx, tn, w.spends[b])
		},
		"Journal": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Journal(ctx, tn, credits.JournalParams{Account: w.pools[a], Kinds: []credits.EntryKind{credits.EntrySpend, credits.EntryGrant}, Page: tenancy.Page{Limit: 2}})
		},
		"Journal of B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Journal(ctx, tn, credits.JournalParams{Account: w.pools[b]})
		},
		"Reconcile": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Reconcile(ctx, tn, credits.ReconcileParams{})
		},
		"Reconcile of B's account": func(ctx context.Context, l *credits.Ledger, tn *tenancy.Tenant) (any, error) {
			return l.Reconcile(ctx, tn, credits.ReconcileParams{Account: w.pools[b]})
		},
	}
}

// refusals are the cases meant to fail, with how.
var refusals = map[string]error{
	"OpenAccount of B's owner":      credits.ErrNotMember,
	"SetCreditLimit on B's account": credits.ErrNotFound,
	"Grant on B's account":          credits.ErrNotFound,
	"Spend refused":                 credits.ErrInsufficientCredits,
	"Spend on B's account":          credits.ErrNotFound,
	"Hold on B's account":           credits.ErrNotFound,
	"Capture of a captured hold":    credits.ErrHoldCaptured,
	"Capture of B's hold":           credits.ErrNotFound,
	"Release of B's hold":           credits.ErrNotFound,
	"Refund above what is left":     credits.ErrRefundExceeds,
	"Refund of a refund":            credits.ErrNotRefundable,
	"Refund of B's spend":           credits.ErrNotFound,
	"Void of B's grant":             credits.ErrNotFound,
	"Balance of B's account":        credits.ErrNotFound,
	"Balances with B's account":     credits.ErrNotFound,
	"GetAccount of B's":             credits.ErrNotFound,
	"GetGrant of B's":               credits.ErrNotFound,
	"GetHold of B's":                credits.ErrNotFound,
	"GetEntry of B's":               credits.ErrNotFound,
	"Reconcile of B's account":      credits.ErrNotFound,
}

var uuidText = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// knownIDs are the ids of every credit row before the calls run.
func knownIDs(t *testing.T, pool *pgxpool.Pool) map[string]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT account_id::text FROM credit_accounts UNION ALL SELECT grant_id::text FROM credit_grants
		UNION ALL SELECT hold_id::text FROM credit_holds UNION ALL SELECT entry_id::text FROM credit_entries`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	return known
}

// scrub renders a result as JSON with the ids the call made replaced: the
// two runs of an isolation check make different ones.
func scrub(known map[string]bool, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return uuidText.ReplaceAllStringFunc(string(b), func(id string) string {
		if known[id] {
			return id
		}
		return "new-id"
	})
}

// Every call of the ledger, made as workspace A in a host's transaction,
// reads and writes only A's rows, as the owner with row-level security
// bypassed and as the application role: see pgtest.CheckIsolation.
func TestEveryLedgerCallIsIsolated(t *testing.T) {
	t.Parallel()
	w := newLedgerWorld(t)
	known := knownIDs(t, w.db.RawPool(t))
	clock := func() time.Time { return w.at }
	ledger := credits.New(&credits.Config{Clock: clock})
	mine, others := w.ws[0].UUID(), []uuid.UUID{w.ws[1].UUID(), w.ws[2].UUID()}
	for name, call := range w.ledgerCalls() {
		t.Run(name, func(t *testing.T) {
			w.db.CheckIsolation(t, mine, others, func(ctx context.Context, tx pgx.Tx) (any, error) {
				scope, _ := tenancy.NewScope(w.ws[0])
				tn, err := tenancy.NewTenant(tx, scope)
				require.NoError(t, err)
				res, err := call(ctx, ledger, tn)
				// An error both runs share would pass the comparison: each
				// case must succeed, or fail as it means to.
				if refusal := refusals[name]; refusal == nil {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, refusal)
				}
				return scrub(known, res), err
			})
		})
	}
}

// recorder keeps the SQL of every statement a pool sends.
type recorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *recorder) add(sql string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = append(r.sql, sql)
}

func (r *recorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.add(d.SQL)
	return ctx
}
func (r *recorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *recorder) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	for _, q := range d.Batch.QueuedQueries {
		r.add(q.SQL)
	}
	return ctx
}
func (r *recorder) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *recorder) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// The isolation cases cover every prepared statement of the package: each
// case is run once more on a pool that records what it sends, and every
// statement must have been sent by some case.
func TestIsolationCasesCoverEveryStatement(t *testing.T) {
	t.Parallel()
	w := newLedgerWorld(t)
	rec := &recorder{}
	pool := w.db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
	ledger := credits.New(&credits.Config{Clock: func() time.Time { return w.at }})
	ctx := context.Background()
	for _, call := range w.ledgerCalls() {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		scope, _ := tenancy.NewScope(w.ws[0])
		tn, err := tenancy.NewTenant(tx, scope)
		require.NoError(t, err)
		_, _ = call(ctx, ledger, tn)
		require.NoError(t, tx.Rollback(ctx))
	}
	var missing []string
	for name, sql := range credits.StatementSQL() {
		if !slices.Contains(rec.sql, sql) {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	require.Empty(t, missing, "statements no isolation case sends: add a case to ledgerCalls")
}

// A call made with A's handle on B's ids fails as not found, whatever it
// is, and B's ledger is as it was.
func TestOtherTenantsIDsAreNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newLedgerWorld(t)
	l, a, b := w.ledger, w.tenants[0], w.tenants[1]
	before, err := l.Reconcile(ctx, b, credits.ReconcileParams{})
	require.NoError(t, err)
	journal := func() []credits.Entry {
		list, err := l.Journal(ctx, b, credits.JournalParams{Account: w.pools[1], Page: tenancy.Page{Limit: tenancy.MaxPageLimit}})
		require.NoError(t, err)
		return list.Items
	}
	entries := journal()
	for name, err := range map[string]error{
		"spend":   second(l.Spend(ctx, a, credits.SpendParams{Account: w.pools[1], Amount: 1, Key: key("x")})),
		"grant":   second(l.Grant(ctx, a, credits.GrantParams{Account: w.pools[1], Amount: 1, Category: credits.CategoryPlan, Key: key("x")})),
		"hold":    second(l.Hold(ctx, a, credits.HoldParams{Account: w.pools[1], Amount: 1, TTL: time.Hour, Key: key("x")})),
		"capture": second(l.Capture(ctx, a, credits.CaptureParams{Hold: w.holds[1], Amount: 1, Key: key("x")})),
		"release": second(l.Release(ctx, a, credits.ReleaseParams{Hold: w.holds[1], Key: key("x")})),
		"refund":  second(l.Refund(ctx, a, credits.RefundParams{Entry: w.spends[1], Amount: 1, Key: key("x")})),
		"void":    second(l.Void(ctx, a, credits.VoidParams{Grant: w.grants[1], Key: key("x")})),
		"limit":   second(l.SetCreditLimit(ctx, a, credits.SetCreditLimitParams{Account: w.pools[1], CreditLimit: 1})),
		"balance": second(l.Balance(ctx, a, credits.BalanceParams{Account: w.pools[1]})),
		"at":      second(l.BalanceAt(ctx, a, credits.BalanceAtParams{Account: w.pools[1], At: w.at})),
		"account": second(l.GetAccount(ctx, a, w.pools[1])),
		"lot":     second(l.GetGrant(ctx, a, w.grants[1])),
		"holdGet": second(l.GetHold(ctx, a, w.holds[1])),
		"entry":   second(l.GetEntry(ctx, a, w.spends[1])),
		"recon":   second(l.Reconcile(ctx, a, credits.ReconcileParams{Account: w.pools[1]})),
	} {
		require.ErrorIs(t, err, credits.ErrNotFound, name)
		require.ErrorIs(t, err, tenancy.ErrNotFound, name)
	}
	// The journal filters on the account within the tenant: B's account
	// has no entries as far as A can see.
	list, err := l.Journal(ctx, a, credits.JournalParams{Account: w.pools[1]})
	require.NoError(t, err)
	require.Empty(t, list.Items)
	after, err := l.Reconcile(ctx, b, credits.ReconcileParams{})
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Equal(t, entries, journal())
}

func second[T any](_ T, err error) error { return err }

// outcomes checks that each request of a batch failed as want says (nil:
// succeeded), and renders the errors as text for the isolation check.
func outcomes(res []any, err error, want ...error) (any, error) {
	if err != nil {
		return nil, err
	}
	if len(res) != len(want) {
		return nil, fmt.Errorf("%d outcomes for %d requests", len(res), len(want))
	}
	out := make([]any, len(res))
	for i, r := range res {
		got, _ := r.(error)
		if (got == nil) != (want[i] == nil) || (got != nil && !errors.Is(got, want[i])) {
			return nil, fmt.Errorf("request %d: got %v, want %v", i, r, want[i])
		}
		out[i] = r
		if got != nil {
			out[i] = "error: " + got.Error()
		}
	}
	return out, nil
}
