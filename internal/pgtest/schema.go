package pgtest

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// schemaQueries describe everything a migration can create in a database,
// each row rendered as text, in a stable order.
var schemaQueries = []string{
	`SELECT 'relation ' || n.nspname || '.' || c.relname || ' kind=' || c.relkind::text || ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity
	   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I')
	  ORDER BY 1`,
	`SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
	   FROM information_schema.columns
	  WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
	  ORDER BY 1`,
	`SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	   FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
	  ORDER BY 1`,
	`SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	  WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
	  ORDER BY 1`,
	`SELECT 'policy ' || schemaname || '.' || tablename || ' ' || policyname || ' ' || permissive || ' ' || array_to_string(roles, ',') || ' ' || cmd || ' using=' || coalesce(qual, '') || ' check=' || coalesce(with_check, '')
	   FROM pg_policies ORDER BY 1`,
	`SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid))
	   FROM pg_proc p WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
	  ORDER BY 1`,
	`SELECT 'trigger ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`,
	`SELECT 'type ' || t.typname || ' ' || t.typtype::text FROM pg_type t
	  WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
	    AND t.typtype IN ('e', 'd', 'c') AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
	  ORDER BY 1`,
	`SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('information_schema') ORDER BY 1`,
}

// Schema renders the database's schema (relations, columns, constraints,
// indexes, policies, functions, triggers and types outside the system
// catalogs) as sorted text lines, so that two schemas compare with ==.
func Schema(tb testing.TB, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) string {
	tb.Helper()
	var b strings.Builder
	for _, q := range schemaQueries {
		rows, err := db.Query(context.Background(), q)
		if err != nil {
			tb.Fatalf("pgtest: read schema: %v\n%s", err, q)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			tb.Fatalf("pgtest: read schema: %v\n%s", err, q)
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
