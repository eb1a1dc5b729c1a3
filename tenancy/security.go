package tenancy

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pg"
)

// ErrNoTenantContext means that row-level security binds the connection's
// role and the statement's transaction set no meterbase context at all
// (no tenant, operator or directory setting): the policies refuse the
// statement (SQLSTATE MB001) instead of answering it with no rows. It comes
// from a handle made WithoutRowLevelSecurity on a role that does not
// bypass row-level security, or from raw SQL that does not set the
// settings. CheckRowLevelSecurity tells at startup whether the wall binds a
// connection.
var ErrNoTenantContext = pg.ErrNoTenantContext

// securedTables are the tables under meterbase's row-level security
// policies, the tenant tables and the user directory, in the order their
// locks are taken.
var securedTables = []string{usersTable.name, workspacesTable.name, membershipsTable.name}

// TableSecurity is what row-level security does on one table for the role
// a RowLevelSecurityReport is about.
type TableSecurity struct {
	// Table is the table as the connection's search_path finds it,
	// schema-qualified when the schema is not first on that path.
	Table string
	// Enabled: the table has ROW LEVEL SECURITY enabled.
	Enabled bool
	// Forced: the table has FORCE ROW LEVEL SECURITY, which binds its
	// owner too.
	Forced bool
	// Owner: the role owns the table, itself or through membership in the
	// owning role, which exempts it unless the table is forced.
	Owner bool
	// Bound: the table's policies apply to the role's statements.
	Bound bool
}

// reason says why the table binds the role or not.
func (t TableSecurity) reason(r RowLevelSecurityReport) string {
	switch {
	case r.Superuser:
		return "superuser"
	case r.BypassRLS:
		return "BYPASSRLS"
	case !t.Enabled:
		return "row level security not enabled"
	case t.Owner && !t.Forced:
		return "owner, not forced"
	case t.Owner:
		return "owner, forced"
	}
	return "enabled"
}

// RowLevelSecurityReport says whether row-level security binds a
// connection's role on each of meterbase's tables.
type RowLevelSecurityReport struct {
	// Role is the role the connection's statements run as (current_user,
	// which SET ROLE changes), whose privileges Postgres checks.
	Role string
	// Superuser and BypassRLS are the role's own attributes (neither is
	// inherited); either exempts it from every policy.
	Superuser bool
	BypassRLS bool
	// Tables holds one entry per table: users, workspaces, memberships.
	Tables []TableSecurity
	// Bound: the policies bind the role on every table. Only then is the
	// wall in place behind the handles' own predicates, and does a
	// statement without context fail with ErrNoTenantContext.
	Bound bool
}

// String is one line, for a host's startup log or an error message:
// whether the wall binds the role, and where it does not, why.
func (r RowLevelSecurityReport) String() string {
	var bound, unbound []string
	for _, t := range r.Tables {
		if t.Bound {
			bound = append(bound, t.Table)
		} else {
			unbound = append(unbound, t.Table+" ("+t.reason(r)+")")
		}
	}
	var b strings.Builder
	switch {
	case r.Superuser:
		fmt.Fprintf(&b, "row-level security does not bind role %s: it is a superuser", r.Role)
	case r.BypassRLS:
		fmt.Fprintf(&b, "row-level security does not bind role %s: it has BYPASSRLS", r.Role)
	case r.Bound:
		fmt.Fprintf(&b, "row-level security binds role %s on %s", r.Role, strings.Join(bound, ", "))
	case len(bound) == 0:
		fmt.Fprintf(&b, "row-level security does not bind role %s on %s", r.Role, strings.Join(unbound, ", "))
	default:
		fmt.Fprintf(&b, "row-level security binds role %s on %s, but not on %s", r.Role, strings.Join(bound, ", "), strings.Join(unbound, ", "))
	}
	if !r.Bound {
		b.WriteString("; on its connections only the tenancy handles' own predicates keep tenants apart")
	}
	return b.String()
}

// checkRowLevelSecuritySQL reads, for the current role, its attributes and,
// for each table named in $1 and found through the search_path, whether
// row security is enabled and forced and whether the role owns it. The
// ownership test is Postgres's own: holding the privileges of the owning
// role, by membership with INHERIT, counts as owning.
const checkRowLevelSecuritySQL = `
SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, t.name, c.oid IS NOT NULL,
       coalesce(c.oid::regclass::text, ''), coalesce(c.relrowsecurity, false), coalesce(c.relforcerowsecurity, false),
       coalesce(pg_has_role(r.oid, c.relowner, 'USAGE'), false)
  FROM pg_roles r
 CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS t(name, n)
  LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(t.name))
 WHERE r.rolname = current_user
 ORDER BY t.n`

// CheckRowLevelSecurity tells whether row-level security binds the role
// that db's statements run as, on each table under meterbase's policies
// (users, workspaces, memberships, found through db's search_path as the
// library finds them). Postgres exempts superusers and BYPASSRLS roles
// from every policy, and a table's owner from its policies unless the table
// is FORCEd (migration 5 forces them); every other role is bound where row
// security is enabled.
//
// Call it at startup with the pool the service will use, and log the
// report: a host connecting as a role that is not bound (Bound false) has
// only the tenancy handles' predicates between tenants, and its raw SQL
// reads every tenant's rows; a host whose role is bound must not make
// handles WithoutRowLevelSecurity, whose statements would fail with
// ErrNoTenantContext. It reports on meterbase's own tables only: a host's
// tenant tables (DefineTable) are guarded by whatever policies the host
// gave them. It changes nothing, and reads only the catalogs.
func CheckRowLevelSecurity(ctx context.Context, db DBTX) (RowLevelSecurityReport, error) {
	if pg.IsNil(db) {
		return RowLevelSecurityReport{}, &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	rows, err := db.Query(ctx, checkRowLevelSecuritySQL, securedTables)
	if err != nil {
		return RowLevelSecurityReport{}, fmt.Errorf("tenancy: check row-level security: %w", mapError(err))
	}
	var report RowLevelSecurityReport
	var missing []string
	var t TableSecurity
	var name string
	var found bool
	_, err = pgx.ForEachRow(rows, []any{&report.Role, &report.Superuser, &report.BypassRLS, &name, &found, &t.Table, &t.Enabled, &t.Forced, &t.Owner}, func() error {
		if !found {
			missing = append(missing, name)
			return nil
		}
		report.Tables = append(report.Tables, t)
		return nil
	})
	if err != nil {
		return RowLevelSecurityReport{}, fmt.Errorf("tenancy: check row-level security: %w", mapError(err))
	}
	if len(missing) > 0 {
		return RowLevelSecurityReport{}, fmt.Errorf("tenancy: check row-level security: no table %s on the connection's search_path; run meterbase's migrations first",
			strings.Join(missing, ", "))
	}
	if report.Role == "" {
		// No row at all: current_user is not in pg_roles, which only a
		// role dropped under a live session could cause.
		return RowLevelSecurityReport{}, fmt.Errorf("tenancy: check row-level security: the current role was not found")
	}
	report.Bound = true
	for i := range report.Tables {
		t := &report.Tables[i]
		t.Bound = !report.Superuser && !report.BypassRLS && t.Enabled && (!t.Owner || t.Forced)
		report.Bound = report.Bound && t.Bound
	}
	return report, nil
}
