package pgtest

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// operatorMarker opens the statements of tenancy.Operator, the one door to
// other tenants' rows; the tracer lets them through. (Kept as a literal:
// pgtest cannot import tenancy, whose tests import pgtest.)
const operatorMarker = "/* meterbase:operator */"

var (
	// word is any name; a tenant table's name not followed by a dot (which
	// would make it a column's qualifier) is a mention of the table, in
	// whatever form: FROM ONLY t, FROM public.t, FROM a, t, "t".
	word = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
	// rowStatements are the statements that read or write rows.
	rowStatements = map[string]bool{"select": true, "with": true, "insert": true, "update": true, "delete": true, "merge": true, "table": true}
	// comment is a line or block comment (not nested), which is not code.
	comment = regexp.MustCompile(`(?s)--[^\n\r]*|/\*.*?\*/`)
	// literal is a single-quoted string, whose text mentions nothing.
	literal        = regexp.MustCompile(`'(?:[^']|'')*'`)
	tenantEquality = regexp.MustCompile(`(?i)(?:^|[^@a-z0-9_])workspace_id"?\s*=\s*(?:\$\d+|@workspace_id\b)|(?:\$\d+|@workspace_id)\s*=\s*(?:"?[a-z_][a-z0-9_]*"?\.)?"?workspace_id\b`)
	whereKeyword   = regexp.MustCompile(`(?i)\bwhere\b`)
	// intoBefore and workspaceColumnFirst find an INSERT's target whose
	// column list opens with workspace_id: INSERT INTO t (workspace_id, ...
	intoBefore           = regexp.MustCompile(`(?i)\binsert\s+into\s+"?$`)
	workspaceColumnFirst = regexp.MustCompile(`(?i)^"?(?:\s+as\s+[a-z_][a-z0-9_]*)?\s*\(\s*"?workspace_id"?\s*[,)]`)
)

// TenantTracer fails the test on any statement that touches a tenant table
// (one with a workspace_id column) without a workspace_id = $n predicate,
// or inserts into one without setting workspace_id. NewDB installs it on
// every pool, so that every package's tests check every statement the
// library sends.
type TenantTracer struct {
	tb     testing.TB
	tables map[string]bool

	mu       sync.Mutex
	disabled bool
	seen     int
}

// Disable stops the checks, for tests that remove the tenant predicate on
// purpose to prove that row-level security holds alone.
func (tr *TenantTracer) Disable() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.disabled = true
}

// Checked returns how many statements on tenant tables the tracer passed.
func (tr *TenantTracer) Checked() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.seen
}

// filtersTenant reports whether a workspace_id = $n equality stands in a
// WHERE clause (not, say, in an UPDATE's SET list).
func filtersTenant(sql string) bool {
	where := whereKeyword.FindStringIndex(sql)
	if where == nil {
		return false
	}
	for _, m := range tenantEquality.FindAllStringIndex(sql, -1) {
		if m[0] > where[0] {
			return true
		}
	}
	return false
}

// Violation returns why sql breaks the rule, or "" when it does not.
func (tr *TenantTracer) Violation(sql string) string {
	if trimmed := strings.TrimSpace(sql); strings.HasPrefix(trimmed, operatorMarker) || strings.HasPrefix(trimmed, strings.TrimSpace(isolationMarker)) {
		return ""
	}
	var touched []string
	code := comment.ReplaceAllString(literal.ReplaceAllString(sql, "''"), " ")
	if strings.Contains(sql, `\`) {
		// In an E'...' string a backslash hides a quote, and the patterns
		// above would misread where literals and comments end: read it all
		// as code.
		code = sql
	}
	if first := word.FindString(code); !rowStatements[strings.ToLower(first)] {
		return "" // DDL and the like read and write no rows
	}
	needsFilter := false
	for _, m := range word.FindAllStringIndex(code, -1) {
		name := strings.ToLower(code[m[0]:m[1]])
		if !tr.tables[name] || (m[1] < len(code) && code[m[1]] == '.') {
			continue
		}
		if !slices.Contains(touched, name) {
			touched = append(touched, name)
		}
		// An INSERT that fills workspace_id first needs no filter for its
		// target; every other mention does.
		if !(intoBefore.MatchString(code[:m[0]]) && workspaceColumnFirst.MatchString(code[m[1]:])) {
			needsFilter = true
		}
	}
	if len(touched) == 0 {
		return ""
	}
	if strings.Contains(sql, `\`) {
		return "statement touches tenant table(s) " + strings.Join(touched, ", ") + " and holds a backslash, which hides where its literals end"
	}
	if !needsFilter || filtersTenant(sql) {
		tr.mu.Lock()
		tr.seen++
		tr.mu.Unlock()
		return ""
	}
	return "statement touches tenant table(s) " + strings.Join(touched, ", ") + " without a workspace_id = $n predicate"
}

func (tr *TenantTracer) check(sql string) {
	tr.mu.Lock()
	disabled := tr.disabled
	tr.mu.Unlock()
	if disabled {
		return
	}
	if v := tr.Violation(sql); v != "" {
		tr.tb.Errorf("pgtest: tenant tracer: %s:\n%s", v, sql)
	}
}

func (tr *TenantTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	tr.check(data.SQL)
	return ctx
}

func (tr *TenantTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (tr *TenantTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	for _, q := range data.Batch.QueuedQueries {
		tr.check(q.SQL)
	}
	return ctx
}

func (tr *TenantTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (tr *TenantTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (tr *TenantTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	tr.mu.Lock()
	disabled := tr.disabled
	tr.mu.Unlock()
	table := data.TableName[len(data.TableName)-1]
	if disabled || !tr.tables[table] {
		return ctx
	}
	for _, c := range data.ColumnNames {
		if c == "workspace_id" {
			return ctx
		}
	}
	tr.tb.Errorf("pgtest: tenant tracer: COPY into tenant table %s without workspace_id", table)
	return ctx
}

func (tr *TenantTracer) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

func newTenantTracer(tb testing.TB, db *DB) *TenantTracer {
	tb.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT DISTINCT table_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND column_name = 'workspace_id'`)
	if err != nil {
		tb.Fatalf("pgtest: list tenant tables: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("pgtest: list tenant tables: %v", err)
	}
	tables := make(map[string]bool, len(names))
	for _, n := range names {
		tables[n] = true
	}
	return &TenantTracer{tb: tb, tables: tables}
}
