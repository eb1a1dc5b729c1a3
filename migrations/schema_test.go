package migrations_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

type constraint struct {
	Table, Name, Type, RefTable string
	Columns, RefColumns         []string
}

func loadConstraints(t *testing.T, db pgtest.DB) []constraint {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT c.conrelid::regclass::text, c.conname, c.contype::text, coalesce(c.confrelid::regclass::text, ''),
		       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
		       ARRAY(SELECT a.attname::text FROM unnest(coalesce(c.confkey, '{}')) WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
		  FROM pg_constraint c
		 WHERE c.connamespace = 'public'::regnamespace AND c.contype IN ('p', 'u', 'f')
		   AND c.conrelid::regclass::text <> 'meterbase_schema_migrations'`)
	require.NoError(t, err)
	cons, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (constraint, error) {
		var c constraint
		err := r.Scan(&c.Table, &c.Name, &c.Type, &c.RefTable, &c.Columns, &c.RefColumns)
		return c, err
	})
	require.NoError(t, err)
	require.NotEmpty(t, cons)
	return cons
}

func tenantTables(t *testing.T, db pgtest.DB) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT table_name::text FROM information_schema.columns
		 WHERE table_schema = 'public' AND column_name = 'workspace_id' ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, tables, "workspaces")
	require.Contains(t, tables, "memberships")
	return tables
}

// Every key of a tenant table includes workspace_id, so a row can only ever
// be found, made unique or referenced within its own workspace.
func TestTenantKeysIncludeWorkspace(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	tenant := tenantTables(t, *db)
	for _, c := range loadConstraints(t, *db) {
		if !slices.Contains(tenant, c.Table) {
			continue
		}
		switch c.Type {
		case "p", "u":
			require.Contains(t, c.Columns, "workspace_id", "%s: key %s", c.Table, c.Name)
		case "f":
			if !slices.Contains(tenant, c.RefTable) {
				continue // a reference to a global catalog (users, features)
			}
			i := slices.Index(c.Columns, "workspace_id")
			require.GreaterOrEqual(t, i, 0, "%s: foreign key %s must include workspace_id", c.Table, c.Name)
			require.Equal(t, "workspace_id", c.RefColumns[i], "%s: foreign key %s must match workspace_id to workspace_id", c.Table, c.Name)
		}
	}
	// Unique indexes made outside constraints count too.
	rows, err := db.Pool.Query(context.Background(), `
		SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
		  FROM pg_index i WHERE i.indisunique AND i.indrelid::regclass::text = ANY($1)`, tenant)
	require.NoError(t, err)
	for rows.Next() {
		var table, index, def string
		require.NoError(t, rows.Scan(&table, &index, &def))
		require.Contains(t, def, "workspace_id", "%s: unique index %s", table, index)
	}
	require.NoError(t, rows.Err())
}

// Every foreign key has an index whose leading columns are the key's, so
// that deleting a referenced row does not scan the referencing table.
func TestForeignKeysHaveIndexes(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	rows, err := db.Pool.Query(context.Background(), `
		SELECT indrelid::regclass::text,
		       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
		  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
		 WHERE c.relnamespace = 'public'::regnamespace AND i.indisvalid`)
	require.NoError(t, err)
	indexes := map[string][][]string{}
	for rows.Next() {
		var table string
		var cols []string
		require.NoError(t, rows.Scan(&table, &cols))
		indexes[table] = append(indexes[table], cols)
	}
	require.NoError(t, rows.Err())

	fks := 0
	for _, c := range loadConstraints(t, *db) {
		if c.Type != "f" {
			continue
		}
		fks++
		supported := slices.ContainsFunc(indexes[c.Table], func(idx []string) bool {
			if len(idx) < len(c.Columns) {
				return false
			}
			lead := slices.Clone(idx[:len(c.Columns)])
			want := slices.Clone(c.Columns)
			slices.Sort(lead)
			slices.Sort(want)
			return slices.Equal(lead, want)
		})
		require.True(t, supported, fmt.Sprintf("%s: foreign key %s %v has no index starting with its columns", c.Table, c.Name, c.Columns))
	}
	require.Positive(t, fks)
}
