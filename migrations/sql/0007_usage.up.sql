-- changes: creates the usage history: usage_events (one row per AI operation, unique per workspace and idempotency key), usage_rollups (count, failed count, quantity and credits per workspace, dimension (or total), 15-minute, hour and UTC-day bucket and value, kept exact by statement triggers on usage_events), usage_adjustments (the audit trail of voids and corrections) and usage_retention (each workspace's deletion horizon); all four with forced row-level security like the tenancy tables.
-- locks: SHARE ROW EXCLUSIVE on workspaces, then operation_types, while the foreign keys to them are created, until the file commits (moments; writes to both tables wait, reads do not).
-- rewrites: none.
-- scans: none; the new tables are empty, and creating a foreign key to an existing table does not read it.
-- large-table cost: constant to apply. Afterwards every insert into or update of usage_events runs one statement-level trigger that aggregates the statement's rows into at most 18 rollup rows per distinct (quarter hour, operation type, feature, user, model, unit) and upserts them; deletes do not touch the rollups.
-- down loses data: yes; the down migration drops the four tables with every usage event, rollup, adjustment and retention horizon in them.
-- rollback: before usage is recorded, run the down migration; afterwards roll forward with a new migration instead.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Not partitioned: an idempotency key must stay unique for as long as its
-- event is kept, and Postgres requires the partition key (a time) in every
-- unique index of a partitioned table, which would make a key unique per
-- partition only. Retention deletes in bounded batches instead, through
-- usage_events_time_idx.
CREATE TABLE usage_events (
    workspace_id        uuid        NOT NULL,
    event_id            uuid        NOT NULL,
    user_id             uuid        NOT NULL,
    operation_type      text        NOT NULL,
    feature_key         text        NOT NULL DEFAULT '',
    unit                text        NOT NULL,
    quantity            bigint      NOT NULL,
    credits             bigint      NOT NULL DEFAULT 0,
    -- The price in force when the event happened: price_credits per
    -- price_unit_quantity units, kept as it was (a snapshot).
    price_credits       bigint      NOT NULL DEFAULT 0,
    price_unit_quantity bigint      NOT NULL DEFAULT 1,
    model               text        NOT NULL DEFAULT '',
    status              text        NOT NULL DEFAULT 'succeeded',
    duration_ms         bigint      NOT NULL DEFAULT 0,
    metadata            jsonb,
    idempotency_key     text,
    -- The first 16 bytes of a SHA-256 of the request as the caller gave
    -- it: a retry with the same key and another request is a conflict.
    request_hash        bytea,
    -- The credit ledger entry that paid for the event, when one did. No
    -- foreign key: the ledger is another package's, and usage stands alone.
    ledger_entry_id     uuid,
    occurred_at         timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    voided_at           timestamptz,
    version             bigint      NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_pkey PRIMARY KEY (workspace_id, event_id),
    CONSTRAINT usage_events_idempotency_key UNIQUE (workspace_id, idempotency_key),
    CONSTRAINT usage_events_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    -- An operation type with history cannot be deleted from under it.
    CONSTRAINT usage_events_operation_type_fkey FOREIGN KEY (operation_type)
        REFERENCES operation_types (operation_type) ON DELETE RESTRICT,
    CONSTRAINT usage_events_feature_key_check CHECK (feature_key = '' OR (feature_key ~ '^[a-z][a-z0-9_]*([.-][a-z0-9_]+)*$' AND length(feature_key) <= 64)),
    CONSTRAINT usage_events_unit_check CHECK (unit ~ '^[a-z][a-z_]*$' AND length(unit) <= 32),
    -- Bounds that keep every sum of a year of events far from bigint's end.
    CONSTRAINT usage_events_quantity_check CHECK (quantity BETWEEN 0 AND 1125899906842624),
    CONSTRAINT usage_events_credits_check CHECK (credits BETWEEN 0 AND 1125899906842624),
    CONSTRAINT usage_events_price_check CHECK (price_credits BETWEEN 0 AND 1125899906842624 AND price_unit_quantity BETWEEN 1 AND 1125899906842624),
    CONSTRAINT usage_events_model_check CHECK (length(model) <= 200),
    CONSTRAINT usage_events_status_check CHECK (status IN ('succeeded', 'failed')),
    CONSTRAINT usage_events_duration_check CHECK (duration_ms BETWEEN 0 AND 31536000000),
    CONSTRAINT usage_events_metadata_check CHECK (metadata IS NULL OR (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 65536)),
    CONSTRAINT usage_events_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT usage_events_request_hash_check CHECK ((idempotency_key IS NULL) = (request_hash IS NULL) AND (request_hash IS NULL OR length(request_hash) = 16)),
    CONSTRAINT usage_events_occurred_at_check CHECK (occurred_at >= '2000-01-01 00:00:00+00'),
    CONSTRAINT usage_events_version_check CHECK (version >= 1)
);

-- Lists by time (either way), keyset pages, time ranges, retention and the
-- raw edges of summaries.
CREATE INDEX usage_events_time_idx ON usage_events (workspace_id, occurred_at, event_id);
-- Lists filtered by user.
CREATE INDEX usage_events_user_idx ON usage_events (workspace_id, user_id, occurred_at, event_id);
-- Lists filtered by operation type, and the foreign key to operation_types
-- (a delete of an operation type looks for its events), which needs the
-- operation type first. Both lead columns are equalities in those lists,
-- so the order costs them nothing.
CREATE INDEX usage_events_operation_type_idx ON usage_events (operation_type, workspace_id, occurred_at, event_id);

-- One row per workspace, dimension, grain, bucket and value of the
-- dimension: every event counts once in each of the five dimensions and
-- in the total (dimension 'total', value ''), at each of three grains (15,
-- 60 and 1440 minutes; buckets start on multiples of the grain since the
-- Unix epoch, so days are UTC days). Summaries add them up instead of
-- reading events. A deleted event (retention) stays counted; a voided one
-- does not.
CREATE TABLE usage_rollups (
    workspace_id uuid        NOT NULL,
    dimension    text        NOT NULL,
    grain        bigint      NOT NULL,
    bucket       timestamptz NOT NULL,
    value        text        NOT NULL,
    events       bigint      NOT NULL,
    failed       bigint      NOT NULL,
    -- numeric: exact, and no sum can overflow.
    quantity     numeric     NOT NULL,
    credits      numeric     NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_rollups_pkey PRIMARY KEY (workspace_id, dimension, grain, bucket, value),
    CONSTRAINT usage_rollups_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT usage_rollups_dimension_check CHECK (dimension IN ('total', 'operation_type', 'feature', 'user', 'model', 'unit')),
    CONSTRAINT usage_rollups_total_check CHECK (dimension <> 'total' OR value = ''),
    CONSTRAINT usage_rollups_grain_check CHECK (grain IN (15, 60, 1440)),
    CONSTRAINT usage_rollups_bucket_check CHECK (mod(extract(epoch FROM bucket)::numeric, grain * 60) = 0)
) WITH (fillfactor = 70); -- room for the updates of a busy bucket to stay on their page (HOT)

-- The audit trail of corrections: what an event said before and after, who
-- changed it, when and why. Append-only by use; it goes with its event.
CREATE TABLE usage_adjustments (
    workspace_id    uuid        NOT NULL,
    adjustment_id   uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    kind            text        NOT NULL,
    reason          text        NOT NULL,
    quantity_before bigint      NOT NULL,
    quantity_after  bigint      NOT NULL,
    credits_before  bigint      NOT NULL,
    credits_after   bigint      NOT NULL,
    -- The version the event got: an event's adjustments, in this order,
    -- chain each one's after to the next one's before.
    event_version   bigint      NOT NULL,
    actor_user_id   uuid,
    idempotency_key text,
    request_hash    bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_adjustments_pkey PRIMARY KEY (workspace_id, adjustment_id),
    CONSTRAINT usage_adjustments_idempotency_key UNIQUE (workspace_id, idempotency_key),
    CONSTRAINT usage_adjustments_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT usage_adjustments_event_fkey FOREIGN KEY (workspace_id, event_id)
        REFERENCES usage_events (workspace_id, event_id) ON DELETE CASCADE,
    CONSTRAINT usage_adjustments_kind_check CHECK (kind IN ('void', 'correction')),
    CONSTRAINT usage_adjustments_reason_check CHECK (length(btrim(reason)) BETWEEN 1 AND 500),
    CONSTRAINT usage_adjustments_amounts_check CHECK (
        quantity_before BETWEEN 0 AND 1125899906842624 AND quantity_after BETWEEN 0 AND 1125899906842624 AND
        credits_before BETWEEN 0 AND 1125899906842624 AND credits_after BETWEEN 0 AND 1125899906842624),
    CONSTRAINT usage_adjustments_event_version_check CHECK (event_version >= 2),
    CONSTRAINT usage_adjustments_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT usage_adjustments_request_hash_check CHECK ((idempotency_key IS NULL) = (request_hash IS NULL) AND (request_hash IS NULL OR length(request_hash) = 16))
);

-- An event's adjustments in order, and the foreign key to its event.
CREATE UNIQUE INDEX usage_adjustments_event_idx ON usage_adjustments (workspace_id, event_id, event_version);
-- The audit list, by time.
CREATE INDEX usage_adjustments_time_idx ON usage_adjustments (workspace_id, created_at, adjustment_id);

-- How far back a workspace's history has been deleted. Events older than
-- the horizon are refused: their idempotency keys may be gone with them,
-- and a retry would count them twice.
CREATE TABLE usage_retention (
    workspace_id   uuid        NOT NULL,
    deleted_before timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_retention_pkey PRIMARY KEY (workspace_id),
    CONSTRAINT usage_retention_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE
);

-- The rollups follow every insert and update of usage_events, from
-- whatever path (the library, a host's raw COPY): statement-level triggers
-- read the statement's rows once, add up each (quarter hour, operation
-- type, feature, user, model, unit) and upsert the few rollup rows that
-- result, in key order, so that concurrent writers queue rather than
-- deadlock. An update counts as its new rows minus its old ones. The
-- function runs as its caller, under the caller's row-level security; its
-- tables are qualified with the schema this migration runs in and its
-- search_path pinned with pg_temp last, so that a caller's temporary table
-- cannot stand in for usage_rollups.
DO $migration$
DECLARE
    contribution CONSTANT text := $sql$
        SELECT workspace_id, occurred_at, operation_type, feature_key, user_id, model, unit, status, quantity, credits, %s AS sign
          FROM %s WHERE voided_at IS NULL$sql$;
    upsert CONSTANT text := $sql$
        WITH delta AS (
            SELECT c.workspace_id,
                   pg_catalog.to_timestamp(pg_catalog.floor(EXTRACT(epoch FROM c.occurred_at) / 900) * 900) AS quarter,
                   c.operation_type, c.feature_key, c.user_id, c.model, c.unit,
                   sum(c.sign) AS events,
                   coalesce(sum(c.sign) FILTER (WHERE c.status = 'failed'), 0) AS failed,
                   sum(c.sign * c.quantity) AS quantity,
                   sum(c.sign * c.credits) AS credits
              FROM (%s) c
             GROUP BY 1, 2, 3, 4, 5, 6, 7
        )
        INSERT INTO %I.usage_rollups AS r (workspace_id, dimension, grain, bucket, value, events, failed, quantity, credits)
        SELECT d.workspace_id, x.dimension, g.grain,
               pg_catalog.to_timestamp(pg_catalog.floor(EXTRACT(epoch FROM d.quarter) / (g.grain * 60)) * (g.grain * 60)) AS bucket,
               x.value, sum(d.events), sum(d.failed), sum(d.quantity), sum(d.credits)
          FROM delta d
         CROSS JOIN (VALUES (15::bigint), (60::bigint), (1440::bigint)) g (grain)
         CROSS JOIN LATERAL (VALUES ('total', ''), ('operation_type', d.operation_type), ('feature', d.feature_key),
                                    ('user', d.user_id::text), ('model', d.model), ('unit', d.unit)) x (dimension, value)
         GROUP BY 1, 2, 3, 4, 5
        HAVING sum(d.events) <> 0 OR sum(d.failed) <> 0 OR sum(d.quantity) <> 0 OR sum(d.credits) <> 0
         ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (workspace_id, dimension, grain, bucket, value) DO UPDATE
           SET events = r.events + EXCLUDED.events,
               failed = r.failed + EXCLUDED.failed,
               quantity = r.quantity + EXCLUDED.quantity,
               credits = r.credits + EXCLUDED.credits,
               updated_at = pg_catalog.now()$sql$;
    schema CONSTANT text := pg_catalog.current_schema();
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION %1$I.meterbase_usage_rollup() RETURNS trigger
        LANGUAGE plpgsql SET search_path = %1$I, pg_temp
        AS $body$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                %2$s;
            ELSIF TG_OP = 'UPDATE' THEN
                %3$s;
            END IF;
            RETURN NULL;
        END;
        $body$
    $function$, schema,
        format(upsert, format(contribution, '1', 'new_rows'), schema),
        format(upsert, format(contribution, '1', 'new_rows') || ' UNION ALL ' || format(contribution, '-1', 'old_rows'), schema));
END;
$migration$;

CREATE TRIGGER usage_events_rollup_insert
    AFTER INSERT ON usage_events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION meterbase_usage_rollup();
CREATE TRIGGER usage_events_rollup_update
    AFTER UPDATE ON usage_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION meterbase_usage_rollup();

-- Row-level security as on the tenancy tables, forced, so that the tables'
-- owner is held to it too unless it bypasses row security altogether.
ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_events_tenant ON usage_events
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY usage_events_operator_read ON usage_events FOR SELECT
    USING (meterbase_operator());

ALTER TABLE usage_rollups ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_rollups FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_rollups_tenant ON usage_rollups
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY usage_rollups_operator_read ON usage_rollups FOR SELECT
    USING (meterbase_operator());

ALTER TABLE usage_adjustments ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_adjustments FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_adjustments_tenant ON usage_adjustments
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY usage_adjustments_operator_read ON usage_adjustments FOR SELECT
    USING (meterbase_operator());

ALTER TABLE usage_retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_retention FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_retention_tenant ON usage_retention
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY usage_retention_operator_read ON usage_retention FOR SELECT
    USING (meterbase_operator());
