-- record_staged without ON CONFLICT, for the common batch whose keys are
-- all new: the unique index checks each key once as it is written, where
-- ON CONFLICT would look for it first, a sizeable share of an ingestion's
-- time. A key already taken fails the whole statement (a unique
-- violation), and the caller runs record_staged instead.
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
