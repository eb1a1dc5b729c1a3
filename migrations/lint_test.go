package migrations_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/migrations"
)

// headerKeys must open every migration file: what a host's DBA needs to
// judge the file before it runs on a large, busy database.
var headerKeys = []string{"changes", "locks", "rewrites", "scans", "large-table cost", "down loses data", "rollback"}

func TestLintMigrationFiles(t *testing.T) {
	t.Parallel()
	list, err := migrations.Load(migrations.FS())
	require.NoError(t, err, "files must be paired and numbered without gaps")
	require.NotEmpty(t, list)
	for _, m := range list {
		for _, f := range []migrations.File{m.Up, m.Down} {
			for _, key := range headerKeys {
				require.NotEmpty(t, f.Header[key], "%s: header line %q is missing", f.Path, "-- "+key+": ...")
			}
			statements := migrations.SQLStatements(f.SQL)
			if !migrations.IsTransactional(f.SQL) {
				require.Len(t, statements, 1, "%s: a CONCURRENTLY statement must stand alone in its file", f.Path)
				require.Regexp(t, `(?i)\bCONCURRENTLY\b`, statements[0], "%s: only CONCURRENTLY keeps a file from being one transaction", f.Path)
				require.Contains(t, f.SQL, "-- squawk-disable-assume-in-transaction", "%s: tell squawk this file runs outside a transaction", f.Path)
			} else {
				require.True(t, migrations.IsTransactional(f.SQL))
				require.NotContains(t, f.SQL, "squawk-disable-assume-in-transaction", "%s: this file runs as one transaction", f.Path)
				// A file that runs as one transaction must not leave a busy
				// table's queries queued behind its locks: it bounds its lock
				// waits and its run time before anything else, with SET LOCAL
				// (a plain SET would outlive the file on the host's pooled
				// connection), in the exact form the migrator's tests rewrite.
				require.GreaterOrEqual(t, len(statements), 3, "%s", f.Path)
				lock := lockTimeoutLine.FindStringSubmatch(statements[0] + ";")
				require.NotNil(t, lock, "%s: the first statement must be SET LOCAL lock_timeout = '...'", f.Path)
				stmt := statementTimeoutLine.FindStringSubmatch(statements[1] + ";")
				require.NotNil(t, stmt, "%s: the second statement must be SET LOCAL statement_timeout = '...'", f.Path)
				require.Len(t, lockTimeoutLine.FindAllString(f.SQL, -1), 1, "%s: one lock_timeout", f.Path)
				lockTimeout, statementTimeout := pgDuration(t, lock[1]), pgDuration(t, stmt[1])
				require.True(t, lockTimeout > 0 && lockTimeout <= 10*time.Second,
					"%s: lock_timeout %s: queries queue behind a waiting migration for this long; keep it within 10s", f.Path, lock[1])
				require.True(t, statementTimeout > 0 && statementTimeout <= 10*time.Minute,
					"%s: statement_timeout %s: a file that needs longer must be split (batches, NOT VALID + VALIDATE, CONCURRENTLY)", f.Path, stmt[1])
			}
			// Adding a constraint NOT VALID only pays off when VALIDATE
			// runs in a later transaction, under a weaker lock.
			if strings.Contains(strings.ToUpper(f.SQL), "NOT VALID") {
				require.NotContains(t, strings.ToUpper(f.SQL), "VALIDATE CONSTRAINT", "%s: VALIDATE a NOT VALID constraint in a later migration", f.Path)
			}
			require.NotContains(t, strings.ToUpper(f.SQL), "BEGIN;", "%s: files run as one transaction already", f.Path)
			// The host owns its connections' search_path. (A function may
			// pin its own with SET search_path FROM CURRENT.)
			require.NotRegexp(t, setsSearchPath, f.SQL, "%s: migrations never set the session's search_path", f.Path)
		}
	}
}

var (
	lockTimeoutLine      = regexp.MustCompile(`(?m)^SET LOCAL lock_timeout = '([^']*)';`)
	statementTimeoutLine = regexp.MustCompile(`(?m)^SET LOCAL statement_timeout = '([^']*)';`)
	pgDurationText       = regexp.MustCompile(`^(\d+)(ms|s|min)$`)
)

// pgDuration reads the few duration forms the migration files use.
func pgDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	m := pgDurationText.FindStringSubmatch(s)
	require.NotNil(t, m, "duration %q: write it as Nms, Ns or Nmin", s)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	unit := map[string]time.Duration{"ms": time.Millisecond, "s": time.Second, "min": time.Minute}[m[2]]
	return time.Duration(n) * unit
}

// Every squawk rule left off, for every file or for one statement, is
// explained in .squawk.toml.
func TestSquawkExceptionsDocumented(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../.squawk.toml")
	require.NoError(t, err)
	config := string(raw)
	excluded := regexp.MustCompile(`(?m)^excluded_rules\s*=\s*\[([^\]]*)\]`).FindStringSubmatch(config)
	require.NotNil(t, excluded, ".squawk.toml: list the excluded rules, even when there are none")
	rules := regexp.MustCompile(`"([a-z-]+)"`).FindAllStringSubmatch(excluded[1], -1)
	ignore := regexp.MustCompile(`(?m)^\s*-- squawk-ignore(?:-file)? (.+)$`)
	for _, m := range migrations.List() {
		for _, f := range []migrations.File{m.Up, m.Down} {
			for _, line := range ignore.FindAllStringSubmatch(f.SQL, -1) {
				for rule := range strings.SplitSeq(line[1], ",") {
					rules = append(rules, []string{"", strings.TrimSpace(rule)})
				}
			}
		}
	}
	for _, r := range rules {
		explained := regexp.MustCompile(`(?m)^#.*\b` + regexp.QuoteMeta(r[1]) + `\b`).MatchString(config)
		require.True(t, explained, ".squawk.toml: say in a comment why squawk's %s is left off", r[1])
	}
}

var setsSearchPath = regexp.MustCompile(`(?im)^\s*SET\s+(SESSION\s+|LOCAL\s+)?search_path\b|set_config\(\s*'search_path'`)

func TestLoadRejectsBadLayouts(t *testing.T) {
	t.Parallel()
	f := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for name, fsys := range map[string]fstest.MapFS{
		"unpaired":   {"0001_a.up.sql": f("SELECT 1;")},
		"gap":        {"0001_a.up.sql": f(""), "0001_a.down.sql": f(""), "0003_c.up.sql": f(""), "0003_c.down.sql": f("")},
		"not zero":   {"0000_a.up.sql": f(""), "0000_a.down.sql": f("")},
		"bad name":   {"1_a.up.sql": f(""), "1_a.down.sql": f("")},
		"two names":  {"0001_a.up.sql": f(""), "0001_b.down.sql": f("")},
		"stray file": {"0001_a.up.sql": f(""), "0001_a.down.sql": f(""), "README.md": f("")},
	} {
		_, err := migrations.Load(fsys)
		require.Error(t, err, name)
	}
}

func TestHeaderParsed(t *testing.T) {
	t.Parallel()
	m := migrations.List()[0]
	require.Equal(t, "0001_tenancy.up.sql", m.Up.Path)
	require.Equal(t, "tenancy", m.Name)
	require.Contains(t, m.Up.Header["changes"], "users")
}

func TestSearchPathRule(t *testing.T) {
	t.Parallel()
	for _, sql := range []string{"SET search_path = public;", "  set local search_path to x;", "SELECT set_config('search_path', 'x', false);"} {
		require.Regexp(t, setsSearchPath, sql)
	}
	require.NotRegexp(t, setsSearchPath, "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT 1 $$;")
}
