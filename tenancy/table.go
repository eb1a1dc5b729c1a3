package tenancy

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
)

// TableScope says which tenant columns a table carries.
type TableScope int

const (
	// Global tables (users, the feature catalog) belong to no tenant. They
	// may only be joined to a tenant table, never queried through a Tenant.
	Global TableScope = iota + 1
	// WorkspaceScoped tables carry workspace_id; every statement the handle
	// builds on them is restricted to the scope's workspace.
	WorkspaceScoped
	// UserScoped tables carry workspace_id and user_id; statements on them
	// are restricted to the scope's workspace and user.
	UserScoped
)

const (
	workspaceColumn = "workspace_id"
	userColumn      = "user_id"
)

// Table describes a table to the tenant handle. Make one with DefineTable.
type Table struct {
	name  string
	scope TableScope
	alias string // set by As
	err   error  // a bad alias, returned by the builder that uses the table
}

var identifierPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// DefineTable describes a table for the handle's builders. Packages call it
// once, at init, with a constant name; an invalid name panics there.
func DefineTable(name string, scope TableScope) Table {
	if !identifierPattern.MatchString(name) {
		panic(fmt.Sprintf("tenancy: table name %q is not a lower-case SQL identifier", name))
	}
	if scope < Global || scope > UserScoped {
		panic(fmt.Sprintf("tenancy: table %q has no scope", name))
	}
	// One name, one scope: a table declared once as a tenant table cannot
	// be declared again as global (and so joined without its predicate).
	prev, loaded := tableScopes.LoadOrStore(name, scope)
	if loaded && prev.(TableScope) != scope {
		panic(fmt.Sprintf("tenancy: table %q is already defined with another scope", name))
	}
	if !loaded {
		tableGeneration.Add(1)
	}
	return Table{name: name, scope: scope}
}

var (
	// tableScopes holds every table defined, by name.
	tableScopes sync.Map
	// tableGeneration counts the tables defined, so that a Statement
	// prepared before one of them can look for it once.
	tableGeneration atomic.Int64
)

// definedTable returns the table defined under name.
func definedTable(name string) (Table, bool) {
	scope, ok := tableScopes.Load(name)
	if !ok {
		return Table{}, false
	}
	return Table{name: name, scope: scope.(TableScope)}, true
}

// isTenantTable reports whether name was defined as a tenant table.
func isTenantTable(name string) bool {
	t, ok := definedTable(name)
	return ok && t.scope != Global
}

// Name returns the table's name.
func (t Table) Name() string { return t.name }

// As returns the table under an alias, for a statement that names it twice
// (a self-join) or prefers a short name. The handle qualifies the tenant
// columns with the alias.
// A bad alias is an error (ErrUnsafeSQL) from the builder that uses the
// table.
func (t Table) As(alias string) Table {
	if !identifierPattern.MatchString(alias) {
		t.err = fmt.Errorf("%w: alias %q of table %s is not a lower-case SQL identifier", ErrUnsafeSQL, alias, t.name)
		return t
	}
	if strings.HasPrefix(alias, "meterbase_") {
		t.err = fmt.Errorf("%w: alias %q of table %s: names beginning meterbase_ are the library's", ErrUnsafeSQL, alias, t.name)
		return t
	}
	t.alias = alias
	return t
}

// ref is how the statement refers to the table: its alias, or its name.
func (t Table) ref() string {
	if t.alias != "" {
		return t.alias
	}
	return t.name
}

// from is how the table is introduced in FROM, JOIN, INSERT INTO, UPDATE
// and DELETE FROM.
func (t Table) from() string {
	if t.alias != "" {
		return t.name + " AS " + t.alias
	}
	return t.name
}

// Scope returns the table's scope.
func (t Table) Scope() TableScope { return t.scope }

// tenantColumns are the columns the handle fills and filters on.
func (t Table) tenantColumns() []string {
	switch t.scope {
	case WorkspaceScoped:
		return []string{workspaceColumn}
	case UserScoped:
		return []string{workspaceColumn, userColumn}
	}
	return nil
}

func (t Table) isTenantColumn(column string) bool {
	// A qualified name (table.column) is the same column.
	if i := strings.LastIndexByte(column, '.'); i >= 0 {
		column = column[i+1:]
	}
	for _, c := range t.tenantColumns() {
		if c == column {
			return true
		}
	}
	return false
}

// memberGates hold the global tables a tenant reaches only through its
// own memberships: a tenant may see the users who belong to it, never
// every user of the platform. A join of one (under any Table value of that
// name) carries the gate, and hand-written SQL must write it {users}.
var memberGates = map[string]func(ref string) string{
	// No alias inside: the subquery's own memberships is the nearest one
	// whatever the outer statement calls its tables, so no caller's alias
	// can stand in for it.
	"users": func(ref string) string {
		return ref + ".user_id IN (SELECT memberships.user_id FROM memberships WHERE memberships.workspace_id = " + workspaceParam + ")"
	},
}

// The library's own tenancy tables.
var (
	workspacesTable  = DefineTable("workspaces", WorkspaceScoped)
	membershipsTable = DefineTable("memberships", WorkspaceScoped)
	usersTable       = DefineTable("users", Global)
)
