-- The adjustment a key wrote, for a retry that lost the race to write it.
SELECT true AS replay, x.adjustment_id, x.event_id, x.kind, x.reason, x.quantity_before, x.quantity_after, x.credits_before,
       x.credits_after, x.event_version, x.actor_user_id, x.idempotency_key, x.created_at, x.request_hash
  FROM {usage_adjustments} x
 WHERE x.idempotency_key = @idempotency_key::text
