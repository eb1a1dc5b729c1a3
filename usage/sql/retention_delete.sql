-- Deletes one bounded batch of the workspace's events dated before the
-- cut-off, oldest first, skipping rows another transaction holds (they go
-- in a later batch). The rollups keep counting them; their adjustments go
-- with them. The batch is chosen once, in a materialized CTE: as an IN
-- subquery the planner may run it more than once (a semi-join's inner
-- side), each time with its own LIMIT, and a batch could then exceed its
-- bound.
WITH doomed AS MATERIALIZED (
    SELECT d.event_id
      FROM {usage_events} d
     WHERE d.occurred_at < @before::timestamptz
     ORDER BY d.occurred_at
     LIMIT @batch::int4
       FOR UPDATE SKIP LOCKED)
DELETE FROM {usage_events}
 WHERE event_id IN (SELECT event_id FROM doomed)
