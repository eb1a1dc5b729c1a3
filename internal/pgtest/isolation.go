package pgtest

import (
	"context"
	"reflect"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// isolationMarker opens the statements CheckIsolation sends itself, which
// read and change other tenants' rows on purpose; the tracer lets them by.
const isolationMarker = "/* pgtest:isolation */ "

// IsolationRun is one library call made as a tenant over tx (a transaction
// of the host's, as far as the call can tell). What it returns is what it
// read: it is compared between runs, so it must not depend on anything but
// the database (fixed ids and arguments; now() is the transaction's).
type IsolationRun func(ctx context.Context, tx pgx.Tx) (any, error)

// IsolationRole is a role CheckIsolation runs a call as.
type IsolationRole struct {
	Name string
	// set makes the transaction's statements run as the role ("" for the
	// server's own role, a superuser, which row-level security never binds).
	set string
}

// IsolationRoles are the roles every library statement is proven in: a
// superuser, whom row-level security never binds, so that the handle alone
// keeps tenants apart; the tables' owner, which the forced tables bind (the
// one-role deployment); and the application role.
func (db *DB) IsolationRoles(tb testing.TB) []IsolationRole {
	tb.Helper()
	db.AppPool(tb)   // creates the role and grants it the tables; its pool stays unused
	db.OwnerPool(tb) // likewise
	return []IsolationRole{
		{Name: "superuser, row-level security bypassed"},
		{Name: "the tables' owner", set: "SET LOCAL ROLE " + quote(OwnerRole())},
		{Name: "application role", set: "SET LOCAL ROLE " + quote(AppRole())},
	}
}

// CheckIsolation proves that run, acting for workspace mine, reaches no
// row of the workspaces in others, in every IsolationRole, under the
// tenant tracer. In one transaction per role it runs the call twice: once
// with the others' rows present, after which every tenant table's rows of
// others must be exactly as they were (it wrote none of them), and once
// with those rows deleted, which must give the same result (it read none
// of them). Everything is rolled back.
func (db *DB) CheckIsolation(tb testing.TB, mine uuid.UUID, others []uuid.UUID, run IsolationRun) {
	tb.Helper()
	db.checkIsolation(tb, tb, mine, others, run)
}

// reporter is where checkIsolation reports: the test, or a recorder in the
// tests of CheckIsolation itself.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

func (db *DB) checkIsolation(tb testing.TB, rep reporter, mine uuid.UUID, others []uuid.UUID, run IsolationRun) {
	tb.Helper()
	ctx := context.Background()
	if len(others) == 0 || mine == uuid.Nil {
		rep.Fatalf("pgtest: CheckIsolation needs a workspace and others to compare with")
	}
	for _, role := range db.IsolationRoles(tb) {
		func() {
			tx, err := db.Pool.Begin(ctx)
			if err != nil {
				rep.Fatalf("pgtest: isolation: %v", err)
			}
			defer tx.Rollback(context.Background()) //nolint:errcheck
			exec := func(sql string, args ...any) {
				rep.Helper()
				if _, err := tx.Exec(ctx, isolationMarker+sql, args...); err != nil {
					rep.Fatalf("pgtest: isolation (%s): %s: %v", role.Name, sql, err)
				}
			}
			as := func() (any, string) {
				rep.Helper()
				exec("SAVEPOINT pgtest_isolation")
				if role.set != "" {
					exec(role.set)
				}
				got, err := run(ctx, tx)
				msg := ""
				if err != nil {
					msg = err.Error()
					exec("ROLLBACK TO SAVEPOINT pgtest_isolation")
				}
				exec("RESET ROLE")
				return got, msg
			}

			before := db.snapshot(rep, tx, others)
			got, gotErr := as()
			if after := db.snapshot(rep, tx, others); after != before {
				rep.Errorf("pgtest: isolation (%s): the call changed rows of other workspaces:\nbefore %s\nafter  %s", role.Name, before, after)
			}
			exec("ROLLBACK TO SAVEPOINT pgtest_isolation")

			// Without the others' rows; triggers (an append-only journal's,
			// say) and foreign keys are off for this one delete.
			exec("SET LOCAL session_replication_role = replica")
			for _, table := range db.Tracer.tenantTables() {
				exec("DELETE FROM "+quote(table)+" WHERE workspace_id = ANY($1)", others)
			}
			exec("SET LOCAL session_replication_role = origin")
			alone, aloneErr := as()
			if gotErr != aloneErr {
				rep.Errorf("pgtest: isolation (%s): the call's error depends on other workspaces' rows: %q with them, %q without", role.Name, gotErr, aloneErr)
			}
			if !reflect.DeepEqual(got, alone) {
				rep.Errorf("pgtest: isolation (%s): the call's result depends on other workspaces' rows:\nwith    %+v\nwithout %+v", role.Name, got, alone)
			}
		}()
	}
}

// snapshot renders every tenant table's rows of the workspaces given, as
// one string that changes with any of them.
func (db *DB) snapshot(tb reporter, tx pgx.Tx, workspaces []uuid.UUID) string {
	tb.Helper()
	var out string
	for _, table := range db.Tracer.tenantTables() {
		var sum string
		err := tx.QueryRow(context.Background(), isolationMarker+
			`SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM `+quote(table)+` t WHERE workspace_id = ANY($1)`,
			workspaces).Scan(&sum)
		if err != nil {
			tb.Fatalf("pgtest: isolation: snapshot %s: %v", table, err)
		}
		out += table + "=" + sum + " "
	}
	return out
}
