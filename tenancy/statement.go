package tenancy

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Hand-written SQL, for what the builders cannot say (a CTE that spends
// from lots and writes the journal in one round trip, say). It is prepared
// once, when the package that holds it loads, and run through a Tenant.
//
// A tenant table is never named bare in it: it is written {table}, and the
// handle expands each mention so that it can only ever reach the tenant's
// rows, whatever the rest of the statement says (an OR, a subquery, a
// data-modifying CTE, a wrong alias):
//
//	FROM {credit_grants} g        FROM (SELECT * FROM credit_grants WHERE credit_grants.workspace_id = $1) g
//	UPDATE {credit_grants} g ...  UPDATE credit_grants g ... WHERE g.workspace_id = $1 AND (<the statement's own WHERE>)
//	DELETE FROM {t} ...           likewise
//	INSERT INTO {t} (a, b) ...    INSERT INTO t (workspace_id, a, b) VALUES ($1, ...), ($1, ...) | SELECT $1, ...
//
// Postgres pulls the filtered subqueries up into the query, so the caller's
// predicates still use their indexes. A tenant table named bare (or quoted,
// or schema-qualified) is refused, and so is anything that would make the
// reading above unreliable or reach past the statement: ';', '$', '\',
// U& escapes, SELECT ... INTO, MERGE, TABLE, WHERE CURRENT OF, writes to a
// tenant column, a UNION inside an INSERT, and calls of the functions
// fragments may not call either. Parameters are @name; @workspace_id and
// @user_id are the handle's.
//
// What it cannot see: tables the handle was never told of (DefineTable),
// and the inside of functions. Row-level security stands behind both.

// Args are the named arguments of a Statement: exactly one per @name it
// uses, other than the handle's @workspace_id and @user_id.
type Args map[string]any

// Statement is hand-written SQL, checked and rewritten once by Prepare.
// It is immutable and safe for concurrent use.
type Statement struct {
	name     string
	source   string
	sql      string   // with $1 (workspace), $2 (user, if used), then the params
	params   []string // caller parameter names, in $ order
	withUser bool     // uses @user_id or a user-scoped table
	tables   []string // the tenant tables it reaches, for tests and docs
	// words are the names it mentions bare; a tenant table defined after
	// Prepare is looked for among them before the statement first runs.
	words   []string
	checked atomic.Int64 // the table generation words were checked against
}

// MaxStatementBytes bounds hand-written SQL, so that no statement can keep
// a backend parsing for long.
const MaxStatementBytes = 64 << 10

// maxDepth bounds the nesting of parentheses in hand-written SQL and in
// fragments.
const maxDepth = 64

// Name returns the statement's name.
func (s *Statement) Name() string { return s.name }

// SQL returns the statement as it is sent: tenant tables expanded,
// parameters numbered.
func (s *Statement) SQL() string { return s.sql }

// Source returns the statement as it was written.
func (s *Statement) Source() string { return s.source }

// Params returns the names of the arguments the statement takes.
func (s *Statement) Params() []string { return slices.Clone(s.params) }

// Tables returns the tenant tables the statement reaches, sorted.
func (s *Statement) Tables() []string { return slices.Clone(s.tables) }

// Prepare checks and rewrites hand-written SQL. Its errors wrap
// ErrUnsafeSQL (or ErrInvalidInput for a bad name).
func Prepare(name, sql string) (*Statement, error) {
	if name == "" {
		return nil, &InvalidInputError{Field: "statement name", Reason: "is empty"}
	}
	st, err := prepare(sql)
	if err != nil {
		return nil, fmt.Errorf("statement %s: %w", name, err)
	}
	st.name = name
	st.source = sql
	st.checked.Store(tableGeneration.Load())
	return st, nil
}

// MustPrepare is Prepare for statements fixed at compile time; it panics on
// an error, when the package loads.
func MustPrepare(name, sql string) *Statement {
	st, err := Prepare(name, sql)
	if err != nil {
		panic(err)
	}
	return st
}

// Statements are prepared statements by name.
type Statements map[string]*Statement

// PrepareFS prepares every *.sql file in dir of fsys (an embed.FS, say) as
// one statement named after the file (spend.sql is "spend").
func PrepareFS(fsys fs.FS, dir string) (Statements, error) {
	files, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, &InvalidInputError{Field: "statements", Reason: fmt.Sprintf("no .sql file in %s", dir)}
	}
	out := make(Statements, len(files))
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(path.Base(f), ".sql")
		if out[name], err = Prepare(name, string(b)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MustPrepareFS is PrepareFS that panics on an error, when the package
// loads.
func MustPrepareFS(fsys fs.FS, dir string) Statements {
	s, err := PrepareFS(fsys, dir)
	if err != nil {
		panic(err)
	}
	return s
}

// Exec runs a statement as the tenant.
func (t *Tenant) Exec(ctx context.Context, s *Statement, args Args) (pgconn.CommandTag, error) {
	bound, err := t.bind(s, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.exec(ctx, s.sql, bound...)
}

// Query runs a statement as the tenant, for its rows.
func (t *Tenant) Query(ctx context.Context, s *Statement, args Args) (pgx.Rows, error) {
	bound, err := t.bind(s, args)
	if err != nil {
		return nil, err
	}
	return t.query(ctx, s.sql, bound...)
}

// QueryRow runs a statement as the tenant, for one row.
func (t *Tenant) QueryRow(ctx context.Context, s *Statement, args Args) pgx.Row {
	bound, err := t.bind(s, args)
	if err != nil {
		return errRow{err}
	}
	return t.queryRow(ctx, s.sql, bound...)
}

// bind turns args into the statement's positional arguments, strictly: a
// missing, misspelt or extra name is an error before any SQL is sent.
func (t *Tenant) bind(s *Statement, args Args) ([]any, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if s == nil || s.sql == "" {
		return nil, &InvalidInputError{Field: "statement", Reason: "is nil or zero; make it with Prepare"}
	}
	if err := s.recheck(); err != nil {
		return nil, err
	}
	if s.withUser && t.scope.user.IsZero() {
		return nil, &InvalidInputError{Field: "scope", Reason: fmt.Sprintf("statement %s is user-scoped; make the Tenant with NewUserScope", s.name)}
	}
	if len(args) != len(s.params) {
		for k := range args {
			if !slices.Contains(s.params, k) {
				return nil, &InvalidInputError{Field: "argument @" + k, Reason: fmt.Sprintf("is not a parameter of statement %s (it takes %s)", s.name, paramList(s.params))}
			}
		}
	}
	bound := make([]any, 0, 2+len(s.params))
	bound = append(bound, t.scope.workspace)
	if s.withUser {
		bound = append(bound, t.scope.user)
	}
	for _, p := range s.params {
		v, ok := args[p]
		if !ok {
			return nil, &InvalidInputError{Field: "argument @" + p, Reason: fmt.Sprintf("is missing; statement %s takes %s", s.name, paramList(s.params))}
		}
		if err := checkArg("argument @"+p, v); err != nil {
			return nil, err
		}
		bound = append(bound, v)
	}
	return bound, nil
}

func paramList(params []string) string {
	if len(params) == 0 {
		return "no arguments"
	}
	return "@" + strings.Join(params, ", @")
}

// recheck looks, once after each DefineTable that came later than the
// statement, for a bare mention of the new tenant table.
func (s *Statement) recheck() error {
	gen := tableGeneration.Load()
	if s.checked.Load() == gen {
		return nil
	}
	for _, w := range s.words {
		if isTenantTable(w) {
			return fmt.Errorf("statement %s: %w: names the tenant table %s bare; write {%s}", s.name, ErrUnsafeSQL, w, w)
		}
	}
	s.checked.Store(gen)
	return nil
}

// token is one lexical unit of hand-written SQL.
type token struct {
	kind       tokenKind
	text       string // words lower-cased; quoted names as written inside the quotes
	start, end int    // its span in the source
	depth      int    // parentheses open before it
}

type tokenKind int

const (
	tokWord tokenKind = iota + 1
	tokQuotedName
	tokString
	tokParam // @name; text is the name
	tokMacro // {table}; text is the table
	tokPunct // one character; text is it
	tokNumber
)

func unsafeSQL(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsafeSQL}, args...)...)
}

