package pgtest

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ExampleDB returns a pool on a fresh migrated database, for runnable
// examples (func ExampleX, which get no testing.TB), and the function that
// closes the pool and drops the database. The database is made as NewDB
// makes one (from the process's migrated template, named with the
// process's prefix, so that Main drops it even if the example does not).
// Without a server it panics: an example cannot skip, and its output would
// be wrong.
func ExampleDB() (*pgxpool.Pool, func()) {
	if !mainRan {
		panic("pgtest: call pgtest.Main(m) from the package's TestMain, so that its databases are dropped")
	}
	if err := setup(); err != nil {
		panic(fmt.Sprintf("pgtest: examples need a PostgreSQL server: %v", err))
	}
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	if templateErr != nil {
		panic(fmt.Sprintf("pgtest: build template: %v", templateErr))
	}
	ctx := context.Background()
	name := fmt.Sprintf("%sex_%d", prefix, seq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quote(name)+" TEMPLATE "+quote(templateName)); err != nil {
		panic(fmt.Sprintf("pgtest: create database: %v", err))
	}
	drop := func() {
		_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)")
	}
	cfg, err := pgxpool.ParseConfig(server.URL)
	if err != nil {
		drop()
		panic(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		panic(fmt.Sprintf("pgtest: connect to %s: %v", name, err))
	}
	return pool, func() {
		pool.Close()
		drop()
	}
}
