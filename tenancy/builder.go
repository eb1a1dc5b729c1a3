package tenancy

import (
	"context"
	"fmt"
	"sort"
	"strings"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meterbase/meterbase/internal/pg"
)

// The builders are values, like squirrel's: every method returns a changed
// copy, and the first error a method meets is kept and returned when the
// statement runs, before any SQL reaches the server.

// predicate renders a caller's WHERE argument: a string with ? placeholders
// and args, a squirrel Sqlizer (sq.Eq, sq.Or, sq.Expr...), or a
// map[string]any (as sq.Eq). The result is checked and parenthesised, so it
// can narrow the tenant's rows but never widen them.
func predicate(pred any, args []any) (sq.Sqlizer, error) {
	var s sq.Sqlizer
	switch p := pred.(type) {
	case string:
		s = sq.Expr(p, args...)
	case map[string]any:
		s = sq.Eq(p)
	case sq.Sqlizer:
		if len(args) > 0 {
			return nil, fmt.Errorf("%w: arguments given with a %T predicate", ErrUnsafeSQL, pred)
		}
		s = p
	default:
		return nil, fmt.Errorf("%w: unsupported predicate type %T", ErrUnsafeSQL, pred)
	}
	sql, sqlArgs, err := s.ToSql()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsafeSQL, err)
	}
	if strings.TrimSpace(sql) == "" {
		return nil, nil // an empty condition narrows nothing
	}
	if err := checkFragment("predicate", sql); err != nil {
		return nil, err
	}
	return sq.Expr("("+sql+")", sqlArgs...), nil
}

