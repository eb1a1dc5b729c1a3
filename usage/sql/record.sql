-- Records one event, idempotently: an event whose key the workspace has
-- already recorded is not inserted, and the stored one is returned (replay)
-- for the caller to compare. Rows the checks refuse come back with their
-- problem and no event. With no row at all, a concurrent first attempt
-- took the key after this statement's snapshot: read it again.
WITH checked AS (
    SELECT i.occurred_at, i.now, i.latest, i.horizon,
           CASE
               WHEN o.operation_type IS NULL THEN 'unknown_operation_type'
               WHEN i.occurred_at > i.latest THEN 'future'
               WHEN i.occurred_at < i.horizon THEN 'retained'
           END AS problem,
           coalesce(nullif(@unit::text, ''), o.unit) AS unit
      FROM (SELECT x.occurred_at, x.now, x.now + @max_future::interval AS latest,
                   (SELECT r.deleted_before FROM {usage_retention} r) AS horizon
              FROM (SELECT coalesce(@occurred_at::timestamptz, @now::timestamptz, now()) AS occurred_at,
                           coalesce(@now::timestamptz, now()) AS now) x) i
      LEFT JOIN operation_types o ON o.operation_type = @operation_type::text
),
inserted AS (
    INSERT INTO {usage_events} (event_id, user_id, operation_type, feature_key, unit, quantity, credits,
                                price_credits, price_unit_quantity, model, status, duration_ms, metadata,
                                idempotency_key, request_hash, ledger_entry_id, occurred_at, recorded_at, updated_at)
    SELECT @event_id::uuid, @event_user::uuid, @operation_type::text, @feature_key::text, c.unit, @quantity::int8, @credits::int8,
           @price_credits::int8, @price_unit_quantity::int8, @model::text, @status::text, @duration_ms::int8, @metadata::jsonb,
           @idempotency_key::text, @request_hash::bytea, @ledger_entry_id::uuid, c.occurred_at, c.now, c.now
      FROM checked c
     WHERE c.problem IS NULL
        ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
    RETURNING event_id, user_id, operation_type, feature_key, quantity, unit, credits, price_credits, price_unit_quantity,
              model, status, duration_ms, metadata, idempotency_key, ledger_entry_id, occurred_at, recorded_at,
              voided_at, version, updated_at, request_hash
)
SELECT c.problem, c.occurred_at, c.latest, c.horizon, r.*
  FROM checked c
  LEFT JOIN LATERAL (
        SELECT false AS replay, ins.* FROM inserted ins
         UNION ALL
        SELECT true, e.event_id, e.user_id, e.operation_type, e.feature_key, e.quantity, e.unit, e.credits, e.price_credits,
               e.price_unit_quantity, e.model, e.status, e.duration_ms, e.metadata, e.idempotency_key, e.ledger_entry_id,
               e.occurred_at, e.recorded_at, e.voided_at, e.version, e.updated_at, e.request_hash
          FROM {usage_events} e
         WHERE e.idempotency_key = @idempotency_key::text AND NOT EXISTS (SELECT 1 FROM inserted)
  ) r ON true
