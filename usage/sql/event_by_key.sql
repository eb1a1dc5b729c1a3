-- The event a key recorded, for a retry that lost the race to record it.
SELECT true AS replay, e.event_id, e.user_id, e.operation_type, e.feature_key, e.quantity, e.unit, e.credits, e.price_credits,
       e.price_unit_quantity, e.model, e.status, e.duration_ms, e.metadata, e.idempotency_key, e.ledger_entry_id,
       e.occurred_at, e.recorded_at, e.voided_at, e.version, e.updated_at, e.request_hash
  FROM {usage_events} e
 WHERE e.idempotency_key = @idempotency_key::text
