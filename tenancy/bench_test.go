package tenancy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// BenchmarkPointRead reads one workspace by id: through the tenant handle,
// and by hand with pgx, in the same run against the same database. The
// "context" variants also set the row-level security context in the same
// round trip, as the handle does by default.
//
//	go test -run '^$' -bench PointRead -benchtime 20000x -count 6 ./tenancy
func BenchmarkPointRead(b *testing.B) {
	ctx := context.Background()
	db := pgtest.NewDB(b)
	pool := db.RawPool(b)
	owner, err := tenancy.NewUsers(pool).Create(ctx, tenancy.NewUser{Email: "bench@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	ws, err := tenancy.CreateWorkspace(ctx, pool, "Bench", owner.ID)
	if err != nil {
		b.Fatal(err)
	}
	scope, _ := tenancy.NewScope(ws.ID)
	withRLS, _ := tenancy.NewTenant(pool, scope)
	withoutRLS, _ := tenancy.NewTenant(pool, scope, tenancy.WithoutRowLevelSecurity())
	const byHand = `SELECT workspace_id, name, created_at, updated_at FROM workspaces WHERE workspaces.workspace_id = $1`

	scanByHand := func(row pgx.Row) {
		var (
			id         tenancy.WorkspaceID
			name       string
			created, u time.Time
		)
		if err := row.Scan(&id, &name, &created, &u); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("pgx", func(b *testing.B) {
		for b.Loop() {
			scanByHand(pool.QueryRow(ctx, byHand, ws.ID))
		}
	})
	b.Run("handle", func(b *testing.B) {
		for b.Loop() {
			if _, err := withoutRLS.Workspace(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pgx+context", func(b *testing.B) {
		for b.Loop() {
			batch := &pgx.Batch{}
			batch.Queue(`SELECT set_config('meterbase.workspace_id', $1, true), set_config('meterbase.user_id', $2, true), set_config('meterbase.operator', '', true)`, ws.ID.String(), "")
			batch.Queue(byHand, ws.ID)
			br := pool.SendBatch(ctx, batch)
			if _, err := br.Exec(); err != nil {
				b.Fatal(err)
			}
			scanByHand(br.QueryRow())
			if err := br.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("handle+context", func(b *testing.B) {
		for b.Loop() {
			if _, err := withRLS.Workspace(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
