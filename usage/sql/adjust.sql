-- Voids or corrects one event, with its audit row, in one statement: the
-- event is locked (and read as it is now, after any correction that
-- committed meanwhile), the adjustment written from it unless its key was
-- used already, and the event changed only if the adjustment was written.
-- The update's trigger moves the rollups by the difference. A voided event
-- takes no adjustment. The adjustment's time is taken once the event's
-- lock is held (clock_timestamp, not the transaction's start), so that
-- the audit trail's times follow the order the adjustments were made in.
WITH target AS (
    SELECT e.event_id, e.quantity, e.credits, e.voided_at, e.version
      FROM {usage_events} e
     WHERE e.event_id = @event_id::uuid
       FOR UPDATE
),
adjusted AS (
    INSERT INTO {usage_adjustments} (adjustment_id, event_id, kind, reason, quantity_before, quantity_after,
                                     credits_before, credits_after, event_version, actor_user_id, idempotency_key,
                                     request_hash, created_at)
    SELECT @adjustment_id::uuid, t.event_id, @kind::text, @reason::text,
           t.quantity, CASE WHEN @kind::text = 'void' THEN t.quantity ELSE coalesce(@quantity::int8, t.quantity) END,
           t.credits, CASE WHEN @kind::text = 'void' THEN t.credits ELSE coalesce(@credits::int8, t.credits) END,
           t.version + 1, @actor_user_id::uuid, @idempotency_key::text, @request_hash::bytea,
           coalesce(@now::timestamptz, clock_timestamp())
      FROM target t
     WHERE t.voided_at IS NULL
        ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
    RETURNING adjustment_id, event_id, kind, reason, quantity_before, quantity_after, credits_before, credits_after,
              event_version, actor_user_id, idempotency_key, created_at, request_hash
),
changed AS (
    UPDATE {usage_events} e
       SET quantity = a.quantity_after, credits = a.credits_after,
           voided_at = CASE WHEN a.kind = 'void' THEN a.created_at END,
           version = a.event_version, updated_at = a.created_at
      FROM adjusted a
     WHERE e.event_id = a.event_id
)
SELECT s.found, s.voided, r.*
  FROM (SELECT EXISTS (SELECT 1 FROM target) AS found,
               EXISTS (SELECT 1 FROM target t WHERE t.voided_at IS NOT NULL) AS voided) s
  LEFT JOIN LATERAL (
        SELECT false AS replay, a.* FROM adjusted a
         UNION ALL
        SELECT true, x.adjustment_id, x.event_id, x.kind, x.reason, x.quantity_before, x.quantity_after, x.credits_before,
               x.credits_after, x.event_version, x.actor_user_id, x.idempotency_key, x.created_at, x.request_hash
          FROM {usage_adjustments} x
         WHERE x.idempotency_key = @idempotency_key::text AND NOT EXISTS (SELECT 1 FROM adjusted)
  ) r ON true
