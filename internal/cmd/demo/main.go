// Command demo runs meterbase's main job end to end against a real
// PostgreSQL: it creates a scratch database, migrates it, creates users and
// workspaces, shows the tenant boundary at work, runs the credit ledger
// (top-ups, spends, a hold and its capture, a refund, a refusal, a
// reconcile), records each workspace's usage and sums it by operation
// type, and drops the database.
//
//	go run ./internal/cmd/demo
//
// The server is found as the tests find it: $DATABASE_URL, then
// $MB_TEST_DATABASE_URL, then the local server on 127.0.0.1:5432, then a
// throwaway container when a Docker engine answers. The URL's role must be
// allowed to create databases.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/internal/pgserver"
	"github.com/meterbase/meterbase/migrations"
	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func main() {
	// Ctrl-C ends the run through its context, so that the scratch database
	// is still dropped on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	server, err := pgserver.Find(ctx, "DATABASE_URL", "MB_TEST_DATABASE_URL")
	if err != nil {
		return err
	}
	defer server.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	say("server: %s", server.Source)

	name := fmt.Sprintf("meterbase_demo_%d_%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	// Registered before the database is created: a cancelled CREATE may
	// still have finished on the server.
	defer func() {
		dropped, dropErr := dropDatabase(server.URL, name)
		if dropped {
			say("dropped database %s", name)
		}
		err = errors.Join(err, dropErr)
	}()
	admin, err := pgx.Connect(ctx, server.URL)
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	say("created database %s", name)

	cfg, err := pgxpool.ParseConfig(server.URL)
	if err != nil {
		return err
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	// 1. What a host does at startup.
	res, err := migrations.Migrate(ctx, pool, nil)
	if err != nil {
		return err
	}
	say("migrated from version %d to %d", res.From, res.To)

	// 2. Users are global; workspaces are tenants. The repositories are
	// made once, as a service makes them at startup.
	users := tenancy.NewUsers(nil)
	workspaces := tenancy.NewWorkspaces(nil)
	members := tenancy.NewMembers(nil)
	people := map[string]tenancy.User{}
	for _, email := range []string{"ada@example.com", "grace@example.com", "linus@example.com", "barbara@example.com"} {
		u, err := users.Create(ctx, pool, tenancy.CreateUserParams{Email: email})
		if err != nil {
			return err
		}
		people[email] = u
	}
	say("created %d users", len(people))

	acme, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: people["ada@example.com"].ID})
	if err != nil {
		return err
	}
	globex, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Globex", Owner: people["barbara@example.com"].ID})
	if err != nil {
		return err
	}
	say("created workspaces %q (owner ada) and %q (owner barbara)", acme.Name, globex.Name)

	// 3. Everything about Acme goes through Acme's tenant handle.
	scope, err := tenancy.NewScope(acme.ID)
	if err != nil {
		return err
	}
	tn, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		return err
	}
	if _, err := members.Add(ctx, tn, tenancy.AddMemberParams{User: people["grace@example.com"].ID, Role: tenancy.RoleAdmin}); err != nil {
		return err
	}
	if _, err := members.Add(ctx, tn, tenancy.AddMemberParams{User: people["linus@example.com"].ID, Role: tenancy.RoleMember}); err != nil {
		return err
	}
	list, err := members.List(ctx, tn, tenancy.ListMembersParams{Page: tenancy.Page{}})
	if err != nil {
		return err
	}
	say("members of %s:", acme.Name)
	for _, m := range list.Items {
		say("  %-22s %s", m.Email, m.Role)
	}

	// 4. The rules hold.
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: people["linus@example.com"].ID, MinRole: tenancy.RoleAdmin})
	say("may linus administer Acme? %v", describe(err))
	_, err = members.Authorize(ctx, tn, tenancy.AuthorizeParams{User: people["barbara@example.com"].ID, MinRole: tenancy.RoleMember})
	say("may barbara (of Globex) read Acme? %v", describe(err))
	err = members.Remove(ctx, tn, people["ada@example.com"].ID)
	say("remove Acme's only owner? %v", describe(err))
	err = members.Remove(ctx, tn, people["barbara@example.com"].ID)
	say("remove Globex's owner through Acme's handle? %v", describe(err))

	// 5. An admin view across tenants, behind the operator handle.
	op, err := tenancy.NewOperator(pool, "demo: list every workspace")
	if err != nil {
		return err
	}
	all, err := op.ListWorkspaces(ctx, tenancy.Page{})
	if err != nil {
		return err
	}
	say("operator (%s) sees %d workspaces", op.Reason(), len(all.Items))

	// 6. The credit ledger: the workspace's pool and its members' own
	// accounts, each state change one call with an idempotency key.
	if err := ledgerDemo(ctx, say, tn, people); err != nil {
		return err
	}

	// 7. Usage: each workspace's AI operations, recorded in one batch
	// (a retried call among them, counted once), then summed from the
	// rollups the database keeps.
	if err := recordUsage(ctx, say, pool, people, acme, globex); err != nil {
		return err
	}

	migrator, err := migrations.New(pool, nil)
	if err != nil {
		return err
	}
	st, err := migrator.Status(ctx)
	if err != nil {
		return err
	}
	say("schema at version %d of %d, dirty=%v, pending=%d", st.Version, st.Latest, st.Dirty, len(st.Pending))
	return nil
}

