-- The second half of a summary: sums the rollup buckets and the stretches
-- of events that summary_pieces chose, each group of them given as arrays
-- of [lo, hi) ranges (day, hour and quarter-hour buckets; events), and the
-- first two stretches of events, the range's own edges when it starts or
-- ends inside a quarter hour, as plain bounds. Postgres plans it knowing
-- how many ranges there are and, for the edges, how many events they hold.
--
-- Each range is one index range scan, run once (OFFSET 0 keeps it a
-- subquery of its own, whatever the statistics of the moment). Rows are
-- grouped by date_trunc(@window, start, @time_zone), the test
-- summary_pieces applied, and by the dimension's value.
WITH parts AS (
    SELECT r.at, r.value, r.events, r.failed, r.quantity, r.credits
      FROM unnest(@day_los::timestamptz[], @day_his::timestamptz[]) AS g (lo, hi)
     CROSS JOIN LATERAL (
           SELECT ru.bucket AS at, ru.value, ru.events, ru.failed, ru.quantity, ru.credits
             FROM {usage_rollups} ru
            WHERE ru.dimension = @dimension::text AND ru.grain = 1440 AND ru.bucket >= g.lo AND ru.bucket < g.hi
              AND (@values::text[] IS NULL OR ru.value = ANY (@values::text[]))
           OFFSET 0) r
    UNION ALL
    SELECT r.at, r.value, r.events, r.failed, r.quantity, r.credits
      FROM unnest(@hour_los::timestamptz[], @hour_his::timestamptz[]) AS g (lo, hi)
     CROSS JOIN LATERAL (
           SELECT ru.bucket AS at, ru.value, ru.events, ru.failed, ru.quantity, ru.credits
             FROM {usage_rollups} ru
            WHERE ru.dimension = @dimension::text AND ru.grain = 60 AND ru.bucket >= g.lo AND ru.bucket < g.hi
              AND (@values::text[] IS NULL OR ru.value = ANY (@values::text[]))
           OFFSET 0) r
    UNION ALL
    SELECT r.at, r.value, r.events, r.failed, r.quantity, r.credits
      FROM unnest(@quarter_los::timestamptz[], @quarter_his::timestamptz[]) AS g (lo, hi)
     CROSS JOIN LATERAL (
           SELECT ru.bucket AS at, ru.value, ru.events, ru.failed, ru.quantity, ru.credits
             FROM {usage_rollups} ru
            WHERE ru.dimension = @dimension::text AND ru.grain = 15 AND ru.bucket >= g.lo AND ru.bucket < g.hi
              AND (@values::text[] IS NULL OR ru.value = ANY (@values::text[]))
           OFFSET 0) r
    UNION ALL
    SELECT e.at, e.value, 1, e.failed, e.quantity, e.credits
      FROM (SELECT ev.occurred_at AS at,
                   CASE @dimension::text
                       WHEN 'total' THEN ''
                       WHEN 'operation_type' THEN ev.operation_type
                       WHEN 'feature' THEN ev.feature_key
                       WHEN 'user' THEN ev.user_id::text
                       WHEN 'model' THEN ev.model
                       WHEN 'unit' THEN ev.unit
                   END AS value,
                   (ev.status = 'failed')::int AS failed, ev.quantity, ev.credits
              FROM {usage_events} ev
             WHERE ev.voided_at IS NULL
               AND ((ev.occurred_at >= @edge1_lo::timestamptz AND ev.occurred_at < @edge1_hi::timestamptz)
                 OR (ev.occurred_at >= @edge2_lo::timestamptz AND ev.occurred_at < @edge2_hi::timestamptz))) e
     WHERE @values::text[] IS NULL OR e.value = ANY (@values::text[])
    UNION ALL
    SELECT e.at, e.value, 1, e.failed, e.quantity, e.credits
      FROM unnest(@raw_los::timestamptz[], @raw_his::timestamptz[]) AS g (lo, hi)
     CROSS JOIN LATERAL (
           SELECT ev.occurred_at AS at,
                  CASE @dimension::text
                      WHEN 'total' THEN ''
                      WHEN 'operation_type' THEN ev.operation_type
                      WHEN 'feature' THEN ev.feature_key
                      WHEN 'user' THEN ev.user_id::text
                      WHEN 'model' THEN ev.model
                      WHEN 'unit' THEN ev.unit
                  END AS value,
                  (ev.status = 'failed')::int AS failed, ev.quantity, ev.credits
             FROM {usage_events} ev
            WHERE ev.occurred_at >= g.lo AND ev.occurred_at < g.hi AND ev.voided_at IS NULL
           OFFSET 0) e
     WHERE @values::text[] IS NULL OR e.value = ANY (@values::text[])
)
SELECT CASE WHEN @window::text = '' THEN NULL ELSE date_trunc(@window::text, x.at, @time_zone::text) END AS window_start,
       CASE WHEN @by_value::bool THEN x.value ELSE '' END AS value,
       sum(x.events) AS events, sum(x.failed) AS failed, sum(x.quantity) AS quantity, sum(x.credits) AS credits
  FROM parts x
 GROUP BY 1, 2
HAVING sum(x.events) <> 0 OR sum(x.failed) <> 0 OR sum(x.quantity) <> 0 OR sum(x.credits) <> 0
 ORDER BY 1, 2
