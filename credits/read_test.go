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

func TestJournalFiltersAndPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], w.ledger
	pool := w.account(t, 0, tenancy.UserID{}, 0)
	w.grant(t, 0, pool, 1000)
	start := w.clock.Now()
	for i := range 7 {
		w.clock.Advance(time.Minute)
		ref := "a"
		if i%2 == 1 {
			ref = "b"
		}
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: int64(i + 1), Reference: ref, Key: key("s")})
		require.NoError(t, err)
	}
	// Pages of 3, newest first, each continuing where the last stopped.
	var seqs []int64
	page := tenancy.Page{Limit: 3}
	for {
		list, err := l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: page})
		require.NoError(t, err)
		for _, e := range list.Items {
			seqs = append(seqs, e.Seq)
		}
		if list.Next == "" {
			break
		}
		page.Cursor = list.Next
	}
	require.Equal(t, []int64{8, 7, 6, 5, 4, 3, 2, 1}, seqs)

	only := func(p credits.JournalParams) []int64 {
		p.Account = pool
		list, err := l.Journal(ctx, tn, p)
		require.NoError(t, err)
		var out []int64
		for _, e := range list.Items {
			out = append(out, e.Seq)
		}
		return out
	}
	require.Equal(t, []int64{1}, only(credits.JournalParams{Kinds: []credits.EntryKind{credits.EntryGrant}}))
	require.Equal(t, []int64{7, 5, 3}, only(credits.JournalParams{Reference: "b"}))
	require.Equal(t, []int64{5, 4}, only(credits.JournalParams{Since: start.Add(3 * time.Minute), Until: start.Add(5 * time.Minute)}))
	require.Equal(t, []int64{7, 5}, only(credits.JournalParams{Reference: "b", Since: start.Add(4 * time.Minute), Kinds: []credits.EntryKind{credits.EntrySpend}}))

	// A cursor belongs to its account's journal.
	other := w.account(t, 0, w.members[0].ID, 0)
	list, err := l.Journal(ctx, tn, credits.JournalParams{Account: pool, Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	_, err = l.Journal(ctx, tn, credits.JournalParams{Account: other, Page: tenancy.Page{Cursor: list.Next}})
	require.ErrorIs(t, err, tenancy.ErrInvalidCursor)
}

// The admin list: every account with its member's name and balance, in a
// fixed number of statements whatever the page's size.
func TestListAccountsAndBalances(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn, l := w.tenants[0], w.ledger
	ids := []credits.AccountID{w.account(t, 0, tenancy.UserID{}, 25)}
	for _, m := range w.members {
		ids = append(ids, w.account(t, 0, m.ID, 0))
	}
	for i, id := range ids {
		w.grant(t, 0, id, int64(100*(i+1)))
	}
	got := map[credits.AccountID]credits.AccountBalance{}
	page := tenancy.Page{Limit: 2, WithTotal: true}
	for {
		list, err := l.ListAccounts(ctx, tn, credits.ListAccountsParams{Page: page})
		require.NoError(t, err)
		require.Equal(t, int64(3), *list.Total)
		for _, a := range list.Items {
			got[a.ID] = a
		}
		if list.Next == "" {
			break
		}
		page = tenancy.Page{Limit: 2, Cursor: list.Next, WithTotal: true}
	}
	require.Len(t, got, 3)
	require.Equal(t, credits.AccountWorkspace, got[ids[0]].Kind)
	require.Equal(t, int64(125), got[ids[0]].Balance.Spendable)
	require.Equal(t, "member0@example.com", got[ids[1]].Email)
	require.Equal(t, "Member 1", got[ids[2]].DisplayName)
	require.Equal(t, int64(300), got[ids[2]].Balance.Total)

	bs, err := l.Balances(ctx, tn, credits.BalancesParams{Accounts: []credits.AccountID{ids[2], ids[0]}})
	require.NoError(t, err)
	require.Equal(t, []int64{300, 100}, []int64{bs[0].Total, bs[1].Total})
}

// Results marshal as a client cache expects: camelCase, ids as strings,
// RFC 3339 times, integer credits.
func TestResultsJSON(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	pool := w.account(t, 0, tenancy.UserID{}, 0)
	g := w.grant(t, 0, pool, credits.MaxAmount, func(p *credits.GrantParams) { p.Reference = "inv-1" })
	res, err := w.ledger.Spend(ctx, w.tenants[0], credits.SpendParams{Account: pool, Amount: 1, Key: key("s")})
	require.NoError(t, err)
	b, err := json.Marshal(res)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	e := m["entry"].(map[string]any)
	require.Equal(t, res.Entry.ID.String(), e["id"])
	require.Equal(t, "2026-03-01T12:00:00Z", e["recordedAt"])
	require.Equal(t, []any{map[string]any{"grantId": g.Grant.ID.String(), "amount": 1.0, "category": "purchase"}}, e["lots"])
	require.Equal(t, false, m["replay"])
	require.NotContains(t, e, "holdId")
	b, err = json.Marshal(g)
	require.NoError(t, err)
	require.Contains(t, string(b), `"amount":1000000000000000`)
	var back credits.GrantResult
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, g, back)
}
