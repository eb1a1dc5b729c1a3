-- Inserts the staged events (see stageEvents) that pass the checks, when
-- some of them may be recorded already: their operation type exists, they
-- are dated no later than now + @max_future and not before the
-- workspace's retention horizon; an event whose key is already taken is
-- skipped. The stage is read in the order it was copied in, which the
-- caller sorts by key, so that concurrent batches with overlapping keys
-- queue rather than deadlock: nothing here sorts, and nothing joins the
-- stage but a one-row list of bounds (operation types are looked up by
-- subquery).
INSERT INTO {usage_events} (event_id, user_id, operation_type, feature_key, unit, quantity, credits,
                            price_credits, price_unit_quantity, model, status, duration_ms, metadata,
                            idempotency_key, request_hash, ledger_entry_id, occurred_at, recorded_at, updated_at)
SELECT s.event_id, s.user_id, s.operation_type, s.feature_key,
       coalesce(s.unit, (SELECT o.unit FROM operation_types o WHERE o.operation_type = s.operation_type)),
       s.quantity, s.credits, s.price_credits, s.price_unit_quantity, s.model, s.status, s.duration_ms, s.metadata,
       s.idempotency_key, s.request_hash, s.ledger_entry_id, coalesce(s.occurred_at, c.now), c.now, c.now
  FROM pg_temp.meterbase_stage_usage_events s
 CROSS JOIN (SELECT coalesce(@now::timestamptz, now()) AS now,
                    coalesce(@now::timestamptz, now()) + @max_future::interval AS latest,
                    coalesce((SELECT r.deleted_before FROM {usage_retention} r), '-infinity') AS horizon) c
 WHERE s.operation_type IN (SELECT o.operation_type FROM operation_types o)
   AND coalesce(s.occurred_at, c.now) BETWEEN c.horizon AND c.latest
    ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
