-- Deletes one bounded batch of the workspace's events dated before the
-- cut-off, oldest first, skipping rows another transaction holds (they go
-- in a later batch). The rollups keep counting them; their adjustments go
-- with them.
DELETE FROM {usage_events}
 WHERE event_id IN (
       SELECT d.event_id
         FROM {usage_events} d
        WHERE d.occurred_at < @before::timestamptz
        ORDER BY d.occurred_at
        LIMIT @batch::int4
          FOR UPDATE SKIP LOCKED)
