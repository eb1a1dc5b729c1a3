-- Moves the workspace's retention horizon forward (never back): from now
-- on, events dated before it are refused, so that none can be recorded
-- again once its key is deleted with it. A cut-off after now writes
-- nothing and returns no row.
INSERT INTO {usage_retention} (deleted_before, updated_at)
SELECT @before::timestamptz, now()
 WHERE @before::timestamptz <= coalesce(@now::timestamptz, now())
    ON CONFLICT (workspace_id) DO UPDATE
   SET deleted_before = greatest(usage_retention.deleted_before, EXCLUDED.deleted_before), updated_at = now()
RETURNING deleted_before
