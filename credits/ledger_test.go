package credits_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// A walk through the ledger's life, checking each figure by hand.
func TestLedgerWalkthrough(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], w.ledger
	pool := w.account(t, 0, tenancy.UserID{}, 0)
	again, err := l.OpenAccount(ctx, tn, credits.OpenAccountParams{})
	require.NoError(t, err)
	require.Equal(t, pool, again.ID)
	require.False(t, again.Created)

	// Burn order: priority, then earliest expiry (none last), then oldest.
	start := w.clock.Now()
	promo := w.grant(t, 0, pool, 100, func(p *credits.GrantParams) {
		p.Category, p.Priority, p.ExpiresAt = credits.CategoryPromotional, 0, start.Add(24*time.Hour)
		p.Metadata = json.RawMessage(`{"campaign": "spring"}`)
	})
	paid := w.grant(t, 0, pool, 1000, func(p *credits.GrantParams) { p.Priority = 1 })
	require.Equal(t, int64(1100), paid.Entry.BalanceAfter)
	require.JSONEq(t, `{"campaign":"spring"}`, string(promo.Grant.Metadata))

	w.clock.Advance(time.Hour)
	spendKey := key("spend")
	spend, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 150, Reference: "job-1", Key: spendKey})
	require.NoError(t, err)
	require.False(t, spend.Replay)
	require.Equal(t, int64(-150), spend.Entry.Amount)
	require.Equal(t, int64(950), spend.Entry.BalanceAfter)
	require.Equal(t, []credits.EntryLot{
		{GrantID: promo.Grant.ID, Amount: 100, Category: credits.CategoryPromotional},
		{GrantID: paid.Grant.ID, Amount: 50, Category: credits.CategoryPurchase},
	}, spend.Entry.Lots)

	// The same key and request: the first result, flagged; another
	// request: a conflict.
	replay, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 150, Reference: "job-1", Key: spendKey})
	require.NoError(t, err)
	require.True(t, replay.Replay)
	require.Equal(t, spend.Entry, replay.Entry)
	_, err = l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 151, Reference: "job-1", Key: spendKey})
	require.ErrorIs(t, err, credits.ErrIdempotencyConflict)
	var conflict *credits.IdempotencyConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, spendKey, conflict.Key)

	// Whole or nothing.
	_, err = l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 951, Key: key("spend")})
	var insufficient *credits.InsufficientCreditsError
	require.ErrorAs(t, err, &insufficient)
	require.Equal(t, credits.InsufficientCreditsError{Available: 950, Requested: 951}, *insufficient)

	// A hold earmarks; a partial capture releases the rest.
	hold, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 200, TTL: time.Hour, Reference: "llm", Key: key("hold")})
	require.NoError(t, err)
	require.Equal(t, credits.HoldActive, hold.Hold.State)
	bal, err := l.Balance(ctx, tn, credits.BalanceParams{Account: pool, WithLots: true})
	require.NoError(t, err)
	require.Equal(t, int64(950), bal.Total)
	require.Equal(t, int64(200), bal.Held)
	require.Equal(t, int64(750), bal.Available)
	require.Equal(t, int64(750), bal.Spendable)
	require.Len(t, bal.Lots, 1)

	capture, err := l.Capture(ctx, tn, credits.CaptureParams{Hold: hold.Hold.ID, Amount: 120, Key: key("capture")})
	require.NoError(t, err)
	require.Equal(t, credits.HoldCaptured, capture.Hold.State)
	require.Equal(t, int64(830), capture.Entry.BalanceAfter)
	require.Equal(t, int64(0), capture.Entry.HeldAfter)
	_, err = l.Capture(ctx, tn, credits.CaptureParams{Hold: hold.Hold.ID, Amount: 120, Key: key("capture")})
	require.ErrorIs(t, err, credits.ErrHoldCaptured)
	_, err = l.Release(ctx, tn, credits.ReleaseParams{Hold: hold.Hold.ID, Key: key("release")})
	require.ErrorIs(t, err, credits.ErrHoldCaptured)

	// A hold that expires on its own.
	hold2, err := l.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 30, TTL: time.Minute, Key: key("hold")})
	require.NoError(t, err)
	w.clock.Advance(2 * time.Minute)
	bal, err = l.Balance(ctx, tn, credits.BalanceParams{Account: pool})
	require.NoError(t, err)
	require.Equal(t, int64(0), bal.Held)
	_, err = l.Capture(ctx, tn, credits.CaptureParams{Hold: hold2.Hold.ID, Amount: 1, Key: key("capture")})
	require.ErrorIs(t, err, credits.ErrHoldExpired)
	h, err := l.GetHold(ctx, tn, hold2.Hold.ID)
	require.NoError(t, err)
	require.Equal(t, credits.HoldExpired, h.State)

	// Refund part of the spend: back to the purchase lot first (reverse
	// burn order), then the promotional one.
	refund, err := l.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 70, Key: key("refund")})
	require.NoError(t, err)
	require.Equal(t, []credits.EntryLot{
		{GrantID: promo.Grant.ID, Amount: 20, Category: credits.CategoryPromotional},
		{GrantID: paid.Grant.ID, Amount: 50, Category: credits.CategoryPurchase},
	}, refund.Entry.Lots)
	_, err = l.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 81, Key: key("refund")})
	var exceeds *credits.RefundExceedsError
	require.ErrorAs(t, err, &exceeds)
	require.Equal(t, credits.RefundExceedsError{Refundable: 80, Requested: 81}, *exceeds)

	// The promotional lot expires: at read time at once, in the journal
	// when swept, effective at its expiry.
	w.clock.Advance(24 * time.Hour)
	bal, err = l.Balance(ctx, tn, credits.BalanceParams{Account: pool})
	require.NoError(t, err)
	require.Equal(t, int64(830+70-20), bal.Total)
	sw, err := l.Sweep(ctx, tn, credits.SweepParams{})
	require.NoError(t, err)
	require.Equal(t, 1, sw.Accounts)
	page, err := l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	require.Equal(t, credits.EntryExpire, page.Items[0].Kind)
	require.Equal(t, int64(-20), page.Items[0].Amount)
	require.True(t, page.Items[0].EffectiveAt.Equal(start.Add(24*time.Hour)))
	require.NotEmpty(t, page.Next)

	// The rest of the spend, refunded into the expired lot, expires again.
	refund2, err := l.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 80, Key: key("refund")})
	require.NoError(t, err)
	require.Len(t, refund2.Also, 1)
	require.Equal(t, credits.EntryExpire, refund2.Also[0].Kind)
	require.Equal(t, int64(-80), refund2.Also[0].Amount)

	// Void the purchase lot: what is left ends.
	void, err := l.Void(ctx, tn, credits.VoidParams{Grant: paid.Grant.ID, Key: key("void")})
	require.NoError(t, err)
	require.Equal(t, credits.GrantVoided, void.Grant.Status)
	require.NotNil(t, void.Entry)
	require.Equal(t, int64(0), void.Entry.BalanceAfter)

	// Balance at past instants.
	// Every write made at that instant counts: the spend, then the hold
	// and its capture.
	past, err := l.BalanceAt(ctx, tn, credits.BalanceAtParams{Account: pool, At: start.Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, int64(830), past.Total)
	past, err = l.BalanceAt(ctx, tn, credits.BalanceAtParams{Account: pool, At: start.Add(30 * time.Minute)})
	require.NoError(t, err)
	require.Equal(t, int64(1100), past.Total)

	w.reconcile(t, 0)
}