// lex reads hand-written SQL into tokens in one pass (nested comments
// included), refusing what would make that reading differ from Postgres's.
func lex(sql string) ([]token, []edit, error) {
	if len(sql) > MaxStatementBytes {
		return nil, nil, unsafeSQL("hand-written SQL is %d bytes; the limit is %d", len(sql), MaxStatementBytes)
	}
	if err := checkText(sql); err != nil {
		return nil, nil, err
	}
	// Anywhere, literals included: in an E'...' string a backslash hides
	// a quote, and Postgres and this reading would part ways there.
	if strings.IndexByte(sql, '\\') >= 0 {
		return nil, nil, unsafeSQL("hand-written SQL contains a backslash; pass such text as an argument")
	}
	var toks []token
	// Comments are dropped from what is sent: an edit placed after a
	// trailing line comment would otherwise be commented out with it.
	var comments []edit
	depth := 0
	for i := 0; i < len(sql); {
		c := sql[i]
		start := i
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
			continue
		case c == '$':
			return nil, nil, unsafeSQL("hand-written SQL contains '$'; name parameters @like_this")
		case c == ';':
			return nil, nil, unsafeSQL("hand-written SQL contains ';'; one statement at a time")
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			end := strings.IndexAny(sql[i:], "\n\r") // Postgres ends it at either
			if end < 0 {
				end = len(sql) - i
			}
			i += end
			comments = append(comments, edit{at: start, end: i, text: " "})
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			nest := 0
			for i < len(sql) {
				if strings.HasPrefix(sql[i:], "/*") {
					nest++
					i += 2
				} else if strings.HasPrefix(sql[i:], "*/") {
					nest--
					i += 2
					if nest == 0 {
						break
					}
				} else {
					i++
				}
			}
			if nest != 0 {
				return nil, nil, unsafeSQL("hand-written SQL has an unterminated comment")
			}
			comments = append(comments, edit{at: start, end: i, text: " "})
			continue
		case c == '\'' || c == '"':
			end := strings.IndexByte(sql[i+1:], c)
			if end < 0 {
				return nil, nil, unsafeSQL("hand-written SQL has an unterminated quote")
			}
			i += end + 2 // a doubled quote re-enters here as a new, empty one
			kind, text := tokString, ""
			if c == '"' {
				kind, text = tokQuotedName, identifier(sql[start+1:i-1])
				if prev := lastToken(toks); prev != nil && prev.kind == tokQuotedName && prev.end == start {
					return nil, nil, unsafeSQL("hand-written SQL has a quoted name with a doubled quote")
				}
			}
			toks = append(toks, token{kind: kind, text: text, start: start, end: i, depth: depth})
			continue
		case c == '@' && i+1 < len(sql) && isWordStart(sql[i+1]) && sql[i+1] < 0x80 && !(i > 0 && (sql[i-1] == '<' || sql[i-1] == '@')):
			j := i + 1
			for j < len(sql) && isWordPart(sql[j]) {
				j++
			}
			name := sql[i+1 : j]
			if lower := strings.ToLower(name); lower != name && (lower == workspaceColumn || lower == userColumn) {
				return nil, nil, unsafeSQL("hand-written SQL spells @%s; the handle's parameters are @%s and @%s", name, workspaceColumn, userColumn)
			}
			toks = append(toks, token{kind: tokParam, text: name, start: i, end: j, depth: depth})
			i = j
			continue
		case c == '{':
			end := strings.IndexByte(sql[i:], '}')
			if end < 0 {
				return nil, nil, unsafeSQL("hand-written SQL has a '{' without its '}'")
			}
			name := sql[i+1 : i+end]
			if !identifierPattern.MatchString(name) {
				return nil, nil, unsafeSQL("hand-written SQL has {%s}; braces hold a table's name", name)
			}
			i += end + 1
			toks = append(toks, token{kind: tokMacro, text: name, start: start, end: i, depth: depth})
			continue
		case isWordStart(c):
			j := i + 1
			for j < len(sql) && isWordPart(sql[j]) {
				j++
			}
			word := strings.ToLower(sql[i:j])
			if word == "u" && j < len(sql) && sql[j] == '&' {
				return nil, nil, unsafeSQL("hand-written SQL contains a U& escape")
			}
			toks = append(toks, token{kind: tokWord, text: identifier(word), start: i, end: j, depth: depth})
			i = j
			continue
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(sql) && (isWordPart(sql[j]) || sql[j] == '.') {
				j++
			}
			toks = append(toks, token{kind: tokNumber, start: i, end: j, depth: depth})
			i = j
			continue
		case c == '(':
			toks = append(toks, token{kind: tokPunct, text: "(", start: i, end: i + 1, depth: depth})
			depth++
			if depth > maxDepth {
				return nil, nil, unsafeSQL("hand-written SQL nests parentheses deeper than %d", maxDepth)
			}
			i++
			continue
		case c == ')':
			depth--
			if depth < 0 {
				return nil, nil, unsafeSQL("hand-written SQL closes a parenthesis it did not open")
			}
			toks = append(toks, token{kind: tokPunct, text: ")", start: i, end: i + 1, depth: depth})
			i++
			continue
		}
		toks = append(toks, token{kind: tokPunct, text: string(c), start: i, end: i + 1, depth: depth})
		i++
	}
	if depth != 0 {
		return nil, nil, unsafeSQL("hand-written SQL leaves a parenthesis open")
	}
	return toks, comments, nil
}

