package usage_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// The zones the property test sums in: whole-hour offsets with daylight
// saving, half- and quarter-hour offsets, and Lord Howe, whose daylight
// saving moves its clocks by half an hour.
var propertyZones = []string{"UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham"}

// Days on or near daylight saving changes in those zones.
var propertyDays = []time.Time{
	time.Date(2024, 3, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 3, 30, 0, 0, 0, 0, time.UTC),
	time.Date(2024, 4, 5, 0, 0, 0, 0, time.UTC), time.Date(2024, 10, 4, 0, 0, 0, 0, time.UTC),
	time.Date(2024, 11, 2, 0, 0, 0, 0, time.UTC), time.Date(2025, 1, 29, 0, 0, 0, 0, time.UTC),
}

// Random, late, out-of-order, duplicated, corrected, voided and retained
// events: after any sequence of them, every summary (any range, window,
// zone and dimension) equals the raw GROUP BY of every event ever stored,
// as it stands now, deleted ones included (their rollups remain).
func TestSummariesEqualRawAggregates(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	raw := w.db.RawPool(t)
	// The shadow keeps every event the history ever held, as it is now.
	_, err := raw.Exec(ctx, `CREATE TABLE shadow_events (LIKE usage_events INCLUDING DEFAULTS, PRIMARY KEY (event_id))`)
	require.NoError(t, err)
	owners := tenancy.NewWorkspaces(nil)
	users := []tenancy.UserID{w.owners[0], w.owners[1], w.shared}
	dims := []usage.Dimension{usage.ByNone, usage.ByOperationType, usage.ByFeature, usage.ByUser, usage.ByModel, usage.ByUnit}
	windows := []usage.Window{usage.WholeRange, usage.Hourly, usage.Daily, usage.Weekly, usage.Monthly}

	checks, events := 0, 0
	defer func() {
		t.Logf("%d summaries compared, over %d events", checks, events)
		require.Positive(t, checks)
	}()
	rapid.Check(t, func(rt *rapid.T) {
		ws, err := owners.Create(ctx, w.db.Pool, tenancy.CreateWorkspaceParams{Name: "property", Owner: w.owners[0]})
		require.NoError(rt, err)
		tn := tenantOf(t, w.db.Pool, ws.ID)
		base := rapid.SampledFrom(propertyDays).Draw(rt, "day").Add(time.Duration(rapid.IntRange(0, 96).Draw(rt, "quarter")) * 15 * time.Minute)
		span := 9 * 24 * time.Hour
		var horizon time.Time // retention's, once it ran
		keys := map[string]usage.RecordParams{}
		seq := 0

		sync := func() {
			_, err := raw.Exec(ctx, `INSERT INTO shadow_events SELECT * FROM usage_events WHERE workspace_id = $1
				ON CONFLICT (event_id) DO UPDATE SET quantity = EXCLUDED.quantity, credits = EXCLUDED.credits, voided_at = EXCLUDED.voided_at`, ws.ID)
			require.NoError(rt, err)
		}
		newEvent := func(rt *rapid.T) usage.RecordParams {
			if len(keys) > 0 && rapid.IntRange(0, 9).Draw(rt, "repeat") == 0 {
				// A retry: the same key and request.
				ks := make([]string, 0, len(keys))
				for k := range keys {
					ks = append(ks, k)
				}
				slices.Sort(ks)
				return keys[rapid.SampledFrom(ks).Draw(rt, "key")]
			}
			seq++
			st := usage.Succeeded
			if rapid.IntRange(0, 4).Draw(rt, "failed") == 0 {
				st = usage.Failed
			}
			p := usage.RecordParams{
				User:          rapid.SampledFrom(users).Draw(rt, "user"),
				OperationType: rapid.SampledFrom(usage.BuiltinOperationTypes()[:4]).Draw(rt, "type"),
				FeatureKey:    rapid.SampledFrom([]string{"", "chat", "search"}).Draw(rt, "feature"),
				Model:         rapid.SampledFrom([]string{"", "m1", "m2"}).Draw(rt, "model"),
				Unit:          rapid.SampledFrom([]string{"", "input_tokens", "output_tokens"}).Draw(rt, "unit"),
				Status:        st,
				Quantity:      rapid.Int64Range(0, 5000).Draw(rt, "quantity"),
				Credits:       rapid.Int64Range(0, 90).Draw(rt, "credits"),
				// Anywhere in the span, in no order: late events among them.
				OccurredAt:     base.Add(time.Duration(rapid.Int64Range(0, int64(span/time.Microsecond)).Draw(rt, "at")) * time.Microsecond),
				IdempotencyKey: fmt.Sprint("p", seq),
			}
			keys[p.IdempotencyKey] = p
			return p
		}
		// live picks an event still stored and not voided, if any.
		live := func(rt *rapid.T) (usage.EventID, bool) {
			var ids []usage.EventID
			rows, err := raw.Query(ctx, `SELECT event_id FROM usage_events WHERE workspace_id = $1 AND voided_at IS NULL ORDER BY event_id`, ws.ID)
			require.NoError(rt, err)
			for rows.Next() {
				var id usage.EventID
				require.NoError(rt, rows.Scan(&id))
				ids = append(ids, id)
			}
			require.NoError(rt, rows.Err())
			if len(ids) == 0 {
				return usage.EventID{}, false
			}
			return rapid.SampledFrom(ids).Draw(rt, "event"), true
		}
		check := func(rt *rapid.T) {
			zone := rapid.SampledFrom(propertyZones).Draw(rt, "zone")
			from := base.Add(-time.Hour + time.Duration(rapid.IntRange(0, 9*96).Draw(rt, "from"))*15*time.Minute)
			to := from.Add(time.Duration(rapid.IntRange(1, 10*96).Draw(rt, "length")) * 15 * time.Minute)
			// An edge inside a quarter hour is summed from the events
			// themselves, so it must not fall where retention deleted them.
			if rapid.Bool().Draw(rt, "unaligned") {
				if !from.Before(horizon) {
					from = from.Add(time.Duration(rapid.IntRange(1, 899).Draw(rt, "from seconds")) * time.Second)
				}
				to = to.Add(-time.Duration(rapid.IntRange(1, 899).Draw(rt, "to seconds")) * time.Second)
				if to.Before(horizon) || !from.Before(to) {
					to = to.Add(-to.Sub(from) + 15*time.Minute).Truncate(15 * time.Minute).Add(15 * time.Minute)
				}
			}
			p := usage.SummaryParams{From: from, To: to, TimeZone: zone,
				Window: rapid.SampledFrom(windows).Draw(rt, "window"), By: rapid.SampledFrom(dims).Draw(rt, "by")}
			got, err := s.Summarize(ctx, tn, p)
			require.NoError(rt, err)
			requireSameSummary(rt, rawSummary(rt, raw, "shadow_events", ws.ID, p), got, p)
			checks++
		}

		rt.Repeat(map[string]func(*rapid.T){
			"record batch": func(rt *rapid.T) {
				var batch []usage.RecordParams
				fresh, retained := 0, 0
				seen := map[string]bool{}
				for range rapid.IntRange(1, 40).Draw(rt, "size") {
					p := newEvent(rt)
					batch = append(batch, p)
					var n int
					// A key still stored makes a duplicate; one deleted by
					// retention went with an event older than the horizon,
					// so its retry is refused, not counted again.
					require.NoError(rt, raw.QueryRow(ctx, `SELECT count(*) FROM usage_events WHERE workspace_id = $1 AND idempotency_key = $2`, ws.ID, p.IdempotencyKey).Scan(&n))
					switch {
					case n > 0 || seen[p.IdempotencyKey]:
					case p.OccurredAt.Before(horizon):
						retained++
					default:
						fresh++
					}
					seen[p.IdempotencyKey] = true
				}
				res, err := s.RecordBatch(ctx, tn, batch)
				require.NoError(rt, err)
				events += res.Inserted
				require.Equal(rt, fresh, res.Inserted)
				require.Len(rt, res.Rejected, retained)
				require.Equal(rt, len(batch), res.Inserted+res.Duplicates+len(res.Rejected))
				sync()
			},
			"record one": func(rt *rapid.T) {
				p := newEvent(rt)
				_, err := s.Record(ctx, tn, p)
				if p.OccurredAt.Before(horizon) {
					if err != nil {
						require.ErrorIs(rt, err, usage.ErrRetained)
					}
				} else {
					require.NoError(rt, err)
				}
				sync()
			},
			"void": func(rt *rapid.T) {
				if id, ok := live(rt); ok {
					_, err := s.Void(ctx, tn, usage.VoidParams{Event: id, Reason: "property"})
					require.NoError(rt, err)
					sync()
				}
			},
			"correct": func(rt *rapid.T) {
				if id, ok := live(rt); ok {
					q, c := rapid.Int64Range(0, 9000).Draw(rt, "new quantity"), rapid.Int64Range(0, 90).Draw(rt, "new credits")
					_, err := s.Correct(ctx, tn, usage.CorrectParams{Event: id, Quantity: &q, Credits: &c, Reason: "property"})
					require.NoError(rt, err)
					sync()
				}
			},
			"retain": func(rt *rapid.T) {
				cut := base.Add(time.Duration(rapid.IntRange(0, 4*96).Draw(rt, "cut")) * 15 * time.Minute)
				res, err := s.DeleteBefore(ctx, tn, usage.DeleteBeforeParams{Before: cut, BatchSize: rapid.IntRange(1, 50).Draw(rt, "batch")})
				require.NoError(rt, err)
				if cut.After(horizon) {
					horizon = cut
				}
				require.True(rt, horizon.Equal(res.Horizon))
			},
			"summarize": check,
			"":          check,
		})
	})
}
