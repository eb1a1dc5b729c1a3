package credits_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// manyAccounts fills the credit tables with 20 workspaces of 250 accounts
// each, every account with 4 lots, 3 holds and 10 journal entries (each
// with a trace and a key), and analyzes them: the size at which a missing index shows as a sequential scan.
func manyAccounts(t *testing.T, w *world) {
	t.Helper()
	ctx := context.Background()
	// Bulk rows, written as a restore would be: without the triggers (the
	// owner-at-birth check among them; these workspaces need no members).
	_, err := w.db.RawPool(t).Exec(ctx, `
		SET LOCAL session_replication_role = replica;
		INSERT INTO workspaces (workspace_id, name)
		SELECT gen_random_uuid(), 'bulk ' || i FROM generate_series(1, 20) i;
		INSERT INTO credit_accounts (workspace_id, account_id, kind, balance, entry_seq, settled_at, created_at, updated_at)
		SELECT w.workspace_id, gen_random_uuid(), 'member', 400, 10, now() - interval '1 day', now(), now()
		  FROM workspaces w CROSS JOIN generate_series(1, 250) WHERE w.name LIKE 'bulk %';
		INSERT INTO credit_grants (workspace_id, grant_id, account_id, amount, remaining, priority, effective_at, expires_at, category, journaled, created_at)
		SELECT a.workspace_id, gen_random_uuid(), a.account_id, 100, CASE WHEN i = 1 THEN 0 ELSE 100 END, i % 2,
		       now() - interval '2 days', now() + i * interval '1 day', 'purchase', true, now()
		  FROM credit_accounts a CROSS JOIN generate_series(1, 4) i;
		INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, balance_after, held_after, debt_after, effective_at, recorded_at)
		SELECT a.workspace_id, gen_random_uuid(), a.account_id, i, 'grant', 40, 40 * i, 0, 0, now() - interval '1 day', now() - interval '1 day'
		  FROM credit_accounts a CROSS JOIN generate_series(1, 10) i;
		INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
		SELECT e.workspace_id, e.entry_id, (SELECT g.grant_id FROM credit_grants g WHERE g.workspace_id = e.workspace_id AND g.account_id = e.account_id LIMIT 1), 1
		  FROM credit_entries e;
		INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
		SELECT e.workspace_id, e.entry_id::text, 'spend', sha256(e.entry_id::text::bytea), '{}', now() FROM credit_entries e;
		INSERT INTO credit_holds (workspace_id, hold_id, account_id, amount, expires_at, state, resolved_at, created_at)
		SELECT a.workspace_id, gen_random_uuid(), a.account_id, 1, now() + interval '1 hour', 'released', now(), now() - interval '1 hour'
		  FROM credit_accounts a CROSS JOIN generate_series(1, 3);
		INSERT INTO credit_hold_lots (workspace_id, hold_id, grant_id, amount)
		SELECT h.workspace_id, h.hold_id, (SELECT g.grant_id FROM credit_grants g WHERE g.workspace_id = h.workspace_id AND g.account_id = h.account_id LIMIT 1), 1
		  FROM credit_holds h;
		ANALYZE credit_accounts, credit_grants, credit_entries, credit_entry_lots, credit_holds, credit_hold_lots, credit_idempotency;`)
	require.NoError(t, err)
}

var seqScanOnCredit = regexp.MustCompile(`Seq Scan on credit_\w+`)

// explain returns the plan of a prepared statement of the package, bound
// as the handle binds it: the workspace first, then the named arguments.
func explain(t *testing.T, pool *pgxpool.Pool, name string, ws uuid.UUID, named map[string]any) string {
	t.Helper()
	args := []any{ws}
	for _, p := range credits.StatementParams(name) {
		v, ok := named[p]
		require.True(t, ok, "statement %s takes @%s", name, p)
		args = append(args, v)
	}
	rows, err := pool.Query(context.Background(), "EXPLAIN "+credits.StatementSQL()[name], args...)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}