// identifier is a name as Postgres keeps it: cut to 63 bytes
// (NAMEDATALEN - 1), so that a longer word cannot name a table unseen.
func identifier(name string) string {
	const maxIdentifier = 63
	if len(name) <= maxIdentifier {
		return name
	}
	cut := maxIdentifier
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

func lastToken(toks []token) *token {
	if len(toks) == 0 {
		return nil
	}
	return &toks[len(toks)-1]
}

// edit inserts text at a position of the source, or replaces [at, end).
type edit struct {
	at, end int
	text    string
}

// rewriter turns checked tokens into the statement to send.
type rewriter struct {
	src      string
	toks     []token
	edits    []edit
	params   []string
	withUser bool
	tables   []string
}

func (r *rewriter) tok(i int) token {
	if i < 0 || i >= len(r.toks) {
		return token{}
	}
	return r.toks[i]
}

func (r *rewriter) isWord(i int, words ...string) bool {
	t := r.tok(i)
	return t.kind == tokWord && slices.Contains(words, t.text)
}

func (r *rewriter) isPunct(i int, p string) bool {
	t := r.tok(i)
	return t.kind == tokPunct && t.text == p
}

// notAlias are the words that may follow a table reference without being
// its alias.
var notAlias = map[string]bool{
	"where": true, "join": true, "inner": true, "left": true, "right": true, "full": true,
	"cross": true, "natural": true, "on": true, "using": true, "group": true, "order": true,
	"limit": true, "offset": true, "fetch": true, "for": true, "union": true, "intersect": true,
	"except": true, "window": true, "having": true, "returning": true, "set": true,
	"tablesample": true, "values": true, "select": true, "default": true, "overriding": true,
}

// alias returns the alias written after the table reference at i, as it
// is spelt in the source (a quoted one with its quotes, so that a filter
// written with it names the same thing), and the index of its last token;
// or "" and i.
func (r *rewriter) alias(i int) (string, int) {
	next := r.tok(i + 1)
	if next.kind == tokWord && next.text == "as" {
		a := r.tok(i + 2)
		if a.kind == tokWord || a.kind == tokQuotedName {
			return r.src[a.start:a.end], i + 2
		}
		return "", i
	}
	if (next.kind == tokWord && !notAlias[next.text]) || next.kind == tokQuotedName {
		return r.src[next.start:next.end], i + 1
	}
	return "", i
}

// startsStatement reports whether the token at i begins a statement: the
// first token, or the first of a CTE's body (after "AS (" or "AS
// [NOT] MATERIALIZED ("), or the one after the parenthesis that closes
// such a body (the main statement of a WITH). A write verb anywhere else
// (a column labelled "delete", say) is no write: deciding by the words just
// before a table would take it for one.
func (r *rewriter) startsStatement(i int) bool {
	if i == 0 {
		return true
	}
	open := i - 1
	if r.isPunct(i-1, ")") {
		open = r.matching(i - 1)
		if open < 0 {
			return false
		}
		// The body just closed must be a CTE's, and what follows it the
		// main statement, not another CTE.
		if !r.opensCTEBody(open) {
			return false
		}
		return true
	}
	return r.isPunct(open, "(") && r.opensCTEBody(open)
}

// opensCTEBody reports whether the parenthesis at open begins a CTE's body.
func (r *rewriter) opensCTEBody(open int) bool {
	return r.isWord(open-1, "as") || (r.isWord(open-1, "materialized") && (r.isWord(open-2, "as") || r.isWord(open-2, "not") && r.isWord(open-3, "as")))
}

// matching returns the index of the "(" that the ")" at close closes.
func (r *rewriter) matching(close int) int {
	depth := r.toks[close].depth
	for j := close - 1; j >= 0; j-- {
		if r.isPunct(j, "(") && r.toks[j].depth == depth {
			return j
		}
	}
	return -1
}

func prepare(sql string) (*Statement, error) {
	toks, comments, err := lex(sql)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 || !(toks[0].kind == tokWord && namedStatements[toks[0].text]) {
		return nil, unsafeSQL("hand-written SQL must be one SELECT, WITH, INSERT, UPDATE or DELETE")
	}
	r := &rewriter{src: sql, toks: toks, edits: comments}
	st := &Statement{}
	seenWords := map[string]bool{}
	for i, t := range toks {
		switch t.kind {
		case tokWord, tokQuotedName:
			name := t.text
			if t.kind == tokWord {
				if err := r.checkWord(i); err != nil {
					return nil, err
				}
			}
			if _, gated := memberGates[name]; (gated || isTenantTable(name)) && !r.isPunct(i+1, ".") {
				return nil, unsafeSQL("hand-written SQL names the tenant table %s bare; write {%s}, which the handle filters", name, name)
			}
			if lower := strings.ToLower(name); t.kind == tokQuotedName &&
				((r.isPunct(i+1, "(") && deniedCall(lower)) || strings.HasPrefix(lower, "pg_") || lower == "information_schema") {
				return nil, unsafeSQL("hand-written SQL may not name %s", name)
			}
			if !r.isPunct(i+1, ".") && !seenWords[name] {
				seenWords[name] = true
				st.words = append(st.words, name)
			}
		case tokParam:
			r.param(t)
		case tokMacro:
			if err := r.macro(i); err != nil {
				return nil, err
			}
		}
	}
	st.sql = r.render()
	st.params = r.params
	st.withUser = r.withUser
	sort.Strings(r.tables)
	st.tables = slices.Compact(r.tables)
	return st, nil
}

// checkWord refuses the words that would let hand-written SQL reach past
// itself.
func (r *rewriter) checkWord(i int) error {
	w := r.toks[i].text
	switch {
	case r.isPunct(i+1, "(") && deniedCall(w):
		return unsafeSQL("hand-written SQL may not call %s", w)
	case queryWordsNamed[w]:
		return unsafeSQL("hand-written SQL may not use %s", strings.ToUpper(w))
	case w == "pg_temp" && r.isPunct(i+1, ".") && strings.HasPrefix(r.tok(i+2).text, "meterbase_stage_"):
		// A library's own stage, a temporary table of the session that
		// holds only the rows of the caller's own call.
		return nil
	case strings.HasPrefix(w, "pg_") || w == "information_schema":
		// The catalogs describe every tenant's rows (pg_stats holds
		// their most common values); a tenant's statement has no business
		// there, nor with the server's administration functions.
		return unsafeSQL("hand-written SQL may not name %s", w)
	case (w == "insert" || w == "delete") && !r.startsStatement(i),
		w == "update" && !r.startsStatement(i) && !r.isWord(i-1, "do", "for", "key"):
		// A write verb that begins no statement is a name (a column
		// label); taking it for a write would misplace the tenant's filter.
		return unsafeSQL("hand-written SQL may use %s only to begin a statement", strings.ToUpper(w))
	case w == "into" && !(r.isWord(i-1, "insert") && r.startsStatement(i-1)):
		// SELECT ... INTO creates a table: a temporary one named like a
		// tenant table (or a global catalog) would stand in for it on the
		// connection.
		return unsafeSQL("hand-written SQL may not SELECT ... INTO")
	case w == "temp" || w == "temporary" || w == "unlogged":
		return unsafeSQL("hand-written SQL may not create tables")
	case w == "symmetric":
		return unsafeSQL("hand-written SQL may not use BETWEEN SYMMETRIC, which Postgres analyses in time exponential in its nesting")
	case w == "current" && r.isWord(i+1, "of"):
		return unsafeSQL("hand-written SQL may not use WHERE CURRENT OF")
	case w == "only" && r.tok(i+1).kind == tokMacro:
		return unsafeSQL("hand-written SQL may not use ONLY before a tenant table")
	}
	return nil
}

// queryWordsNamed are words hand-written SQL may not hold at all.
var queryWordsNamed = map[string]bool{"merge": true, "table": true, "copy": true}

// namedStatements are the statements hand-written SQL may be.
var namedStatements = map[string]bool{"select": true, "with": true, "insert": true, "update": true, "delete": true}

func (r *rewriter) param(t token) {
	var n int
	switch t.text {
	case workspaceColumn:
		r.edits = append(r.edits, edit{at: t.start, end: t.end, text: workspaceParam})
		return
	case userColumn:
		r.withUser = true
		r.edits = append(r.edits, edit{at: t.start, end: t.end, text: "\x00user"})
		return
	}
	if n = slices.Index(r.params, t.text); n < 0 {
		r.params = append(r.params, t.text)
		n = len(r.params) - 1
	}
	r.edits = append(r.edits, edit{at: t.start, end: t.end, text: "\x00p" + strconv.Itoa(n)})
}

// macro expands {table} at i by where it stands.
func (r *rewriter) macro(i int) error {
	t := r.toks[i]
	table, ok := definedTable(t.text)
	switch {
	case !ok:
		return unsafeSQL("hand-written SQL names {%s}, a table never defined with DefineTable", t.text)
	case table.scope == Global:
		gate, ok := memberGates[table.name]
		if !ok {
			return unsafeSQL("hand-written SQL names {%s}, a global table; write it without braces", t.text)
		}
		if r.isWord(i-1, "into", "update") || r.isWord(i-1, "from") && r.isWord(i-2, "delete") {
			return unsafeSQL("hand-written SQL may not write {%s}, a global table", t.text)
		}
		text := "(SELECT * FROM " + table.name + " WHERE " + gate(table.name) + ")"
		if a, _ := r.alias(i); a == "" {
			text += " AS " + table.name
		}
		r.edits = append(r.edits, edit{at: t.start, end: t.end, text: text})
		return nil
	}
	if table.scope == UserScoped {
		r.withUser = true
	}
	r.tables = append(r.tables, table.name)
	if r.isPunct(i+1, "*") {
		return unsafeSQL("hand-written SQL may not follow {%s} with *", t.text)
	}
	switch {
	case r.isWord(i-1, "into") && r.isWord(i-2, "insert") && r.startsStatement(i-2):
		return r.insertTarget(i, table)
	case r.isWord(i-1, "update") && r.startsStatement(i-1):
		return r.writeTarget(i, table, "update")
	case r.isWord(i-1, "from") && r.isWord(i-2, "delete") && r.startsStatement(i-2):
		return r.writeTarget(i, table, "delete")
	case r.isWord(i-1, "into", "update") || r.isWord(i-1, "from") && r.isWord(i-2, "delete"):
		return unsafeSQL("hand-written SQL writes {%s} where no statement begins", t.text)
	}
	ref := table.name
	text := "(SELECT * FROM " + table.name + " WHERE " + tenantFilter(table, table.name) + ")"
	if a, _ := r.alias(i); a == "" {
		text += " AS " + ref
	}
	r.edits = append(r.edits, edit{at: t.start, end: t.end, text: text})
	return nil
}

// tenantFilter is the tenant's predicate on a table referred to as ref.
func tenantFilter(table Table, ref string) string {
	f := ref + "." + workspaceColumn + " = " + workspaceParam
	if table.scope == UserScoped {
		f += " AND " + ref + "." + userColumn + " = \x00user"
	}
	return f
}

// writeTarget filters the rows an UPDATE or DELETE of {table} at i may
// change: the tenant's predicate is ANDed before the statement's own WHERE,
// which is parenthesised, or is the WHERE when it has none.
func (r *rewriter) writeTarget(i int, table Table, verb string) error {
	t := r.toks[i]
	r.edits = append(r.edits, edit{at: t.start, end: t.end, text: table.name})
	ref := table.name
	a, last := r.alias(i)
	if a != "" {
		ref = a
	}
	depth := t.depth
	where, end := -1, len(r.src)
	inSet := false
scan:
	for j := last + 1; j < len(r.toks); j++ {
		tj := r.toks[j]
		if tj.depth < depth { // the parenthesis around a CTE's statement closes
			end = tj.start
			break
		}
		if tj.kind == tokWord && tj.depth == depth {
			switch tj.text {
			case "set":
				inSet = verb == "update"
			case "from":
				// IS [NOT] DISTINCT FROM stays in the SET list.
				inSet = inSet && r.isWord(j-1, "distinct")
			case "where", "returning":
				inSet = false
			}
			if tj.text == "where" && where < 0 {
				where = j
			}
			if tj.text == "returning" {
				end = tj.start
				break scan
			}
		}
		if inSet && tj.depth <= depth+1 && (tj.kind == tokWord || tj.kind == tokQuotedName) && table.isTenantColumn(tj.text) {
			return unsafeSQL("hand-written SQL may not set %s of %s; it belongs to the tenant", tj.text, table.name)
		}
	}
	filter := tenantFilter(table, ref)
	if where >= 0 {
		r.edits = append(r.edits,
			edit{at: r.toks[where].end, end: r.toks[where].end, text: " " + filter + " AND ("},
			edit{at: end, end: end, text: ")"})
	} else {
		r.edits = append(r.edits, edit{at: end, end: end, text: " WHERE " + filter + " "})
	}
	return nil
}

// insertTarget fills the tenant columns of an INSERT INTO {table} at i: the
// column list gains them first, and every VALUES row (or the SELECT) the
// tenant's arguments.
func (r *rewriter) insertTarget(i int, table Table) error {
	t := r.toks[i]
	r.edits = append(r.edits, edit{at: t.start, end: t.end, text: table.name})
	_, j := r.alias(i)
	j++
	if !r.isPunct(j, "(") {
		return unsafeSQL("hand-written SQL must name the columns of INSERT INTO {%s}", table.name)
	}
	depth := t.depth
	tenantValues := workspaceParam + ", "
	if table.scope == UserScoped {
		tenantValues += "\x00user, "
	}
	r.edits = append(r.edits, edit{at: r.toks[j].end, end: r.toks[j].end, text: strings.Join(table.tenantColumns(), ", ") + ", "})
	for j++; j < len(r.toks) && !(r.toks[j].depth == depth && r.isPunct(j, ")")); j++ {
		if tj := r.toks[j]; (tj.kind == tokWord || tj.kind == tokQuotedName) && table.isTenantColumn(tj.text) {
			return unsafeSQL("hand-written SQL may not insert %s into %s; the handle fills it", tj.text, table.name)
		}
	}
	j++
	switch {
	case r.isWord(j, "values"):
		for j++; r.isPunct(j, "("); {
			r.edits = append(r.edits, edit{at: r.toks[j].end, end: r.toks[j].end, text: tenantValues})
			for j++; j < len(r.toks) && !(r.toks[j].depth == depth && r.isPunct(j, ")")); j++ {
			}
			if j++; !r.isPunct(j, ",") {
				break
			}
			j++
		}
	case r.isWord(j, "select"):
		if r.isWord(j+1, "distinct", "all") {
			return unsafeSQL("hand-written SQL may not INSERT ... SELECT DISTINCT into {%s}", table.name)
		}
		r.edits = append(r.edits, edit{at: r.toks[j].end, end: r.toks[j].end, text: " " + strings.TrimSuffix(tenantValues, " ")})
		j++
	default:
		return unsafeSQL("hand-written SQL must follow INSERT INTO {%s} (...) with VALUES or SELECT", table.name)
	}
	// The rest of the INSERT: no second SELECT whose rows would name their
	// own workspace, and no conflict action that moves a row.
	inSet := false
	for ; j < len(r.toks); j++ {
		tj := r.toks[j]
		if tj.depth < depth {
			break
		}
		if tj.depth == depth && tj.kind == tokWord {
			switch tj.text {
			case "union", "intersect", "except":
				return unsafeSQL("hand-written SQL may not use %s in an INSERT INTO {%s}", strings.ToUpper(tj.text), table.name)
			case "set":
				inSet = true
			case "where", "returning":
				inSet = false
			case "conflict":
				if err := r.conflictTarget(j, table); err != nil {
					return err
				}
			}
		}
		if inSet && tj.depth <= depth+1 && (tj.kind == tokWord || tj.kind == tokQuotedName) && table.isTenantColumn(tj.text) {
			return unsafeSQL("hand-written SQL may not set %s of %s; it belongs to the tenant", tj.text, table.name)
		}
	}
	return nil
}

// conflictTarget checks the arbiter of an INSERT INTO {table}'s ON
// CONFLICT at j: it must begin with the tenant columns, as every unique key
// of a tenant table does, so that a conflict can only be with the tenant's
// own row (a key unique across tenants would let DO UPDATE rewrite, and
// RETURNING show, another tenant's row). ON CONSTRAINT names no columns to
// check; DO NOTHING without an arbiter changes no row.
func (r *rewriter) conflictTarget(j int, table Table) error {
	switch {
	case r.isWord(j+1, "on") && r.isWord(j+2, "constraint"):
		return unsafeSQL("hand-written SQL may not use ON CONFLICT ON CONSTRAINT with {%s}; name the columns, tenant columns first", table.name)
	case r.isWord(j+1, "do"):
		if r.isWord(j+2, "nothing") {
			return nil
		}
		return unsafeSQL("hand-written SQL must name the conflict columns of {%s}, tenant columns first", table.name)
	case !r.isPunct(j+1, "("):
		return unsafeSQL("hand-written SQL has an ON CONFLICT it cannot read")
	}
	for k, c := range table.tenantColumns() {
		if tok := r.tok(j + 2 + 2*k); !((tok.kind == tokWord || tok.kind == tokQuotedName) && tok.text == c) ||
			!(r.isPunct(j+3+2*k, ",") || r.isPunct(j+3+2*k, ")")) {
			return unsafeSQL("hand-written SQL's ON CONFLICT of {%s} must begin with %s", table.name, strings.Join(table.tenantColumns(), ", "))
		}
	}
	return nil
}

// render applies the edits, then numbers the parameters: $1 is the
// workspace, $2 the user when the statement uses one, then the caller's.
func (r *rewriter) render() string {
	sort.SliceStable(r.edits, func(a, b int) bool { return r.edits[a].at < r.edits[b].at })
	var b strings.Builder
	pos := 0
	for _, e := range r.edits {
		b.WriteString(r.src[pos:e.at])
		b.WriteString(e.text)
		pos = e.end
	}
	b.WriteString(r.src[pos:])
	out := b.String()
	first := 2
	if r.withUser {
		out = strings.ReplaceAll(out, "\x00user", userParam)
		first = 3
	}
	// Highest first, so that \x00p1 is not read as the start of \x00p10.
	for n := len(r.params) - 1; n >= 0; n-- {
		out = strings.ReplaceAll(out, "\x00p"+strconv.Itoa(n), "$"+strconv.Itoa(first+n))
	}
	return out
}
