package pgtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Review 1: leaking calls that CheckIsolation passes. Each subtest is a
// call that crosses the tenant boundary; CheckIsolation should report it,
// and a failing subtest is a gap in the proof.
func TestReviewCheckIsolationGaps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := NewDB(t)
	raw := db.RawPool(t)
	ws := [3]uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	users := [3]uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for i := range ws {
		_, err := raw.Exec(ctx, `INSERT INTO users (user_id, email) VALUES ($1, $2)`, users[i], fmt.Sprintf("u%d@example.com", i))
		require.NoError(t, err)
		_, err = raw.Exec(ctx, `WITH w AS (INSERT INTO workspaces (workspace_id, name) VALUES ($1, $2))
			INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $3, 'owner')`, ws[i], fmt.Sprint("w", i), users[i])
		require.NoError(t, err)
	}
	asTenant := func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, isolationMarker+`SELECT set_config('meterbase.workspace_id', $1, true)`, ws[0].String())
		return err
	}
	check := func(run IsolationRun) []string {
		var r recorder
		db.checkIsolation(t, &r, ws[0], ws[1:], run)
		return r.errors
	}

	t.Run("reads a user of B only (users are global and never removed)", func(t *testing.T) {
		errs := check(func(ctx context.Context, tx pgx.Tx) (any, error) {
			if err := asTenant(ctx, tx); err != nil {
				return nil, err
			}
			var email string
			err := tx.QueryRow(ctx, isolationMarker+`SELECT email FROM users WHERE user_id = $1`, users[1]).Scan(&email)
			return email, err
		})
		require.NotEmpty(t, errs, "a tenant read B's owner's email, and CheckIsolation passed it")
	})

	t.Run("leaves the operator's reach set in the host's transaction", func(t *testing.T) {
		errs := check(func(ctx context.Context, tx pgx.Tx) (any, error) {
			if err := asTenant(ctx, tx); err != nil {
				return nil, err
			}
			_, err := tx.Exec(ctx, isolationMarker+`SELECT set_config('meterbase.operator', 'left behind', true)`)
			return nil, err
		})
		require.NotEmpty(t, errs, "the host's next statement in its transaction reads every tenant, and CheckIsolation passed it")
	})

	t.Run("reads another tenant's values from pg_stats", func(t *testing.T) {
		_, err := raw.Exec(ctx, `ANALYZE workspaces`)
		require.NoError(t, err)
		errs := check(func(ctx context.Context, tx pgx.Tx) (any, error) {
			var sample *string
			err := tx.QueryRow(ctx, isolationMarker+`SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'workspaces' AND attname = 'name'`).Scan(&sample)
			return sample, err
		})
		require.NotEmpty(t, errs, "the call read w1 and w2 (B's and C's names) from pg_stats, and CheckIsolation passed it")
	})

	t.Run("takes a session advisory lock that outlives the host's transaction", func(t *testing.T) {
		errs := check(func(ctx context.Context, tx pgx.Tx) (any, error) {
			_, err := tx.Exec(ctx, isolationMarker+`SELECT pg_advisory_lock(77)`)
			return nil, err
		})
		var held int
		require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77`).Scan(&held))
		require.NotEmpty(t, errs, "%d session advisory lock(s) still held after CheckIsolation rolled everything back, and it passed the call", held)
	})

	t.Run("writes a tenant table created after NewDB", func(t *testing.T) {
		_, err := raw.Exec(ctx, `CREATE TABLE notes (workspace_id uuid NOT NULL, body text NOT NULL)`)
		require.NoError(t, err)
		_, err = raw.Exec(ctx, `INSERT INTO notes VALUES ($1, 'B''s note')`, ws[1])
		require.NoError(t, err)
		errs := check(func(ctx context.Context, tx pgx.Tx) (any, error) {
			tag, err := tx.Exec(ctx, isolationMarker+`UPDATE notes SET body = 'overwritten by A'`)
			return tag.RowsAffected() > 0, err
		})
		require.NotEmpty(t, errs, "the call overwrote B's note, and CheckIsolation (whose table list was read at NewDB) passed it")
	})
}