// ledgerDemo tops Acme's pool and two members up, lets the members spend,
// reserves credits for a model call and captures what it used, refunds a
// spend, shows a refusal, and reconciles every account.
func ledgerDemo(ctx context.Context, say func(string, ...any), tn *tenancy.Tenant, people map[string]tenancy.User) error {
	ledger := credits.New(nil)
	open := func(user tenancy.UserID) (credits.AccountID, error) {
		a, err := ledger.OpenAccount(ctx, tn, credits.OpenAccountParams{User: user})
		return a.ID, err
	}
	pool, err := open(tenancy.UserID{})
	if err != nil {
		return err
	}
	grace, err := open(people["grace@example.com"].ID)
	if err != nil {
		return err
	}
	linus, err := open(people["linus@example.com"].ID)
	if err != nil {
		return err
	}
	for _, g := range []credits.GrantParams{
		{Account: pool, Amount: 10_000, Category: credits.CategoryPurchase, Reference: "invoice 1001", Key: "topup-1001"},
		{Account: grace, Amount: 500, Category: credits.CategoryPromotional, Priority: -1, ExpiresAt: time.Now().Add(30 * 24 * time.Hour), Key: "welcome-grace"},
		{Account: linus, Amount: 300, Category: credits.CategoryPlan, Key: "plan-linus"},
	} {
		if _, err := ledger.Grant(ctx, tn, g); err != nil {
			return err
		}
	}
	say("ledger: topped up the pool (10000), grace (500 promotional), linus (300)")

	spend, err := ledger.Spend(ctx, tn, credits.SpendParams{Account: grace, Amount: 120, Reference: "chat: summary", Key: "req-1"})
	if err != nil {
		return err
	}
	say("grace spent 120, balance %d, from %d lot(s) (%s)", spend.Entry.BalanceAfter, len(spend.Entry.Lots), spend.Entry.Lots[0].Category)
	again, err := ledger.Spend(ctx, tn, credits.SpendParams{Account: grace, Amount: 120, Reference: "chat: summary", Key: "req-1"})
	if err != nil {
		return err
	}
	say("grace's retry with the same key: replay=%v, balance still %d", again.Replay, again.Entry.BalanceAfter)
	if _, err := ledger.Spend(ctx, tn, credits.SpendParams{Account: linus, Amount: 200, Reference: "image", Key: "req-2"}); err != nil {
		return err
	}
	say("linus spent 200")

	hold, err := ledger.Hold(ctx, tn, credits.HoldParams{Account: pool, Amount: 2_000, TTL: 5 * time.Minute, Reference: "agent run", Key: "run-7-hold"})
	if err != nil {
		return err
	}
	b, err := ledger.Balance(ctx, tn, credits.BalanceParams{Account: pool})
	if err != nil {
		return err
	}
	say("pool: held 2000 for an agent run: total %d, held %d, available %d", b.Total, b.Held, b.Available)
	captured, err := ledger.Capture(ctx, tn, credits.CaptureParams{Hold: hold.Hold.ID, Amount: 1_750, Key: "run-7-capture"})
	if err != nil {
		return err
	}
	say("pool: captured 1750 of the hold (the rest released): balance %d, held %d", captured.Entry.BalanceAfter, captured.Entry.HeldAfter)

	// The team spends from the pool at once: the calls that arrive while
	// one is in flight are coalesced into batches, one commit each.
	var team sync.WaitGroup
	spendErrs := make(chan error, 40)
	for i := range 40 {
		team.Add(1)
		go func() {
			defer team.Done()
			_, err := ledger.Spend(ctx, tn, credits.SpendParams{Account: pool, Amount: 5, Reference: "embedding", Key: fmt.Sprintf("team-%d", i)})
			spendErrs <- err
		}()
	}
	team.Wait()
	close(spendErrs)
	for err := range spendErrs {
		if err != nil {
			return err
		}
	}
	b, err = ledger.Balance(ctx, tn, credits.BalanceParams{Account: pool})
	if err != nil {
		return err
	}
	stats := ledger.CoalescingStats()
	say("pool: 40 concurrent spends of 5 by the team: all applied, balance %d (%d sent in %d batch(es), the rest alone)", b.Total, stats.Batched, stats.Batches)

	refund, err := ledger.Refund(ctx, tn, credits.RefundParams{Entry: spend.Entry.ID, Amount: 20, Reference: "partial failure", Key: "req-1-refund"})
	if err != nil {
		return err
	}
	say("grace: 20 refunded to the lot they came from: balance %d", refund.Entry.BalanceAfter)

	_, err = ledger.Spend(ctx, tn, credits.SpendParams{Account: linus, Amount: 1_000, Key: "req-3"})
	var short *credits.InsufficientCreditsError
	if errors.As(err, &short) {
		say("linus asks for %d: refused, %d available", short.Requested, short.Available)
	} else {
		return fmt.Errorf("a spend beyond linus's credits: want a refusal, got %v", err)
	}

	list, err := ledger.ListAccounts(ctx, tn, credits.ListAccountsParams{})
	if err != nil {
		return err
	}
	say("credit accounts of the workspace:")
	for _, a := range list.Items {
		who := a.Email
		if a.Kind == credits.AccountWorkspace {
			who = "(shared pool)"
		}
		say("  %-22s %6d", who, a.Balance.Total)
	}
	rec, err := ledger.Reconcile(ctx, tn, credits.ReconcileParams{})
	if err != nil {
		return err
	}
	entries := int64(0)
	for _, a := range rec.Accounts {
		entries += a.Entries
	}
	say("reconcile: %d accounts, %d journal entries, ok=%v", len(rec.Accounts), entries, rec.OK)
	return nil
}

