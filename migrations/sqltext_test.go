package migrations_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/migrations"
)

// What counts as code: comments of both kinds do not, whatever they hold;
// literals, quoted identifiers and dollar-quoted bodies keep what looks
// like a comment or a semicolon inside them.
func TestSQLStatements(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT 1 -- one; two\n; SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"/* a; b */ SELECT 1; /* outer /* nested; */ still; */ SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT '--;' ; SELECT '/*;'", []string{"SELECT '--;'", "SELECT '/*;'"}},
		{"SELECT 'it''s; here'; SELECT E'\\'; x'", []string{"SELECT 'it''s; here'", "SELECT E'\\'; x'"}},
		{`SELECT "a;""b"; SELECT 2`, []string{`SELECT "a;""b"`, "SELECT 2"}},
		{"DO $x$ BEGIN PERFORM 1; END $x$; SELECT $$;$$", []string{"DO $x$ BEGIN PERFORM 1; END $x$", "SELECT $$;$$"}},
		{"SELECT a$b$ FROM t; SELECT $1;", []string{"SELECT a$b$ FROM t", "SELECT $1"}},
		{"SELECT 1 /* unterminated; ", []string{"SELECT 1"}},
		{";;  -- only a comment\n", nil},
	} {
		require.Equal(t, tc.want, migrations.SQLStatements(tc.sql), "%q", tc.sql)
	}
	// Offsets into the code are offsets into the text.
	sql := "SELECT 1; /* x\ny */ -- z\nSELECT 'é'"
	require.Len(t, migrations.SQLCode(sql), len(sql))
	require.Equal(t, "SELECT 1;"+strings.Repeat(" ", 5)+"\n"+strings.Repeat(" ", 9)+"\nSELECT 'é'", migrations.SQLCode(sql))
}

// A file is one transaction unless CONCURRENTLY is in its code or a
// statement of its own opens or ends a transaction. The word in a comment of
// either kind changes nothing; in a literal it counts, as a doubt must.
func TestIsTransactional(t *testing.T) {
	t.Parallel()
	for sql, want := range map[string]bool{
		"CREATE INDEX CONCURRENTLY i ON t (a);":                                                             false,
		"create index concurrently i on t (a);":                                                             false,
		"-- squawk-disable-assume-in-transaction\nDROP INDEX CONCURRENTLY i;":                               false,
		"SET LOCAL lock_timeout = '5s';\nCREATE INDEX i ON t (a); -- not CONCURRENTLY: t is new\n":          true,
		"SET LOCAL lock_timeout = '5s';\n/* Not CONCURRENTLY:\n   t is new. */\nCREATE INDEX i ON t (a);\n": true,
		"/* /* nested */ CONCURRENTLY */ CREATE INDEX i ON t (a);":                                          true,
		"COMMENT ON INDEX i IS 'built concurrently';":                                                       false,
		"CREATE TABLE concurrently_built (a int);":                                                          true,
		"CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);":                                       false,
		"BEGIN;\nCREATE TABLE a (id int);\nEND;":                                                            false,
		"CREATE TABLE a (id int);\nrollback;":                                                               false,
		"DO $$ BEGIN PERFORM 1; END $$;\nCOMMENT ON TABLE a IS 'x';":                                        true,
	} {
		require.Equal(t, want, migrations.IsTransactional(sql), "%q", sql)
	}
}

// A lock_timeout inside a comment is no setting.
func TestLockTimeoutOfIgnoresComments(t *testing.T) {
	t.Parallel()
	require.Equal(t, "5s", migrations.LockTimeoutOf("-- x\nSET LOCAL lock_timeout = '5s';\nSELECT 1;"))
	require.Empty(t, migrations.LockTimeoutOf("/*\nSET LOCAL lock_timeout = '5s';\n*/\nSELECT 1;"))
	require.Equal(t, "1s", migrations.LockTimeoutOf("/*\nSET LOCAL lock_timeout = '5s';\n*/\nSET LOCAL lock_timeout = '1s';"))
}
