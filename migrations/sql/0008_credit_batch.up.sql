-- changes: adds meterbase_credit_batch, which applies a batch of spends, holds, captures and releases on one credit account in one statement, in the order given, each with an outcome of its own (the coalescing of credits.Ledger), and the composite type meterbase_credit_outcome it returns; replaces meterbase_credit_sweep with one that also skips an account whose advisory queue lock another transaction holds; pins both functions' search_path as 0006 pinned the others.
-- locks: none on existing tables; creating a type and a function takes catalog locks only.
-- rewrites: none.
-- scans: none.
-- large-table cost: constant; nothing existing is read or written.
-- down loses data: no; the down migration drops the function and the type, and no table refers to either.
-- rollback: the down migration; a Ledger that coalesces then sends each batch in vain before its callers fall back to single calls, so roll back under a release without coalescing or with Config.NoCoalescing.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- One request's outcome: its error (SQLSTATE, message, detail, constraint
-- and table, as the single call would have raised it), or a spend's entry
-- as meterbase_credit_spend returns it, or the JSON result of a hold, a
-- capture or a release.
CREATE TYPE meterbase_credit_outcome AS (
    err_code       text,
    err_message    text,
    err_detail     text,
    err_constraint text,
    err_table      text,
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
    v_due timestamptz;
    v_total bigint;
BEGIN
    -- The account's queue first, outside the passes, so that it is held
    -- across them: requests of other transactions wait instead of slipping
    -- in between two passes.
    PERFORM pg_advisory_xact_lock(('x' || substr(replace(p_account::text, '-', ''), 17, 16))::bit(64)::bigint); -- meterbase_credit__queue

    -- The common case of a hot pool, at once: spends only, every key new
    -- and used once, nothing to settle, and lots enough for all of them.
    -- Then no spend can fail, and spending them in turn is one sweep down
    -- the burn order: spend i takes the stretch [before_i, before_i +
    -- amount_i) of the lots laid end to end, which one statement computes
    -- for all of them and writes as the loop below would, entry by entry.
    IF v_n > 1 AND p_kinds <@ ARRAY['spend'] THEN
        -- Read, not locked: every writer of the account's lots and figures
        -- holds its queue, as this call does from here on (the sweeper
        -- skips an account whose queue is held), so nothing changes them
        -- before the statement below, whose UPDATE locks the row. A row
        -- lock taken here would be this transaction's, and the passes'
        -- updates of the row from their subtransaction would then be
        -- recorded as multixacts, which the passes exist to avoid. (A
        -- scalar, not the row type: a variable of a table's type would make
        -- creating this function lock the table.) No account: no due date,
        -- and the passes answer each request.
        SELECT c.settle_due_at, (SELECT sum(x) FROM unnest(p_amounts) x) INTO v_due, v_total
          FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account;
        IF v_now < v_due
           AND (SELECT min(x) FROM unnest(p_amounts) x) > 0
           AND (SELECT count(DISTINCT k) FROM unnest(p_keys) k) = v_n
           AND NOT EXISTS (SELECT FROM credit_idempotency i WHERE i.workspace_id = p_ws AND i.key = ANY (p_keys))
           AND v_total <= (SELECT coalesce(sum(g.remaining - g.held), 0) FROM credit_grants g
                            WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
                              AND g.journaled AND g.voided_at IS NULL AND g.remaining > g.held
                              AND g.effective_at <= v_now AND (g.expires_at IS NULL OR g.expires_at > v_now))
        THEN
            RETURN QUERY
            WITH req AS (
                SELECT r.ord::integer AS ord, r.amount, coalesce(r.reference, '') AS reference, r.key, r.hash,
                       sum(r.amount) OVER (ORDER BY r.ord) - r.amount AS before
                  FROM unnest(p_amounts, p_references, p_keys, p_hashes) WITH ORDINALITY AS r(amount, reference, key, hash, ord)
            ), lots AS (
                SELECT g.grant_id, g.category, g.remaining - g.held AS free,
                       sum(g.remaining - g.held) OVER w - (g.remaining - g.held) AS before,
                       row_number() OVER w AS pos
                  FROM credit_grants g
                 WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
                   AND g.journaled AND g.voided_at IS NULL AND g.remaining > g.held
                   AND g.effective_at <= v_now AND (g.expires_at IS NULL OR g.expires_at > v_now)
                WINDOW w AS (ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id ROWS UNBOUNDED PRECEDING)
            ), takes AS (
                SELECT r.ord, l.grant_id, l.category, l.pos,
                       (least(r.before + r.amount, l.before + l.free) - greatest(r.before, l.before))::bigint AS take
                  FROM req r JOIN lots l ON l.before < r.before + r.amount AND r.before < l.before + l.free
            ), debit AS (
                UPDATE credit_grants g SET remaining = g.remaining - t.taken
                  FROM (SELECT t.grant_id, sum(t.take)::bigint AS taken FROM takes t GROUP BY t.grant_id) t
                 WHERE g.workspace_id = p_ws AND g.grant_id = t.grant_id
            ), acct AS (
                UPDATE credit_accounts c
                   SET balance = c.balance - v_total, entry_seq = c.entry_seq + v_n, settled_at = v_now, updated_at = v_now
                 WHERE c.workspace_id = p_ws AND c.account_id = p_account
                RETURNING c.balance + v_total AS balance_before, c.entry_seq - v_n AS seq_before, c.held, c.debt
            ), e AS (
                INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, held_delta, debt_delta,
                                            balance_after, held_after, debt_after, reference, effective_at, recorded_at)
                SELECT p_ws, meterbase_credit__uuid(), p_account, acct.seq_before + r.ord, 'spend', -r.amount, 0, 0,
                       acct.balance_before - r.before - r.amount, acct.held, acct.debt, r.reference, v_now, v_now
                  FROM req r, acct
                RETURNING entry_id, entry_seq, balance_after, held_after, debt_after, reference
            ), numbered AS (
                SELECT e.*, (e.entry_seq - acct.seq_before)::integer AS ord FROM e, acct
            ), el AS (
                INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
                SELECT p_ws, n.entry_id, t.grant_id, t.take FROM numbered n JOIN takes t ON t.ord = n.ord
            ), k AS (
                INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
                SELECT p_ws, r.key, 'spend', r.hash, jsonb_build_object('entryId', n.entry_id), v_now
                  FROM numbered n JOIN req r ON r.ord = n.ord
            ), traces AS (
                SELECT t.ord, array_agg(t.grant_id ORDER BY t.pos) AS ids, array_agg(t.take ORDER BY t.pos) AS amounts,
                       array_agg(t.category ORDER BY t.pos) AS categories
                  FROM takes t GROUP BY t.ord
            )
            SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, n.entry_id, n.entry_seq, 0::bigint, n.balance_after,
                   n.held_after, n.debt_after, n.reference, v_now, v_now, tr.ids, tr.amounts, tr.categories,
                   r.amount, false, NULL::jsonb
              FROM numbered n JOIN req r ON r.ord = n.ord JOIN traces tr ON tr.ord = n.ord
             ORDER BY n.ord;
            RETURN;
        END IF;
    END IF;
    WHILE NOT v_done LOOP
        v_out := '{}';
        BEGIN
            FOR i IN 1 .. v_n LOOP
                CONTINUE WHEN v_failed[i];
                v_current := i;
                o := NULL;
                CASE p_kinds[i]
                WHEN 'spend' THEN
                    SELECT NULL, NULL, NULL, NULL, NULL, s.* INTO o
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
                                    o.err_detail = PG_EXCEPTION_DETAIL, o.err_constraint = CONSTRAINT_NAME,
                                    o.err_table = TABLE_NAME;
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

