package migrations_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/migrations"
)

// headerKeys must open every migration file: what a host's DBA needs to
// judge the file before it runs on a large, busy database.
var headerKeys = []string{"changes", "locks", "rewrites", "large-table cost", "down loses data", "rollback"}

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
			statements := splitStatements(f.SQL)
			if strings.Contains(strings.ToUpper(f.SQL), "CONCURRENTLY") {
				require.Len(t, statements, 1, "%s: a CONCURRENTLY statement must stand alone in its file", f.Path)
				require.False(t, migrations.IsTransactional(f.SQL))
			} else {
				require.True(t, migrations.IsTransactional(f.SQL))
				// A file that runs as one transaction must not leave a busy
				// table's queries queued behind its locks.
				require.Contains(t, f.SQL, "SET LOCAL lock_timeout", "%s: set a lock_timeout", f.Path)
				require.Contains(t, f.SQL, "SET LOCAL statement_timeout", "%s: set a statement_timeout", f.Path)
			}
			require.NotContains(t, strings.ToUpper(f.SQL), "BEGIN;", "%s: files run as one transaction already", f.Path)
			require.NotContains(t, strings.ToLower(f.SQL), "search_path", "%s: migrations never set search_path", f.Path)
		}
	}
}

// splitStatements is a rough split on semicolons outside comments, enough
// for counting the statements of a migration file (no dollar quoting).
func splitStatements(sql string) []string {
	var code strings.Builder
	for line := range strings.Lines(sql) {
		c, _, _ := strings.Cut(line, "--")
		code.WriteString(c)
	}
	var out []string
	for s := range strings.SplitSeq(code.String(), ";") {
		if strings.TrimSpace(s) != "" {
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}

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
