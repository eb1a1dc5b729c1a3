package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/migrations"
)

// A host's DBA reviews an upgrade offline: the database reports version 0
// (or any other), and the plan lists what would run, with each file's risks.
func ExamplePlanBetween() {
	plan, err := migrations.PlanBetween(0, 2)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range plan.Steps {
		fmt.Printf("%s (version %d to %d)\n", s.File.Path, s.From, s.To)
		fmt.Printf("  locks: %s\n", s.File.Header["locks"])
		fmt.Printf("  down loses data: %s\n", s.File.Header["down loses data"])
	}
	// plan.String() is the SQL script itself, every file verbatim.

	// Output:
	// 0001_tenancy.up.sql (version 0 to 1)
	//   locks: none on existing tables; the new tables are created empty.
	//   down loses data: yes; the down migration drops these tables with every user, workspace and membership in them.
	// 0002_catalog.up.sql (version 1 to 2)
	//   locks: none on existing tables; the new tables are created and seeded in this transaction.
	//   down loses data: yes; the down migration drops both tables, with every feature, every host-defined operation type and any change made to the built-in ones.
}

// A host service prints the dry run of its pending migrations (say, behind a
// -migrate-dry-run flag) so that a DBA can read it before the service is
// allowed to start and apply them.
func ExampleMigrator_Plan() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	m, err := migrations.New(pool, nil)
	if err != nil {
		log.Fatal(err)
	}
	plan, err := m.Plan(ctx) // a dirty database is reported here, as Up would
	if err != nil {
		log.Fatal(err)
	}
	if _, err := plan.WriteTo(os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// At startup, a lock timeout is not a broken database: nothing was changed,
// and the next attempt (a restart, or a retry after a pause) may succeed.
func ExampleMigrate() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	res, err := migrations.Migrate(ctx, pool, nil)
	switch {
	case errors.Is(err, migrations.ErrLockTimeout):
		log.Fatalf("a meterbase table is busy; nothing was changed, try again later: %v", err)
	case errors.Is(err, migrations.ErrDirty):
		log.Fatalf("a migration stopped part-way; see the README's Upgrading section: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	log.Printf("meterbase schema at version %d (was %d)", res.To, res.From)
}
