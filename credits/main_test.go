package credits_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *testClock {
	return &testClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// world is a database with workspaces, their members and a ledger.
type world struct {
	db      *pgtest.DB
	pool    *pgxpool.Pool
	clock   *testClock
	ledger  *credits.Ledger
	ws      []tenancy.WorkspaceID
	tenants []*tenancy.Tenant
	owners  []tenancy.User
	members []tenancy.User // members of workspace 0
}

var keys atomic.Int64

// key returns an idempotency key no other call of the test run uses.
func key(prefix string) string { return fmt.Sprintf("%s-%d", prefix, keys.Add(1)) }

func newWorld(t testing.TB, workspaces int) *world {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := &world{db: db, pool: db.Pool, clock: newClock()}
	w.ledger = credits.New(&credits.Config{Clock: w.clock.Now})
	users := tenancy.NewUsers(nil)
	for i := range workspaces {
		owner, err := users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: fmt.Sprintf("owner%d@example.com", i)})
		require.NoError(t, err)
		ws, err := tenancy.NewWorkspaces(nil).Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: fmt.Sprintf("ws%d", i), Owner: owner.ID})
		require.NoError(t, err)
		scope, err := tenancy.NewScope(ws.ID)
		require.NoError(t, err)
		tn, err := tenancy.NewTenant(db.Pool, scope)
		require.NoError(t, err)
		w.ws = append(w.ws, ws.ID)
		w.tenants = append(w.tenants, tn)
		w.owners = append(w.owners, owner)
	}
	for i := range min(workspaces, 1) * 2 {
		u, err := users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: fmt.Sprintf("member%d@example.com", i), DisplayName: fmt.Sprintf("Member %d", i)})
		require.NoError(t, err)
		_, err = tenancy.NewMembers(nil).Add(ctx, w.tenants[0], tenancy.AddMemberParams{User: u.ID, Role: tenancy.RoleMember})
		require.NoError(t, err)
		w.members = append(w.members, u)
	}
	return w
}

// tenantOver is a handle on workspace i over db (another pool, a
// transaction).
func (w *world) tenantOver(t testing.TB, db tenancy.DBTX, i int) *tenancy.Tenant {
	t.Helper()
	scope, err := tenancy.NewScope(w.ws[i])
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(db, scope)
	require.NoError(t, err)
	return tn
}

// account opens an account in workspace i (the pool when user is zero).
func (w *world) account(t testing.TB, i int, user tenancy.UserID, limit int64) credits.AccountID {
	t.Helper()
	res, err := w.ledger.OpenAccount(context.Background(), w.tenants[i], credits.OpenAccountParams{User: user, CreditLimit: limit})
	require.NoError(t, err)
	return res.ID
}

func (w *world) grant(t testing.TB, i int, account credits.AccountID, amount int64, mod ...func(*credits.GrantParams)) credits.GrantResult {
	t.Helper()
	p := credits.GrantParams{Account: account, Amount: amount, Category: credits.CategoryPurchase, Key: key("grant")}
	for _, m := range mod {
		m(&p)
	}
	res, err := w.ledger.Grant(context.Background(), w.tenants[i], p)
	require.NoError(t, err)
	return res
}

func (w *world) reconcile(t testing.TB, i int) {
	t.Helper()
	res, err := w.ledger.Reconcile(context.Background(), w.tenants[i], credits.ReconcileParams{})
	require.NoError(t, err)
	for _, a := range res.Accounts {
		require.True(t, a.OK, "account %s: %v", a.AccountID, a.Problems)
	}
	require.True(t, res.OK)
}
