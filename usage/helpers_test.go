package usage_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// world is a database with three workspaces (A, B, C), each with its own
// owner, and a shared member in all three.
type world struct {
	db     *pgtest.DB
	ws     [3]tenancy.WorkspaceID
	owners [3]tenancy.UserID
	shared tenancy.UserID
}

var userSeq atomic.Int64

func newWorld(t testing.TB) world {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := world{db: db}
	users := tenancy.NewUsers(nil)
	mk := func() tenancy.UserID {
		u, err := users.Create(ctx, db.Pool, tenancy.CreateUserParams{Email: fmt.Sprintf("u%d@example.com", userSeq.Add(1))})
		require.NoError(t, err)
		return u.ID
	}
	w.shared = mk()
	for i := range w.ws {
		w.owners[i] = mk()
		ws, err := tenancy.NewWorkspaces(nil).Create(ctx, db.Pool, tenancy.CreateWorkspaceParams{Name: fmt.Sprintf("W%d", i), Owner: w.owners[i]})
		require.NoError(t, err)
		w.ws[i] = ws.ID
		_, err = tenancy.NewMembers(nil).Add(ctx, w.tenant(t, db.Pool, i), tenancy.AddMemberParams{User: w.shared, Role: tenancy.RoleMember})
		require.NoError(t, err)
	}
	return w
}

func (w world) tenant(t testing.TB, db tenancy.DBTX, i int) *tenancy.Tenant {
	t.Helper()
	return tenantOf(t, db, w.ws[i])
}

func tenantOf(t testing.TB, db tenancy.DBTX, ws tenancy.WorkspaceID) *tenancy.Tenant {
	t.Helper()
	scope, err := tenancy.NewScope(ws)
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(db, scope)
	require.NoError(t, err)
	return tn
}

func newService(t testing.TB, cfg *usage.Config) *usage.Service {
	t.Helper()
	s, err := usage.NewService(cfg)
	require.NoError(t, err)
	return s
}

// clock is a Config.Clock that tests move.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(at time.Time) *clock { return &clock{now: at.UTC()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = at.UTC()
}

// rawCount counts a workspace's events as the tables' owner sees them.
func rawCount(t testing.TB, pool *pgxpool.Pool, ws tenancy.WorkspaceID, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM usage_events WHERE workspace_id = $1 AND (`+where+`)`, append([]any{ws}, args...)...).Scan(&n))
	return n
}

var ctx = context.Background()
