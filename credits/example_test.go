package credits_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		panic(err)
	}
	scope, err := tenancy.NewScope(tenancy.NewWorkspaceID()) // the host's workspace
	if err != nil {
		panic(err)
	}
	acme, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		panic(err)
	}
	if err := quickstart(ctx, acme, io.Discard); err != nil {
		panic(err)
	}
}

// quickstart tops a workspace's pool up, spends and retries the spend with
// its key, captures a hold for less than it reserved, and meets a refusal.
func quickstart(ctx context.Context, acme *tenancy.Tenant, out io.Writer) error {
	ledger := credits.New(nil) // once, at startup; nil: the database's clock
	pool, err := ledger.OpenAccount(ctx, acme, credits.OpenAccountParams{})
	if err != nil {
		return err
	}
	if _, err := ledger.Grant(ctx, acme, credits.GrantParams{
		Account: pool.ID, Amount: 1_000, Category: credits.CategoryPurchase, Reference: "invoice 42", Key: "invoice-42",
	}); err != nil {
		return err
	}

	spend, err := ledger.Spend(ctx, acme, credits.SpendParams{Account: pool.ID, Amount: 300, Reference: "chat", Key: "req-1"})
	if err != nil {
		return err
	}
	retry, err := ledger.Spend(ctx, acme, credits.SpendParams{Account: pool.ID, Amount: 300, Reference: "chat", Key: "req-1"})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "spent 300:", spend.Entry.BalanceAfter, "left; the retry replays:", retry.Replay, retry.Entry.BalanceAfter)

	hold, err := ledger.Hold(ctx, acme, credits.HoldParams{Account: pool.ID, Amount: 500, TTL: time.Minute, Key: "run-1"})
	if err != nil {
		return err
	}
	captured, err := ledger.Capture(ctx, acme, credits.CaptureParams{Hold: hold.Hold.ID, Amount: 420, Key: "run-1-done"})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "held 500, used 420:", captured.Entry.BalanceAfter, "left")

	_, err = ledger.Spend(ctx, acme, credits.SpendParams{Account: pool.ID, Amount: 1_000, Key: "req-2"})
	var short *credits.InsufficientCreditsError
	if !errors.As(err, &short) {
		return fmt.Errorf("want a refusal, got %v", err)
	}
	fmt.Fprintln(out, "asked 1000:", short.Available, "available")
	return nil
}

// The quickstart of the README and of Example, run.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	var out bytes.Buffer
	require.NoError(t, quickstart(context.Background(), w.tenants[0], &out))
	require.Equal(t, "spent 300: 700 left; the retry replays: true 700\nheld 500, used 420: 280 left\nasked 1000: 280 available\n", out.String())
}
