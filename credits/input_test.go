package credits_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// ledgerState sums every credit table, to show that a refused call wrote
// nothing.
func ledgerState(t *testing.T, w *world) string {
	t.Helper()
	var s string
	require.NoError(t, w.db.RawPool(t).QueryRow(context.Background(), `SELECT concat_ws(' ',
		(SELECT count(*) || ':' || coalesce(sum(balance + held + debt + scheduled + entry_seq + credit_limit), 0) FROM credit_accounts),
		(SELECT count(*) || ':' || coalesce(sum(remaining + held), 0) || ':' || count(voided_at) FROM credit_grants),
		(SELECT count(*) || ':' || string_agg(state, ',' ORDER BY hold_id) FROM credit_holds),
		(SELECT count(*) FROM credit_hold_lots), (SELECT count(*) FROM credit_entries),
		(SELECT count(*) FROM credit_entry_lots), (SELECT count(*) FROM credit_idempotency))`).Scan(&s))
	return s
}

// Input the ledger can judge itself is refused with a typed error before
// any SQL is sent.
func TestBadInputIsRefusedBeforeSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	pool := w.account(t, 0, tenancy.UserID{}, 0)
	rec := &recorder{}
	traced := w.db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
	tn := w.tenantOver(t, traced, 0)
	l := w.ledger
	before := ledgerState(t, w)

	long := strings.Repeat("k", 256)
	g := func(mod func(*credits.GrantParams)) error {
		p := credits.GrantParams{Account: pool, Amount: 10, Category: credits.CategoryPlan, Key: key("g")}
		mod(&p)
		_, err := l.Grant(ctx, tn, p)
		return err
	}
	s := func(amount int64, k, ref string) error {
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: amount, Key: k, Reference: ref})
		return err
	}
	h := func(amount int64, ttl time.Duration) error {
		_, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: amount, TTL: ttl, Key: key("h")})
		return err
	}
	now := w.clock.Now()
	for name, err := range map[string]error{
		"spend zero":              s(0, key("s"), ""),
		"spend negative":          s(-5, key("s"), ""),
		"spend min int64":         s(math.MinInt64, key("s"), ""),
		"spend above max":         s(credits.MaxAmount+1, key("s"), ""),
		"spend max int64":         s(math.MaxInt64, key("s"), ""),
		"empty key":               s(1, "", ""),
		"key of 256 bytes":        s(1, long, ""),
		"key not UTF-8":           s(1, "k\xff", ""),
		"key with NUL":            s(1, "k\x00", ""),
		"reference of 256 bytes":  s(1, key("s"), long),
		"reference with NUL":      s(1, key("s"), "a\x00"),
		"zero account":            second(l.Spend(ctx, tn, credits.SpendParams{Amount: 1, Key: key("s")})),
		"grant zero":              g(func(p *credits.GrantParams) { p.Amount = 0 }),
		"grant above max":         g(func(p *credits.GrantParams) { p.Amount = credits.MaxAmount + 1 }),
		"grant category":          g(func(p *credits.GrantParams) { p.Category = "gold" }),
		"grant no category":       g(func(p *credits.GrantParams) { p.Category = "" }),
		"grant priority":          g(func(p *credits.GrantParams) { p.Priority = 1 << 40 }),
		"grant metadata array":    g(func(p *credits.GrantParams) { p.Metadata = json.RawMessage(`[1]`) }),
		"grant metadata not JSON": g(func(p *credits.GrantParams) { p.Metadata = json.RawMessage(`{`) }),
		"grant metadata null":     g(func(p *credits.GrantParams) { p.Metadata = json.RawMessage(`null`) }),
		"grant metadata NUL":      g(func(p *credits.GrantParams) { p.Metadata = json.RawMessage(`{"a":"\u0000"}`) }),
		"grant metadata too long": g(func(p *credits.GrantParams) {
			p.Metadata = json.RawMessage(`{"a":"` + strings.Repeat("x", credits.MaxMetadataBytes) + `"}`)
		}),
		"grant expiry before start": g(func(p *credits.GrantParams) { p.EffectiveAt, p.ExpiresAt = now.Add(time.Hour), now.Add(time.Minute) }),
		"grant key":                 g(func(p *credits.GrantParams) { p.Key = "" }),
		"hold zero":                 h(0, time.Hour),
		"hold ttl zero":             h(1, 0),
		"hold ttl negative":         h(1, -time.Hour),
		"hold ttl too long":         h(1, credits.MaxHoldTTL+time.Second),
		"capture zero":              second(l.Capture(ctx, tn, credits.CaptureParams{Hold: randomID(credits.ParseHoldID), Amount: 0, Key: key("c")})),
		"capture zero hold":         second(l.Capture(ctx, tn, credits.CaptureParams{Amount: 1, Key: key("c")})),
		"release no key":            second(l.Release(ctx, tn, credits.ReleaseParams{Hold: randomID(credits.ParseHoldID)})),
		"refund negative":           second(l.Refund(ctx, tn, credits.RefundParams{Entry: randomID(credits.ParseEntryID), Amount: -1, Key: key("r")})),
		"void zero grant":           second(l.Void(ctx, tn, credits.VoidParams{Key: key("v")})),
		"limit negative":            second(l.SetCreditLimit(ctx, tn, credits.SetCreditLimitParams{Account: pool, CreditLimit: -1})),
		"limit above max":           second(l.SetCreditLimit(ctx, tn, credits.SetCreditLimitParams{Account: pool, CreditLimit: credits.MaxAmount + 1})),
		"open with limit":           second(l.OpenAccount(ctx, tn, credits.OpenAccountParams{CreditLimit: -1})),
		"balances none":             second(l.Balances(ctx, tn, credits.BalancesParams{})),
		"balances too many":         second(l.Balances(ctx, tn, credits.BalancesParams{Accounts: make([]credits.AccountID, credits.MaxBatch+1)})),
		"balance at zero time":      second(l.BalanceAt(ctx, tn, credits.BalanceAtParams{Account: pool})),
		"balance in the future":     second(l.BalanceAt(ctx, tn, credits.BalanceAtParams{Account: pool, At: now.Add(time.Second)})),
		"sweep limit":               second(l.Sweep(ctx, tn, credits.SweepParams{Limit: 1001})),
		"journal offset":            second(l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: tenancy.Page{Offset: 5}})),
		"journal total":             second(l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: tenancy.Page{WithTotal: true}})),
		"journal bad cursor":        second(l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: tenancy.Page{Cursor: "nope"}})),
	} {
		require.ErrorIs(t, err, credits.ErrInvalidInput, name)
		var ie *tenancy.InvalidInputError
		var id *tenancy.InvalidIDError
		var ce *tenancy.CursorError
		require.True(t, errors.As(err, &ie) || errors.As(err, &id) || errors.As(err, &ce), "%s: %T", name, err)
	}
	require.Empty(t, rec.sql, "refused input reached the database")
	require.Equal(t, before, ledgerState(t, w))
}

