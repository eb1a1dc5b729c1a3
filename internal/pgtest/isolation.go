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
			// The tables are read now, not at NewDB: a test may add its own.
			tables := tenantTablesOf(rep, tx)
			as := func() (any, string) {
				rep.Helper()
				exec("SAVEPOINT pgtest_isolation")
				if role.set != "" {
					exec(role.set)
				}
				state := sessionState(rep, tx)
				got, err := run(ctx, tx)
				msg := ""
				if err != nil {
					msg = err.Error()
					exec("ROLLBACK TO SAVEPOINT pgtest_isolation")
				}
				// What outlives a call on its connection: settings (the
				// operator's reach left on in a host's transaction, a session
				// setting) and temporary tables; session advisory locks are
				// looked for once the call's work is rolled back.
				if after := sessionState(rep, tx); after != state {
					rep.Errorf("pgtest: isolation (%s): the call left state on its connection:\nbefore %s\nafter  %s", role.Name, state, after)
				}
				exec("RESET ROLE")
				return got, msg
			}
			// A transaction's advisory locks go with the savepoint rolled
			// back; a session's stay, for whoever uses the connection next.
			rollback := func() {
				rep.Helper()
				exec("ROLLBACK TO SAVEPOINT pgtest_isolation")
				var held int
				if err := tx.QueryRow(ctx, isolationMarker+`SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'`).Scan(&held); err != nil {
					rep.Fatalf("pgtest: isolation: read advisory locks: %v", err)
				}
				if held > 0 {
					rep.Errorf("pgtest: isolation (%s): the call left %d session advisory lock(s) on its connection", role.Name, held)
					exec("SELECT pg_advisory_unlock_all()")
				}
			}

			// The users who belong to no workspace of mine's, as they are now:
			// a call may make one a member, never read or change one.
			var outsiders []uuid.UUID
			rows, err := tx.Query(ctx, isolationMarker+`SELECT user_id FROM users WHERE user_id NOT IN (SELECT user_id FROM memberships WHERE workspace_id = $1)`, mine)
			if err == nil {
				outsiders, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			}
			if err != nil {
				rep.Fatalf("pgtest: isolation: list users: %v", err)
			}

			before := snapshot(rep, tx, tables, others, outsiders)
			got, gotErr := as()
			if after := snapshot(rep, tx, tables, others, outsiders); after != before {
				rep.Errorf("pgtest: isolation (%s): the call changed rows of other workspaces:\nbefore %s\nafter  %s", role.Name, before, after)
			}
			rollback()

			// Without the others' rows, and with the outsiders' names and
			// emails changed (they must stay: a call may add one as a
			// member); triggers (an append-only journal's, say) and foreign
			// keys are off for this one delete. The statistics are taken
			// again, so that pg_stats no longer knows the others' values
			// either.
			exec("SET LOCAL session_replication_role = replica")
			for _, table := range tables {
				exec("DELETE FROM "+quote(table)+" WHERE workspace_id = ANY($1)", others)
			}
			exec(`UPDATE users SET email = 'outsider-' || user_id || '@example.invalid', display_name = 'outsider' WHERE user_id = ANY($1)`, outsiders)
			exec("SET LOCAL session_replication_role = origin")
			for _, table := range append(tables, "users") {
				exec("ANALYZE " + quote(table))
			}
			alone, aloneErr := as()
			rollback()
			if gotErr != aloneErr {
				rep.Errorf("pgtest: isolation (%s): the call's error depends on other workspaces' rows: %q with them, %q without", role.Name, gotErr, aloneErr)
			}
			if !reflect.DeepEqual(got, alone) {
				rep.Errorf("pgtest: isolation (%s): the call's result depends on other workspaces' rows:\nwith    %+v\nwithout %+v", role.Name, got, alone)
			}
		}()
	}
}

// tenantTablesOf lists the tables with a workspace_id column, as they are
// now.
func tenantTablesOf(rep reporter, tx pgx.Tx) []string {
	rows, err := tx.Query(context.Background(), isolationMarker+
		`SELECT DISTINCT table_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND column_name = 'workspace_id' ORDER BY 1`)
	if err != nil {
		rep.Fatalf("pgtest: isolation: list tenant tables: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		rep.Fatalf("pgtest: isolation: list tenant tables: %v", err)
	}
	return names
}

// sessionState renders what a call could leave behind on its connection.
// A library's stages (temporary tables named meterbase_stage_*, which hold
// rows only within a call's transaction) are meant to stay.
func sessionState(rep reporter, tx pgx.Tx) string {
	var state string
	err := tx.QueryRow(context.Background(), isolationMarker+`SELECT concat_ws(' | ',
		(SELECT string_agg(name || '=' || coalesce(current_setting(name, true), ''), ',' ORDER BY name)
		   FROM unnest(ARRAY['meterbase.workspace_id', 'meterbase.user_id', 'meterbase.operator', 'meterbase.directory']) AS name),
		(SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings WHERE source = 'session'),
		(SELECT 'temporary tables ' || count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()
		    AND relname NOT LIKE 'meterbase\_stage\_%'))`).Scan(&state)
	if err != nil {
		rep.Fatalf("pgtest: isolation: read session state: %v", err)
	}
	return state
}

// snapshot renders every tenant table's rows of the workspaces given, and
// the outsiders' user rows, as one string that changes with any of them.
func snapshot(rep reporter, tx pgx.Tx, tables []string, workspaces, outsiders []uuid.UUID) string {
	rep.Helper()
	var out string
	read := func(what, sql string, args ...any) {
		var sum string
		if err := tx.QueryRow(context.Background(), isolationMarker+sql, args...).Scan(&sum); err != nil {
			rep.Fatalf("pgtest: isolation: snapshot %s: %v", what, err)
		}
		out += what + "=" + sum + " "
	}
	for _, table := range tables {
		read(table, `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM `+quote(table)+` t WHERE workspace_id = ANY($1)`, workspaces)
	}
	read("users", `SELECT count(*) || ':' || coalesce(md5(string_agg(u::text, '|' ORDER BY u::text)), '') FROM users u WHERE user_id = ANY($1)`, outsiders)
	return out
}