// recordUsage records yesterday's AI operations of two workspaces and
// prints each one's usage by operation type.
func recordUsage(ctx context.Context, say func(string, ...any), pool *pgxpool.Pool, people map[string]tenancy.User, workspaces ...tenancy.Workspace) error {
	svc, err := usage.NewService(nil)
	if err != nil {
		return err
	}
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	for i, ws := range workspaces {
		scope, err := tenancy.NewScope(ws.ID)
		if err != nil {
			return err
		}
		tn, err := tenancy.NewTenant(pool, scope)
		if err != nil {
			return err
		}
		user := people["ada@example.com"].ID
		if i > 0 {
			user = people["barbara@example.com"].ID
		}
		var batch []usage.RecordParams
		for j := range 12 * (i + 1) {
			op := []usage.OperationType{usage.ChatCompletion, usage.Embedding, usage.ImageGeneration}[j%3]
			batch = append(batch, usage.RecordParams{
				User: user, OperationType: op, Quantity: int64(100 * (j + 1)), Credits: int64(j%3 + 1),
				Model: "demo-model", IdempotencyKey: fmt.Sprintf("call-%d", j), OccurredAt: day.Add(time.Duration(j) * 47 * time.Minute),
			})
		}
		batch = append(batch, batch[0]) // a client's retry
		res, err := svc.RecordBatch(ctx, tn, batch)
		if err != nil {
			return err
		}
		say("recorded %d usage events for %s (%d duplicate skipped)", res.Inserted, ws.Name, res.Duplicates)
		sum, err := svc.Summarize(ctx, tn, usage.SummaryParams{From: day, To: day.Add(24 * time.Hour), By: usage.ByOperationType})
		if err != nil {
			return err
		}
		say("usage of %s on %s by operation type:", ws.Name, day.Format("2006-01-02"))
		for _, r := range sum.Rows {
			say("  %-18s %3d events %7d units %4d credits", r.Value, r.Events, r.Quantity, r.Credits)
		}
		say("  %-18s %3d events %7d units %4d credits", "total", sum.Total.Events, sum.Total.Quantity, sum.Total.Credits)
	}
	return nil
}

// dropDatabase drops the scratch database on a connection of its own: the
// run's may have been closed by a cancelled context.
func dropDatabase(url, name string) (dropped bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false, fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	if err != nil {
		return false, fmt.Errorf("drop database %s: %w", name, err)
	}
	return tag.String() == "DROP DATABASE", nil
}

func describe(err error) string {
	if err == nil {
		return "yes"
	}
	return "no: " + err.Error()
}
