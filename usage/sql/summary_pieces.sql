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
--   - and what is left, quarter hours that a window or the range cuts, or
--     in which the zone's clocks move, from the events themselves (none
--     when the boundaries and the moves fall on quarter hours, as every
--     zone's do today).
--
-- A bucket counts as one window's when the zone's clocks do not move
-- inside it (its local times, first and last microsecond, are as far
-- apart as the instants: "steady") and its last local time truncates to
-- no later than its first, so both truncate alike: local time then runs
-- straight through the bucket, so every
-- instant in it truncates alike, and date_trunc(@window, t, @time_zone),
-- the local truncation turned back into an instant, names them all as it
-- names the bucket's start, the instant summary.sql groups the bucket by.
-- (Comparing instants instead, "the window of the last microsecond
-- started no later than the bucket", is not enough. Where clocks move by
-- half an hour the truncation can be a local time that does not exist,
-- which date_trunc turns into an instant of the window before: in Lord
-- Howe on 2024-10-06 the hour from 02:30 local is named 02:00, 15:00 UTC,
-- inside the hour named 01:00. Where clocks fall back across a window's
-- start, the bucket holds instants of the window before: in Goose Bay on
-- 2009-11-01 at 00:01 local clocks went back to 23:01 of October 31.) A bucket's local times are found by
-- conversion for a day, and for an hour or a quarter hour only when its
-- day or hour is not steady; in a steady one they are its own plus an
-- offset. The endpoints are enough because no zone's clocks move twice
-- within two days (in the tz database from 1800 to 3000 the shortest
-- stretch between two moves is close to four days). When the window is
-- the whole range, days are not converted at all. Only the
-- buckets that a coarser one could not serve are looked at, so a year of
-- days in UTC tests 366 day buckets, and in New York (whose days start at
-- 04:00 or 05:00 UTC) the hours of each day. Bounds written as
-- '59:59.999999' are a bucket's last microsecond. Runs of consecutive
-- buckets of one grain come back as one range (grain 0: events).
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
    SELECT d.b, d.first, d.steady,
           d.b >= p.lo AND d.b + interval '24 hours' <= p.hi
           AND (p.unit IS NULL OR (d.steady AND date_trunc(p.unit, d.last) <= d.first)) AS whole
      FROM p
     CROSS JOIN LATERAL (
           SELECT g.b, l.first, l.last, l.last - l.first = interval '23:59:59.999999' AS steady
             FROM (SELECT to_timestamp(s) AS b
                     FROM generate_series(floor(extract(epoch FROM p.lo) / 86400)::bigint * 86400,
                                          ceil(extract(epoch FROM p.hi) / 86400)::bigint * 86400 - 86400, 86400) s) g
            CROSS JOIN LATERAL (
                  SELECT CASE WHEN p.unit IS NOT NULL THEN g.b AT TIME ZONE p.tz END AS first,
                         CASE WHEN p.unit IS NOT NULL THEN (g.b + interval '23:59:59.999999') AT TIME ZONE p.tz END AS last) l) d
),
hour_offsets AS MATERIALIZED (
    SELECT n * interval '1 hour' AS o, n * interval '1 hour' + interval '59:59.999999' AS ol FROM generate_series(0, 23) n
),
quarter_offsets AS MATERIALIZED (
    SELECT n * interval '15 minutes' AS o, n * interval '15 minutes' + interval '14:59.999999' AS ol FROM generate_series(0, 3) n
),
hours AS (
    SELECT h.b, h.first, h.steady,
           h.b >= p.lo AND h.b + interval '1 hour' <= p.hi
           AND (p.unit IS NULL OR (h.steady AND date_trunc(p.unit, h.last) <= h.first)) AS whole
      FROM p
     CROSS JOIN days d
     CROSS JOIN LATERAL (
           SELECT l.b, l.first, l.last, d.steady OR l.last - l.first = interval '59:59.999999' AS steady
             FROM hour_offsets x
            CROSS JOIN LATERAL (
                  SELECT d.b + x.o AS b,
                         CASE WHEN d.steady THEN d.first + x.o ELSE (d.b + x.o) AT TIME ZONE p.tz END AS first,
                         CASE WHEN d.steady THEN d.first + x.ol ELSE (d.b + x.ol) AT TIME ZONE p.tz END AS last) l) h
     WHERE NOT d.whole AND h.b < p.hi AND h.b + interval '1 hour' > p.lo
),
quarters AS (
    SELECT q.b,
           q.b >= p.lo AND q.b + interval '15 minutes' <= p.hi
           AND (p.unit IS NULL OR (q.steady AND date_trunc(p.unit, q.last) <= q.first)) AS whole
      FROM p
     CROSS JOIN hours h
     CROSS JOIN LATERAL (
           SELECT l.b, l.first, l.last, h.steady OR l.last - l.first = interval '14:59.999999' AS steady
             FROM quarter_offsets x
            CROSS JOIN LATERAL (
                  SELECT h.b + x.o AS b,
                         CASE WHEN h.steady THEN h.first + x.o ELSE (h.b + x.o) AT TIME ZONE p.tz END AS first,
                         CASE WHEN h.steady THEN h.first + x.ol ELSE (h.b + x.ol) AT TIME ZONE p.tz END AS last) l) q
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
