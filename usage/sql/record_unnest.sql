-- Records a batch in one statement, from arrays: the alternative to the
-- stage (record_staged.sql) that RecordBatch measured against and set
-- aside (see BenchmarkIngest: a few tens of per cent slower on the same
-- events, the encoding and unnesting of the arrays). The events the checks pass are
-- inserted, those whose key is already taken are skipped. Rows are
-- inserted in the order of the arrays, which the caller sorts by key, so
-- that concurrent batches with overlapping keys queue rather than
-- deadlock: nothing between the arrays and the insert joins or sorts
-- (operation types are looked up by subquery, not joined). Absent values
-- travel as '', an empty hash, the zero UUID and the zero time, plain
-- arrays that pgx encodes fast. It returns only the events that were not
-- inserted, by position in the arrays: with their problem, or with the
-- stored request hash of their key (NULL when the key was taken after this
-- statement's snapshot, by a concurrent writer).
WITH checked AS (
    SELECT x.*,
           CASE
               WHEN NOT x.known THEN 'unknown_operation_type'
               WHEN x.occurred_at > l.latest THEN 'future'
               WHEN x.occurred_at < l.horizon THEN 'retained'
           END AS problem,
           l.latest, l.horizon
      FROM (SELECT i.pos, i.event_id, i.user_id, i.operation_type, i.feature_key, i.quantity, i.credits, i.price_credits,
                   i.price_unit_quantity, i.model, i.status, i.duration_ms,
                   nullif(i.metadata, '')::jsonb AS metadata,
                   nullif(i.idempotency_key, '') AS idempotency_key,
                   nullif(i.request_hash, ''::bytea) AS request_hash,
                   nullif(i.ledger_entry_id, '00000000-0000-0000-0000-000000000000'::uuid) AS ledger_entry_id,
                   i.operation_type IN (SELECT o.operation_type FROM operation_types o) AS known,
                   coalesce(nullif(i.given_unit, ''), (SELECT o.unit FROM operation_types o WHERE o.operation_type = i.operation_type)) AS unit,
                   coalesce(nullif(i.given_occurred_at, '0001-01-01 00:00:00+00'::timestamptz), @now::timestamptz, now()) AS occurred_at
              FROM unnest(@event_ids::uuid[], @user_ids::uuid[], @operation_types::text[], @feature_keys::text[],
                          @units::text[], @quantities::int8[], @credits::int8[], @price_credits::int8[], @price_unit_quantities::int8[],
                          @models::text[], @statuses::text[], @durations_ms::int8[], @metadata::text[], @idempotency_keys::text[],
                          @request_hashes::bytea[], @ledger_entry_ids::uuid[], @occurred_ats::timestamptz[])
                   WITH ORDINALITY
                   AS i (event_id, user_id, operation_type, feature_key, given_unit, quantity, credits, price_credits,
                         price_unit_quantity, model, status, duration_ms, metadata, idempotency_key, request_hash,
                         ledger_entry_id, given_occurred_at, pos)) x
     CROSS JOIN (SELECT coalesce(@now::timestamptz, now()) + @max_future::interval AS latest,
                        (SELECT r.deleted_before FROM {usage_retention} r) AS horizon) l
),
inserted AS (
    INSERT INTO {usage_events} (event_id, user_id, operation_type, feature_key, unit, quantity, credits,
                                price_credits, price_unit_quantity, model, status, duration_ms, metadata,
                                idempotency_key, request_hash, ledger_entry_id, occurred_at, recorded_at, updated_at)
    SELECT c.event_id, c.user_id, c.operation_type, c.feature_key, c.unit, c.quantity, c.credits,
           c.price_credits, c.price_unit_quantity, c.model, c.status, c.duration_ms, c.metadata,
           c.idempotency_key, c.request_hash, c.ledger_entry_id, c.occurred_at,
           coalesce(@now::timestamptz, now()), coalesce(@now::timestamptz, now())
      FROM checked c
     WHERE c.problem IS NULL
        ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
    RETURNING event_id
)
SELECT c.pos, e.request_hash, e.event_id, c.problem, c.occurred_at, c.latest, c.horizon
  FROM checked c
  LEFT JOIN {usage_events} e ON c.problem IS NULL AND e.idempotency_key = c.idempotency_key
 WHERE c.problem IS NOT NULL OR c.event_id NOT IN (SELECT ins.event_id FROM inserted ins)
