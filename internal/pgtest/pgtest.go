// Package pgtest gives each test a database of its own on a real PostgreSQL
// server, found as pgserver.Find does ($MB_TEST_DATABASE_URL, the local
// server, then testcontainers). Without a server the tests skip, unless
// CI=true, where they fail; a URL that is given but does not answer fails
// them everywhere.
//
// Migrated databases are cloned from a template that this test process
// migrates once, named after a hash of the migration files, so a test pays
// for a CREATE DATABASE, not for the migrations. As in production, the
// template is owned and migrated by a role that is no superuser
// (OwnerRole), so that its tables belong to a role row-level security can
// bind. Every package that uses pgtest runs its tests through Main, which
// drops what the process created.
package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pgserver"
	"github.com/meterbase/meterbase/migrations"
)

// EnvURL names the variable that points the tests at a server explicitly.
const EnvURL = "MB_TEST_DATABASE_URL"

var (
	mainRan bool
	seq     atomic.Int64

	setupOnce sync.Once
	setupErr  error
	server    *pgserver.Server
	admin     *pgxpool.Pool
	prefix    string // mbt_<pid>_ : every database and role this process makes

	templateOnce sync.Once
	templateName string
	templateErr  error

	roleOnce sync.Once
	roleErr  error

	ownerOnce sync.Once
	ownerErr  error
)

// Main runs the package's tests, then drops every database and role the
// process created and stops a container it started. Call it from TestMain.
func Main(m *testing.M) {
	mainRan = true
	code := m.Run()
	closeExamplePools()
	if err := teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cleanup: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func setup() error {
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		server, setupErr = pgserver.Find(ctx, EnvURL)
		if setupErr != nil {
			return
		}
		admin, setupErr = pgxpool.New(ctx, server.URL)
		prefix = fmt.Sprintf("mbt_%d_", os.Getpid())
		if setupErr == nil && sweepable(server.URL) {
			sweepOrphans(ctx)
		}
	})
	return setupErr
}

func requireServer(tb testing.TB) {
	tb.Helper()
	if !mainRan {
		tb.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain, so that its databases are dropped")
	}
	if err := setup(); err != nil {
		// A URL that was given but does not answer is a failure anywhere.
		if !errors.Is(err, pgserver.ErrNoServer) {
			tb.Fatalf("pgtest: %v", err)
		}
		if os.Getenv("CI") == "true" {
			tb.Fatalf("pgtest: CI=true and %v", err)
		}
		tb.Skipf("pgtest: skipping, %v (set %s to a server's URL to run these tests)", err, EnvURL)
	}
}

// DB is a database owned by one test; it is dropped when the test ends.
type DB struct {
	Name string
	// Pool connects as the server's admin role, a superuser, whom
	// row-level security never binds: for a test's setup and assertions.
	// (NewDB's tables belong to OwnerRole; OwnerPool connects as it.)
	Pool *pgxpool.Pool
	// Config is the Pool's configuration, for connecting again differently.
	Config *pgxpool.Config
	// Tracer checks every statement of the database's pools (NewDB only).
	Tracer *TenantTracer
}

// NewDB returns a fresh database with every migration applied.
func NewDB(tb testing.TB) *DB {
	tb.Helper()
	requireServer(tb)
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	if templateErr != nil {
		tb.Fatalf("pgtest: build template: %v", templateErr)
	}
	db := createDB(tb, "TEMPLATE "+quote(templateName)+" OWNER "+quote(OwnerRole()))
	// Every pool of a migrated database checks that what the library sends
	// stays within a tenant. The tracer's table list is read through a pool
	// without it.
	db.Tracer = newTenantTracer(tb, db)
	db.Config.ConnConfig.Tracer = db.Tracer
	db.Pool = db.Connect(tb, nil)
	return db
}

// NewEmptyDB returns a fresh database without meterbase's schema, for tests
// of the migrations themselves.
func NewEmptyDB(tb testing.TB) *DB {
	tb.Helper()
	requireServer(tb)
	return createDB(tb, "TEMPLATE template0")
}

func createDB(tb testing.TB, template string) *DB {
	tb.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s%d", prefix, seq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quote(name)+" "+template); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	cfg := poolConfig(tb, name)
	pool, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v", name, err)
	}
	tb.Cleanup(pool.Close)
	return &DB{Name: name, Pool: pool, Config: cfg}
}

// Connect opens another pool to the database, changed by configure (which
// may be nil), and closes it when the test ends.
func (db *DB) Connect(tb testing.TB, configure func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg := db.Config.Copy()
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v", db.Name, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// RawPool connects without the tenant tracer, for a test's own setup and
// assertions in raw SQL (which need no tenant predicate).
func (db *DB) RawPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return db.Connect(tb, func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = nil })
}

// OwnerRole is the role that owns NewDB's databases and every table in
// them, and ran their migrations: a host's migration role, or the one role
// of a host that connects its service as the owner. It is no superuser and
// does not bypass row-level security, so FORCE ROW LEVEL SECURITY binds it.
func OwnerRole() string { return prefix + "owner" }