// autoExplain connects with auto_explain logging the plan of every
// statement, nested ones (inside the ledger's functions) included, to the
// client.
func autoExplain(t *testing.T, w *world) (*pgxpool.Pool, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var plans []string
	pool := w.db.Connect(t, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.Tracer = nil
		c.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			if strings.Contains(n.Message, "plan:") {
				mu.Lock()
				plans = append(plans, n.Message)
				mu.Unlock()
			}
		}
		c.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
				SET auto_explain.log_nested_statements = on; SET client_min_messages = log`)
			return err
		}
	})
	return pool, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := plans
		plans = nil
		return out
	}
}

// The balance read, the journal page and the burn-down use index scans on
// tables of many accounts.
func TestReadsAndBurnDownUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	manyAccounts(t, w)
	raw := w.db.RawPool(t)
	var ws, account uuid.UUID
	require.NoError(t, raw.QueryRow(ctx, `SELECT workspace_id, account_id FROM credit_accounts ORDER BY account_id LIMIT 1 OFFSET 1234`).Scan(&ws, &account))

	t.Run("balance read", func(t *testing.T) {
		plan := explain(t, raw, "balances", ws, map[string]any{"accounts": []uuid.UUID{account}, "at": nil, "with_lots": false})
		require.Regexp(t, `Index Scan using credit_accounts_pkey on credit_accounts`, plan)
		require.NotRegexp(t, seqScanOnCredit, plan)
	})
	t.Run("journal page", func(t *testing.T) {
		plan := explain(t, raw, "journal", ws, map[string]any{
			"account": account, "before": int64(7), "kinds": []string{}, "reference": "", "since": nil, "until": nil, "limit": int64(51),
		})
		require.Regexp(t, `Index Scan Backward using credit_entries_seq_key on credit_entries`, plan)
		require.NotRegexp(t, seqScanOnCredit, plan)
	})

	// Inside the functions: every statement a spend, a due balance read
	// and a hold make, as Postgres planned it, custom plans and (after the
	// fifth call) generic ones alike.
	var super bool
	require.NoError(t, raw.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	if !super {
		t.Skip("auto_explain needs a superuser to LOAD it: the plans inside the functions are not checked")
	}
	pool, plans := autoExplain(t, w)
	scope, _ := tenancy.NewScope(tenancy.WorkspaceIDFromUUID(ws))
	tn, err := tenancy.NewTenant(pool, scope)
	require.NoError(t, err)
	l := credits.New(nil)
	id, err := credits.ParseAccountID(account.String())
	require.NoError(t, err)
	plans()
	for i := range 8 {
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: id, Amount: 1, Key: key("explain")})
		require.NoError(t, err, "spend %d", i)
	}
	spent := plans()
	burn := false
	for _, p := range spent {
		require.NotRegexp(t, seqScanOnCredit, p)
		if strings.Contains(p, "ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id") &&
			strings.Contains(p, "credit_grants_burn_idx") {
			burn = true
		}
	}
	require.True(t, burn, "the burn-down's plan uses credit_grants_burn_idx")
	t.Logf("%d plans of 8 spends checked", len(spent))

	// A balance read when something is due reads the lots through
	// meterbase_credit_lots; a hold earmarks through the same index.
	_, err = raw.Exec(ctx, `UPDATE credit_accounts SET settle_due_at = '-infinity' WHERE account_id = $1`, account)
	require.NoError(t, err)
	_, err = l.Hold(ctx, tn, credits.HoldParams{Account: id, Amount: 5, TTL: time.Hour, Key: key("explain")})
	require.NoError(t, err)
	_, err = l.Balance(ctx, tn, credits.BalanceParams{Account: id, WithLots: true})
	require.NoError(t, err)
	read := plans()
	require.NotEmpty(t, read)
	t.Logf("%d plans of a hold and a due balance read checked", len(read))
	for _, p := range read {
		require.NotRegexp(t, seqScanOnCredit, p)
	}
}
