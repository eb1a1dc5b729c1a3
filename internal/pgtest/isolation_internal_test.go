package pgtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// recorder collects what CheckIsolation reports.
type recorder struct{ errors []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

// CheckIsolation catches a call that reads, or writes, another
// workspace's rows, in each role, and passes one that does neither.
func TestCheckIsolationCatchesLeaks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := NewDB(t)
	raw := db.RawPool(t)
	ws := [3]uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for i, id := range ws {
		// A workspace is born with its owner, in one transaction.
		owner := uuid.New()
		_, err := raw.Exec(ctx, `
			WITH u AS (INSERT INTO users (user_id, email) VALUES ($3, $4)),
			     w AS (INSERT INTO workspaces (workspace_id, name) VALUES ($1, $2))
			INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $3, 'owner')`,
			id, fmt.Sprint("w", i), owner, fmt.Sprintf("owner%d@example.com", i))
		require.NoError(t, err)
	}
	tenant := func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, isolationMarker+`SELECT set_config('meterbase.workspace_id', $1, true)`, ws[0].String())
		return err
	}
	check := func(sql string) []string {
		var r recorder
		db.checkIsolation(t, &r, ws[0], ws[1:], func(ctx context.Context, tx pgx.Tx) (any, error) {
			if err := tenant(ctx, tx); err != nil {
				return nil, err
			}
			var got string
			if err := tx.QueryRow(ctx, isolationMarker+sql, ws[0]).Scan(&got); err != nil {
				return nil, err
			}
			// Put back the context, as a call in a host's transaction must.
			_, err := tx.Exec(ctx, isolationMarker+`SELECT set_config('meterbase.workspace_id', '', true)`)
			return got, err
		})
		return r.errors
	}
	require.Empty(t, check(`SELECT string_agg(name, ',') FROM workspaces WHERE workspace_id = $1`))

	reads := check(`SELECT string_agg(name, ',' ORDER BY name) || $1::text FROM workspaces`)
	require.Len(t, reads, 1, "the superuser reads B and C; row-level security stops the owner and the application role: %v", reads)
	require.Contains(t, reads[0], "result depends on other workspaces' rows")
	require.Contains(t, reads[0], "superuser")

	writes := check(`WITH u AS (UPDATE workspaces SET name = name || '!' WHERE workspace_id <> $1 RETURNING 1) SELECT count(*)::text FROM u`)
	require.NotEmpty(t, writes)
	require.True(t, strings.Contains(strings.Join(writes, "\n"), "changed rows of other workspaces"), "%v", writes)
}
