-- The first half of a summary (see summary.sql): which rollup buckets and
-- which stretches of events sum a workspace's usage over [@from, @to) by
-- window of @window in @time_zone (or over the whole range), exactly as a
-- GROUP BY of the events on date_trunc(@window, occurred_at, @time_zone)
-- would:
--
--   - a UTC day whose every instant falls in one window (and the range)
--     is read from its day rollup rows;
--   - the hours of the other days, likewise, from hour rows;
--   - the quarter hours of the other hours from 15-minute rows;
--   - and what is left, quarter hours that a window or the range cuts,
--     from the events themselves (none when the boundaries fall on quarter
--     hours, as every zone's do today).
--
-- A bucket counts as one window's when the window of its last microsecond
-- (date_trunc, the test the events' GROUP BY applies to each of them)
-- started no later than the bucket: windows follow each other, so the
-- bucket's every instant is in it. One date_trunc per bucket, which a
-- time zone makes the dearest part of the statement. Only the buckets that a coarser one could not
-- serve are looked at, so a year of days in UTC tests 366 day buckets, and
-- in New York (whose days start at 04:00 or 05:00 UTC) the hours of each
-- day. Runs of consecutive buckets of one grain come back as one range
-- (grain 0: events).
--
-- It reads no table: its answer is the second half's arguments, so that
-- the second is planned knowing them (a plan estimated blind over ranges
-- it cannot see looked dear enough to Postgres to be compiled by JIT, at
-- hundreds of milliseconds).
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
           AND (p.unit IS NULL OR date_trunc(p.unit, d.b + interval '24 hours' - interval '1 microsecond', p.tz) <= d.b) AS whole
      FROM p
     CROSS JOIN LATERAL (
           SELECT to_timestamp(s) AS b
             FROM generate_series(floor(extract(epoch FROM p.lo) / 86400)::bigint * 86400,
                                  ceil(extract(epoch FROM p.hi) / 86400)::bigint * 86400 - 86400, 86400) s) d
),
hours AS (
    SELECT h.b,
           h.b >= p.lo AND h.b + interval '1 hour' <= p.hi
           AND (p.unit IS NULL OR date_trunc(p.unit, h.b + interval '1 hour' - interval '1 microsecond', p.tz) <= h.b) AS whole
      FROM p
     CROSS JOIN days d
     CROSS JOIN LATERAL (SELECT d.b + make_interval(hours => n) AS b FROM generate_series(0, 23) n) h
     WHERE NOT d.whole AND h.b < p.hi AND h.b + interval '1 hour' > p.lo
),
quarters AS (
    SELECT q.b,
           q.b >= p.lo AND q.b + interval '15 minutes' <= p.hi
           AND (p.unit IS NULL OR date_trunc(p.unit, q.b + interval '15 minutes' - interval '1 microsecond', p.tz) <= q.b) AS whole
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
)
SELECT r.grain, r.lo, r.hi FROM ranges r
 UNION ALL
SELECT 0, w.lo, w.hi FROM raw_ranges w
 WHERE @workspace_id::uuid IS NOT NULL
 ORDER BY 1, 2
