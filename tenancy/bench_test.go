package tenancy_test

import (
	"context"
	"testing"
	"time"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// BenchmarkPointRead reads one workspace by id, end to end on a real round
// trip: through the tenant handle's builder (via=handle), through a
// prepared statement whose {workspaces} the handle expands (via=statement),
// and by hand with pgx (via=pgx), interleaved in the same run against the
// same database, as a superuser (which row-level security never binds), as
// the tables' owner and as the application role (which the forced tables
// bind). rls=on also sets the row-level security context in the same round
// trip, as the handle does by default; rls=off is the handle made
// WithoutRowLevelSecurity, for a role that bypasses it.
//
// Its wall time is mostly the network's and the server's, and varies by
// ±20% and more between identical runs on a small machine;
// BenchmarkHandleOverhead isolates what the handle adds.
//
//	go test -run '^$' -bench PointRead -benchtime 3000x -count 10 ./tenancy > bench.txt
//	benchstat -row .name -col /via bench.txt
func BenchmarkPointRead(b *testing.B) {
	ctx := context.Background()
	db := pgtest.NewDB(b)
	pool := db.RawPool(b)
	app := db.AppPool(b, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
	ada, err := users.Create(ctx, pool, tenancy.CreateUserParams{Email: "bench@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	ws, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Bench", Owner: ada.ID})
	if err != nil {
		b.Fatal(err)
	}
	owner := db.OwnerPool(b, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
	b.Run("role=superuser", func(b *testing.B) { benchPointReads(b, pool, ws.ID, true) })
	b.Run("role=owner", func(b *testing.B) { benchPointReads(b, owner, ws.ID, false) })
	b.Run("role=app", func(b *testing.B) { benchPointReads(b, app, ws.ID, false) })
}

// BenchmarkRender builds the SQL of a typical filtered, ordered page query:
// with the handle's builder, and with squirrel's StatementBuilder writing
// the same statement by hand. It needs no database.
//
//	go test -run '^$' -bench Render -benchmem -count 10 ./tenancy > render.txt
//	benchstat -col /via render.txt
func BenchmarkRender(b *testing.B) {
	tn := offlineTenant(b)
	const columns = "user_id, role, created_at"
	b.Run("via=squirrel", func(b *testing.B) {
		for b.Loop() {
			_, _, err := sq.StatementBuilder.PlaceholderFormat(sq.Dollar).
				Select(columns).From("memberships").
				Where(sq.Eq{"memberships.workspace_id": wsA}).
				Where(sq.Expr("(role = ? OR role = ?)", "admin", "owner")).
				OrderBy("user_id").Limit(50).ToSql()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("via=handle", func(b *testing.B) {
		for b.Loop() {
			_, _, err := tenancy.SQLOf(tn.Select(tenancy.MembershipsTable, columns).
				Where("role = ? OR role = ?", "admin", "owner").
				OrderBy("user_id").Limit(50))
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandleOverhead isolates the CPU the handle adds to a call: the
// same point read as BenchmarkPointRead, through the handle and by hand,
// against a connection that answers at once from memory. Without the
// network and the server, whose time varies by ±20% between identical runs
// on the CI machine, the difference is the handle's own work: building,
// checking and rendering the statement, batching the row-level security
// context, translating errors. (The in-memory connection is not a pool, so
// with rls=on the handle also queues the reset it sends inside a host's
// transaction: an upper bound.)
//
//	go test -run '^$' -bench HandleOverhead -benchmem -count 10 ./tenancy > overhead.txt
//	benchstat -col /via overhead.txt
func BenchmarkHandleOverhead(b *testing.B) {
	benchPointReads(b, instantDB{}, wsA, true)
}

// benchPointReads reads workspace id over db, by hand and through the
// handle, without and with the row-level security context.
func benchPointReads(b *testing.B, db tenancy.DBTX, id tenancy.WorkspaceID, bypasses bool) {
	ctx := context.Background()
	scope, _ := tenancy.NewScope(id)
	withRLS, _ := tenancy.NewTenant(db, scope)
	withoutRLS, _ := tenancy.NewTenant(db, scope, tenancy.WithoutRowLevelSecurity())
	const byHand = `SELECT workspace_id, name, created_at, updated_at FROM workspaces WHERE workspaces.workspace_id = $1`
	scan := func(row pgx.Row) {
		var (
			id         tenancy.WorkspaceID
			name       string
			created, u time.Time
		)
		if err := row.Scan(&id, &name, &created, &u); err != nil {
			b.Fatal(err)
		}
	}
	if bypasses {
		b.Run("rls=off/via=pgx", func(b *testing.B) {
			for b.Loop() {
				scan(db.QueryRow(ctx, byHand, id))
			}
		})
		b.Run("rls=off/via=handle", func(b *testing.B) {
			for b.Loop() {
				if _, err := workspaces.Get(ctx, withoutRLS); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("rls=on/via=pgx", func(b *testing.B) {
		for b.Loop() {
			batch := &pgx.Batch{}
			batch.Queue(`SELECT set_config('meterbase.workspace_id', $1, true), set_config('meterbase.user_id', $2, true), set_config('meterbase.operator', '', true)`, id.String(), "")
			batch.Queue(byHand, id)
			br := db.SendBatch(ctx, batch)
			if _, err := br.Exec(); err != nil {
				b.Fatal(err)
			}
			scan(br.QueryRow())
			if err := br.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rls=on/via=handle", func(b *testing.B) {
		for b.Loop() {
			if _, err := workspaces.Get(ctx, withRLS); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rls=on/via=statement", func(b *testing.B) {
		for b.Loop() {
			scan(withRLS.QueryRow(ctx, pointRead, nil))
		}
	})
}

var pointRead = tenancy.MustPrepare("point read", `SELECT workspace_id, name, created_at, updated_at FROM {workspaces}`)

// instantDB answers a point read of a workspace at once, alone or in a
// batch.
type instantDB struct{ tenancy.DBTX }

func (instantDB) QueryRow(context.Context, string, ...any) pgx.Row { return instantRow{} }

func (instantDB) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults { return instantBatch{} }

type instantBatch struct{ pgx.BatchResults }

func (instantBatch) Exec() (pgconn.CommandTag, error) { return pgconn.NewCommandTag("SELECT 1"), nil }
func (instantBatch) QueryRow() pgx.Row                { return instantRow{} }
func (instantBatch) Close() error                     { return nil }

type instantRow struct{}

func (instantRow) Scan(dest ...any) error {
	*dest[0].(*tenancy.WorkspaceID) = wsA
	*dest[1].(*string) = "Bench"
	*dest[2].(*time.Time) = time.Unix(0, 0)
	*dest[3].(*time.Time) = time.Unix(0, 0)
	return nil
}
