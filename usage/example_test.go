package usage_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// exampleTenant makes a user and a workspace in a fresh database, and
// returns the pool and the workspace's handle.
func exampleTenant(ctx context.Context) (*pgxpool.Pool, *tenancy.Tenant, tenancy.User, func()) {
	pool, drop := pgtest.ExampleDB()
	ada, err := tenancy.NewUsers(nil).Create(ctx, pool, tenancy.CreateUserParams{Email: "ada@example.com"})
	if err != nil {
		panic(err)
	}
	ws, err := tenancy.NewWorkspaces(nil).Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: ada.ID})
	if err != nil {
		panic(err)
	}
	scope, err := tenancy.NewScope(ws.ID)
	if err != nil {
		panic(err)
	}
	acme, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		panic(err)
	}
	return pool, acme, ada, drop
}

func Example() {
	ctx := context.Background()
	_, acme, ada, drop := exampleTenant(ctx)
	defer drop()
	svc, err := usage.NewService(nil) // made once, at startup
	if err != nil {
		panic(err)
	}

	day := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	call := func(key string, op usage.OperationType, quantity, credits int64, at time.Time) usage.RecordParams {
		return usage.RecordParams{User: ada.ID, OperationType: op, Quantity: quantity, Credits: credits, OccurredAt: at, IdempotencyKey: key}
	}
	batch := []usage.RecordParams{
		call("req-1", usage.ChatCompletion, 1200, 4, day),
		call("req-2", usage.ChatCompletion, 800, 3, day.Add(time.Hour)),
		call("req-3", usage.ImageGeneration, 2, 40, day.Add(25*time.Hour)),
		call("req-1", usage.ChatCompletion, 1200, 4, day), // the client sent it twice
	}
	res, err := svc.RecordBatch(ctx, acme, batch)
	if err != nil {
		panic(err)
	}
	fmt.Printf("new %d, duplicates %d\n", res.Inserted, res.Duplicates)

	// A retry of one of them is a replay: nothing is recorded twice.
	again, err := svc.Record(ctx, acme, batch[1])
	if err != nil {
		panic(err)
	}
	fmt.Println("replay:", again.Replay)

	sum, err := svc.Summarize(ctx, acme, usage.SummaryParams{
		From: day.Truncate(24 * time.Hour), To: day.Truncate(24 * time.Hour).Add(48 * time.Hour),
		Window: usage.Daily, By: usage.ByOperationType,
	})
	if err != nil {
		panic(err)
	}
	for _, r := range sum.Rows {
		fmt.Printf("%s %-16s events %d quantity %d credits %d\n", r.Window.Format("2006-01-02"), r.Value, r.Events, r.Quantity, r.Credits)
	}
	fmt.Printf("total credits %d\n", sum.Total.Credits)
	// Output:
	// new 3, duplicates 1
	// replay: true
	// 2025-03-01 chat.completion  events 2 quantity 2000 credits 7
	// 2025-03-02 image.generation events 1 quantity 2 credits 40
	// total credits 47
}

func ExampleRecorder() {
	ctx := context.Background()
	pool, acme, ada, drop := exampleTenant(ctx)
	defer drop()
	svc, err := usage.NewService(nil)
	if err != nil {
		panic(err)
	}
	// In a service: one Recorder over the host's pool, closed on shutdown.
	rec, err := svc.NewRecorder(pool, &usage.RecorderConfig{FlushSize: 500, FlushInterval: time.Second})
	if err != nil {
		panic(err)
	}
	ws := acme.Scope().Workspace()
	for i := range 1200 {
		p := usage.RecordParams{User: ada.ID, OperationType: usage.Embedding, Quantity: 100, IdempotencyKey: fmt.Sprint("embed-", i)}
		if err := rec.Record(ctx, ws, p); err != nil {
			panic(err) // a bad event, or no room before ctx ended
		}
	}
	// On shutdown: write everything held; what cannot be written comes
	// back in an *usage.UnwrittenError.
	if err := rec.Close(ctx); err != nil {
		panic(err)
	}
	st := rec.Stats()
	fmt.Printf("written %d, held %d\n", st.Written, st.Buffered)

	now := time.Now()
	totals, err := svc.UserTotals(ctx, acme, usage.UserTotalsParams{Users: []tenancy.UserID{ada.ID}, From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d events, %d units\n", ada.Email, totals[ada.ID].Events, totals[ada.ID].Quantity)
	// Output:
	// written 1200, held 0
	// ada@example.com: 1200 events, 120000 units
}
