-- Sums a workspace's usage over [@from, @to), by window of @window in
-- @time_zone (or over the whole range) and by value of @dimension, exactly
-- as a GROUP BY of the events on date_trunc(@window, occurred_at,
-- @time_zone) would, but from the rollups:
--
--   - a UTC day whose every instant falls in one window (and the range)
--     is read from its day rollup rows;
--   - the hours of the other days, likewise, from hour rows;
--   - the quarter hours of the other hours from 15-minute rows;
--   - and what is left, quarter hours that a window or the range cuts,
--     from the events themselves (none when the boundaries fall on quarter
--     hours, as every zone's do today).
--
-- A bucket counts as one window's when its first and last microsecond
-- truncate to the same window start, which is the test the events' GROUP
-- BY applies to each of them. Only the buckets that a coarser one could not
-- serve are looked at, so a year of days in UTC reads 366 day buckets, and
-- in New York (whose days start at 04:00 or 05:00 UTC) the hours of each day.
--
-- Buckets are generated from epoch seconds and stepped by hours and
-- minutes, never by days or months, so the session's TimeZone plays no
-- part.
WITH p AS (
    SELECT @from::timestamptz AS lo, @to::timestamptz AS hi, nullif(@window::text, '') AS unit, @time_zone::text AS tz
),
days AS (
    SELECT d.b,
           d.b >= p.lo AND d.b + interval '24 hours' <= p.hi
           AND (p.unit IS NULL OR date_trunc(p.unit, d.b, p.tz) = date_trunc(p.unit, d.b + interval '24 hours' - interval '1 microsecond', p.tz)) AS whole
      FROM p
     CROSS JOIN LATERAL (
           SELECT to_timestamp(s) AS b
             FROM generate_series(floor(extract(epoch FROM p.lo) / 86400)::bigint * 86400,
                                  ceil(extract(epoch FROM p.hi) / 86400)::bigint * 86400 - 86400, 86400) s) d
),
hours AS (
    SELECT h.b,
           h.b >= p.lo AND h.b + interval '1 hour' <= p.hi
           AND (p.unit IS NULL OR date_trunc(p.unit, h.b, p.tz) = date_trunc(p.unit, h.b + interval '1 hour' - interval '1 microsecond', p.tz)) AS whole
      FROM p
     CROSS JOIN days d
     CROSS JOIN LATERAL (SELECT d.b + make_interval(hours => n) AS b FROM generate_series(0, 23) n) h
     WHERE NOT d.whole AND h.b < p.hi AND h.b + interval '1 hour' > p.lo
),
quarters AS (
    SELECT q.b,
           q.b >= p.lo AND q.b + interval '15 minutes' <= p.hi
           AND (p.unit IS NULL OR date_trunc(p.unit, q.b, p.tz) = date_trunc(p.unit, q.b + interval '15 minutes' - interval '1 microsecond', p.tz)) AS whole
      FROM p
     CROSS JOIN hours h
     CROSS JOIN LATERAL (SELECT h.b + make_interval(mins => 15 * n) AS b FROM generate_series(0, 3) n) q
     WHERE NOT h.whole AND q.b < p.hi AND q.b + interval '15 minutes' > p.lo
),
pieces AS (
    SELECT 1440::bigint AS grain, b FROM days WHERE whole
    UNION ALL
    SELECT 60::bigint, b FROM hours WHERE whole
    UNION ALL
    SELECT 15::bigint, b FROM quarters WHERE whole
),
-- Runs of consecutive buckets of one grain (and of quarter hours left to
-- the events) become one range each, read with one index range scan.
ranges AS (
    SELECT k.grain, min(k.b) AS lo, max(k.b) + make_interval(mins => k.grain::int) AS hi
      FROM (SELECT pc.grain, pc.b, pc.b - make_interval(mins => (pc.grain * row_number() OVER (PARTITION BY pc.grain ORDER BY pc.b))::int) AS run
              FROM pieces pc) k
     GROUP BY k.grain, k.run
),
raw_ranges AS (
    SELECT greatest(min(k.b), p.lo) AS lo, least(max(k.b) + interval '15 minutes', p.hi) AS hi
      FROM p
     CROSS JOIN (SELECT q.b, q.b - make_interval(mins => 15 * (row_number() OVER (ORDER BY q.b))::int) AS run
                   FROM quarters q WHERE NOT q.whole) k
     GROUP BY k.run, p.lo, p.hi
),
-- OFFSET 0 keeps each range's scan a subquery of its own, run once per
-- range with the range's bounds in the index condition, whatever the
-- statistics of the moment.
parts AS (
    SELECT r.at, r.value, r.events, r.failed, r.quantity, r.credits
      FROM ranges g
     CROSS JOIN LATERAL (
           SELECT ru.bucket AS at, ru.value, ru.events, ru.failed, ru.quantity, ru.credits
             FROM {usage_rollups} ru
            WHERE ru.dimension = @dimension::text AND ru.grain = g.grain AND ru.bucket >= g.lo AND ru.bucket < g.hi
              AND (@values::text[] IS NULL OR ru.value = ANY (@values::text[]))
           OFFSET 0) r
    UNION ALL
    SELECT e.at, e.value, 1, e.failed, e.quantity, e.credits
      FROM raw_ranges g
     CROSS JOIN LATERAL (
           SELECT ev.occurred_at AS at,
                  CASE @dimension::text
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
SELECT CASE WHEN p.unit IS NULL THEN NULL ELSE date_trunc(p.unit, x.at, p.tz) END AS window_start,
       CASE WHEN @by_value::bool THEN x.value ELSE '' END AS value,
       sum(x.events) AS events, sum(x.failed) AS failed, sum(x.quantity) AS quantity, sum(x.credits) AS credits
  FROM p
 CROSS JOIN parts x
 GROUP BY 1, 2
HAVING sum(x.events) <> 0 OR sum(x.failed) <> 0 OR sum(x.quantity) <> 0 OR sum(x.credits) <> 0
 ORDER BY 1, 2
