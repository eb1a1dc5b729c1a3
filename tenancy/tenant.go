package tenancy

import (
	"context"
	"fmt"
	"strconv"
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
	// settingDirectory admits the Users repository to the users table.
	settingDirectory = "meterbase.directory"
)

// contextSettings are every setting the policies read. A handle's statement
// runs with exactly its own: the tenant's, and the operator's and the
// directory's cleared, so that neither, left on in a host's transaction,
// widens what the tenant's statement reaches.
var contextSettings = [...]string{settingWorkspace, settingUser, settingOperator, settingDirectory}

// savedContext is the row-level security context found in a host's
// transaction, to put back once the handle's work there is done.
type savedContext [len(contextSettings)]string

// The statements that set, save and restore the context. Inside a
// transaction of the host's, a transaction-local setting would outlive the
// handle's call and carry the tenant (or the operator's reach) on to the
// host's later statements, or switch off another handle's. So there the
// handle puts back what was set before: a batch copies the settings aside
// and back around its statement (batches never interleave on a connection,
// so one set of slots serves), and InTx and the Operator read them first
// and restore them at the end, which nests.
var (
	// setContextSQL sets the tenant ($1, $2) until the end of the current
	// transaction (the implicit one of a batch, or an explicit one).
	setContextSQL          = contextSQL(func(i int, name string) string { return setTo(name, []string{"$1", "$2", "''", "''"}[i]) })
	saveContextSQL         = contextSQL(func(_ int, name string) string { return setTo(savedName(name), currentValue(name)) })
	restoreSavedContextSQL = contextSQL(func(_ int, name string) string { return setTo(name, "current_setting('"+savedName(name)+"')") })
	readContextSQL         = contextSQL(func(_ int, name string) string { return currentValue(name) })
	restoreContextSQL      = contextSQL(func(i int, name string) string { return setTo(name, "$"+strconv.Itoa(i+1)) })
)

func contextSQL(item func(i int, name string) string) string {
	parts := make([]string, len(contextSettings))
	for i, name := range contextSettings {
		parts[i] = item(i, name)
	}
	return "SELECT " + strings.Join(parts, ", ")
}

func setTo(name, value string) string { return "set_config('" + name + "', " + value + ", true)" }

func currentValue(name string) string { return "coalesce(current_setting('" + name + "', true), '')" }

func savedName(name string) string { return strings.Replace(name, "meterbase.", "meterbase.saved_", 1) }

// readContext reads the context; prefix opens the statement (the
// operator's marker, or nothing).
func readContext(ctx context.Context, tx pgx.Tx, prefix string) (savedContext, error) {
	var c savedContext
	dest := make([]any, len(c))
	for i := range c {
		dest[i] = &c[i]
	}
	err := tx.QueryRow(ctx, prefix+readContextSQL).Scan(dest...)
	return c, err
}

