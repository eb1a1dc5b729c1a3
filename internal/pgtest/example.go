package pgtest

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	examplesMu   sync.Mutex
	examplePools []*pgxpool.Pool
)

// ExamplePool returns a pool on a fresh database with every migration
// applied, for a runnable example, which has no *testing.T to hand to
// NewDB. The database is dropped when Main returns. Without a server it
// panics, and so fails the example: an example that cannot run proves
// nothing.
func ExamplePool() *pgxpool.Pool {
	pool, _ := exampleDatabase()
	return pool
}

// ExampleDB is ExamplePool with a function that closes the pool and drops
// the database at once, for an example that makes several.
func ExampleDB() (*pgxpool.Pool, func()) {
	pool, name := exampleDatabase()
	return pool, func() {
		pool.Close()
		_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)")
	}
}

func exampleDatabase() (*pgxpool.Pool, string) {
	if !mainRan {
		panic("pgtest: call pgtest.Main(m) from the package's TestMain, so that its databases are dropped")
	}
	if err := setup(); err != nil {
		panic(fmt.Sprintf("pgtest: a runnable example needs a PostgreSQL server: %v", err))
	}
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	if templateErr != nil {
		panic(fmt.Sprintf("pgtest: build template: %v", templateErr))
	}
	ctx := context.Background()
	name := fmt.Sprintf("%s%d", prefix, seq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quote(name)+" TEMPLATE "+quote(templateName)); err != nil {
		panic(fmt.Sprintf("pgtest: create database: %v", err))
	}
	cfg, err := pgxpool.ParseConfig(server.URL)
	if err != nil {
		panic(err)
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		panic(err)
	}
	examplesMu.Lock()
	defer examplesMu.Unlock()
	examplePools = append(examplePools, pool)
	return pool, name
}

// closeExamplePools closes the examples' pools before their databases are
// dropped.
func closeExamplePools() {
	examplesMu.Lock()
	defer examplesMu.Unlock()
	for _, p := range examplePools {
		p.Close()
	}
	examplePools = nil
}
