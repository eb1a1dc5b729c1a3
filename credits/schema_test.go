package credits_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// The journal and its trace refuse every change, from anyone, the tables'
// owner included; they go only with their workspace.
func TestJournalIsAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 2)
	for i := range w.tenants {
		pool := w.account(t, i, tenancy.UserID{}, 0)
		w.grant(t, i, pool, 100)
		_, err := w.ledger.Spend(ctx, w.tenants[i], credits.SpendParams{Account: pool, Amount: 10, Key: key("s")})
		require.NoError(t, err)
	}
	raw := w.db.RawPool(t)
	for _, stmt := range []string{
		`UPDATE credit_entries SET amount = amount + 1`,
		`DELETE FROM credit_entries`,
		`UPDATE credit_entry_lots SET amount = amount + 1`,
		`DELETE FROM credit_entry_lots`,
		// An account with history cannot be deleted: its cascade would
		// delete its entries.
		`DELETE FROM credit_accounts`,
	} {
		_, err := raw.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, stmt)
		require.Equal(t, "MB120", pgErr.Code, stmt)
	}

	// Deleting a workspace takes its ledger with it, and only its.
	require.NoError(t, tenancy.NewWorkspaces(nil).Delete(ctx, w.tenants[0]))
	var mine, theirs int
	require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FILTER (WHERE workspace_id = $1), count(*) FILTER (WHERE workspace_id = $2) FROM credit_entries`,
		w.ws[0].UUID(), w.ws[1].UUID()).Scan(&mine, &theirs))
	require.Zero(t, mine)
	require.Equal(t, 2, theirs)
	w.reconcile(t, 1)
}

// A member's account outlives the member's removal from the workspace and
// the user's deletion: its credits and journal are the workspace's money.
// A deleted user's account stays, detached from the user.
func TestMemberAccountsOutliveMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], w.ledger
	u := w.members[0]
	acct := w.account(t, 0, u.ID, 0)
	w.grant(t, 0, acct, 70)
	require.NoError(t, tenancy.NewMembers(nil).Remove(ctx, tn, u.ID))
	a, err := l.GetAccount(ctx, tn, acct)
	require.NoError(t, err)
	require.Equal(t, u.ID, a.UserID)
	list, err := l.ListAccounts(ctx, tn, credits.ListAccountsParams{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	require.Empty(t, list.Items[0].Email, "the user no longer belongs to the workspace, so the tenant cannot see them")
	require.Equal(t, int64(70), list.Items[0].Balance.Total)

	_, err = w.db.RawPool(t).Exec(ctx, `DELETE FROM users WHERE user_id = $1`, u.ID.UUID())
	require.NoError(t, err)
	a, err = l.GetAccount(ctx, tn, acct)
	require.NoError(t, err)
	require.True(t, a.UserID.IsZero())
	require.Equal(t, credits.AccountMember, a.Kind)
	b, err := l.Balance(ctx, tn, credits.BalanceParams{Account: acct})
	require.NoError(t, err)
	require.Equal(t, int64(70), b.Total)
	w.reconcile(t, 0)
}
