// Package tenancy is meterbase's tenant boundary: typed workspace and user
// ids, the Tenant handle through which every tenant row is reached, the
// repositories of workspaces, users and memberships, and the Operator
// handle for the few cross-tenant reads an admin interface needs.
//
// A Tenant builds its statements itself, with squirrel's Sqlizers for the
// caller's predicates, and writes the tenant's predicate (workspace_id = $n,
// and user_id = $n on user-scoped tables) first; every caller predicate is
// checked and wrapped in parentheses, so that no OR can escape the tenant.
// Row-level security policies, keyed on transaction-local settings that the
// handle sets with every statement, stand behind it for raw SQL and
// mistakes.
package tenancy

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pg"
)

// DBTX is the connection the host lends meterbase: *pgxpool.Pool, *pgx.Conn
// or pgx.Tx. With a pgx.Tx, every call joins the host's transaction.
type DBTX = pg.DBTX

// Settings that row-level security policies read. They are always set
// transaction-locally, so they never outlive the statement's transaction
// and never leak to the next user of a pooled connection.
const (
	settingWorkspace = "meterbase.workspace_id"
	settingUser      = "meterbase.user_id"
	settingOperator  = "meterbase.operator"
)

// setContextSQL sets the tenant for row-level security until the end of the
// current transaction (the implicit one of a batch, or an explicit one).
const setContextSQL = `SELECT set_config('` + settingWorkspace + `', $1, true), set_config('` + settingUser + `', $2, true), set_config('` + settingOperator + `', '', true)`

// Inside a transaction of the host's, a transaction-local setting would
// outlive the handle's call and carry the tenant (or the operator's reach)
// on to the host's later statements, or switch off another handle's. So
// there the handle puts back what was set before: a batch copies the
// settings aside and back around its statement (batches never interleave
// on a connection, so one set of slots serves), and InTx and the Operator
// read them first and restore them at the end, which nests.
const (
	saveContextSQL = `SELECT ` +
		`set_config('meterbase.saved_workspace_id', coalesce(current_setting('` + settingWorkspace + `', true), ''), true), ` +
		`set_config('meterbase.saved_user_id', coalesce(current_setting('` + settingUser + `', true), ''), true), ` +
		`set_config('meterbase.saved_operator', coalesce(current_setting('` + settingOperator + `', true), ''), true)`
	restoreSavedContextSQL = `SELECT ` +
		`set_config('` + settingWorkspace + `', current_setting('meterbase.saved_workspace_id'), true), ` +
		`set_config('` + settingUser + `', current_setting('meterbase.saved_user_id'), true), ` +
		`set_config('` + settingOperator + `', current_setting('meterbase.saved_operator'), true)`
	readContextSQL = `SELECT coalesce(current_setting('` + settingWorkspace + `', true), ''), ` +
		`coalesce(current_setting('` + settingUser + `', true), ''), coalesce(current_setting('` + settingOperator + `', true), '')`
	restoreContextSQL = `SELECT set_config('` + settingWorkspace + `', $1, true), set_config('` + settingUser + `', $2, true), set_config('` + settingOperator + `', $3, true)`
)

// savedContext is the row-level security context found in a host's
// transaction, to put back once the handle's work there is done.
type savedContext [3]string

// readContext reads the context; prefix opens the statement (the
// operator's marker, or nothing).
func readContext(ctx context.Context, tx pgx.Tx, prefix string) (savedContext, error) {
	var c savedContext
	err := tx.QueryRow(ctx, prefix+readContextSQL).Scan(&c[0], &c[1], &c[2])
	return c, err
}

func (c savedContext) restore(ctx context.Context, tx pgx.Tx, prefix string) error {
	_, err := tx.Exec(ctx, prefix+restoreContextSQL, c[0], c[1], c[2])
	return err
}

// inHostTx reports whether db may be a transaction that outlives a call:
// anything but a pool, whose every statement or batch is a transaction of
// its own.
func inHostTx(db DBTX) bool {
	_, pooled := db.(*pgxpool.Pool)
	return !pooled
}

// Tenant is the handle through which meterbase reaches a tenant's rows.
// It is cheap to make, safe for concurrent use, and holds no connection.
type Tenant struct {
	db    DBTX
	scope Scope
	// contextSet is true inside InTx, where the row-level security
	// settings were set once for the whole transaction.
	contextSet bool
	// rls is false when the host chose WithoutRowLevelSecurity.
	rls bool
	// omitPredicate is a test hook: it drops the handle's own tenant
	// predicate so that tests can prove row-level security alone holds.
	omitPredicate bool
}

// Option changes a Tenant.
type Option func(*Tenant)

