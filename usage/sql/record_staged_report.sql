-- The staged events that record_staged left out, in the same transaction,
-- and why: a stored event holds its key (whose request hash the caller
-- compares: a duplicate or a conflict), or a check refused it. Run only
-- when fewer events were inserted than staged.
SELECT s.pos, e.request_hash, e.event_id,
       CASE
           WHEN e.event_id IS NOT NULL THEN NULL
           WHEN s.operation_type NOT IN (SELECT o.operation_type FROM operation_types o) THEN 'unknown_operation_type'
           WHEN x.occurred_at > x.latest THEN 'future'
           WHEN x.occurred_at < x.horizon THEN 'retained'
       END AS problem,
       x.occurred_at, x.latest, x.horizon
  FROM pg_temp.meterbase_stage_usage_events s
 CROSS JOIN LATERAL (SELECT coalesce(s.occurred_at, @now::timestamptz, now()) AS occurred_at,
                            coalesce(@now::timestamptz, now()) + @max_future::interval AS latest,
                            (SELECT r.deleted_before FROM {usage_retention} r) AS horizon) x
  LEFT JOIN {usage_events} e ON e.idempotency_key = s.idempotency_key
 WHERE NOT EXISTS (SELECT 1 FROM {usage_events} i WHERE i.event_id = s.event_id)