func (c savedContext) restore(ctx context.Context, tx pgx.Tx, prefix string) error {
	args := make([]any, len(c))
	for i, v := range c {
		args[i] = v
	}
	_, err := tx.Exec(ctx, prefix+restoreContextSQL, args...)
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
// role bypasses row-level security (a superuser, a BYPASSRLS role, or the
// tables' owner after NO FORCE ROW LEVEL SECURITY; CheckRowLevelSecurity
// tells): the handle's predicates still apply, and each statement saves a
// set_config call in its round trip. On a role the wall binds, the first
// statement fails with ErrNoTenantContext rather than returning nothing.
func WithoutRowLevelSecurity() Option { return func(t *Tenant) { t.rls = false } }

// NewTenant returns the handle of scope over db.
func NewTenant(db DBTX, scope Scope, opts ...Option) (*Tenant, error) {
	if pg.IsNil(db) {
		return nil, &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	if err := scope.workspace.Valid(); err != nil {
		return nil, err
	}
	t := &Tenant{db: db, scope: scope, rls: true}
	for _, opt := range opts {
		opt(t)
	}
	return t, nil
}

// Scope returns the tenant the handle acts for.
func (t *Tenant) Scope() Scope {
	if t == nil {
		return Scope{}
	}
	return t.scope
}

// Pool returns the pool the handle sends its statements through, each as
// a transaction of its own, or nil when the handle belongs to one
// transaction or one connection (a pgx.Tx, a *pgx.Conn, the handle InTx
// gives). A repository may send the statements of several callers
// together only on a pool: a transaction's statements are its caller's.
func (t *Tenant) Pool() *pgxpool.Pool {
	if t == nil {
		return nil
	}
	p, _ := t.db.(*pgxpool.Pool)
	return p
}

// RowLevelSecurity reports whether the handle sets the row-level security
// context with its statements: false for one made WithoutRowLevelSecurity.
func (t *Tenant) RowLevelSecurity() bool { return t != nil && t.rls }

// usable refuses a nil or zero Tenant (one not made by NewTenant), which
// has no connection and no tenant to filter on.
func (t *Tenant) usable() error {
	if t == nil || t.db == nil || t.scope.workspace.IsZero() {
		return &InvalidInputError{Field: "tenant", Reason: "is nil or zero; make it with NewTenant"}
	}
	return nil
}

// InTx runs fn in a transaction (a savepoint when the handle already runs in
// one) whose row-level security context is this tenant's. The Tenant given
// to fn is bound to that transaction and must not be used after fn returns;
// rows fn opened must be closed before it returns, or the transaction
// cannot be finished (nor, inside the host's, its context put back): InTx
// then fails, and the host must roll its transaction back.
//
// However fn's work ends (an error, a panic, a context that ends mid-call),
// what it did is rolled back, and in the host's transaction the savepoint
// is rolled back with a context of its own, bounded by pg.CleanupTimeout,
// so that neither fn's writes nor this tenant's row-level security context
// outlive a failed call. If even that rollback fails, the host's
// connection is closed: its transaction cannot commit half of the work.
func (t *Tenant) InTx(ctx context.Context, fn func(tx *Tenant) error) error {
	if err := t.usable(); err != nil {
		return err
	}
	fnFailed := false
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
		if err := fn(&inner); err != nil {
			fnFailed = true
			return err
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
	// The caller's own error comes back as it made it (compared by a flag:
	// an error of an uncomparable type would panic under ==), unless the
	// rollback added to it.
	if fnFailed && !pg.RollbackFailed(err) {
		return err
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
	return batchQuery(t.sendWithContext(ctx, sql, args))
}

// batchQuery returns the rows of a batch's statement, which owns the
// batch from then on.
func batchQuery(br pgx.BatchResults, err error) (pgx.Rows, error) {
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
	return sendInContext(ctx, t.db, setContextSQL, t.contextArgs(), sql, args)
}

// sendInContext sends sql with the row-level security context that setSQL
// (with setArgs) sets, in one round trip: on a pool, the batch's implicit
// transaction bounds the settings; on anything else, the batch saves the
// settings it finds first and puts them back after the statement. The
// results it returns start with the statement's.
func sendInContext(ctx context.Context, db DBTX, setSQL string, setArgs []any, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	lead := 1 // the context's results before the statement's
	hostTx := inHostTx(db)
	if hostTx {
		b.Queue(saveContextSQL)
		lead++
	}
	b.Queue(setSQL, setArgs...)
	b.Queue(sql, args...)
	if hostTx {
		b.Queue(restoreSavedContextSQL)
	}
	br := db.SendBatch(ctx, b)
	for range lead {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// genericPlanSQL makes the statements after it in a pool's batch run with
// their generic plans (see SelectBuilder.GenericPlan), until the batch's
// implicit transaction ends; setContextGenericSQL sets the row-level
// security context as well, so that no statement is added.
var (
	genericPlanSet       = "set_config('plan_cache_mode', 'force_generic_plan', true)"
	genericPlanSQL       = "SELECT " + genericPlanSet
	setContextGenericSQL = setContextSQL + ", " + genericPlanSet
)

// queryGeneric runs sql as query does, with its generic plan when the
// handle is over a pool, in one round trip. In a transaction that outlives
// the call (the host's, or InTx's) it runs sql as query does: a setting
// made there, even put back, would stay in the transaction as the
// session's until it ends.
func (t *Tenant) queryGeneric(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if inHostTx(t.db) {
		return t.query(ctx, sql, args...)
	}
	setSQL, setArgs := genericPlanSQL, []any(nil)
	if t.withContext() {
		setSQL, setArgs = setContextGenericSQL, t.contextArgs()
	}
	return batchQuery(sendInContext(ctx, t.db, setSQL, setArgs, sql, args))
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

// rowOf reads the first row of rows, as pgx's QueryRow does.
type rowOf struct{ rows pgx.Rows }

func (r rowOf) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return ErrNotFound
	}
	if err := r.rows.Scan(dest...); err != nil {
		return mapError(err)
	}
	r.rows.Close()
	return r.rows.Err()
}

func (r *batchRow) Scan(dest ...any) error {
	err := r.br.QueryRow().Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