// WithoutRowLevelSecurity stops the handle from setting the row-level
// security context with each statement. Use it only when the connection's
// role bypasses row-level security (it owns the tables, without FORCE ROW
// LEVEL SECURITY, or has BYPASSRLS): the handle's predicates still apply,
// and each statement saves a set_config call in its round trip.
func WithoutRowLevelSecurity() Option { return func(t *Tenant) { t.rls = false } }

// NewTenant returns the handle of scope over db.
func NewTenant(db DBTX, scope Scope, opts ...Option) (*Tenant, error) {
	if db == nil {
		return nil, &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	if err := scope.workspace.valid(); err != nil {
		return nil, err
	}
	t := &Tenant{db: db, scope: scope, rls: true}
	for _, opt := range opts {
		opt(t)
	}
	return t, nil
}

// Scope returns the tenant the handle acts for.
func (t *Tenant) Scope() Scope { return t.scope }

// InTx runs fn in a transaction (a savepoint when the handle already runs in
// one) whose row-level security context is this tenant's. The Tenant given
// to fn is bound to that transaction and must not be used after fn returns;
// rows fn opened must be closed before it returns, or the transaction
// cannot be finished (nor, inside the host's, its context put back): InTx
// then fails, and the host must roll its transaction back.
func (t *Tenant) InTx(ctx context.Context, fn func(tx *Tenant) error) error {
	var fnErr error
	err := pg.InTx(ctx, t.db, func(tx pgx.Tx) error {
		inner := *t
		inner.db = tx
		setHere := t.rls && !t.contextSet
		restore := setHere && inHostTx(t.db)
		var before savedContext
		if restore {
			var err error
			if before, err = readContext(ctx, tx, ""); err != nil {
				return fmt.Errorf("tenancy: read row-level security context: %w", err)
			}
		}
		if setHere {
			if _, err := tx.Exec(ctx, setContextSQL, t.contextArgs()...); err != nil {
				return fmt.Errorf("tenancy: set row-level security context: %w", err)
			}
			inner.contextSet = true
		}
		if fnErr = fn(&inner); fnErr != nil {
			return fnErr
		}
		// A savepoint's settings survive its release into the host's
		// transaction; a failed one is rolled back with them.
		if restore {
			if err := before.restore(ctx, tx, ""); err != nil {
				return fmt.Errorf("tenancy: restore row-level security context: %w", err)
			}
		}
		return nil
	})
	if err != nil && err == fnErr {
		return err // the caller's own, as it made it
	}
	return mapError(err)
}

func (t *Tenant) contextArgs() []any {
	user := ""
	if !t.scope.user.IsZero() {
		user = t.scope.user.String()
	}
	return []any{t.scope.workspace.String(), user}
}

// withContext reports whether a statement must carry the context with it.
func (t *Tenant) withContext() bool { return t.rls && !t.contextSet }

func (t *Tenant) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !t.withContext() {
		tag, err := t.db.Exec(ctx, sql, args...)
		return tag, mapError(err)
	}
	br, err := t.sendWithContext(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, mapError(err)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, mapError(err)
}

func (t *Tenant) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if !t.withContext() {
		rows, err := t.db.Query(ctx, sql, args...)
		if err != nil {
			return nil, mapError(err)
		}
		return mappedRows{rows}, nil
	}
	br, err := t.sendWithContext(ctx, sql, args)
	if err != nil {
		return nil, mapError(err)
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, mapError(err)
	}
	return mappedRows{&batchRows{Rows: rows, br: br}}, nil
}

func (t *Tenant) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if !t.withContext() {
		return mappedRow{t.db.QueryRow(ctx, sql, args...)}
	}
	br, err := t.sendWithContext(ctx, sql, args)
	if err != nil {
		return errRow{mapError(err)}
	}
	return mappedRow{&batchRow{br: br}}
}

