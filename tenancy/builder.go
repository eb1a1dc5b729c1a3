package tenancy

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The builders are values, like squirrel's: every method returns a changed
// copy, and the first error a method meets is kept and returned when the
// statement runs, before any SQL reaches the server.
//
// Caller predicates and SET expressions are squirrel Sqlizers (sq.Eq, sq.Or,
// sq.Expr...) or strings with ? placeholders; squirrel renders them. The
// statement around them is assembled here rather than with squirrel's
// StatementBuilder: that one takes about 20µs and 84 allocations to render a page
// query (BenchmarkRender), a sixth of a point read on loopback; owning the
// assembly
// keeps the tenant predicate's place in it plain to see and numbers every
// fragment's placeholders against its own arguments (see fragment.go).

// predicate renders a caller's WHERE argument: a string with ? placeholders
// and args, a squirrel Sqlizer, or a map[string]any (as sq.Eq). It is
// checked, so that once parenthesised it can narrow the tenant's rows but
// never widen them. ok is false for an empty condition.
func predicate(pred any, args []any) (f fragment, ok bool, err error) {
	var s sq.Sqlizer
	switch p := pred.(type) {
	case string:
		s = sq.Expr(p, args...)
	case map[string]any:
		s = sq.Eq(p)
	case sq.Sqlizer:
		if len(args) > 0 {
			return fragment{}, false, fmt.Errorf("%w: arguments given with a %T predicate", ErrUnsafeSQL, pred)
		}
		s = p
	default:
		return fragment{}, false, fmt.Errorf("%w: unsupported predicate type %T", ErrUnsafeSQL, pred)
	}
	sql, sqlArgs, err := s.ToSql()
	if err != nil {
		return fragment{}, false, fmt.Errorf("%w: %v", ErrUnsafeSQL, err)
	}
	// An empty map or conjunction (squirrel renders "(1=1)"), however
	// nested, narrows nothing, and is no Where: an Update or Delete still
	// needs All().
	if alwaysTrue(sql) {
		return fragment{}, false, nil
	}
	f, err = newFragment("predicate", sql, sqlArgs)
	return f, err == nil, err
}

// alwaysTrue reports whether a rendered predicate is nothing but squirrel's
// empty conditions, (1=1), joined by AND or OR in any nesting.
func alwaysTrue(sql string) bool {
	if !strings.Contains(sql, "1=1") {
		return strings.TrimSpace(sql) == ""
	}
	flat := strings.NewReplacer("(", " ", ")", " ").Replace(sql)
	atoms := strings.Fields(strings.NewReplacer(" AND ", " | ", " OR ", " | ").Replace(" " + flat + " "))
	for _, a := range atoms {
		if a != "1=1" && a != "|" {
			return false
		}
	}
	return true
}

// where writes the tenant predicate on table, then each caller predicate
// as one parenthesised group ANDed after it.
func (w *statementWriter) where(t *Tenant, table Table, preds []fragment) {
	w.write(" WHERE ")
	if t.omitPredicate {
		// Keeps the tenant's parameters in use, as Postgres requires.
		w.write(workspaceParam, "::uuid IS NOT NULL")
		if table.scope == UserScoped {
			w.write(" AND ", userParam, "::uuid IS NOT NULL")
		}
	} else {
		w.write(table.ref(), ".", workspaceColumn, " = ", workspaceParam)
		if table.scope == UserScoped {
			w.write(" AND ", table.ref(), ".", userColumn, " = ", userParam)
		}
	}
	for _, p := range preds {
		w.write(" AND (")
		w.fragment(p)
		w.write(")")
	}
}

func (w *statementWriter) returning(columns []string) {
	if len(columns) > 0 {
		w.write(" RETURNING ")
		w.list(columns)
	}
}

// checkTable refuses a table the tenant cannot query.
func (t *Tenant) checkTable(table Table) error {
	if err := t.usable(); err != nil {
		return err
	}
	switch {
	case table.err != nil:
		return table.err
	case table.name == "":
		return fmt.Errorf("%w: the zero Table; make tables with DefineTable", ErrUnsafeSQL)
	case table.scope == Global:
		return fmt.Errorf("%w: %s is a global table; it may only be joined", ErrUnsafeSQL, table.name)
	case table.scope == UserScoped && t.scope.user.IsZero():
		return &InvalidInputError{Field: "scope", Reason: fmt.Sprintf("table %s is user-scoped; make the Tenant with NewUserScope", table.name)}
	}
	return nil
}