// ensureOwnerRole creates OwnerRole once per process.
func ensureOwnerRole() error {
	ownerOnce.Do(func() {
		_, ownerErr = admin.Exec(context.Background(), fmt.Sprintf(
			"CREATE ROLE %s LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
			quote(OwnerRole()), quoteLiteral(OwnerRole())))
	})
	return ownerErr
}

// OwnerPool connects to the database as OwnerRole, through the tenant
// tracer like every pool of NewDB's. configure, if any, changes the pool
// further.
func (db *DB) OwnerPool(tb testing.TB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	if err := ensureOwnerRole(); err != nil {
		tb.Fatalf("pgtest: create owner role: %v", err)
	}
	return db.Connect(tb, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.User = OwnerRole()
		cfg.ConnConfig.Password = OwnerRole()
		for _, c := range configure {
			c(cfg)
		}
	})
}

// AppRole is the role AppPool connects as: it may log in and read and write
// meterbase's tables, but it owns nothing, is no superuser and does not
// bypass row-level security, as a host's application role should be.
func AppRole() string { return prefix + "app" }

// AppPool connects to the database as AppRole, granting it the table
// privileges a host would grant its application role. configure, if any,
// changes the pool further (one connection, no tracer...).
func (db *DB) AppPool(tb testing.TB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	roleOnce.Do(func() {
		_, roleErr = admin.Exec(context.Background(), fmt.Sprintf(
			"CREATE ROLE %s LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
			quote(AppRole()), quoteLiteral(AppRole())))
	})
	if roleErr != nil {
		tb.Fatalf("pgtest: create role: %v", roleErr)
	}
	role := quote(AppRole())
	for _, stmt := range []string{
		"GRANT USAGE ON SCHEMA public TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO " + role,
	} {
		if _, err := db.Pool.Exec(context.Background(), stmt); err != nil {
			tb.Fatalf("pgtest: %s: %v", stmt, err)
		}
	}
	return db.Connect(tb, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.User = AppRole()
		cfg.ConnConfig.Password = AppRole()
		for _, c := range configure {
			c(cfg)
		}
	})
}

func poolConfig(tb testing.TB, database string) *pgxpool.Config {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(server.URL)
	if err != nil {
		tb.Fatalf("pgtest: parse server URL: %v", err)
	}
	cfg.ConnConfig.Database = database
	cfg.MaxConns = 8
	return cfg
}

// MigrationsHash identifies the embedded migrations' content.
func MigrationsHash() string {
	h := sha256.New()
	for _, m := range migrations.List() {
		fmt.Fprintf(h, "%d\x00%s\x00%s\x00", m.Version, m.Up.SQL, m.Down.SQL)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func buildTemplate() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := prefix + "tpl_" + MigrationsHash()
	if err := ensureOwnerRole(); err != nil {
		return "", err
	}
	// The database's owner may create in its public schema (which belongs
	// to pg_database_owner from PostgreSQL 15, and is open to all before).
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quote(name)+" OWNER "+quote(OwnerRole())+" TEMPLATE template0"); err != nil {
		return "", err
	}
	cfg, err := pgxpool.ParseConfig(server.URL)
	if err != nil {
		return "", err
	}
	cfg.ConnConfig.Database = name
	cfg.ConnConfig.User = OwnerRole()
	cfg.ConnConfig.Password = OwnerRole()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	if _, err := migrations.Migrate(ctx, pool, nil); err != nil {
		return "", err
	}
	return name, nil
}

// sweepable reports whether the server's leftovers can be told apart by
// process id: only a server on this machine (loopback or a Unix socket)
// serves test processes whose pids /proc can vouch for, and only Linux has
// a /proc to ask.
func sweepable(url string) bool {
	if runtime.GOOS != "linux" {
		return false
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return false
	}
	switch host := cfg.Host; {
	case strings.HasPrefix(host, "/"), host == "localhost":
		return true
	default:
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
}

// orphanName matches the databases and roles of a test process: mbt_<pid>_...
var orphanName = regexp.MustCompile(`^mbt_(\d+)_`)

// sweepOrphans drops what test processes that died before their cleanup
// (a crash, a kill) left on the local server: databases and roles whose
// process no longer runs on this machine. It only looks at the local
// server, whose test processes are this machine's.
func sweepOrphans(ctx context.Context) {
	dead := func(name string) bool {
		m := orphanName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		_, err := os.Stat("/proc/" + m[1])
		return errors.Is(err, os.ErrNotExist)
	}
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'mbt\_%'`)
	if err != nil {
		return
	}
	dbs, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range dbs {
		if dead(name) {
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)")
		}
	}
	rows, err = admin.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'mbt\_%'`)
	if err != nil {
		return
	}
	roles, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range roles {
		if dead(name) {
			_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+quote(name))
		}
	}
}

func teardown() error {
	if server == nil {
		return nil
	}
	if admin == nil {
		return server.Close(context.Background())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := admin.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var errs []string
	for _, name := range names {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// The databases, and everything the roles owned or were granted in
	// them, are gone: the roles can go too.
	for _, role := range []string{AppRole(), OwnerRole()} {
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+quote(role)); err != nil {
			errs = append(errs, err.Error())
		}
	}
	admin.Close()
	if err := server.Close(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
