package tenancy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Caller SQL fragments (predicates, columns, join conditions, ORDER BY,
// SET expressions...) are code the host's programmers write, never user
// input: values always travel as arguments. The checks below are a guard
// against mistakes that would let a fragment reach beyond the tenant, and
// row-level security stands behind them for what no lexer can see.

// queryWords may not appear in a fragment, bare or as a quoted name: each
// starts a query or a write of its own, and a subquery reads other tenants'
// rows as easily as the tenant's. (A CTE needs one of them too, so WITH,
// which also spells "timestamp with time zone", is not among them.)
var queryWords = map[string]bool{
	"select": true, "table": true, "values": true,
	"insert": true, "update": true, "delete": true, "merge": true, "into": true,
}

// runsSQL reports whether word (lower-cased) names a function that changes
// the row-level security settings, runs SQL given as text, reads a table
// or a file by name, or shows other sessions' statements. Neither fragments
// nor hand-written SQL may call one.
func runsSQL(word string) bool {
	switch word {
	case "set_config", "ts_stat", "ts_rewrite", "pg_relation_filepath", "pg_stat_file",
		// Extensions' functions that run SQL given as text or read a table
		// by name: tablefunc's, xml2's, pgrowlocks', pgstattuple's.
		"connectby", "xpath_table", "pgrowlocks":
		return true
	}
	for _, prefix := range []string{"dblink", "pg_read_", "pg_ls_", "lo_", "pg_stat_get_", "crosstab", "pgstat"} {
		if strings.HasPrefix(word, prefix) {
			return true
		}
	}
	return strings.Contains(word, "_to_xml") // query_to_xml, table_to_xml, cursor_to_xml...
}

// deniedCall reports whether a call of the function named word
// (lower-cased) is refused, in fragments and hand-written SQL alike: what
// runsSQL names, and every pg_* function, the server's own administration,
// whose effects outlive the statement or reach other sessions (session
// advisory locks, one of which on the migration lock's key would stop every
// later migration; pg_terminate_backend and pg_cancel_backend; pg_sleep;
// pg_notify; reading files and statistics), setval, which moves a
// sequence for every session, and setseed, which makes the connection's
// next random() predictable to whoever uses it next. The deny-list is by class (pg_*) rather than
// by name, so that a function added to a later Postgres is refused too. A
// host that needs one wraps it in a function of its own, which is then its
// own reviewed code. Only calls are refused: a column may be named lo_limit.
func deniedCall(word string) bool {
	return runsSQL(word) || strings.HasPrefix(word, "pg_") || word == "setval" || word == "setseed"
}

// MaxFragmentBytes bounds one fragment (a predicate, a column, a SET
// expression...): Postgres parses some long expressions slowly, deaf to
// cancellation, and a fragment is code, never data, so it is never long.
const MaxFragmentBytes = 16 << 10

// nextIsCall reports whether the text after a name opens its arguments.
func nextIsCall(rest string) bool {
	rest = strings.TrimLeft(rest, " \t\n\r\f")
	return strings.HasPrefix(rest, "(")
}

// clauseWords may not stand outside parentheses in a fragment that the
// handle writes bare, as an item of a list (a column, an ORDER BY, GROUP BY
// or RETURNING item): each could begin a clause of its own, and a FROM
// there would make the handle's own "FROM table WHERE ..." a mere join
// partner. Inside parentheses (extract(year FROM t), (a IS DISTINCT FROM
// b)) they are harmless.
var clauseWords = map[string]bool{
	"from": true, "join": true, "using": true, "where": true, "window": true,
	"union": true, "intersect": true, "except": true, "limit": true, "offset": true,
	"fetch": true, "for": true, "having": true, "group": true, "order": true, "returning": true,
}

// scanFragment checks caller SQL and counts its placeholders. It refuses
// what could break out of the parentheses the handle puts around it, or out
// of the statement: unbalanced parentheses, ';', comments, '$' (dollar
// quotes and numbered placeholders), backslashes (E'...' strings escape
// quotes with them, and so do plain strings on a server without
// standard_conforming_strings), U& escapes (which could spell any word),
// and denied words, bare or quoted. '?' is a placeholder; '??' is a literal
// question mark (squirrel's convention).
//
// It is a guard against mistakes, not a sandbox: a host's own functions,
// for one, can do anything, and no lexer can see into them.
func scanFragment(what, sql string, bare bool) (placeholders int, err error) {
	fail := func(reason string) (int, error) {
		return 0, fmt.Errorf("%w: %s %q %s", ErrUnsafeSQL, what, sql, reason)
	}
	if len(sql) > MaxFragmentBytes {
		return 0, fmt.Errorf("%w: %s is %d bytes; the limit is %d", ErrUnsafeSQL, what, len(sql), MaxFragmentBytes)
	}
	if err := checkText(sql); err != nil {
		return 0, err
	}
	if strings.IndexByte(sql, '\\') >= 0 {
		return fail("contains a backslash")
	}
	depth := 0
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(sql[i+1:], c)
			if end < 0 {
				return fail("has an unterminated quote")
			}
			if word := strings.ToLower(sql[i+1 : i+1+end]); c == '"' && (queryWords[word] || (deniedCall(word) && nextIsCall(sql[i+end+2:]))) {
				return fail(fmt.Sprintf("contains %q; a fragment may not run a query, change settings or call the server's administration functions", word))
			}
			i += end + 1 // a doubled quote re-enters here as a new, empty literal
		case c == '(':
			depth++
			if depth > maxDepth {
				return fail(fmt.Sprintf("nests parentheses deeper than %d", maxDepth))
			}
		case c == ')':
			depth--
			if depth < 0 {
				return fail("closes a parenthesis it did not open")
			}
		case c == ';':
			return fail("contains ';'")
		case c == '$':
			return fail("contains '$'; use ? placeholders")
		case (c == '-' && i+1 < len(sql) && sql[i+1] == '-') || (c == '/' && i+1 < len(sql) && sql[i+1] == '*'):
			return fail("contains a comment")
		case c == '?':
			if i+1 < len(sql) && sql[i+1] == '?' {
				i++
				continue
			}
			placeholders++
		case isWordStart(c):
			j := i + 1
			for j < len(sql) && isWordPart(sql[j]) {
				j++
			}
			word := strings.ToLower(sql[i:j])
			if word == "u" && j < len(sql) && sql[j] == '&' {
				return fail("contains a U& escaped string or name")
			}
			if queryWords[word] || (deniedCall(word) && nextIsCall(sql[j:])) {
				return fail(fmt.Sprintf("contains %q; a fragment may not run a query, change settings or call the server's administration functions", word))
			}
			if word == "symmetric" {
				// Postgres analyses each nested BETWEEN SYMMETRIC's operand
				// four times, deaf to cancellation: a few hundred bytes
				// keep a backend busy for seconds and gigabytes.
				return fail("uses BETWEEN SYMMETRIC; write the two comparisons out")
			}
			if bare && depth == 0 && clauseWords[word] {
				return fail(fmt.Sprintf("has %q outside parentheses, where it would begin a clause of its own", word))
			}
			i = j - 1
		}
	}
	if depth != 0 {
		return fail("leaves a parenthesis open")
	}
	return placeholders, nil
}

func isWordStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
}

func isWordPart(c byte) bool { return isWordStart(c) || (c >= '0' && c <= '9') }

// checkFragment checks a list item (a column, an ORDER BY, GROUP BY or
// RETURNING item): written bare, it takes no arguments and no clause words
// outside parentheses.
func checkFragment(what, sql string) error {
	n, err := scanFragment(what, sql, true)
	if err == nil && n > 0 {
		err = fmt.Errorf("%w: %s %q has a ? placeholder but takes no arguments", ErrUnsafeSQL, what, sql)
	}
	return err
}

// newFragment checks a fragment and that its placeholders and arguments
// pair up one to one, so that no argument can slide into another
// fragment's placeholder (the tenant's, say).
func newFragment(what, sql string, args []any) (fragment, error) {
	n, err := scanFragment(what, sql, false)
	if err != nil {
		return fragment{}, err
	}
	if n != len(args) {
		return fragment{}, fmt.Errorf("%w: %s %q has %d placeholder(s) for %d argument(s)", ErrUnsafeSQL, what, sql, n, len(args))
	}
	for _, a := range args {
		if err := checkArg(what, a); err != nil {
			return fragment{}, err
		}
	}
	return fragment{sql: sql, args: args}, nil
}

// checkArg refuses the argument types pgx reads as options rather than
// values (pgx.NamedArgs rewrites the whole statement's placeholders).
// Text arguments Postgres cannot store (a NUL byte, invalid UTF-8) are an
// *InvalidInputError here, before any SQL is sent, naming the argument.
func checkArg(what string, a any) error {
	switch v := a.(type) {
	case pgx.QueryRewriter, pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		return fmt.Errorf("%w: %s has a %T argument, which pgx reads as an option, not a value", ErrUnsafeSQL, what, a)
	case string:
		return checkTextField(what, v)
	case *string:
		if v != nil {
			return checkTextField(what, *v)
		}
	case []string:
		for _, s := range v {
			if err := checkTextField(what, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkText refuses text that Postgres cannot store in a text value: a NUL
// byte, or bytes that are not UTF-8 (the server encoding meterbase needs).
func checkText(s string) error { return checkTextField("text", s) }

func checkTextField(field, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return &InvalidInputError{Field: field, Reason: "contains a NUL byte, which Postgres cannot store in text"}
	}
	if !utf8.ValidString(s) {
		return &InvalidInputError{Field: field, Reason: "is not valid UTF-8"}
	}
	return nil
}

// fragment is checked SQL with ? placeholders and exactly one argument per
// placeholder.
type fragment struct {
	sql  string
	args []any
}

// statementWriter assembles a statement, numbering placeholders as it
// writes them, so every argument lands exactly where its fragment put it.
// The tenant's arguments are always $1 (workspace) and $2 (user, when the
// statement touches a user-scoped table): no caller argument is ever the
// statement's first, which pgx would read as an option if it were one.
type statementWriter struct {
	sb   strings.Builder
	args []any
}

const (
	workspaceParam = "$1"
	userParam      = "$2"
)

// begin reserves the tenant's parameters.
func (w *statementWriter) begin(t *Tenant, withUser bool) {
	w.args = append(w.args, t.scope.workspace)
	if withUser {
		w.args = append(w.args, t.scope.user)
	}
}

func (w *statementWriter) write(parts ...string) {
	for _, p := range parts {
		w.sb.WriteString(p)
	}
}

// list writes checked list items (columns, ORDER BY...), through fragment
// so that their ?? becomes the ? operator as everywhere else.
func (w *statementWriter) list(items []string) {
	for i, item := range items {
		if i > 0 {
			w.sb.WriteString(", ")
		}
		w.fragment(fragment{sql: item})
	}
}

// arg writes a placeholder for v.
func (w *statementWriter) arg(v any) {
	w.args = append(w.args, v)
	w.sb.WriteByte('$')
	w.sb.WriteString(strconv.Itoa(len(w.args)))
}

// fragment writes f, numbering its placeholders. Quoted text is copied as
// it is, so a '?' inside a literal stays a question mark.
func (w *statementWriter) fragment(f fragment) {
	next := 0
	sql := f.sql
	for len(sql) > 0 {
		i := strings.IndexAny(sql, `'"?`)
		if i < 0 {
			w.sb.WriteString(sql)
			return
		}
		w.sb.WriteString(sql[:i])
		switch c := sql[i]; c {
		case '\'', '"':
			end := strings.IndexByte(sql[i+1:], c) // present: the fragment was checked
			w.sb.WriteString(sql[i : i+end+2])
			sql = sql[i+end+2:]
		case '?':
			if i+1 < len(sql) && sql[i+1] == '?' {
				w.sb.WriteByte('?')
				sql = sql[i+2:]
				continue
			}
			w.arg(f.args[next])
			next++
			sql = sql[i+1:]
		}
	}
}

func (w *statementWriter) finish() (string, []any, error) { return w.sb.String(), w.args, nil }
