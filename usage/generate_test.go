package usage_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
)

// generateEvents writes n events of workspace ws straight into
// usage_events, in SQL, spread evenly over [start, start+span), chunk rows
// per statement: the rollups follow through the table's triggers, as they
// do for any insert. Users, operation types, features, models and statuses
// cycle; keys are prefix-numbered.
func generateEvents(t testing.TB, raw *pgxpool.Pool, ws tenancy.WorkspaceID, n int, start time.Time, span time.Duration, prefix string, chunk int) {
	t.Helper()
	step := span / time.Duration(n)
	for first := 0; first < n; first += chunk {
		last := min(first+chunk, n)
		_, err := raw.Exec(ctx, `
			INSERT INTO usage_events (workspace_id, event_id, user_id, operation_type, feature_key, unit, quantity, credits,
			                          model, status, idempotency_key, request_hash, occurred_at)
			SELECT $1, gen_random_uuid(),
			       ('00000000-0000-4000-8000-' || lpad((g % 20)::text, 12, '0'))::uuid,
			       (ARRAY['chat.completion', 'embedding', 'image.generation', 'rerank'])[g % 4 + 1],
			       (ARRAY['chat', 'search', 'draw'])[g % 3 + 1],
			       (ARRAY['input_tokens', 'output_tokens'])[g % 2 + 1],
			       g % 4000, g % 50,
			       (ARRAY['gpt-large', 'gpt-small', 'embed-3'])[g % 3 + 1],
			       CASE WHEN g % 17 = 0 THEN 'failed' ELSE 'succeeded' END,
			       $2 || g, decode(md5($2 || g), 'hex'),
			       $3::timestamptz + g * $4::interval
			  FROM generate_series($5::int, $6::int - 1) g`,
			ws, prefix, start, step, first, last)
		require.NoError(t, err, fmt.Sprintf("events %d to %d", first, last))
	}
}
