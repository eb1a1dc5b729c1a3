-- changes: adds meterbase_credit_batch, which applies a batch of spends, holds, captures and releases on one credit account in one statement, in the order given, each with an outcome of its own (the coalescing of credits.Ledger), and the composite type meterbase_credit_outcome it returns; pins the function's search_path as 0006 pinned the others.
-- locks: none on existing tables; creating a type and a function takes catalog locks only.
-- rewrites: none.
-- scans: none.
-- large-table cost: constant; nothing existing is read or written.
-- down loses data: no; the down migration drops the function and the type, and no table refers to either.
-- rollback: run the down migration after the service runs a release without coalescing (or with Config.Coalescing off); a Ledger that coalesces fails its batches without the function.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- One request's outcome: its error (SQLSTATE, message, detail and
-- constraint, as the single call would have raised it), or a spend's entry
-- as meterbase_credit_spend returns it, or the JSON result of a hold, a
-- capture or a release.
CREATE TYPE meterbase_credit_outcome AS (
    err_code       text,
    err_message    text,
    err_detail     text,
    err_constraint text,
    entry_id       uuid,
    seq            bigint,
    debt_delta     bigint,
    balance_after  bigint,
    held_after     bigint,
    debt_after     bigint,
    reference      text,
    effective_at   timestamptz,
    recorded_at    timestamptz,
    lot_ids        uuid[],
    lot_amounts    bigint[],
    lot_categories text[],
    amount         bigint,
    replay         boolean,
    result         jsonb
);

-- Applies requests on one account back to back in one transaction, so that
-- they share its lock, its row versions and one commit (one WAL flush): a
-- hot account's ceiling is its commits, not its requests. Request i is
-- p_kinds[i] ('spend', 'hold', 'capture' or 'release') with the i-th
-- element of each array (p_holds for a capture or release, p_ttls_us for
-- a hold; the others ignore what is not theirs), and it runs through the
-- same function as a single call, at the same instant as the others.
--
-- Each request's outcome is exactly what it would have been alone, run in
-- this order: a request that fails leaves no trace, and the others go on.
-- That takes undoing a failed request's writes, which needs a
-- subtransaction; but a subtransaction per request is what the account row
-- cannot afford: each would lock it (the journal's foreign key) and update
-- it under a transaction id of its own, and Postgres records every such
-- pair as a multixact (measured: a hot account's batches slowed from
-- 120 to 14 a second within a minute). So one subtransaction covers a pass
-- over all requests; when request i fails, the pass is undone, i keeps its
-- error, and a new pass runs the others again (the state they see up to i
-- is the same, so are their outcomes). A batch with k failures costs k + 1
-- passes; failures are the exception on a hot account.
CREATE FUNCTION meterbase_credit_batch(p_ws uuid, p_account uuid, p_kinds text[], p_holds uuid[], p_amounts bigint[],
                                       p_ttls_us bigint[], p_references text[], p_keys text[], p_hashes bytea[],
                                       p_now timestamptz) RETURNS SETOF meterbase_credit_outcome
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_n integer := coalesce(cardinality(p_kinds), 0);
    v_failed boolean[] := array_fill(false, ARRAY[v_n]);
    v_errors meterbase_credit_outcome[] := '{}';
    v_out meterbase_credit_outcome[];
    v_current integer;
    v_done boolean := v_n = 0;
    o meterbase_credit_outcome;
BEGIN
    -- The account's queue first, outside the passes, so that it is held
    -- across them: requests of other transactions wait instead of slipping
    -- in between two passes.
    PERFORM meterbase_credit__queue(p_account);
    WHILE NOT v_done LOOP
        v_out := '{}';
        BEGIN
            FOR i IN 1 .. v_n LOOP
                CONTINUE WHEN v_failed[i];
                v_current := i;
                o := NULL;
                CASE p_kinds[i]
                WHEN 'spend' THEN
                    SELECT NULL, NULL, NULL, NULL, s.* INTO o
                      FROM meterbase_credit_spend(p_ws, p_account, p_amounts[i], p_references[i], p_keys[i], p_hashes[i], v_now) s;
                WHEN 'hold' THEN
                    o.result := meterbase_credit_hold(p_ws, p_account, p_amounts[i], p_ttls_us[i], p_references[i], p_keys[i], p_hashes[i], v_now);
                WHEN 'capture' THEN
                    o.result := meterbase_credit_capture(p_ws, p_holds[i], p_amounts[i], p_references[i], p_keys[i], p_hashes[i], v_now);
                WHEN 'release' THEN
                    o.result := meterbase_credit_release(p_ws, p_holds[i], p_keys[i], p_hashes[i], v_now);
                ELSE
                    PERFORM meterbase_credit__raise('MB108', 'unknown request kind',
                        jsonb_build_object('field', 'kind', 'reason', coalesce(p_kinds[i], 'NULL') || ' is not spend, hold, capture or release'));
                END CASE;
                v_out[i] := o;
            END LOOP;
            v_done := true;
        EXCEPTION WHEN OTHERS THEN
            -- QUERY_CANCELED is not among OTHERS: a statement timeout or a
            -- cancel ends the whole batch, as it would end a single call.
            o := NULL;
            GET STACKED DIAGNOSTICS o.err_code = RETURNED_SQLSTATE, o.err_message = MESSAGE_TEXT,
                                    o.err_detail = PG_EXCEPTION_DETAIL, o.err_constraint = CONSTRAINT_NAME;
            v_failed[v_current] := true;
            v_errors[v_current] := o;
        END;
    END LOOP;
    FOR i IN 1 .. v_n LOOP
        IF v_failed[i] THEN
            RETURN NEXT v_errors[i];
        ELSE
            RETURN NEXT v_out[i];
        END IF;
    END LOOP;
END;
$$;

-- As 0006 did for the others: the search_path pinned to this schema,
-- pg_temp last, and no sequential scans.
DO $migration$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION meterbase_credit_batch(uuid, uuid, text[], uuid[], bigint[], bigint[], text[], text[], bytea[], timestamptz) SET search_path = %I, pg_temp SET enable_seqscan = off',
        pg_catalog.current_schema());
END;
$migration$;