// tenantPredicate restricts table (known as qualifier in the statement) to
// the scope.
func (t *Tenant) tenantPredicate(table Table, qualifier string) (sq.Sqlizer, error) {
	if table.scope == Global {
		return nil, fmt.Errorf("%w: %s is a global table; it may only be joined", ErrUnsafeSQL, table.name)
	}
	if table.scope == UserScoped && t.scope.user.IsZero() {
		return nil, &InvalidInputError{Field: "scope", Reason: fmt.Sprintf("table %s is user-scoped; make the Tenant with NewUserScope", table.name)}
	}
	if t.omitPredicate {
		return sq.Expr("true"), nil
	}
	eq := sq.Eq{qualifier + "." + workspaceColumn: t.scope.workspace}
	if table.scope == UserScoped {
		eq[qualifier+"."+userColumn] = t.scope.user
	}
	return eq, nil
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

// SelectBuilder builds a SELECT on a tenant table.
type SelectBuilder struct {
	t      *Tenant
	table  Table
	b      sq.SelectBuilder
	wheres []sq.Sqlizer
	err    error
}

// Select starts a SELECT of columns (expressions are allowed) from table,
// restricted to the tenant.
func (t *Tenant) Select(table Table, columns ...string) SelectBuilder {
	s := SelectBuilder{t: t, table: table, b: pg.SQ.Select(columns...).From(table.name)}
	s.err = checkFragments("column", columns)
	return s
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (s SelectBuilder) Where(pred any, args ...any) SelectBuilder {
	p, err := predicate(pred, args)
	if err != nil && s.err == nil {
		s.err = err
	}
	if p != nil {
		s.wheres = append(s.wheres[:len(s.wheres):len(s.wheres)], p)
	}
	return s
}

// Join adds an inner join. A tenant table is joined on workspace_id (and
// user_id if user-scoped) as well as on, so the join cannot reach another
// tenant's rows; a global table is joined on on alone.
func (s SelectBuilder) Join(table Table, on string, args ...any) SelectBuilder {
	return s.join("JOIN", table, on, args)
}

// LeftJoin adds a left join, scoped as Join is.
func (s SelectBuilder) LeftJoin(table Table, on string, args ...any) SelectBuilder {
	return s.join("LEFT JOIN", table, on, args)
}

func (s SelectBuilder) join(kind string, table Table, on string, args []any) SelectBuilder {
	if err := checkFragment("join condition", on); err != nil && s.err == nil {
		s.err = err
	}
	if table.scope == UserScoped && s.t.scope.user.IsZero() && s.err == nil {
		s.err = &InvalidInputError{Field: "scope", Reason: fmt.Sprintf("table %s is user-scoped; make the Tenant with NewUserScope", table.name)}
	}
	var conds []string
	var tenantArgs []any
	if table.scope != Global && !s.t.omitPredicate {
		conds = append(conds, fmt.Sprintf("%s.%s = %s.%s", table.name, workspaceColumn, s.table.name, workspaceColumn))
		if table.scope == UserScoped {
			conds = append(conds, table.name+"."+userColumn+" = ?")
			tenantArgs = append(tenantArgs, s.t.scope.user)
		}
	}
	conds = append(conds, "("+on+")")
	s.b = s.b.JoinClause(kind+" "+table.name+" ON "+strings.Join(conds, " AND "), append(tenantArgs, args...)...)
	return s
}

// OrderBy adds ORDER BY expressions.
func (s SelectBuilder) OrderBy(exprs ...string) SelectBuilder {
	if err := checkFragments("order by", exprs); err != nil && s.err == nil {
		s.err = err
	}
	s.b = s.b.OrderBy(exprs...)
	return s
}

// GroupBy adds GROUP BY expressions.
func (s SelectBuilder) GroupBy(exprs ...string) SelectBuilder {
	if err := checkFragments("group by", exprs); err != nil && s.err == nil {
		s.err = err
	}
	s.b = s.b.GroupBy(exprs...)
	return s
}

// Limit sets LIMIT.
func (s SelectBuilder) Limit(n uint64) SelectBuilder { s.b = s.b.Limit(n); return s }

// Offset sets OFFSET.
func (s SelectBuilder) Offset(n uint64) SelectBuilder { s.b = s.b.Offset(n); return s }

// ForUpdate locks the selected rows until the transaction ends.
func (s SelectBuilder) ForUpdate() SelectBuilder { s.b = s.b.Suffix("FOR UPDATE"); return s }

func (s SelectBuilder) toSQL() (string, []any, error) {
	if s.err != nil {
		return "", nil, s.err
	}
	tp, err := s.t.tenantPredicate(s.table, s.table.name)
	if err != nil {
		return "", nil, err
	}
	b := s.b.Where(tp)
	for _, w := range s.wheres {
		b = b.Where(w)
	}
	return b.ToSql()
}

// Query runs the statement.
func (s SelectBuilder) Query(ctx context.Context) (pgx.Rows, error) { return runQuery(ctx, s.t, s) }

// QueryRow runs the statement for one row.
func (s SelectBuilder) QueryRow(ctx context.Context) pgx.Row { return runQueryRow(ctx, s.t, s) }

// InsertBuilder builds an INSERT into a tenant table; the handle fills the
// tenant columns.
type InsertBuilder struct {
	t         *Tenant
	table     Table
	columns   []string
	rows      [][]any
	conflict  string
	returning []string
	err       error
}

// Insert starts an INSERT into table.
func (t *Tenant) Insert(table Table) InsertBuilder {
	return InsertBuilder{t: t, table: table}
}

// Columns names the columns Values fills. Tenant columns are refused: the
// handle fills them.
func (b InsertBuilder) Columns(columns ...string) InsertBuilder {
	b.setErr(checkIdentifiers("column", columns))
	for _, c := range columns {
		if b.table.isTenantColumn(c) {
			b.setErr(fmt.Errorf("%w: %s is filled by the tenant handle", ErrUnsafeSQL, c))
		}
	}
	b.columns = append(b.columns[:len(b.columns):len(b.columns)], columns...)
	return b
}

// Values adds a row, one value per column.
func (b InsertBuilder) Values(values ...any) InsertBuilder {
	b.rows = append(b.rows[:len(b.rows):len(b.rows)], values)
	return b
}

// SetMap sets columns and a single row from a map.
func (b InsertBuilder) SetMap(m map[string]any) InsertBuilder {
	cols := make([]string, 0, len(m))
	for c := range m {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	vals := make([]any, len(cols))
	for i, c := range cols {
		vals[i] = m[c]
	}
	return b.Columns(cols...).Values(vals...)
}

// OnConflictDoNothing skips rows that conflict on the tenant columns plus
// columns.
func (b InsertBuilder) OnConflictDoNothing(columns ...string) InsertBuilder {
	b.conflict = b.conflictTarget(columns) + " DO NOTHING"
	return b
}

// OnConflictDoUpdate updates conflicting rows (on the tenant columns plus
// columns) from EXCLUDED for each of update.
func (b InsertBuilder) OnConflictDoUpdate(columns []string, update ...string) InsertBuilder {
	b.setErr(checkIdentifiers("update column", update))
	sets := make([]string, len(update))
	for i, c := range update {
		if b.table.isTenantColumn(c) {
			b.setErr(fmt.Errorf("%w: %s cannot be updated", ErrUnsafeSQL, c))
		}
		sets[i] = c + " = EXCLUDED." + c
	}
	if len(sets) == 0 {
		b.setErr(&InvalidInputError{Field: "update", Reason: "names no column"})
	}
	b.conflict = b.conflictTarget(columns) + " DO UPDATE SET " + strings.Join(sets, ", ")
	return b
}

func (b *InsertBuilder) conflictTarget(columns []string) string {
	b.setErr(checkIdentifiers("conflict column", columns))
	target := b.table.tenantColumns()
	for _, c := range columns {
		if !b.table.isTenantColumn(c) {
			target = append(target, c)
		}
	}
	return "ON CONFLICT (" + strings.Join(target, ", ") + ")"
}

// Returning adds a RETURNING clause.
func (b InsertBuilder) Returning(columns ...string) InsertBuilder {
	b.setErr(checkFragments("returning", columns))
	b.returning = append(b.returning[:len(b.returning):len(b.returning)], columns...)
	return b
}

func (b *InsertBuilder) setErr(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

func (b InsertBuilder) toSQL() (string, []any, error) {
	if b.err != nil {
		return "", nil, b.err
	}
	if _, err := b.t.tenantPredicate(b.table, b.table.name); err != nil {
		return "", nil, err
	}
	if len(b.rows) == 0 {
		return "", nil, &InvalidInputError{Field: "insert", Reason: "has no rows"}
	}
	tenantCols := b.table.tenantColumns()
	tenantVals := []any{b.t.scope.workspace}
	if b.table.scope == UserScoped {
		tenantVals = append(tenantVals, b.t.scope.user)
	}
	ib := pg.SQ.Insert(b.table.name).Columns(append(tenantCols[:len(tenantCols):len(tenantCols)], b.columns...)...)
	for _, row := range b.rows {
		if len(row) != len(b.columns) {
			return "", nil, &InvalidInputError{Field: "insert", Reason: fmt.Sprintf("a row has %d values for %d columns", len(row), len(b.columns))}
		}
		ib = ib.Values(append(tenantVals[:len(tenantVals):len(tenantVals)], row...)...)
	}
	if b.conflict != "" {
		ib = ib.Suffix(b.conflict)
	}
	if len(b.returning) > 0 {
		ib = ib.Suffix("RETURNING " + strings.Join(b.returning, ", "))
	}
	return ib.ToSql()
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
	t         *Tenant
	table     Table
	b         sq.UpdateBuilder
	sets      int
	wheres    []sq.Sqlizer
	returning []string
	err       error
}

// Update starts an UPDATE of table, restricted to the tenant.
func (t *Tenant) Update(table Table) UpdateBuilder {
	return UpdateBuilder{t: t, table: table, b: pg.SQ.Update(table.name)}
}

// Set assigns value (which may be an sq.Expr) to column. Tenant columns are
// refused: a row never moves to another tenant.
func (u UpdateBuilder) Set(column string, value any) UpdateBuilder {
	switch {
	case !identifierPattern.MatchString(column):
		u.setErr(fmt.Errorf("%w: column %q is not a plain column name", ErrUnsafeSQL, column))
	case u.table.isTenantColumn(column):
		u.setErr(fmt.Errorf("%w: %s cannot be updated", ErrUnsafeSQL, column))
	}
	if s, ok := value.(sq.Sqlizer); ok {
		if sql, _, err := s.ToSql(); err != nil {
			u.setErr(err)
		} else {
			u.setErr(checkFragment("set expression", sql))
		}
	}
	u.b = u.b.Set(column, value)
	u.sets++
	return u
}

// SetMap assigns every column of m.
func (u UpdateBuilder) SetMap(m map[string]any) UpdateBuilder {
	cols := make([]string, 0, len(m))
	for c := range m {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	for _, c := range cols {
		u = u.Set(c, m[c])
	}
	return u
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (u UpdateBuilder) Where(pred any, args ...any) UpdateBuilder {
	p, err := predicate(pred, args)
	u.setErr(err)
	if p != nil {
		u.wheres = append(u.wheres[:len(u.wheres):len(u.wheres)], p)
	}
	return u
}

// Returning adds a RETURNING clause.
func (u UpdateBuilder) Returning(columns ...string) UpdateBuilder {
	u.setErr(checkFragments("returning", columns))
	u.returning = append(u.returning[:len(u.returning):len(u.returning)], columns...)
	return u
}

func (u *UpdateBuilder) setErr(err error) {
	if err != nil && u.err == nil {
		u.err = err
	}
}

func (u UpdateBuilder) toSQL() (string, []any, error) {
	if u.err != nil {
		return "", nil, u.err
	}
	if u.sets == 0 {
		return "", nil, &InvalidInputError{Field: "update", Reason: "sets no column"}
	}
	tp, err := u.t.tenantPredicate(u.table, u.table.name)
	if err != nil {
		return "", nil, err
	}
	b := u.b.Where(tp)
	for _, w := range u.wheres {
		b = b.Where(w)
	}
	if len(u.returning) > 0 {
		b = b.Suffix("RETURNING " + strings.Join(u.returning, ", "))
	}
	return b.ToSql()
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
	t         *Tenant
	table     Table
	wheres    []sq.Sqlizer
	returning []string
	err       error
}

// Delete starts a DELETE from table, restricted to the tenant.
func (t *Tenant) Delete(table Table) DeleteBuilder {
	return DeleteBuilder{t: t, table: table}
}

// Where adds a condition, ANDed with the tenant's and every other one.
func (d DeleteBuilder) Where(pred any, args ...any) DeleteBuilder {
	p, err := predicate(pred, args)
	if err != nil && d.err == nil {
		d.err = err
	}
	if p != nil {
		d.wheres = append(d.wheres[:len(d.wheres):len(d.wheres)], p)
	}
	return d
}

// Returning adds a RETURNING clause.
func (d DeleteBuilder) Returning(columns ...string) DeleteBuilder {
	if err := checkFragments("returning", columns); err != nil && d.err == nil {
		d.err = err
	}
	d.returning = append(d.returning[:len(d.returning):len(d.returning)], columns...)
	return d
}

func (d DeleteBuilder) toSQL() (string, []any, error) {
	if d.err != nil {
		return "", nil, d.err
	}
	tp, err := d.t.tenantPredicate(d.table, d.table.name)
	if err != nil {
		return "", nil, err
	}
	b := pg.SQ.Delete(d.table.name).Where(tp)
	for _, w := range d.wheres {
		b = b.Where(w)
	}
	if len(d.returning) > 0 {
		b = b.Suffix("RETURNING " + strings.Join(d.returning, ", "))
	}
	return b.ToSql()
}

// Exec runs the statement.
func (d DeleteBuilder) Exec(ctx context.Context) (pgconn.CommandTag, error) {
	return runExec(ctx, d.t, d)
}

// Query runs the statement, for RETURNING rows.
func (d DeleteBuilder) Query(ctx context.Context) (pgx.Rows, error) { return runQuery(ctx, d.t, d) }

// QueryRow runs the statement, for one RETURNING row.
func (d DeleteBuilder) QueryRow(ctx context.Context) pgx.Row { return runQueryRow(ctx, d.t, d) }

type statement interface {
	toSQL() (string, []any, error)
}

func runExec(ctx context.Context, t *Tenant, s statement) (pgconn.CommandTag, error) {
	sql, args, err := s.toSQL()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.exec(ctx, sql, args...)
}

func runQuery(ctx context.Context, t *Tenant, s statement) (pgx.Rows, error) {
	sql, args, err := s.toSQL()
	if err != nil {
		return nil, err
	}
	return t.query(ctx, sql, args...)
}

func runQueryRow(ctx context.Context, t *Tenant, s statement) pgx.Row {
	sql, args, err := s.toSQL()
	if err != nil {
		return errRow{err}
	}
	return t.queryRow(ctx, sql, args...)
}