func checkIdentifiers(what string, names []string) error {
	for _, n := range names {
		if !identifierPattern.MatchString(n) {
			return fmt.Errorf("%w: %s %q is not a plain column name", ErrUnsafeSQL, what, n)
		}
	}
	return nil
}

func checkFragments(what string, parts []string) error {
	for _, p := range parts {
		if err := checkFragment(what, p); err != nil {
			return err
		}
	}
	return nil
}

// appended returns s with more added, never sharing s's backing array, so
// that two builders derived from one never write into each other.
func appended[T any](s []T, more ...T) []T {
	return append(s[:len(s):len(s)], more...)
}

// firstErr keeps the first error a builder meets.
func firstErr(current, next error) error {
	if current != nil {
		return current
	}
	return next
}

// SelectBuilder builds a SELECT on a tenant table.
type SelectBuilder struct {
	t         *Tenant
	table     Table
	columns   []string
	joins     []join
	wheres    []fragment
	groupBy   []string
	having    []fragment
	orderBy   []string
	limit     string
	offset    string
	forUpdate bool
	generic   bool
	err       error
}

// Select starts a SELECT of columns (expressions are allowed) from table,
// restricted to the tenant.
func (t *Tenant) Select(table Table, columns ...string) SelectBuilder {
	s := SelectBuilder{t: t, table: table, columns: columns}
	s.err = firstErr(t.checkTable(table), checkFragments("column", columns))
	if len(columns) == 0 {
		s.err = firstErr(s.err, &InvalidInputError{Field: "select", Reason: "names no column"})
	}
	return s
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (s SelectBuilder) Where(pred any, args ...any) SelectBuilder {
	f, ok, err := predicate(pred, args)
	s.err = firstErr(s.err, err)
	if ok {
		s.wheres = appended(s.wheres, f)
	}
	return s
}

// Join adds an inner join. A tenant table is joined on workspace_id (and
// its user_id to the scope's user, if user-scoped) as well as on, so the
// join cannot reach another tenant's rows; a global table on on alone.
func (s SelectBuilder) Join(table Table, on string, args ...any) SelectBuilder {
	return s.join("JOIN", table, on, args)
}

// LeftJoin adds a left join, scoped as Join is.
func (s SelectBuilder) LeftJoin(table Table, on string, args ...any) SelectBuilder {
	return s.join("LEFT JOIN", table, on, args)
}

func (s SelectBuilder) join(kind string, table Table, on string, args []any) SelectBuilder {
	cond, err := newFragment("join condition", on, args)
	s.err = firstErr(s.err, err)
	if table.scope != Global || table.name == "" || table.err != nil {
		s.err = firstErr(s.err, s.t.checkTable(table))
	}
	s.joins = appended(s.joins, join{kind: kind, table: table, on: cond})
	return s
}

// join is one JOIN clause of a SelectBuilder.
type join struct {
	kind  string // "JOIN" or "LEFT JOIN"
	table Table
	on    fragment
}

func (w *statementWriter) join(t *Tenant, base Table, j join) {
	w.write(" ", j.kind, " ", j.table.from(), " ON ")
	if gate, ok := memberGates[j.table.name]; ok && !t.omitPredicate {
		w.write(gate(j.table.ref()), " AND ")
	}
	if j.table.scope != Global && !t.omitPredicate {
		w.write(j.table.ref(), ".", workspaceColumn, " = ", base.ref(), ".", workspaceColumn, " AND ")
		if j.table.scope == UserScoped {
			w.write(j.table.ref(), ".", userColumn, " = ", userParam, " AND ")
		}
	}
	w.write("(")
	w.fragment(j.on)
	w.write(")")
}

// OrderBy adds ORDER BY expressions.
func (s SelectBuilder) OrderBy(exprs ...string) SelectBuilder {
	s.err = firstErr(s.err, checkFragments("order by", exprs))
	s.orderBy = appended(s.orderBy, exprs...)
	return s
}

// GroupBy adds GROUP BY expressions.
func (s SelectBuilder) GroupBy(exprs ...string) SelectBuilder {
	s.err = firstErr(s.err, checkFragments("group by", exprs))
	s.groupBy = appended(s.groupBy, exprs...)
	return s
}

// Having adds a condition on groups, ANDed with every other one. (The
// tenant's predicate is in WHERE, so groups only ever hold its rows.)
func (s SelectBuilder) Having(pred any, args ...any) SelectBuilder {
	f, ok, err := predicate(pred, args)
	s.err = firstErr(s.err, err)
	if ok {
		s.having = appended(s.having, f)
	}
	return s
}

// Limit sets LIMIT.
func (s SelectBuilder) Limit(n uint64) SelectBuilder {
	s.limit = strconv.FormatUint(n, 10)
	return s
}

// Offset sets OFFSET.
func (s SelectBuilder) Offset(n uint64) SelectBuilder {
	s.offset = strconv.FormatUint(n, 10)
	return s
}

// ForUpdate locks the selected rows until the transaction ends.
func (s SelectBuilder) ForUpdate() SelectBuilder { s.forUpdate = true; return s }

// GenericPlan runs the statement, on a pool, with Postgres's generic plan
// for it (plan_cache_mode = force_generic_plan, set in the same round trip
// for the batch's implicit transaction only): a connection plans it once,
// instead of planning it anew for every call's arguments. In a
// transaction (the host's, or InTx's) the statement is planned as
// Postgres chooses, as any other: a setting changed there would show in
// the transaction as the session's until it ends, even once put back. Planning a
// statement on a table that row-level security binds costs about 0.1 ms,
// as much as running a page read, and Postgres goes on doing it for
// statements whose generic plan it estimates dearer than the custom ones.
//
// Use it only for a statement whose one plan is right for every argument:
// one that an index serves entirely, equalities and ranges in its columns
// and rows in its order, so that an ordered scan of it reads only the rows
// returned, whatever the arguments. A plan that depends on which values
// are frequent (a workspace's size, say) needs custom plans.
func (s SelectBuilder) GenericPlan() SelectBuilder { s.generic = true; return s }

func (s SelectBuilder) toSQL() (string, []any, error) {
	if s.err != nil {
		return "", nil, s.err
	}
	withUser := s.table.scope == UserScoped
	for _, j := range s.joins {
		withUser = withUser || j.table.scope == UserScoped
	}
	var w statementWriter
	w.begin(s.t, withUser)
	w.write("SELECT ")
	w.list(s.columns)
	w.write(" FROM ", s.table.from())
	for _, j := range s.joins {
		w.join(s.t, s.table, j)
	}
	w.where(s.t, s.table, s.wheres)
	if len(s.groupBy) > 0 {
		w.write(" GROUP BY ")
		w.list(s.groupBy)
	}
	for i, h := range s.having {
		if i == 0 {
			w.write(" HAVING (")
		} else {
			w.write(" AND (")
		}
		w.fragment(h)
		w.write(")")
	}
	if len(s.orderBy) > 0 {
		w.write(" ORDER BY ")
		w.list(s.orderBy)
	}
	if s.limit != "" {
		w.write(" LIMIT ", s.limit)
	}
	if s.offset != "" {
		w.write(" OFFSET ", s.offset)
	}
	if s.forUpdate {
		// Only the base table's rows: a left join's nullable side cannot
		// be locked, and the caller asked for the rows it selects from.
		w.write(" FOR UPDATE OF ", s.table.ref())
	}
	return w.finish()
}

// Query runs the statement.
func (s SelectBuilder) Query(ctx context.Context) (pgx.Rows, error) {
	if s.generic {
		return runGenericQuery(ctx, s.t, s)
	}
	return runQuery(ctx, s.t, s)
}

// QueryRow runs the statement for one row.
func (s SelectBuilder) QueryRow(ctx context.Context) pgx.Row {
	if s.generic {
		rows, err := runGenericQuery(ctx, s.t, s)
		if err != nil {
			return errRow{err}
		}
		return rowOf{rows}
	}
	return runQueryRow(ctx, s.t, s)
}

// InsertBuilder builds an INSERT into a tenant table; the handle fills the
// tenant columns.
type InsertBuilder struct {
	t         *Tenant
	table     Table
	columns   []string
	rows      [][]fragment
	conflict  string
	returning []string
	err       error
}

// Insert starts an INSERT into table.
func (t *Tenant) Insert(table Table) InsertBuilder {
	return InsertBuilder{t: t, table: table, err: t.checkTable(table)}
}

// Columns names the columns Values fills. Tenant columns are refused: the
// handle fills them.
func (b InsertBuilder) Columns(columns ...string) InsertBuilder {
	b.err = firstErr(b.err, checkIdentifiers("column", columns))
	for _, c := range columns {
		if b.table.isTenantColumn(c) {
			b.err = firstErr(b.err, fmt.Errorf("%w: %s is filled by the tenant handle", ErrUnsafeSQL, c))
		}
	}
	b.columns = appended(b.columns, columns...)
	return b
}

// Values adds a row, one value per column. A value may be an sq.Sqlizer
// (sq.Expr("now()")), written as checked SQL.
func (b InsertBuilder) Values(values ...any) InsertBuilder {
	row := make([]fragment, len(values))
	for i, v := range values {
		f, err := valueFragment("insert value", v)
		b.err = firstErr(b.err, err)
		row[i] = f
	}
	b.rows = appended(b.rows, row)
	return b
}

// SetMap sets columns and a single row from a map.
func (b InsertBuilder) SetMap(m map[string]any) InsertBuilder {
	cols := sortedKeys(m)
	vals := make([]any, len(cols))
	for i, c := range cols {
		vals[i] = m[c]
	}
	return b.Columns(cols...).Values(vals...)
}

// OnConflictDoNothing skips rows that conflict on the tenant columns plus
// columns; with no columns, rows that conflict on any unique key.
func (b InsertBuilder) OnConflictDoNothing(columns ...string) InsertBuilder {
	if len(columns) == 0 {
		b.conflict = " ON CONFLICT DO NOTHING"
		return b
	}
	b.conflict = b.conflictTarget(columns) + " DO NOTHING"
	return b
}

// OnConflictDoUpdate updates conflicting rows (on the tenant columns plus
// columns) from EXCLUDED for each of update.
func (b InsertBuilder) OnConflictDoUpdate(columns []string, update ...string) InsertBuilder {
	b.err = firstErr(b.err, checkIdentifiers("update column", update))
	sets := make([]string, len(update))
	for i, c := range update {
		if b.table.isTenantColumn(c) {
			b.err = firstErr(b.err, fmt.Errorf("%w: %s cannot be updated", ErrUnsafeSQL, c))
		}
		sets[i] = c + " = EXCLUDED." + c
	}
	if len(sets) == 0 {
		b.err = firstErr(b.err, &InvalidInputError{Field: "update", Reason: "names no column"})
	}
	b.conflict = b.conflictTarget(columns) + " DO UPDATE SET " + strings.Join(sets, ", ")
	return b
}

// conflictTarget always leads with the tenant columns: a unique key of a
// tenant table includes them, and so must the arbiter of an upsert.
func (b *InsertBuilder) conflictTarget(columns []string) string {
	b.err = firstErr(b.err, checkIdentifiers("conflict column", columns))
	target := b.table.tenantColumns()
	for _, c := range columns {
		if !b.table.isTenantColumn(c) {
			target = append(target, c)
		}
	}
	return " ON CONFLICT (" + strings.Join(target, ", ") + ")"
}

// Returning adds a RETURNING clause.
func (b InsertBuilder) Returning(columns ...string) InsertBuilder {
	b.err = firstErr(b.err, checkFragments("returning", columns))
	b.returning = appended(b.returning, columns...)
	return b
}

func (b InsertBuilder) toSQL() (string, []any, error) {
	if b.err != nil {
		return "", nil, b.err
	}
	if len(b.rows) == 0 {
		return "", nil, &InvalidInputError{Field: "insert", Reason: "has no rows"}
	}
	var w statementWriter
	w.begin(b.t, b.table.scope == UserScoped)
	w.write("INSERT INTO ", b.table.from(), " (")
	w.list(appended(b.table.tenantColumns(), b.columns...))
	w.write(") VALUES ")
	for i, row := range b.rows {
		if len(row) != len(b.columns) {
			return "", nil, &InvalidInputError{Field: "insert", Reason: fmt.Sprintf("a row has %d values for %d columns", len(row), len(b.columns))}
		}
		if i > 0 {
			w.write(", ")
		}
		w.write("(", workspaceParam)
		if b.table.scope == UserScoped {
			w.write(", ", userParam)
		}
		for _, v := range row {
			w.write(", ")
			w.fragment(v)
		}
		w.write(")")
	}
	w.write(b.conflict)
	w.returning(b.returning)
	return w.finish()
}

// Exec runs the statement.
func (b InsertBuilder) Exec(ctx context.Context) (pgconn.CommandTag, error) {
	return runExec(ctx, b.t, b)
}

// Query runs the statement, for RETURNING rows.
func (b InsertBuilder) Query(ctx context.Context) (pgx.Rows, error) { return runQuery(ctx, b.t, b) }

// QueryRow runs the statement, for one RETURNING row.
func (b InsertBuilder) QueryRow(ctx context.Context) pgx.Row { return runQueryRow(ctx, b.t, b) }

// UpdateBuilder builds an UPDATE of a tenant table's rows.
type UpdateBuilder struct {
	t     *Tenant
	table Table
	sets  []fragment // "column = ?" or "column = <expression>"
	writeFilter
}

// writeFilter is what an UPDATE and a DELETE share: their conditions, the
// All() that stands in for having none, RETURNING, and the first error met.
type writeFilter struct {
	wheres    []fragment
	all       bool
	returning []string
	err       error
}

func (f writeFilter) addWhere(pred any, args []any) writeFilter {
	p, ok, err := predicate(pred, args)
	f.err = firstErr(f.err, err)
	if ok {
		f.wheres = appended(f.wheres, p)
	}
	return f
}

func (f writeFilter) addReturning(columns []string) writeFilter {
	f.err = firstErr(f.err, checkFragments("returning", columns))
	f.returning = appended(f.returning, columns...)
	return f
}

// check returns the first error met, or refuses a write with no condition
// that did not say All().
func (f writeFilter) check(verb string) error {
	if f.err != nil {
		return f.err
	}
	if len(f.wheres) == 0 && !f.all {
		return &InvalidInputError{Field: verb, Reason: "has no Where; call All() to " + verb + " every row of the tenant's table"}
	}
	return nil
}

// finish writes the tenant's predicate and the conditions, then RETURNING.
func (f writeFilter) finish(w *statementWriter, t *Tenant, table Table) (string, []any, error) {
	w.where(t, table, f.wheres)
	w.returning(f.returning)
	return w.finish()
}

// Update starts an UPDATE of table, restricted to the tenant.
func (t *Tenant) Update(table Table) UpdateBuilder {
	return UpdateBuilder{t: t, table: table, writeFilter: writeFilter{err: t.checkTable(table)}}
}

// Set assigns value (which may be an sq.Expr) to column. Tenant columns are
// refused: a row never moves to another tenant.
func (u UpdateBuilder) Set(column string, value any) UpdateBuilder {
	switch {
	case !identifierPattern.MatchString(column):
		u.err = firstErr(u.err, fmt.Errorf("%w: column %q is not a plain column name", ErrUnsafeSQL, column))
	case u.table.isTenantColumn(column):
		u.err = firstErr(u.err, fmt.Errorf("%w: %s cannot be updated", ErrUnsafeSQL, column))
	}
	v, err := valueFragment("set expression", value)
	u.err = firstErr(u.err, err)
	u.sets = appended(u.sets, fragment{sql: column + " = " + v.sql, args: v.args})
	return u
}

// valueFragment renders a value to assign: an sq.Sqlizer (sq.Expr("now()"))
// as checked SQL in parentheses, anything else as one argument. The
// parentheses make the expression one value: a comma in it cannot start
// another assignment (of workspace_id, say), nor a FROM another table.
func valueFragment(what string, value any) (fragment, error) {
	s, ok := value.(sq.Sqlizer)
	if !ok {
		return fragment{sql: "?", args: []any{value}}, checkArg(what, value)
	}
	sql, args, err := s.ToSql()
	if err != nil {
		return fragment{}, fmt.Errorf("%w: %v", ErrUnsafeSQL, err)
	}
	f, err := newFragment(what, sql, args)
	f.sql = "(" + f.sql + ")"
	return f, err
}

// SetMap assigns every column of m.
func (u UpdateBuilder) SetMap(m map[string]any) UpdateBuilder {
	for _, c := range sortedKeys(m) {
		u = u.Set(c, m[c])
	}
	return u
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (u UpdateBuilder) Where(pred any, args ...any) UpdateBuilder {
	u.writeFilter = u.addWhere(pred, args)
	return u
}

// All states that the update is meant for every row of the tenant's table;
// without it, an update with no Where is refused.
func (u UpdateBuilder) All() UpdateBuilder { u.all = true; return u }

// Returning adds a RETURNING clause.
func (u UpdateBuilder) Returning(columns ...string) UpdateBuilder {
	u.writeFilter = u.addReturning(columns)
	return u
}

func (u UpdateBuilder) toSQL() (string, []any, error) {
	if u.err == nil && len(u.sets) == 0 {
		return "", nil, &InvalidInputError{Field: "update", Reason: "sets no column"}
	}
	if err := u.check("update"); err != nil {
		return "", nil, err
	}
	var w statementWriter
	w.begin(u.t, u.table.scope == UserScoped)
	w.write("UPDATE ", u.table.from(), " SET ")
	for i, set := range u.sets {
		if i > 0 {
			w.write(", ")
		}
		w.fragment(set)
	}
	return u.finish(&w, u.t, u.table)
}

// Exec runs the statement.
func (u UpdateBuilder) Exec(ctx context.Context) (pgconn.CommandTag, error) {
	return runExec(ctx, u.t, u)
}

// Query runs the statement, for RETURNING rows.
func (u UpdateBuilder) Query(ctx context.Context) (pgx.Rows, error) { return runQuery(ctx, u.t, u) }

// QueryRow runs the statement, for one RETURNING row.
func (u UpdateBuilder) QueryRow(ctx context.Context) pgx.Row { return runQueryRow(ctx, u.t, u) }

// DeleteBuilder builds a DELETE of a tenant table's rows.
type DeleteBuilder struct {
	t     *Tenant
	table Table
	writeFilter
}

// Delete starts a DELETE from table, restricted to the tenant.
func (t *Tenant) Delete(table Table) DeleteBuilder {
	return DeleteBuilder{t: t, table: table, writeFilter: writeFilter{err: t.checkTable(table)}}
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (d DeleteBuilder) Where(pred any, args ...any) DeleteBuilder {
	d.writeFilter = d.addWhere(pred, args)
	return d
}

// All states that the delete is meant for every row of the tenant's table;
// without it, a delete with no Where is refused.
func (d DeleteBuilder) All() DeleteBuilder { d.all = true; return d }

// Returning adds a RETURNING clause.
func (d DeleteBuilder) Returning(columns ...string) DeleteBuilder {
	d.writeFilter = d.addReturning(columns)
	return d
}

func (d DeleteBuilder) toSQL() (string, []any, error) {
	if err := d.check("delete"); err != nil {
		return "", nil, err
	}
	var w statementWriter
	w.begin(d.t, d.table.scope == UserScoped)
	w.write("DELETE FROM ", d.table.from())
	return d.finish(&w, d.t, d.table)
}

// Exec runs the statement.
func (d DeleteBuilder) Exec(ctx context.Context) (pgconn.CommandTag, error) {
	return runExec(ctx, d.t, d)
}

// Query runs the statement, for RETURNING rows.
func (d DeleteBuilder) Query(ctx context.Context) (pgx.Rows, error) { return runQuery(ctx, d.t, d) }

// QueryRow runs the statement, for one RETURNING row.
func (d DeleteBuilder) QueryRow(ctx context.Context) pgx.Row { return runQueryRow(ctx, d.t, d) }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type statement interface {
	toSQL() (string, []any, error)
}

// The run functions refuse a zero builder (or one of a nil Tenant) before
// rendering anything.

func runExec(ctx context.Context, t *Tenant, s statement) (pgconn.CommandTag, error) {
	if err := t.usable(); err != nil {
		return pgconn.CommandTag{}, err
	}
	sql, args, err := s.toSQL()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.exec(ctx, sql, args...)
}

func runQuery(ctx context.Context, t *Tenant, s statement) (pgx.Rows, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	sql, args, err := s.toSQL()
	if err != nil {
		return nil, err
	}
	return t.query(ctx, sql, args...)
}

func runGenericQuery(ctx context.Context, t *Tenant, s statement) (pgx.Rows, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	sql, args, err := s.toSQL()
	if err != nil {
		return nil, err
	}
	return t.queryGeneric(ctx, sql, args...)
}

func runQueryRow(ctx context.Context, t *Tenant, s statement) pgx.Row {
	if err := t.usable(); err != nil {
		return errRow{err}
	}
	sql, args, err := s.toSQL()
	if err != nil {
		return errRow{err}
	}
	return t.queryRow(ctx, sql, args...)
}