// sendWithContext sends the context and the statement in one round trip.
// A batch runs as one implicit transaction, which is what bounds the
// transaction-local settings to this statement; inside a host's
// transaction the batch also puts the settings it found back after the
// statement. The results it returns start with the statement's: the
// context's own are read off first.
func (t *Tenant) sendWithContext(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	lead := 1 // the context's results before the statement's
	hostTx := inHostTx(t.db)
	if hostTx {
		b.Queue(saveContextSQL)
		lead++
	}
	b.Queue(setContextSQL, t.contextArgs()...)
	b.Queue(sql, args...)
	if hostTx {
		b.Queue(restoreSavedContextSQL)
	}
	br := t.db.SendBatch(ctx, b)
	for range lead {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// mappedRows and mappedRow translate the errors of rows they wrap.
type mappedRows struct{ pgx.Rows }

func (r mappedRows) Err() error { return mapError(r.Rows.Err()) }

// Conn returns nil: the handle lends no connection, not even through its
// rows (inside InTx, that would be the transaction's).
func (r mappedRows) Conn() *pgx.Conn { return nil }

type mappedRow struct{ pgx.Row }

func (r mappedRow) Scan(dest ...any) error { return mapError(r.Row.Scan(dest...)) }

// batchRows closes the batch with the rows, releasing its connection.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	closed bool
	err    error
}

func (r *batchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.br.Close()
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

type batchRow struct{ br pgx.BatchResults }

func (r *batchRow) Scan(dest ...any) error {
	err := r.br.QueryRow().Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// Named SQL, for statements the builders cannot express (CTEs, say). The
// SQL names the tenant as @workspace_id (and @user_id), and the handle
// supplies those arguments; the caller may not. checkNamedSQL catches a
// forgotten tenant filter, but it is no parser: on a connection that
// bypasses row-level security, hand-written SQL is as safe as its review.
// Prefer the builders.

// ExecNamed runs a hand-written statement with named arguments.
func (t *Tenant) ExecNamed(ctx context.Context, sql string, args pgx.NamedArgs) (pgconn.CommandTag, error) {
	named, err := t.namedArgs(sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.exec(ctx, sql, named)
}

// QueryNamed runs a hand-written query with named arguments.
func (t *Tenant) QueryNamed(ctx context.Context, sql string, args pgx.NamedArgs) (pgx.Rows, error) {
	named, err := t.namedArgs(sql, args)
	if err != nil {
		return nil, err
	}
	return t.query(ctx, sql, named)
}

// QueryRowNamed runs a hand-written single-row query with named arguments.
func (t *Tenant) QueryRowNamed(ctx context.Context, sql string, args pgx.NamedArgs) pgx.Row {
	named, err := t.namedArgs(sql, args)
	if err != nil {
		return errRow{err}
	}
	return t.queryRow(ctx, sql, named)
}

func (t *Tenant) namedArgs(sql string, args pgx.NamedArgs) (pgx.NamedArgs, error) {
	if err := checkNamedSQL(sql); err != nil {
		return nil, err
	}
	named := make(pgx.NamedArgs, len(args)+2)
	for k, v := range args {
		if strings.EqualFold(k, workspaceColumn) || strings.EqualFold(k, userColumn) {
			return nil, fmt.Errorf("%w: @%s is supplied by the tenant handle, not the caller", ErrUnsafeSQL, k)
		}
		if err := checkArg("named argument @"+k, v); err != nil {
			return nil, err
		}
		named[k] = v
	}
	named[workspaceColumn] = t.scope.workspace
	if !t.scope.user.IsZero() {
		named[userColumn] = t.scope.user
	}
	return named, nil
}

var (
	// namedTenantEquality is the filter hand-written SQL must use. The
	// column may be qualified; the parameter's name is exact, as pgx's are.
	// A column, not the parameter itself: "@workspace_id = @workspace_id"
	// is always true and filters nothing.
	namedTenantEquality = regexp.MustCompile(`(?:^|[^@A-Za-z0-9_])(?i:workspace_id)\s*=\s*@workspace_id\b|@workspace_id\s*=\s*(?i:(?:[A-Za-z_][A-Za-z0-9_]*\.)?workspace_id\b)`)
	// namedWord finds every name in the SQL; a tenant table's name not
	// followed by a dot (a column's qualifier) is a mention of the table.
	namedWord = regexp.MustCompile(`[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*`)
	// namedTenantInsert is an INSERT into a table whose column list opens
	// with workspace_id and whose values open with @workspace_id.
	namedTenantInsert = regexp.MustCompile(`(?is)^\s*insert\s+into\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+as\s+[A-Za-z_][A-Za-z0-9_]*)?\s*\(\s*workspace_id\s*[,)].*?\b(?:values\s*\(|select\s+)\s*@workspace_id\b`)
	// namedStatements are the statements hand-written SQL may be.
	namedStatements = map[string]bool{"select": true, "with": true, "insert": true, "update": true, "delete": true}
)

// checkNamedSQL is the guard on hand-written SQL, which the handle does not
// build and cannot restructure. Read without its comments and literals, it
// must be one SELECT, WITH, INSERT, UPDATE or DELETE; it may not call what
// fragments may not (set_config, the functions that run SQL given as
// text); and it must filter with workspace_id = @workspace_id at least once
// for every mention of a tenant table (a correct join may need one more
// than it strictly would), unless it is a one-row INSERT that fills
// workspace_id from @workspace_id. It catches a forgotten filter; it does
// not prove that each filter constrains the table it is meant for (an OR,
// a filter in a subquery, RETURNING or GROUP BY can pass and filter
// nothing). Hand-written SQL is reviewed code; as the application role,
// row-level security confines it whatever it says.
func checkNamedSQL(sql string) error {
	code, err := namedCode(sql)
	if err != nil {
		return err
	}
	words := namedWord.FindAllStringIndex(code, -1)
	if len(words) == 0 || !namedStatements[strings.ToLower(code[words[0][0]:words[0][1]])] {
		return fmt.Errorf("%w: hand-written SQL must be one SELECT, WITH, INSERT, UPDATE or DELETE", ErrUnsafeSQL)
	}
	mentions := 0
	setOperation := false
	previous := ""
	for _, m := range words {
		word := strings.ToLower(code[m[0]:m[1]])
		switch {
		case runsSQL(word):
			return fmt.Errorf("%w: hand-written SQL may not call %s", ErrUnsafeSQL, word)
		case word == "into" && previous != "insert":
			// SELECT ... INTO creates a table: a temporary one named like
			// a tenant table would stand in for it on the connection.
			return fmt.Errorf("%w: hand-written SQL may not SELECT ... INTO", ErrUnsafeSQL)
		case word == "union" || word == "intersect" || word == "except":
			setOperation = true
		}
		if _, ok := tenantTables.Load(word); ok && (m[1] == len(code) || code[m[1]] != '.') {
			mentions++
		}
		previous = word
	}
	// An INSERT of one row, or of one SELECT, fills the tenant column from
	// @workspace_id rather than filtering on it. (A second row, or a UNION,
	// could name another workspace; those need the filters, and a VALUES
	// list cannot have them, so they are refused.)
	if insert := namedTenantInsert.FindStringSubmatch(code); insert != nil && !setOperation && singleRow(code[len(insert[0]):]) {
		if _, ok := tenantTables.Load(strings.ToLower(insert[1])); ok {
			mentions--
		}
		if mentions <= 0 {
			return nil
		}
	}
	equalities := len(namedTenantEquality.FindAllStringIndex(code, -1))
	if equalities == 0 || equalities < mentions {
		return fmt.Errorf("%w: hand-written SQL mentions %d tenant table(s) but filters %d time(s) on workspace_id = @workspace_id; filter every one", ErrUnsafeSQL, mentions, equalities)
	}
	return nil
}

// singleRow reports whether the rest of an INSERT, from just after its
// first value, holds no second VALUES row: the first row's parenthesis
// closes without a comma and another row after it.
func singleRow(rest string) bool {
	depth := 1 // inside the first row, or inside the SELECT list (no parenthesis to close)
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				tail := strings.TrimSpace(rest[i+1:])
				return !strings.HasPrefix(tail, ",")
			}
		}
	}
	return true // the SELECT form: no row parenthesis to close
}

// namedCode returns hand-written SQL without its comments, with its string
// literals emptied and its quoted names unquoted (or, when they are not a
// plain name, replaced by one), so that nothing in a comment, a literal or
// a name counts as code. It refuses what would
// make that reading unreliable or the statement more than one: ';', '$'
// (dollar quotes), backslashes (E'...' strings) and U& escapes.
func namedCode(sql string) (string, error) {
	fail := func(reason string) (string, error) {
		return "", fmt.Errorf("%w: hand-written SQL %s", ErrUnsafeSQL, reason)
	}
	// Anywhere, literals included: an E'...' string escapes its quotes
	// with one, and Postgres and this reading would part ways there.
	if strings.IndexByte(sql, '\\') >= 0 {
		return fail("contains a backslash; pass such text as an argument")
	}
	var b strings.Builder
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '$':
			return fail("contains '$'; name parameters @like_this")
		case c == ';':
			return fail("contains ';'")
		case (c == 'u' || c == 'U') && i+1 < len(sql) && sql[i+1] == '&':
			return fail("contains a U& escape")
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			// Postgres ends a line comment at \n or \r.
			end := strings.IndexAny(sql[i:], "\n\r")
			if end < 0 {
				end = len(sql) - i
			}
			i += end - 1
			b.WriteByte(' ')
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0
			j := i
			for ; j < len(sql); j++ {
				if strings.HasPrefix(sql[j:], "/*") {
					depth++
					j++
				} else if strings.HasPrefix(sql[j:], "*/") {
					depth--
					j++
					if depth == 0 {
						break
					}
				}
			}
			if depth != 0 {
				return fail("has an unterminated comment")
			}
			i = j
			b.WriteByte(' ')
		case c == '\'' || c == '"':
			end := strings.IndexByte(sql[i+1:], c)
			if end < 0 {
				return fail("has an unterminated quote")
			}
			if c == '"' {
				// A quoted name is one name, whatever it spells: keep it as
				// a mention of a table if it is one, and as nothing else.
				if name := strings.ToLower(sql[i+1 : i+1+end]); namedWord.FindString(name) == name {
					b.WriteString(name)
				} else {
					b.WriteString("quoted_name")
				}
			} else {
				b.WriteString("''")
			}
			i += end + 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