// What only the database can judge is refused there with a typed error,
// and the statement's rollback leaves nothing behind: no entry, no key.
func TestRefusalsWriteNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], w.ledger
	pool := w.account(t, 0, tenancy.UserID{}, 0)
	lot := w.grant(t, 0, pool, 100, func(p *credits.GrantParams) { p.ExpiresAt = w.clock.Now().Add(30 * time.Minute) })
	spend, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 40, Key: key("s")})
	require.NoError(t, err)
	captured, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 10, TTL: time.Hour, Key: key("h")})
	require.NoError(t, err)
	_, err = l.Capture(ctx, tn, credits.CaptureParams{Hold: captured.Hold.ID, Amount: 10, Key: key("c")})
	require.NoError(t, err)
	released, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 10, TTL: time.Hour, Key: key("h")})
	require.NoError(t, err)
	_, err = l.Release(ctx, tn, credits.ReleaseParams{Hold: released.Hold.ID, Key: key("r")})
	require.NoError(t, err)
	expiring, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 10, TTL: 20 * time.Minute, Key: key("h")})
	require.NoError(t, err)
	// Past the hold's and the lot's expiry, unswept: a refusal must not
	// even keep the settling it did.
	w.clock.Advance(40 * time.Minute)
	before := ledgerState(t, w)
	unknownAccount := randomID(credits.ParseAccountID)

	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"spend beyond the balance":   {second(l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 1, Key: key("s")})), credits.ErrInsufficientCredits},
		"hold beyond the balance":    {second(l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 1, TTL: time.Hour, Key: key("h")})), credits.ErrInsufficientCredits},
		"unknown account":            {second(l.Spend(ctx, tn, credits.SpendParams{Account: unknownAccount, Amount: 1, Key: key("s")})), credits.ErrNotFound},
		"unknown hold":               {second(l.Capture(ctx, tn, credits.CaptureParams{Hold: randomID(credits.ParseHoldID), Amount: 1, Key: key("c")})), credits.ErrNotFound},
		"unknown grant":              {second(l.Void(ctx, tn, credits.VoidParams{Grant: randomID(credits.ParseGrantID), Key: key("v")})), credits.ErrNotFound},
		"unknown entry":              {second(l.Refund(ctx, tn, credits.RefundParams{Entry: randomID(credits.ParseEntryID), Amount: 1, Key: key("r")})), credits.ErrNotFound},
		"capture of an expired hold": {second(l.Capture(ctx, tn, credits.CaptureParams{Hold: expiring.Hold.ID, Amount: 1, Key: key("c")})), credits.ErrHoldExpired},
		"release of an expired hold": {second(l.Release(ctx, tn, credits.ReleaseParams{Hold: expiring.Hold.ID, Key: key("r")})), credits.ErrHoldExpired},
		"capture of a captured hold": {second(l.Capture(ctx, tn, credits.CaptureParams{Hold: captured.Hold.ID, Amount: 1, Key: key("c")})), credits.ErrHoldCaptured},
		"release of a captured hold": {second(l.Release(ctx, tn, credits.ReleaseParams{Hold: captured.Hold.ID, Key: key("r")})), credits.ErrHoldCaptured},
		"capture of a released hold": {second(l.Capture(ctx, tn, credits.CaptureParams{Hold: released.Hold.ID, Amount: 1, Key: key("c")})), credits.ErrHoldReleased},
		"release of a released hold": {second(l.Release(ctx, tn, credits.ReleaseParams{Hold: released.Hold.ID, Key: key("r")})), credits.ErrHoldReleased},
		"refund above what was spent": {second(l.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 41, Key: key("r")})),
			credits.ErrRefundExceeds},
		"refund of a grant entry": {second(l.Refund(ctx, tn, credits.RefundParams{Entry: mustEntry(t, l, tn, pool, 1), Amount: 1, Key: key("r")})),
			credits.ErrNotRefundable},
		"grant already expired": {second(l.Grant(ctx, tn, credits.GrantParams{Account: pool, Amount: 1, Category: credits.CategoryPlan,
			ExpiresAt: w.clock.Now().Add(-time.Minute), Key: key("g")})), credits.ErrInvalidInput},
		"member who is not one": {second(l.OpenAccount(ctx, tn, credits.OpenAccountParams{User: tenancy.NewUserID()})), credits.ErrNotMember},
	} {
		require.ErrorIs(t, tc.err, tc.want, name)
	}
	require.Equal(t, before, ledgerState(t, w), "a refusal wrote something")
	_ = lot

	// Hold states also match their family sentinel.
	_, err = l.Release(ctx, tn, credits.ReleaseParams{Hold: captured.Hold.ID, Key: key("r")})
	require.ErrorIs(t, err, credits.ErrHoldResolved)
	var hs *credits.HoldStateError
	require.ErrorAs(t, err, &hs)
	require.Equal(t, captured.Hold.ID, hs.Hold)

	// An account at its ceiling refuses a grant that would pass it. (The
	// stored figure stands in for the 1,153 largest grants it would take.)
	_, err = w.db.RawPool(t).Exec(ctx, `UPDATE credit_accounts SET scheduled = $1 WHERE account_id = $2`, int64(credits.MaxAccountCredits-10), pool.UUID())
	require.NoError(t, err)
	_, err = l.Grant(ctx, tn, credits.GrantParams{Account: pool, Amount: 50, Category: credits.CategoryPlan, Key: key("g")})
	var ie *tenancy.InvalidInputError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, "amount", ie.Field)
}

// mustEntry returns an account's entry by number.
func mustEntry(t *testing.T, l *credits.Ledger, tn *tenancy.Tenant, account credits.AccountID, seq int64) credits.EntryID {
	t.Helper()
	list, err := l.Journal(context.Background(), tn, credits.JournalParams{Account: account, Page: tenancy.Page{Limit: tenancy.MaxPageLimit}})
	require.NoError(t, err)
	for _, e := range list.Items {
		if e.Seq == seq {
			return e.ID
		}
	}
	t.Fatalf("no entry %d", seq)
	return credits.EntryID{}
}

// randomID returns an id of no row.
func randomID[T any](parse func(string) (T, error)) T {
	id, err := parse(uuid.NewString())
	if err != nil {
		panic(err)
	}
	return id
}
