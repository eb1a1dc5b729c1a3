-- changes: drops meterbase_credit_batch and the type meterbase_credit_outcome; puts back 0006's meterbase_credit_sweep.
-- locks: none on existing tables; dropping and replacing functions and dropping a type take catalog locks only.
-- rewrites: none.
-- scans: none.
-- large-table cost: constant.
-- down loses data: no; nothing is stored in either.
-- rollback: the up migration creates them again.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP FUNCTION meterbase_credit_batch(uuid, uuid, text[], uuid[], bigint[], bigint[], text[], text[], bytea[], timestamptz);
DROP TYPE meterbase_credit_outcome;

CREATE OR REPLACE FUNCTION meterbase_credit_sweep(p_ws uuid, p_account uuid, p_limit integer, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    r record;
    v_accounts integer := 0;
    v_entries integer := 0;
BEGIN
    FOR r IN
        SELECT c.account_id FROM credit_accounts c
         WHERE c.workspace_id = p_ws AND (p_account IS NULL OR c.account_id = p_account) AND c.settle_due_at <= v_now
         ORDER BY c.account_id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        v_entries := v_entries + meterbase_credit__settle(p_ws, r.account_id, v_now);
        v_accounts := v_accounts + 1;
    END LOOP;
    RETURN jsonb_build_object('accounts', v_accounts, 'entries', v_entries);
END;
$$;

DO $migration$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION meterbase_credit_sweep(uuid, uuid, integer, timestamptz) SET search_path = %I, pg_temp SET enable_seqscan = off',
        pg_catalog.current_schema());
END;
$migration$;