-- The sweeper, as in 0006, but it also skips an account whose queue
-- another transaction holds: a batch's passes release the account's row
-- between them (a failed pass's subtransaction takes its row lock with
-- it) while holding its queue, and a sweep in between would settle the
-- account at its own instant, later than the batch's.
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
        -- Never waits (the row lock was skipped if taken, the queue is
        -- tried): the sweeper cannot deadlock with a writer that holds the
        -- queue and waits for the row.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(('x' || substr(replace(r.account_id::text, '-', ''), 17, 16))::bit(64)::bigint);
        v_entries := v_entries + meterbase_credit__settle(p_ws, r.account_id, v_now);
        v_accounts := v_accounts + 1;
    END LOOP;
    RETURN jsonb_build_object('accounts', v_accounts, 'entries', v_entries);
END;
$$;

-- As 0006 did for the others: the search_path pinned to this schema,
-- pg_temp last, and no sequential scans (CREATE OR REPLACE dropped the
-- sweeper's settings).
DO $migration$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION meterbase_credit_batch(uuid, uuid, text[], uuid[], bigint[], bigint[], text[], text[], bytea[], timestamptz) SET search_path = %I, pg_temp SET enable_seqscan = off',
        pg_catalog.current_schema());
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION meterbase_credit_sweep(uuid, uuid, integer, timestamptz) SET search_path = %I, pg_temp SET enable_seqscan = off',
        pg_catalog.current_schema());
END;
$migration$;
