-- changes: creates the credit ledger: credit_accounts (a workspace's shared pool and its members' own accounts), credit_grants (lots), credit_holds and credit_hold_lots (reservations and the lots they earmark), credit_entries and credit_entry_lots (the append-only journal and the per-lot trace of spends, captures and refunds), credit_idempotency (every keyed state change's first result); row-level security forced on all of them; the PL/pgSQL functions meterbase_credit_* that make every state change in one statement.
-- locks: SHARE ROW EXCLUSIVE on workspaces and users while the foreign keys to them are created, until the file commits (moments; writes to both wait, reads do not).
-- rewrites: none.
-- scans: none; the new tables are empty, and creating a foreign key on an empty new table reads nothing.
-- large-table cost: constant; nothing existing is read or written. Afterwards deleting a workspace or a user also visits its credit rows (through the indexes created here).
-- down loses data: yes; the down migration drops every credit table, with every account, grant, hold, journal entry and idempotency record in them.
-- rollback: before any credits are granted, run the down migration; afterwards roll forward with a new migration instead (the journal is the money's history).
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Amounts: int64 credits in the host's smallest unit. One operation moves at
-- most 10^15; an account holds at most 2^60 (the functions refuse a grant
-- that would pass it), so no sum of a journal, an account or a workspace's
-- accounts in one query can overflow bigint.

CREATE TABLE credit_accounts (
    workspace_id  uuid        NOT NULL,
    account_id    uuid        NOT NULL,
    -- 'workspace' is the workspace's shared pool (one per workspace);
    -- 'member' is a member's own account.
    kind          text        NOT NULL,
    -- The member of a 'member' account. A deleted user leaves the account
    -- and its history in place, detached (NULL): the credits and the
    -- journal are the workspace's money, and a member's removal from the
    -- workspace does not touch it either.
    user_id       uuid,
    -- 0 is strict: never below zero. L > 0 lets spends and captures take up
    -- to L credits the lots lack, as debt.
    credit_limit  bigint      NOT NULL DEFAULT 0,
    -- The journal's running figures, as of settled_at: balance is the sum of
    -- every entry's amount (= the lots' remaining credits - debt), held the
    -- sum of the active holds, debt the overdraft in use, scheduled the
    -- credits of grants not yet effective (outside the balance).
    balance       bigint      NOT NULL DEFAULT 0,
    held          bigint      NOT NULL DEFAULT 0,
    debt          bigint      NOT NULL DEFAULT 0,
    scheduled     bigint      NOT NULL DEFAULT 0,
    -- The number of the account's last journal entry: entries are numbered
    -- 1, 2, 3... per account, without gaps, under the account's row lock.
    entry_seq     bigint      NOT NULL DEFAULT 0,
    -- Every write settles the account at its instant: time-driven changes
    -- (a hold or a lot expiring, a scheduled grant taking effect) up to
    -- settled_at are in the journal. settle_due_at is no later than the
    -- next such change, so a write before it has nothing to settle.
    settled_at    timestamptz NOT NULL,
    settle_due_at timestamptz NOT NULL DEFAULT 'infinity',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT credit_accounts_pkey PRIMARY KEY (workspace_id, account_id),
    CONSTRAINT credit_accounts_kind_check CHECK (kind IN ('workspace', 'member')),
    CONSTRAINT credit_accounts_user_check CHECK (kind = 'member' OR user_id IS NULL),
    CONSTRAINT credit_accounts_credit_limit_check CHECK (credit_limit BETWEEN 0 AND 1000000000000000),
    CONSTRAINT credit_accounts_figures_check CHECK (held >= 0 AND debt >= 0 AND scheduled >= 0 AND entry_seq >= 0 AND balance + debt >= held),
    CONSTRAINT credit_accounts_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    -- To users rather than to memberships: SET NULL of one column of a
    -- composite key needs PostgreSQL 15, and a member's removal must
    -- neither delete the account's history nor be refused because of it.
    CONSTRAINT credit_accounts_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX credit_accounts_pool_key ON credit_accounts (workspace_id) WHERE kind = 'workspace';
-- A member has one account per workspace; user first, so that it also
-- serves the users foreign key (a user's deletion).
CREATE UNIQUE INDEX credit_accounts_member_key ON credit_accounts (user_id, workspace_id);

CREATE TABLE credit_grants (
    workspace_id uuid        NOT NULL,
    grant_id     uuid        NOT NULL,
    account_id   uuid        NOT NULL,
    amount       bigint      NOT NULL,
    -- Credits still in the lot (held ones included); held is the part
    -- earmarked by holds in state 'active'.
    remaining    bigint      NOT NULL,
    held         bigint      NOT NULL DEFAULT 0,
    -- Generated, so that the burn-down index leaves spent lots out while an
    -- ordinary spend (which changes remaining, not depleted) stays a HOT
    -- update.
    depleted     boolean     GENERATED ALWAYS AS (remaining = 0) STORED,
    priority     bigint      NOT NULL DEFAULT 0,
    effective_at timestamptz NOT NULL,
    expires_at   timestamptz,
    category     text        NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}',
    reference    text        NOT NULL DEFAULT '',
    -- Its grant entry is in the journal (written when it takes effect).
    journaled    boolean     NOT NULL DEFAULT false,
    voided_at    timestamptz,
    created_at   timestamptz NOT NULL,
    CONSTRAINT credit_grants_pkey PRIMARY KEY (workspace_id, grant_id),
    CONSTRAINT credit_grants_amount_check CHECK (amount > 0 AND amount <= 1000000000000000),
    CONSTRAINT credit_grants_remaining_check CHECK (remaining BETWEEN 0 AND amount),
    CONSTRAINT credit_grants_held_check CHECK (held BETWEEN 0 AND remaining),
    CONSTRAINT credit_grants_expiry_check CHECK (expires_at > effective_at),
    CONSTRAINT credit_grants_category_check CHECK (category IN ('purchase', 'plan', 'promotional', 'trial', 'refund', 'adjustment')),
    CONSTRAINT credit_grants_metadata_check CHECK (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 8192),
    CONSTRAINT credit_grants_reference_check CHECK (octet_length(reference) <= 255),
    CONSTRAINT credit_grants_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT credit_grants_account_fkey FOREIGN KEY (workspace_id, account_id)
        REFERENCES credit_accounts (workspace_id, account_id) ON DELETE CASCADE
);
-- The burn-down: an account's lots with credits left, in burn order
-- (priority, earliest expiry with none last, oldest, id).
CREATE INDEX credit_grants_burn_idx ON credit_grants (workspace_id, account_id, priority, expires_at, effective_at, grant_id) WHERE NOT depleted;
-- Every lot of an account, spent ones too (and the account foreign key).
CREATE INDEX credit_grants_account_idx ON credit_grants (workspace_id, account_id, grant_id);

CREATE TABLE credit_holds (
    workspace_id uuid        NOT NULL,
    hold_id      uuid        NOT NULL,
    account_id   uuid        NOT NULL,
    amount       bigint      NOT NULL,
    expires_at   timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'active',
    captured     bigint,
    reference    text        NOT NULL DEFAULT '',
    resolved_at  timestamptz,
    created_at   timestamptz NOT NULL,
    CONSTRAINT credit_holds_pkey PRIMARY KEY (workspace_id, hold_id),
    CONSTRAINT credit_holds_amount_check CHECK (amount > 0 AND amount <= 1000000000000000),
    CONSTRAINT credit_holds_state_check CHECK (state IN ('active', 'captured', 'released', 'expired')),
    CONSTRAINT credit_holds_resolved_check CHECK ((state = 'active') = (resolved_at IS NULL)),
    CONSTRAINT credit_holds_captured_check CHECK ((state = 'captured') = (captured IS NOT NULL) AND (captured IS NULL OR captured > 0)),
    CONSTRAINT credit_holds_expiry_check CHECK (expires_at > created_at),
    CONSTRAINT credit_holds_reference_check CHECK (octet_length(reference) <= 255),
    CONSTRAINT credit_holds_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT credit_holds_account_fkey FOREIGN KEY (workspace_id, account_id)
        REFERENCES credit_accounts (workspace_id, account_id) ON DELETE CASCADE
);
-- The active holds of an account by expiry: settling, and when to settle.
CREATE INDEX credit_holds_active_idx ON credit_holds (workspace_id, account_id, expires_at) WHERE state = 'active';
CREATE INDEX credit_holds_account_idx ON credit_holds (workspace_id, account_id, hold_id);

-- The lots a hold earmarks, and how much of each.
CREATE TABLE credit_hold_lots (
    workspace_id uuid   NOT NULL,
    hold_id      uuid   NOT NULL,
    grant_id     uuid   NOT NULL,
    amount       bigint NOT NULL,
    CONSTRAINT credit_hold_lots_pkey PRIMARY KEY (workspace_id, hold_id, grant_id),
    CONSTRAINT credit_hold_lots_amount_check CHECK (amount > 0),
    CONSTRAINT credit_hold_lots_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT credit_hold_lots_hold_fkey FOREIGN KEY (workspace_id, hold_id)
        REFERENCES credit_holds (workspace_id, hold_id) ON DELETE CASCADE,
    CONSTRAINT credit_hold_lots_grant_fkey FOREIGN KEY (workspace_id, grant_id)
        REFERENCES credit_grants (workspace_id, grant_id) ON DELETE CASCADE
);
-- What is held of a lot, at read time.
CREATE INDEX credit_hold_lots_grant_idx ON credit_hold_lots (workspace_id, grant_id);

CREATE TABLE credit_entries (
    workspace_id      uuid        NOT NULL,
    entry_id          uuid        NOT NULL,
    account_id        uuid        NOT NULL,
    entry_seq         bigint      NOT NULL,
    kind              text        NOT NULL,
    -- The entry's change to the balance, to the held credits and to the
    -- debt, and the three after it, in journal order.
    amount            bigint      NOT NULL,
    held_delta        bigint      NOT NULL DEFAULT 0,
    debt_delta        bigint      NOT NULL DEFAULT 0,
    balance_after     bigint      NOT NULL,
    held_after        bigint      NOT NULL,
    debt_after        bigint      NOT NULL,
    grant_id          uuid,
    hold_id           uuid,
    refunded_entry_id uuid,
    reference         text        NOT NULL DEFAULT '',
    -- When it took effect (an expiry, at the lot's expiry; a scheduled
    -- grant, when it became effective), and when it was written.
    effective_at      timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    CONSTRAINT credit_entries_pkey PRIMARY KEY (workspace_id, entry_id),
    CONSTRAINT credit_entries_seq_key UNIQUE (workspace_id, account_id, entry_seq),
    CONSTRAINT credit_entries_seq_check CHECK (entry_seq > 0),
    CONSTRAINT credit_entries_kind_check CHECK (kind IN ('grant', 'spend', 'hold', 'capture', 'release', 'hold_expired', 'refund', 'expire', 'void')),
    CONSTRAINT credit_entries_figures_check CHECK (held_after >= 0 AND debt_after >= 0 AND balance_after + debt_after >= held_after),
    CONSTRAINT credit_entries_effective_check CHECK (effective_at <= recorded_at),
    CONSTRAINT credit_entries_reference_check CHECK (octet_length(reference) <= 255),
    CONSTRAINT credit_entries_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT credit_entries_account_fkey FOREIGN KEY (workspace_id, account_id)
        REFERENCES credit_accounts (workspace_id, account_id) ON DELETE CASCADE,
    CONSTRAINT credit_entries_grant_fkey FOREIGN KEY (workspace_id, grant_id)
        REFERENCES credit_grants (workspace_id, grant_id) ON DELETE CASCADE,
    CONSTRAINT credit_entries_hold_fkey FOREIGN KEY (workspace_id, hold_id)
        REFERENCES credit_holds (workspace_id, hold_id) ON DELETE CASCADE,
    CONSTRAINT credit_entries_refunded_fkey FOREIGN KEY (workspace_id, refunded_entry_id)
        REFERENCES credit_entries (workspace_id, entry_id) ON DELETE CASCADE
);
-- Partial: most entries (spends) name no grant, hold or refunded entry and
-- so cost these indexes nothing.
CREATE INDEX credit_entries_grant_idx ON credit_entries (workspace_id, grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX credit_entries_hold_idx ON credit_entries (workspace_id, hold_id) WHERE hold_id IS NOT NULL;
CREATE INDEX credit_entries_refunded_idx ON credit_entries (workspace_id, refunded_entry_id) WHERE refunded_entry_id IS NOT NULL;

-- The per-lot trace: which lots a spend or capture took its credits from,
-- and which lots a refund gave them back to.
CREATE TABLE credit_entry_lots (
    workspace_id uuid   NOT NULL,
    entry_id     uuid   NOT NULL,
    grant_id     uuid   NOT NULL,
    amount       bigint NOT NULL,
    CONSTRAINT credit_entry_lots_pkey PRIMARY KEY (workspace_id, entry_id, grant_id),
    CONSTRAINT credit_entry_lots_amount_check CHECK (amount > 0),
    CONSTRAINT credit_entry_lots_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    CONSTRAINT credit_entry_lots_entry_fkey FOREIGN KEY (workspace_id, entry_id)
        REFERENCES credit_entries (workspace_id, entry_id) ON DELETE CASCADE,
    CONSTRAINT credit_entry_lots_grant_fkey FOREIGN KEY (workspace_id, grant_id)
        REFERENCES credit_grants (workspace_id, grant_id) ON DELETE CASCADE
);
CREATE INDEX credit_entry_lots_grant_idx ON credit_entry_lots (workspace_id, grant_id);

-- The first result of every keyed state change, written in the same
-- transaction as the change. Refusals are not recorded: a retry is judged
-- again.
CREATE TABLE credit_idempotency (
    workspace_id uuid        NOT NULL,
    key          text        NOT NULL,
    operation    text        NOT NULL,
    request_hash bytea       NOT NULL,
    result       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    CONSTRAINT credit_idempotency_pkey PRIMARY KEY (workspace_id, key),
    CONSTRAINT credit_idempotency_key_check CHECK (octet_length(key) BETWEEN 1 AND 255),
    CONSTRAINT credit_idempotency_hash_check CHECK (octet_length(request_hash) = 32),
    CONSTRAINT credit_idempotency_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE
);

-- The journal and its trace are append-only: no row is ever changed, and
-- rows go only with their workspace (whose deletion cascades here after the
-- workspace row is gone). TRUNCATE, a deliberate act of the tables' owner,
-- is not a row change and is not checked.
CREATE FUNCTION meterbase_credit_append_only() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.workspace_id = OLD.workspace_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'meterbase: % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'MB120', TABLE = TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER credit_entries_append_only BEFORE UPDATE OR DELETE ON credit_entries
    FOR EACH ROW EXECUTE FUNCTION meterbase_credit_append_only();
CREATE TRIGGER credit_entry_lots_append_only BEFORE UPDATE OR DELETE ON credit_entry_lots
    FOR EACH ROW EXECUTE FUNCTION meterbase_credit_append_only();

-- Row-level security, forced so that the tables' owner is bound too (a
-- superuser or a BYPASSRLS role is not). The journal has no UPDATE or
-- DELETE of its own beyond the tenant policy, and the trigger refuses both.
ALTER TABLE credit_accounts ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_accounts_tenant ON credit_accounts
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_accounts_operator_read ON credit_accounts FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_grants ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_grants_tenant ON credit_grants
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_grants_operator_read ON credit_grants FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_holds ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_holds_tenant ON credit_holds
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_holds_operator_read ON credit_holds FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_hold_lots ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_hold_lots_tenant ON credit_hold_lots
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_hold_lots_operator_read ON credit_hold_lots FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_entries ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_entries_tenant ON credit_entries
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_entries_operator_read ON credit_entries FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_entry_lots ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_entry_lots_tenant ON credit_entry_lots
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_entry_lots_operator_read ON credit_entry_lots FOR SELECT USING (meterbase_operator());

ALTER TABLE credit_idempotency ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY credit_idempotency_tenant ON credit_idempotency
    USING (workspace_id = meterbase_workspace_id()) WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY credit_idempotency_operator_read ON credit_idempotency FOR SELECT USING (meterbase_operator());

-- ---------------------------------------------------------------------------
-- The ledger's functions. Every state change is one call, one statement:
-- the account's row is locked, the idempotency key looked up, the account
-- settled, the change made and journaled, and the key recorded, all before
-- the statement returns, so no row lock is held across the network.
--
-- They are SECURITY INVOKER: they run with the caller's rights, and
-- row-level security binds them as it binds the caller, so they give no
-- one anything a direct query would not. EXECUTE therefore stays granted to
-- PUBLIC (the default): the host's application role, whose name a
-- migration cannot know, must be able to call them. Every query in them is
-- restricted to the p_ws argument, which the tenant handle supplies as
-- @workspace_id. Their search_path is pinned at the end of this file.
--
-- Errors they raise, with the figures as JSON in DETAIL (credits/errors.go
-- maps them):
--   MB101 insufficient credits   {"available", "requested"}
--   MB102 idempotency conflict   {"key", "operation"}
--   MB103 not found              {"what", "id"}
--   MB104 hold already captured  {"holdId"}
--   MB105 hold already released  {"holdId"}
--   MB106 hold expired           {"holdId"}
--   MB107 refund above refundable {"refundable", "requested"}
--   MB108 invalid input          {"field", "reason"}
--   MB109 not a member           {"userId"}
--   MB110 entry not refundable   {"entryId", "kind"}
-- ---------------------------------------------------------------------------

-- The small SQL helpers below (an id, an instant's text, an entry's JSON)
-- are the exception to the pinned search_path (end of file): the planner
-- inlines a SQL function only if it has no SET clause, and in PostgreSQL
-- before 18 one it cannot inline is parsed and planned again in every
-- transaction that calls it (a spend called four: it cost twice as much
-- as the same work written as one statement). They call nothing but
-- pg_catalog's functions, named as such, and are inlined into the pinned
-- functions that call them.

-- A time-ordered (version 7) UUID, so that new rows land at the right end
-- of their primary key's index.
CREATE FUNCTION meterbase_credit__uuid() RETURNS uuid
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.encode(pg_catalog.set_bit(pg_catalog.set_bit(pg_catalog.overlay(
        pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
        pg_catalog.substring(pg_catalog.int8send(pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint), 3),
        1, 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- Instants as the Go side reads them, whatever the session's TimeZone.
CREATE FUNCTION meterbase_credit__time(t timestamptz) RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT pg_catalog.to_char(pg_catalog.timezone('UTC', t), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION meterbase_credit__raise(p_code text, p_message text, p_detail jsonb) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = 'meterbase: ' || p_message, DETAIL = p_detail::text;
END;
$$;

CREATE FUNCTION meterbase_credit__entry_json(e credit_entries, p_lots jsonb) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'id', e.entry_id, 'accountId', e.account_id, 'seq', e.entry_seq, 'kind', e.kind,
        'amount', e.amount, 'heldDelta', e.held_delta, 'debtDelta', e.debt_delta,
        'balanceAfter', e.balance_after, 'heldAfter', e.held_after, 'debtAfter', e.debt_after,
        'grantId', e.grant_id, 'holdId', e.hold_id, 'refundOf', e.refunded_entry_id,
        'reference', nullif(e.reference, ''),
        'effectiveAt', meterbase_credit__time(e.effective_at), 'recordedAt', meterbase_credit__time(e.recorded_at),
        'lots', p_lots))
$$;

-- Every lot of an account (or the one given, even spent) as it stands at
-- p_at, computed from the stored rows without settling: what settling at
-- p_at would leave. A scheduled grant that took effect by p_at has paid the
-- debt first (oldest first) and adds the rest; a lot that is dead at p_at
-- (expired or voided) keeps only what holds still active at p_at earmark;
-- a hold past its expiry earmarks nothing. The reads and the writes' results
-- both show lots through this one function.
CREATE FUNCTION meterbase_credit_lots(p_ws uuid, p_account uuid, p_grant uuid, p_at timestamptz)
RETURNS TABLE (grant_id uuid, remaining bigint, held bigint, available bigint, scheduled bigint, activated bigint, burn_rank bigint, view jsonb)
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH l AS (
        SELECT g.*,
               (NOT g.journaled AND g.voided_at IS NULL AND g.effective_at <= p_at) AS activating,
               (g.voided_at IS NULL AND g.effective_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at)) AS live,
               CASE WHEN g.held = 0 THEN 0 ELSE coalesce((
                   SELECT sum(hl.amount) FROM credit_hold_lots hl
                     JOIN credit_holds h ON h.workspace_id = hl.workspace_id AND h.hold_id = hl.hold_id
                    WHERE hl.workspace_id = p_ws AND hl.grant_id = g.grant_id
                      AND h.state = 'active' AND h.expires_at > p_at), 0) END::bigint AS held_now
          FROM credit_grants g
         WHERE g.workspace_id = p_ws AND g.account_id = p_account AND (NOT g.depleted OR g.grant_id = p_grant)
    ), r AS (
        SELECT l.*,
               CASE WHEN l.activating THEN least(l.amount, greatest(0,
                   (SELECT a.debt FROM credit_accounts a WHERE a.workspace_id = p_ws AND a.account_id = p_account)
                   - coalesce(sum(CASE WHEN l.activating THEN l.amount END)
                       OVER (ORDER BY l.effective_at, l.grant_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))
               ELSE 0 END AS repay
          FROM l
    ), f AS (
        SELECT r.*,
               (CASE WHEN r.activating THEN CASE WHEN r.live THEN r.amount - r.repay ELSE 0 END
                     WHEN r.journaled THEN CASE WHEN r.live THEN r.remaining ELSE r.held_now END
                     ELSE 0 END)::bigint AS remaining_now,
               (CASE WHEN NOT r.journaled AND NOT r.activating AND r.voided_at IS NULL THEN r.amount ELSE 0 END)::bigint AS scheduled_now
          FROM r
    )
    SELECT f.grant_id, f.remaining_now, f.held_now,
           (CASE WHEN f.live THEN f.remaining_now - f.held_now ELSE 0 END)::bigint,
           f.scheduled_now,
           (CASE WHEN f.activating THEN f.amount ELSE 0 END)::bigint,
           row_number() OVER (ORDER BY f.priority, f.expires_at, f.effective_at, f.grant_id),
           jsonb_strip_nulls(jsonb_build_object(
               'id', f.grant_id, 'accountId', f.account_id, 'amount', f.amount,
               'remaining', f.remaining_now, 'held', f.held_now,
               'available', CASE WHEN f.live THEN f.remaining_now - f.held_now ELSE 0 END,
               'scheduled', f.scheduled_now,
               'status', CASE
                   WHEN f.voided_at IS NOT NULL AND (f.expires_at IS NULL OR f.voided_at < f.expires_at) THEN 'voided'
                   WHEN f.scheduled_now > 0 THEN 'scheduled'
                   WHEN f.expires_at <= p_at THEN 'expired'
                   WHEN f.remaining_now = 0 THEN 'depleted'
                   ELSE 'active' END,
               'priority', f.priority, 'effectiveAt', meterbase_credit__time(f.effective_at),
               'expiresAt', meterbase_credit__time(f.expires_at), 'category', f.category, 'metadata', f.metadata,
               'reference', nullif(f.reference, ''), 'voidedAt', meterbase_credit__time(f.voided_at),
               'createdAt', meterbase_credit__time(f.created_at)))
      FROM f;
END;
$$;

-- One lot's view at p_now, for the results of writes.
CREATE FUNCTION meterbase_credit__grant_json(p_ws uuid, p_account uuid, p_grant uuid, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN (SELECT l.view FROM meterbase_credit_lots(p_ws, p_account, p_grant, p_now) l WHERE l.grant_id = p_grant);
END;
$$;

CREATE FUNCTION meterbase_credit__hold_json(p_ws uuid, h credit_holds) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', h.hold_id, 'accountId', h.account_id, 'amount', h.amount, 'state', h.state,
        'captured', h.captured, 'reference', nullif(h.reference, ''),
        'expiresAt', meterbase_credit__time(h.expires_at), 'resolvedAt', meterbase_credit__time(h.resolved_at),
        'createdAt', meterbase_credit__time(h.created_at),
        'lots', (SELECT jsonb_agg(jsonb_build_object('grantId', hl.grant_id, 'amount', hl.amount)
                                  ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id)
                   FROM credit_hold_lots hl
                   JOIN credit_grants g ON g.workspace_id = hl.workspace_id AND g.grant_id = hl.grant_id
                  WHERE hl.workspace_id = p_ws AND hl.hold_id = h.hold_id)));
END;
$$;

-- The key's first result (flagged as a replay), NULL if the key is new,
-- or MB102 if it was used for another request.
CREATE FUNCTION meterbase_credit__replay(p_ws uuid, p_key text, p_hash bytea) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    r credit_idempotency;
BEGIN
    SELECT * INTO r FROM credit_idempotency i WHERE i.workspace_id = p_ws AND i.key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF r.request_hash <> p_hash THEN
        PERFORM meterbase_credit__raise('MB102', 'the idempotency key was used for another request',
            jsonb_build_object('key', p_key, 'operation', r.operation));
    END IF;
    RETURN r.result || '{"replay": true}';
END;
$$;

-- Records the key with the result, in the transaction of the change. The
-- account's row lock already orders every request with this key on this
-- account (a retry waits, then finds the key); a conflict here is the same
-- key used at the same moment for another account's request, whose work
-- this error undoes.
CREATE FUNCTION meterbase_credit__finish(p_ws uuid, p_key text, p_operation text, p_hash bytea, p_result jsonb, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
    VALUES (p_ws, p_key, p_operation, p_hash, p_result, p_now)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB102', 'the idempotency key was used for another request',
            jsonb_build_object('key', p_key, 'operation', p_operation));
    END IF;
    RETURN p_result;
END;
$$;

-- Writers of an account queue on a transaction-scoped advisory lock keyed
-- by the account (the last 64 bits of its id, random in a version 7 UUID)
-- before they lock its row. The row lock is what guards the account; the
-- queue is for a busy account: waiting on the row itself, each waiter is
-- woken twice per turn and then follows the row's chain of newer versions
-- from the one it first saw, while a waiter let through the queue finds
-- the row free and reads its latest version directly. Two accounts whose
-- keys collide only share a queue.
CREATE FUNCTION meterbase_credit__queue(p_account uuid) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(('x' || substr(replace(p_account::text, '-', ''), 17, 16))::bit(64)::bigint);
END;
$$;

-- Locks the account's row for the rest of the transaction and returns it.
CREATE FUNCTION meterbase_credit__lock(p_ws uuid, p_account uuid) RETURNS credit_accounts
LANGUAGE plpgsql
AS $$
DECLARE
    a credit_accounts;
BEGIN
    PERFORM meterbase_credit__queue(p_account);
    SELECT * INTO a FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such credit account', jsonb_build_object('what', 'account', 'id', p_account));
    END IF;
    RETURN a;
END;
$$;

-- Appends one journal entry, moving the account's figures by the entry's
-- deltas, in one statement. p_due, if not NULL, brings settle_due_at
-- forward.
CREATE FUNCTION meterbase_credit__append(
    p_ws uuid, p_account uuid, p_kind text, p_amount bigint, p_held_delta bigint, p_debt_delta bigint,
    p_grant uuid, p_hold uuid, p_refunded uuid, p_reference text, p_effective timestamptz, p_now timestamptz,
    p_due timestamptz) RETURNS credit_entries
LANGUAGE plpgsql
AS $$
DECLARE
    e credit_entries;
BEGIN
    WITH a AS (
        UPDATE credit_accounts c
           SET balance = c.balance + p_amount, held = c.held + p_held_delta, debt = c.debt + p_debt_delta,
               entry_seq = c.entry_seq + 1, settled_at = p_now, updated_at = p_now,
               settle_due_at = CASE WHEN p_due < c.settle_due_at THEN p_due ELSE c.settle_due_at END
         WHERE c.workspace_id = p_ws AND c.account_id = p_account
        RETURNING c.balance, c.held, c.debt, c.entry_seq)
    INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, held_delta, debt_delta,
                                balance_after, held_after, debt_after, grant_id, hold_id, refunded_entry_id,
                                reference, effective_at, recorded_at)
    SELECT p_ws, meterbase_credit__uuid(), p_account, a.entry_seq, p_kind, p_amount, p_held_delta, p_debt_delta,
           a.balance, a.held, a.debt, p_grant, p_hold, p_refunded, coalesce(p_reference, ''), p_effective, p_now
      FROM a
    RETURNING * INTO e;
    RETURN e;
END;
$$;

-- Ends p_amount unheld credits of a dead lot at p_at: an 'expire' entry if
-- the lot expired before it was voided, else a 'void' one.
CREATE FUNCTION meterbase_credit__kill(p_ws uuid, p_account uuid, p_grant uuid, p_amount bigint, p_at timestamptz, p_now timestamptz) RETURNS credit_entries
LANGUAGE plpgsql
AS $$
DECLARE
    g credit_grants;
BEGIN
    UPDATE credit_grants c SET remaining = c.remaining - p_amount
     WHERE c.workspace_id = p_ws AND c.grant_id = p_grant
    RETURNING * INTO g;
    RETURN meterbase_credit__append(p_ws, p_account,
        CASE WHEN g.expires_at IS NOT NULL AND (g.voided_at IS NULL OR g.expires_at <= g.voided_at) THEN 'expire' ELSE 'void' END,
        -p_amount, 0, 0, p_grant, NULL, NULL, g.reference, p_at, p_now, NULL);
END;
$$;

-- Frees every earmark of a hold (whose state the caller has changed), in
-- burn order; credits freed into a lot that is dead at p_at end at once, at
-- p_at. Returns those entries as JSON.
CREATE FUNCTION meterbase_credit__free(p_ws uuid, p_account uuid, p_hold uuid, p_at timestamptz, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
    e credit_entries;
    v_also jsonb := '[]';
BEGIN
    FOR r IN
        SELECT hl.grant_id, hl.amount, g.expires_at, g.voided_at
          FROM credit_hold_lots hl
          JOIN credit_grants g ON g.workspace_id = hl.workspace_id AND g.grant_id = hl.grant_id
         WHERE hl.workspace_id = p_ws AND hl.hold_id = p_hold
         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id
    LOOP
        UPDATE credit_grants c SET held = c.held - r.amount WHERE c.workspace_id = p_ws AND c.grant_id = r.grant_id;
        IF r.voided_at <= p_at OR r.expires_at <= p_at THEN
            e := meterbase_credit__kill(p_ws, p_account, r.grant_id, r.amount, p_at, p_now);
            v_also := v_also || meterbase_credit__entry_json(e, NULL);
        END IF;
    END LOOP;
    RETURN v_also;
END;
$$;

-- Writes into the journal every time-driven change of the account up to
-- p_now, in this order: (0) scheduled grants that took effect, oldest
-- first, each paying the account's debt first; (1) holds whose time ran
-- out, earliest first, their earmarks freed (into a lot dead by then, they
-- end at the hold's expiry); (2) the unheld credits of lots that expired,
-- at their expiry. Then it says when it must run next. Settling changes no
-- figure a read reports: reads compute the same at read time.
CREATE FUNCTION meterbase_credit__settle(p_ws uuid, p_account uuid, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    n integer := 0;
    r record;
    v_debt bigint;
    v_repay bigint;
    v_freed jsonb;
BEGIN
    FOR r IN
        SELECT g.grant_id, g.amount, g.effective_at, g.reference
          FROM credit_grants g
         WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
           AND NOT g.journaled AND g.voided_at IS NULL AND g.effective_at <= p_now
         ORDER BY g.effective_at, g.grant_id
    LOOP
        SELECT c.debt INTO v_debt FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account;
        v_repay := least(v_debt, r.amount);
        UPDATE credit_grants c SET journaled = true, remaining = c.amount - v_repay
         WHERE c.workspace_id = p_ws AND c.grant_id = r.grant_id;
        UPDATE credit_accounts c SET scheduled = c.scheduled - r.amount
         WHERE c.workspace_id = p_ws AND c.account_id = p_account;
        PERFORM meterbase_credit__append(p_ws, p_account, 'grant', r.amount, 0, -v_repay, r.grant_id, NULL, NULL,
                                         r.reference, r.effective_at, p_now, NULL);
        n := n + 1;
    END LOOP;

    FOR r IN
        SELECT h.hold_id, h.amount, h.expires_at, h.reference
          FROM credit_holds h
         WHERE h.workspace_id = p_ws AND h.account_id = p_account AND h.state = 'active' AND h.expires_at <= p_now
         ORDER BY h.expires_at, h.hold_id
    LOOP
        UPDATE credit_holds c SET state = 'expired', resolved_at = r.expires_at
         WHERE c.workspace_id = p_ws AND c.hold_id = r.hold_id;
        PERFORM meterbase_credit__append(p_ws, p_account, 'hold_expired', 0, -r.amount, 0, NULL, r.hold_id, NULL,
                                         r.reference, r.expires_at, p_now, NULL);
        v_freed := meterbase_credit__free(p_ws, p_account, r.hold_id, r.expires_at, p_now);
        n := n + 1 + jsonb_array_length(v_freed);
    END LOOP;

    FOR r IN
        SELECT g.grant_id, g.remaining - g.held AS amount, least(g.expires_at, g.voided_at) AS died
          FROM credit_grants g
         WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
           AND g.journaled AND g.remaining > g.held AND (g.expires_at <= p_now OR g.voided_at IS NOT NULL)
         ORDER BY least(g.expires_at, g.voided_at), g.grant_id
    LOOP
        PERFORM meterbase_credit__kill(p_ws, p_account, r.grant_id, r.amount, r.died, p_now);
        n := n + 1;
    END LOOP;

    UPDATE credit_accounts c
       SET settled_at = p_now,
           settle_due_at = coalesce(least(
               (SELECT min(h.expires_at) FROM credit_holds h
                 WHERE h.workspace_id = p_ws AND h.account_id = p_account AND h.state = 'active'),
               (SELECT min(CASE WHEN g.journaled THEN g.expires_at ELSE g.effective_at END) FROM credit_grants g
                 WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted AND g.voided_at IS NULL
                   AND (NOT g.journaled OR g.expires_at > p_now))), 'infinity')
     WHERE c.workspace_id = p_ws AND c.account_id = p_account;
    RETURN n;
END;
$$;

-- Locks the account, answers a retry from the key, and settles the account
-- if anything is due. Returns the replay (the caller returns it at once)
-- or NULL, and the locked account as it is after settling.
CREATE FUNCTION meterbase_credit__begin(p_ws uuid, p_account uuid, p_key text, p_hash bytea, p_now timestamptz,
                                        OUT replay jsonb, OUT a credit_accounts)
LANGUAGE plpgsql
AS $$
BEGIN
    a := meterbase_credit__lock(p_ws, p_account);
    IF p_key IS NOT NULL THEN
        replay := meterbase_credit__replay(p_ws, p_key, p_hash);
        IF replay IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    IF p_now >= a.settle_due_at THEN
        PERFORM meterbase_credit__settle(p_ws, p_account, p_now);
        SELECT * INTO a FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account;
    END IF;
END;
$$;

-- Opens the workspace's shared pool (p_user NULL) or a member's account,
-- or returns the one that exists ("created": false); the credit limit only
-- applies to a new account.
CREATE FUNCTION meterbase_credit_open_account(p_ws uuid, p_account uuid, p_user uuid, p_limit bigint, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    a credit_accounts;
    v_created boolean := true;
BEGIN
    IF p_user IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM memberships m WHERE m.workspace_id = p_ws AND m.user_id = p_user) THEN
        PERFORM meterbase_credit__raise('MB109', 'the user is not a member of the workspace', jsonb_build_object('userId', p_user));
    END IF;
    INSERT INTO credit_accounts (workspace_id, account_id, kind, user_id, credit_limit, settled_at, created_at, updated_at)
    VALUES (p_ws, p_account, CASE WHEN p_user IS NULL THEN 'workspace' ELSE 'member' END, p_user, p_limit, v_now, v_now, v_now)
    ON CONFLICT DO NOTHING
    RETURNING * INTO a;
    IF NOT FOUND THEN
        v_created := false;
        SELECT * INTO a FROM credit_accounts c
         WHERE c.workspace_id = p_ws AND (CASE WHEN p_user IS NULL THEN c.kind = 'workspace' ELSE c.user_id = p_user END);
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', a.account_id, 'kind', a.kind, 'userId', a.user_id, 'creditLimit', a.credit_limit,
        'createdAt', meterbase_credit__time(a.created_at), 'updatedAt', meterbase_credit__time(a.updated_at),
        'created', v_created));
END;
$$;

CREATE FUNCTION meterbase_credit_set_limit(p_ws uuid, p_account uuid, p_limit bigint, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    a credit_accounts;
BEGIN
    UPDATE credit_accounts c SET credit_limit = p_limit, updated_at = v_now
     WHERE c.workspace_id = p_ws AND c.account_id = p_account
    RETURNING * INTO a;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such credit account', jsonb_build_object('what', 'account', 'id', p_account));
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', a.account_id, 'kind', a.kind, 'userId', a.user_id, 'creditLimit', a.credit_limit,
        'createdAt', meterbase_credit__time(a.created_at), 'updatedAt', meterbase_credit__time(a.updated_at)));
END;
$$;

-- A grant: a lot of p_amount credits. Effective at p_effective, never
-- earlier than now; if effective now, it first pays the account's debt and
-- is journaled at once, else when it takes effect (by settling).
CREATE FUNCTION meterbase_credit_grant(p_ws uuid, p_account uuid, p_amount bigint, p_priority bigint,
                                       p_effective timestamptz, p_expires timestamptz, p_category text, p_metadata jsonb,
                                       p_reference text, p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_eff timestamptz := greatest(coalesce(p_effective, v_now), v_now);
    b record;
    g credit_grants;
    e credit_entries;
    v_repay bigint := 0;
    v_result jsonb;
BEGIN
    b := meterbase_credit__begin(p_ws, p_account, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    IF p_expires IS NOT NULL AND p_expires <= v_eff THEN
        PERFORM meterbase_credit__raise('MB108', 'the grant would expire before it takes effect',
            jsonb_build_object('field', 'expiresAt', 'reason', 'is not after the grant takes effect (' || meterbase_credit__time(v_eff) || ')'));
    END IF;
    IF (b.a).balance + (b.a).debt + (b.a).scheduled + p_amount > 1152921504606846976 THEN
        PERFORM meterbase_credit__raise('MB108', 'the account would hold more credits than allowed',
            jsonb_build_object('field', 'amount', 'reason', 'would bring the account above 2^60 credits'));
    END IF;
    IF v_eff <= v_now THEN
        v_repay := least((b.a).debt, p_amount);
    END IF;
    INSERT INTO credit_grants (workspace_id, grant_id, account_id, amount, remaining, priority, effective_at, expires_at,
                               category, metadata, reference, journaled, created_at)
    VALUES (p_ws, meterbase_credit__uuid(), p_account, p_amount, p_amount - v_repay, p_priority, v_eff, p_expires,
            p_category, coalesce(p_metadata, '{}'), coalesce(p_reference, ''), v_eff <= v_now, v_now)
    RETURNING * INTO g;
    IF v_eff <= v_now THEN
        e := meterbase_credit__append(p_ws, p_account, 'grant', p_amount, 0, -v_repay, g.grant_id, NULL, NULL,
                                      g.reference, v_now, v_now, p_expires);
        v_result := jsonb_build_object('grant', meterbase_credit__grant_json(p_ws, p_account, g.grant_id, v_now), 'entry', meterbase_credit__entry_json(e, NULL));
    ELSE
        UPDATE credit_accounts c SET scheduled = c.scheduled + p_amount, updated_at = v_now,
               settle_due_at = least(c.settle_due_at, v_eff)
         WHERE c.workspace_id = p_ws AND c.account_id = p_account;
        v_result := jsonb_build_object('grant', meterbase_credit__grant_json(p_ws, p_account, g.grant_id, v_now));
    END IF;
    RETURN meterbase_credit__finish(p_ws, p_key, 'grant', p_hash, v_result, v_now);
END;
$$;

-- A spend: p_amount from the account's spendable lots in burn order, what
-- they lack as debt within the credit limit, or nothing (MB101).
--
-- The hot path, so two statements (after the account's queue, see
-- meterbase_credit__queue): the account's row is locked first; then
-- one statement, whose snapshot is taken after the lock (READ COMMITTED
-- takes one per statement), looks the key up and, if it is new, takes from
-- the lots, moves the account's figures, journals the entry and its trace
-- and records the key. (One statement could not lock first: it would read
-- the lots as they were before the lock was granted.) Settling runs
-- between the two only when something is due. It returns the entry as a
-- row rather than JSON, and the key records only the entry's id: the
-- journal is append-only, so a replay reads the first result back from it.
CREATE FUNCTION meterbase_credit_spend(p_ws uuid, p_account uuid, p_amount bigint, p_reference text,
                                       p_key text, p_hash bytea, p_now timestamptz,
                                       OUT o_entry_id uuid, OUT o_seq bigint, OUT o_debt_delta bigint,
                                       OUT o_balance_after bigint, OUT o_held_after bigint, OUT o_debt_after bigint,
                                       OUT o_reference text, OUT o_effective_at timestamptz, OUT o_recorded_at timestamptz,
                                       OUT o_lot_ids uuid[], OUT o_lot_amounts bigint[], OUT o_lot_categories text[],
                                       OUT o_amount bigint, OUT o_replay boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_limit bigint;
    v_debt bigint;
    v_due timestamptz;
    v_old_hash bytea;
    v_old jsonb;
    v_taken bigint;
    v_headroom bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(('x' || substr(replace(p_account::text, '-', ''), 17, 16))::bit(64)::bigint);
    SELECT c.credit_limit, c.debt, c.settle_due_at INTO v_limit, v_debt, v_due
      FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such credit account', jsonb_build_object('what', 'account', 'id', p_account));
    END IF;
    IF v_now >= v_due THEN
        -- A retry answers before anything is written, settling included.
        SELECT i.request_hash, i.result INTO v_old_hash, v_old
          FROM credit_idempotency i WHERE i.workspace_id = p_ws AND i.key = p_key;
        IF v_old IS NULL THEN
            PERFORM meterbase_credit__settle(p_ws, p_account, v_now);
            SELECT c.credit_limit, c.debt INTO v_limit, v_debt
              FROM credit_accounts c WHERE c.workspace_id = p_ws AND c.account_id = p_account;
        END IF;
    END IF;
    IF v_old IS NULL THEN
        v_headroom := greatest(0, v_limit - v_debt);
        -- The key is recorded by a plain INSERT: a key recorded before is
        -- found by "old" (this statement's snapshot follows the account's
        -- lock, which every request on this account takes), so a
        -- violation of its primary key can only be the same key used at
        -- the same moment for another account's request; the error undoes
        -- this one (credits/errors.go maps it to a conflict).
        WITH old AS (
            SELECT i.request_hash, i.result FROM credit_idempotency i WHERE i.workspace_id = p_ws AND i.key = p_key
        ), lots AS (
            -- In burn order: what each lot can give, and what the lots
            -- before it gave (one window, read in the burn index's order).
            SELECT g.grant_id, g.category, g.remaining - g.held AS free,
                   sum(g.remaining - g.held) OVER w - (g.remaining - g.held) AS before,
                   row_number() OVER w AS pos
              FROM credit_grants g
             WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
               AND g.journaled AND g.voided_at IS NULL AND g.remaining > g.held
               AND g.effective_at <= v_now AND (g.expires_at IS NULL OR g.expires_at > v_now)
               AND NOT EXISTS (SELECT FROM old)
            WINDOW w AS (ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id ROWS UNBOUNDED PRECEDING)
        ), takes AS (
            SELECT l.grant_id, l.category, l.pos, least(l.free, p_amount - l.before) AS take FROM lots l WHERE l.before < p_amount
        ), total AS (
            SELECT coalesce(sum(t.take), 0)::bigint AS taken, array_agg(t.grant_id ORDER BY t.pos) AS ids,
                   array_agg(t.take ORDER BY t.pos) AS amounts, array_agg(t.category ORDER BY t.pos) AS categories
              FROM takes t
        ), debit AS (
            UPDATE credit_grants g SET remaining = g.remaining - t.take
              FROM takes t
             WHERE g.workspace_id = p_ws AND g.grant_id = t.grant_id
        ), acct AS (
            UPDATE credit_accounts c
               SET balance = c.balance - p_amount, debt = c.debt + (p_amount - total.taken),
                   entry_seq = c.entry_seq + 1, settled_at = v_now, updated_at = v_now
              FROM total
             WHERE c.workspace_id = p_ws AND c.account_id = p_account
               AND p_amount - total.taken <= v_headroom AND NOT EXISTS (SELECT FROM old)
            RETURNING c.balance, c.held, c.debt, c.entry_seq, total.taken
        ), e AS (
            INSERT INTO credit_entries (workspace_id, entry_id, account_id, entry_seq, kind, amount, held_delta, debt_delta,
                                        balance_after, held_after, debt_after, reference, effective_at, recorded_at)
            SELECT p_ws, meterbase_credit__uuid(), p_account, acct.entry_seq, 'spend', -p_amount, 0, p_amount - acct.taken,
                   acct.balance, acct.held, acct.debt, coalesce(p_reference, ''), v_now, v_now
              FROM acct
            RETURNING entry_id, entry_seq, debt_delta, balance_after, held_after, debt_after, reference
        ), el AS (
            INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
            SELECT p_ws, e.entry_id, t.grant_id, t.take FROM e, takes t
        ), ins AS (
            INSERT INTO credit_idempotency (workspace_id, key, operation, request_hash, result, created_at)
            SELECT p_ws, p_key, 'spend', p_hash, jsonb_build_object('entryId', e.entry_id), v_now FROM e
        )
        SELECT o.request_hash, o.result, e.entry_id, e.entry_seq, e.debt_delta, e.balance_after, e.held_after,
               e.debt_after, e.reference, total.ids, total.amounts, total.categories, total.taken
          INTO v_old_hash, v_old, o_entry_id, o_seq, o_debt_delta, o_balance_after, o_held_after,
               o_debt_after, o_reference, o_lot_ids, o_lot_amounts, o_lot_categories, v_taken
          FROM total LEFT JOIN e ON true LEFT JOIN old o ON true;
    END IF;
    IF v_old IS NOT NULL THEN
        IF v_old_hash <> p_hash THEN
            PERFORM meterbase_credit__raise('MB102', 'the idempotency key was used for another request',
                jsonb_build_object('key', p_key, 'operation', (SELECT i.operation FROM credit_idempotency i WHERE i.workspace_id = p_ws AND i.key = p_key)));
        END IF;
        SELECT x.entry_id, x.entry_seq, x.debt_delta, x.balance_after, x.held_after, x.debt_after, x.reference,
               x.effective_at, x.recorded_at, -x.amount, t.ids, t.amounts, t.categories
          INTO o_entry_id, o_seq, o_debt_delta, o_balance_after, o_held_after, o_debt_after, o_reference,
               o_effective_at, o_recorded_at, o_amount, o_lot_ids, o_lot_amounts, o_lot_categories
          FROM credit_entries x
          LEFT JOIN LATERAL (
              SELECT array_agg(l.grant_id ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id) AS ids,
                     array_agg(l.amount ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id) AS amounts,
                     array_agg(g.category ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id) AS categories
                FROM credit_entry_lots l JOIN credit_grants g ON g.workspace_id = l.workspace_id AND g.grant_id = l.grant_id
               WHERE l.workspace_id = p_ws AND l.entry_id = x.entry_id) t ON true
         WHERE x.workspace_id = p_ws AND x.entry_id = (v_old ->> 'entryId')::uuid;
        o_replay := true;
        RETURN;
    END IF;
    IF o_entry_id IS NULL THEN
        PERFORM meterbase_credit__raise('MB101', 'insufficient credits',
            jsonb_build_object('available', v_taken + v_headroom, 'requested', p_amount));
    END IF;
    o_effective_at := v_now;
    o_recorded_at := v_now;
    o_amount := p_amount;
    o_replay := false;
END;
$$;

-- A hold: earmarks p_amount of the account's spendable lots in burn order
-- until now + p_ttl_us, or nothing (MB101). The overdraft does not cover a
-- hold: a reservation earmarks real credits.
CREATE FUNCTION meterbase_credit_hold(p_ws uuid, p_account uuid, p_amount bigint, p_ttl_us bigint, p_reference text,
                                      p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_expires timestamptz := v_now + p_ttl_us * interval '1 microsecond';
    b record;
    r record;
    h credit_holds;
    e credit_entries;
    v_left bigint := p_amount;
    v_take bigint;
    v_lots uuid[] := '{}';
    v_takes bigint[] := '{}';
    v_result jsonb;
BEGIN
    b := meterbase_credit__begin(p_ws, p_account, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    FOR r IN
        SELECT g.grant_id, g.remaining - g.held AS free
          FROM credit_grants g
         WHERE g.workspace_id = p_ws AND g.account_id = p_account AND NOT g.depleted
           AND g.journaled AND g.voided_at IS NULL AND g.remaining > g.held
           AND g.effective_at <= v_now AND (g.expires_at IS NULL OR g.expires_at > v_now)
         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id
    LOOP
        v_take := least(r.free, v_left);
        v_left := v_left - v_take;
        v_lots := v_lots || r.grant_id;
        v_takes := v_takes || v_take;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left > 0 THEN
        PERFORM meterbase_credit__raise('MB101', 'insufficient credits',
            jsonb_build_object('available', p_amount - v_left, 'requested', p_amount));
    END IF;
    INSERT INTO credit_holds (workspace_id, hold_id, account_id, amount, expires_at, reference, created_at)
    VALUES (p_ws, meterbase_credit__uuid(), p_account, p_amount, v_expires, coalesce(p_reference, ''), v_now)
    RETURNING * INTO h;
    UPDATE credit_grants g SET held = g.held + t.take
      FROM unnest(v_lots, v_takes) AS t(grant_id, take)
     WHERE g.workspace_id = p_ws AND g.grant_id = t.grant_id;
    INSERT INTO credit_hold_lots (workspace_id, hold_id, grant_id, amount)
    SELECT p_ws, h.hold_id, t.grant_id, t.take FROM unnest(v_lots, v_takes) AS t(grant_id, take);
    e := meterbase_credit__append(p_ws, p_account, 'hold', 0, p_amount, 0, NULL, h.hold_id, NULL,
                                  h.reference, v_now, v_now, v_expires);
    v_result := jsonb_build_object('hold', meterbase_credit__hold_json(p_ws, h), 'entry', meterbase_credit__entry_json(e, NULL));
    RETURN meterbase_credit__finish(p_ws, p_key, 'hold', p_hash, v_result, v_now);
END;
$$;

-- The hold's account, or MB103.
CREATE FUNCTION meterbase_credit__hold_account(p_ws uuid, p_hold uuid) RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
    v_account uuid;
BEGIN
    SELECT h.account_id INTO v_account FROM credit_holds h WHERE h.workspace_id = p_ws AND h.hold_id = p_hold;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such hold', jsonb_build_object('what', 'hold', 'id', p_hold));
    END IF;
    RETURN v_account;
END;
$$;

-- Refuses a hold that is no longer active (it has resolved already).
CREATE FUNCTION meterbase_credit__check_active(h credit_holds) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    CASE h.state
        WHEN 'captured' THEN
            PERFORM meterbase_credit__raise('MB104', 'the hold was captured already', jsonb_build_object('holdId', h.hold_id));
        WHEN 'released' THEN
            PERFORM meterbase_credit__raise('MB105', 'the hold was released already', jsonb_build_object('holdId', h.hold_id));
        WHEN 'expired' THEN
            PERFORM meterbase_credit__raise('MB106', 'the hold has expired', jsonb_build_object('holdId', h.hold_id));
        ELSE
            NULL;
    END CASE;
END;
$$;

-- A capture: up to the held amount from the hold's earmarked lots (even a
-- lot that has expired since: the hold protected it), the rest of the hold
-- released; more than held takes the extra from spendable lots, then debt
-- within the credit limit, or nothing happens (MB101).
CREATE FUNCTION meterbase_credit_capture(p_ws uuid, p_hold uuid, p_amount bigint, p_reference text,
                                         p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_account uuid := meterbase_credit__hold_account(p_ws, p_hold);
    b record;
    r record;
    h credit_holds;
    e credit_entries;
    k credit_entries;
    v_left bigint := p_amount;
    v_take bigint;
    v_headroom bigint;
    v_mark_lots uuid[] := '{}';
    v_marks bigint[] := '{}';
    v_mark_takes bigint[] := '{}';
    v_dead boolean[] := '{}';
    v_lots uuid[] := '{}';
    v_takes bigint[] := '{}';
    v_extra_lots uuid[] := '{}';
    v_extra_takes bigint[] := '{}';
    v_also jsonb := '[]';
    v_result jsonb;
BEGIN
    b := meterbase_credit__begin(p_ws, v_account, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    SELECT * INTO h FROM credit_holds c WHERE c.workspace_id = p_ws AND c.hold_id = p_hold;
    PERFORM meterbase_credit__check_active(h);
    FOR r IN
        SELECT hl.grant_id, hl.amount, (g.voided_at <= v_now OR g.expires_at <= v_now) IS TRUE AS dead
          FROM credit_hold_lots hl
          JOIN credit_grants g ON g.workspace_id = hl.workspace_id AND g.grant_id = hl.grant_id
         WHERE hl.workspace_id = p_ws AND hl.hold_id = p_hold
         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id
    LOOP
        v_take := least(r.amount, v_left);
        v_left := v_left - v_take;
        v_mark_lots := v_mark_lots || r.grant_id;
        v_marks := v_marks || r.amount;
        v_mark_takes := v_mark_takes || v_take;
        v_dead := v_dead || r.dead;
        IF v_take > 0 THEN
            v_lots := v_lots || r.grant_id;
            v_takes := v_takes || v_take;
        END IF;
    END LOOP;
    IF v_left > 0 THEN
        FOR r IN
            SELECT g.grant_id, g.remaining - g.held AS free
              FROM credit_grants g
             WHERE g.workspace_id = p_ws AND g.account_id = v_account AND NOT g.depleted
               AND g.journaled AND g.voided_at IS NULL AND g.remaining > g.held
               AND g.effective_at <= v_now AND (g.expires_at IS NULL OR g.expires_at > v_now)
             ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id
        LOOP
            v_take := least(r.free, v_left);
            v_left := v_left - v_take;
            v_extra_lots := v_extra_lots || r.grant_id;
            v_extra_takes := v_extra_takes || v_take;
            EXIT WHEN v_left = 0;
        END LOOP;
        v_headroom := greatest(0, (b.a).credit_limit - (b.a).debt);
        IF v_left > v_headroom THEN
            PERFORM meterbase_credit__raise('MB101', 'insufficient credits',
                jsonb_build_object('available', p_amount - v_left + v_headroom, 'requested', p_amount));
        END IF;
    END IF;
    UPDATE credit_grants g SET held = g.held - t.mark, remaining = g.remaining - t.take
      FROM unnest(v_mark_lots, v_marks, v_mark_takes) AS t(grant_id, mark, take)
     WHERE g.workspace_id = p_ws AND g.grant_id = t.grant_id;
    UPDATE credit_grants g SET remaining = g.remaining - t.take
      FROM unnest(v_extra_lots, v_extra_takes) AS t(grant_id, take)
     WHERE g.workspace_id = p_ws AND g.grant_id = t.grant_id;
    UPDATE credit_holds c SET state = 'captured', captured = p_amount, resolved_at = v_now
     WHERE c.workspace_id = p_ws AND c.hold_id = p_hold
    RETURNING * INTO h;
    e := meterbase_credit__append(p_ws, v_account, 'capture', -p_amount, -h.amount, v_left, NULL, p_hold, NULL,
                                  coalesce(nullif(p_reference, ''), h.reference), v_now, v_now, NULL);
    INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
    SELECT p_ws, e.entry_id, t.grant_id, sum(t.take)
      FROM unnest(v_lots || v_extra_lots, v_takes || v_extra_takes) AS t(grant_id, take)
     GROUP BY t.grant_id;
    FOR i IN 1 .. coalesce(array_length(v_mark_lots, 1), 0) LOOP
        IF v_dead[i] AND v_marks[i] > v_mark_takes[i] THEN
            k := meterbase_credit__kill(p_ws, v_account, v_mark_lots[i], v_marks[i] - v_mark_takes[i], v_now, v_now);
            v_also := v_also || meterbase_credit__entry_json(k, NULL);
        END IF;
    END LOOP;
    v_result := jsonb_build_object('hold', meterbase_credit__hold_json(p_ws, h),
        'entry', meterbase_credit__entry_json(e, (
            SELECT jsonb_agg(jsonb_build_object('grantId', l.grant_id, 'amount', l.amount, 'category', g.category)
                             ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id)
              FROM credit_entry_lots l
              JOIN credit_grants g ON g.workspace_id = l.workspace_id AND g.grant_id = l.grant_id
             WHERE l.workspace_id = p_ws AND l.entry_id = e.entry_id)));
    IF v_also <> '[]' THEN
        v_result := v_result || jsonb_build_object('also', v_also);
    END IF;
    RETURN meterbase_credit__finish(p_ws, p_key, 'capture', p_hash, v_result, v_now);
END;
$$;

-- A release: the hold's earmarks freed; credits of a lot that has died
-- since end at once.
CREATE FUNCTION meterbase_credit_release(p_ws uuid, p_hold uuid, p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_account uuid := meterbase_credit__hold_account(p_ws, p_hold);
    b record;
    h credit_holds;
    e credit_entries;
    v_also jsonb;
    v_result jsonb;
BEGIN
    b := meterbase_credit__begin(p_ws, v_account, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    SELECT * INTO h FROM credit_holds c WHERE c.workspace_id = p_ws AND c.hold_id = p_hold;
    PERFORM meterbase_credit__check_active(h);
    UPDATE credit_holds c SET state = 'released', resolved_at = v_now
     WHERE c.workspace_id = p_ws AND c.hold_id = p_hold
    RETURNING * INTO h;
    e := meterbase_credit__append(p_ws, v_account, 'release', 0, -h.amount, 0, NULL, p_hold, NULL,
                                  h.reference, v_now, v_now, NULL);
    v_also := meterbase_credit__free(p_ws, v_account, p_hold, v_now, v_now);
    v_result := jsonb_build_object('hold', meterbase_credit__hold_json(p_ws, h), 'entry', meterbase_credit__entry_json(e, NULL));
    IF v_also <> '[]' THEN
        v_result := v_result || jsonb_build_object('also', v_also);
    END IF;
    RETURN meterbase_credit__finish(p_ws, p_key, 'release', p_hash, v_result, v_now);
END;
$$;

-- A refund of part or all of a spend or capture, never more than is left to
-- refund (MB107). It goes back in reverse burn order: first the part that
-- was taken as debt (which pays the debt back; whatever of it the account
-- no longer owes, because a grant paid it since, comes back as a new lot of
-- category 'refund'), then the lots, last taken first. Credits given back
-- to a lot that has expired or been voided since end again at once.
CREATE FUNCTION meterbase_credit_refund(p_ws uuid, p_entry uuid, p_amount bigint, p_reference text,
                                        p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    s credit_entries;
    b record;
    r record;
    e credit_entries;
    k credit_entries;
    g credit_grants;
    v_refunded bigint;
    v_debt_left bigint;
    v_left bigint := p_amount;
    v_take bigint;
    v_repay bigint := 0;
    v_excess bigint := 0;
    v_lots uuid[] := '{}';
    v_takes bigint[] := '{}';
    v_dead boolean[] := '{}';
    v_due timestamptz;
    v_also jsonb := '[]';
    v_trace jsonb;
    v_result jsonb;
BEGIN
    SELECT * INTO s FROM credit_entries c WHERE c.workspace_id = p_ws AND c.entry_id = p_entry;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such journal entry', jsonb_build_object('what', 'entry', 'id', p_entry));
    END IF;
    IF s.kind NOT IN ('spend', 'capture') THEN
        PERFORM meterbase_credit__raise('MB110', 'only a spend or a capture can be refunded',
            jsonb_build_object('entryId', p_entry, 'kind', s.kind));
    END IF;
    b := meterbase_credit__begin(p_ws, s.account_id, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    SELECT coalesce(sum(c.amount), 0) INTO v_refunded FROM credit_entries c
     WHERE c.workspace_id = p_ws AND c.refunded_entry_id = p_entry;
    IF p_amount > -s.amount - v_refunded THEN
        PERFORM meterbase_credit__raise('MB107', 'the refund is more than is left to refund',
            jsonb_build_object('refundable', -s.amount - v_refunded, 'requested', p_amount));
    END IF;
    -- What is left of the debt part: the refunds' amounts less what they
    -- gave back to the spend's own lots.
    SELECT s.debt_delta - coalesce(sum(c.amount), 0) + coalesce(sum(
               (SELECT sum(rl.amount) FROM credit_entry_lots rl
                 WHERE rl.workspace_id = p_ws AND rl.entry_id = c.entry_id
                   AND rl.grant_id IN (SELECT sl.grant_id FROM credit_entry_lots sl
                                        WHERE sl.workspace_id = p_ws AND sl.entry_id = p_entry))), 0)
      INTO v_debt_left
      FROM credit_entries c
     WHERE c.workspace_id = p_ws AND c.refunded_entry_id = p_entry;
    v_take := least(v_left, v_debt_left);
    v_left := v_left - v_take;
    v_repay := least(v_take, (b.a).debt);
    v_excess := v_take - v_repay;
    FOR r IN
        SELECT sl.grant_id,
               sl.amount - coalesce((SELECT sum(rl.amount) FROM credit_entry_lots rl
                                      JOIN credit_entries c ON c.workspace_id = rl.workspace_id AND c.entry_id = rl.entry_id
                                     WHERE rl.workspace_id = p_ws AND rl.grant_id = sl.grant_id
                                       AND c.refunded_entry_id = p_entry), 0) AS left_to_refund,
               (lot.voided_at <= v_now OR lot.expires_at <= v_now) IS TRUE AS dead,
               lot.expires_at
          FROM credit_entry_lots sl
          JOIN credit_grants lot ON lot.workspace_id = sl.workspace_id AND lot.grant_id = sl.grant_id
         WHERE sl.workspace_id = p_ws AND sl.entry_id = p_entry
         ORDER BY lot.priority DESC, lot.expires_at DESC NULLS FIRST, lot.effective_at DESC, lot.grant_id DESC
    LOOP
        EXIT WHEN v_left = 0;
        CONTINUE WHEN r.left_to_refund = 0;
        v_take := least(v_left, r.left_to_refund);
        v_left := v_left - v_take;
        v_lots := v_lots || r.grant_id;
        v_takes := v_takes || v_take;
        v_dead := v_dead || r.dead;
        IF NOT r.dead AND r.expires_at IS NOT NULL AND (v_due IS NULL OR r.expires_at < v_due) THEN
            v_due := r.expires_at;
        END IF;
    END LOOP;
    UPDATE credit_grants lot SET remaining = lot.remaining + t.take
      FROM unnest(v_lots, v_takes) AS t(grant_id, take)
     WHERE lot.workspace_id = p_ws AND lot.grant_id = t.grant_id;
    IF v_excess > 0 THEN
        INSERT INTO credit_grants (workspace_id, grant_id, account_id, amount, remaining, priority, effective_at,
                                   category, metadata, reference, journaled, created_at)
        VALUES (p_ws, meterbase_credit__uuid(), s.account_id, v_excess, v_excess, 0, v_now,
                'refund', jsonb_build_object('refundOf', p_entry), coalesce(p_reference, ''), true, v_now)
        RETURNING * INTO g;
        v_lots := v_lots || g.grant_id;
        v_takes := v_takes || v_excess;
        v_dead := v_dead || false;
    END IF;
    e := meterbase_credit__append(p_ws, s.account_id, 'refund', p_amount, 0, -v_repay, NULL, NULL, p_entry,
                                  p_reference, v_now, v_now, v_due);
    INSERT INTO credit_entry_lots (workspace_id, entry_id, grant_id, amount)
    SELECT p_ws, e.entry_id, t.grant_id, t.take FROM unnest(v_lots, v_takes) AS t(grant_id, take);
    FOR i IN 1 .. coalesce(array_length(v_lots, 1), 0) LOOP
        IF v_dead[i] THEN
            k := meterbase_credit__kill(p_ws, s.account_id, v_lots[i], v_takes[i], v_now, v_now);
            v_also := v_also || meterbase_credit__entry_json(k, NULL);
        END IF;
    END LOOP;
    SELECT jsonb_agg(jsonb_build_object('grantId', l.grant_id, 'amount', l.amount, 'category', lot.category)
                     ORDER BY lot.priority, lot.expires_at, lot.effective_at, lot.grant_id)
      INTO v_trace
      FROM credit_entry_lots l
      JOIN credit_grants lot ON lot.workspace_id = l.workspace_id AND lot.grant_id = l.grant_id
     WHERE l.workspace_id = p_ws AND l.entry_id = e.entry_id;
    v_result := jsonb_build_object('entry', meterbase_credit__entry_json(e, v_trace));
    IF v_also <> '[]' THEN
        v_result := v_result || jsonb_build_object('also', v_also);
    END IF;
    RETURN meterbase_credit__finish(p_ws, p_key, 'refund', p_hash, v_result, v_now);
END;
$$;

-- A void: ends the lot's unheld credits now ('void' entry) and any it gets
-- back later (a hold's release, a refund). What was spent stays spent; a
-- second void changes nothing.
CREATE FUNCTION meterbase_credit_void(p_ws uuid, p_grant uuid, p_key text, p_hash bytea, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_account uuid;
    b record;
    g credit_grants;
    e credit_entries;
    v_result jsonb;
BEGIN
    SELECT c.account_id INTO v_account FROM credit_grants c WHERE c.workspace_id = p_ws AND c.grant_id = p_grant;
    IF NOT FOUND THEN
        PERFORM meterbase_credit__raise('MB103', 'no such grant', jsonb_build_object('what', 'grant', 'id', p_grant));
    END IF;
    b := meterbase_credit__begin(p_ws, v_account, p_key, p_hash, v_now);
    IF b.replay IS NOT NULL THEN
        RETURN b.replay;
    END IF;
    SELECT * INTO g FROM credit_grants c WHERE c.workspace_id = p_ws AND c.grant_id = p_grant;
    IF g.voided_at IS NULL THEN
        UPDATE credit_grants c SET voided_at = v_now WHERE c.workspace_id = p_ws AND c.grant_id = p_grant
        RETURNING * INTO g;
        IF NOT g.journaled THEN
            UPDATE credit_accounts c SET scheduled = c.scheduled - g.amount, updated_at = v_now
             WHERE c.workspace_id = p_ws AND c.account_id = v_account;
        ELSIF g.remaining > g.held THEN
            e := meterbase_credit__kill(p_ws, v_account, p_grant, g.remaining - g.held, v_now, v_now);
            SELECT * INTO g FROM credit_grants c WHERE c.workspace_id = p_ws AND c.grant_id = p_grant;
        END IF;
    END IF;
    v_result := jsonb_build_object('grant', meterbase_credit__grant_json(p_ws, v_account, p_grant, v_now));
    IF e.entry_id IS NOT NULL THEN
        v_result := v_result || jsonb_build_object('entry', meterbase_credit__entry_json(e, NULL));
    END IF;
    RETURN meterbase_credit__finish(p_ws, p_key, 'void', p_hash, v_result, v_now);
END;
$$;

-- The sweeper: settles up to p_limit accounts of the workspace (or the one
-- given) that have something due, skipping any another transaction holds.
CREATE FUNCTION meterbase_credit_sweep(p_ws uuid, p_account uuid, p_limit integer, p_now timestamptz) RETURNS jsonb
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

-- Pins the search_path of every PL/pgSQL function to the schema this
-- migration runs in, pg_temp last, so that a caller's temporary objects or
-- search_path never change what their names mean. The schema is only known
-- here. (The SQL helpers stay inlinable: see meterbase_credit__uuid.)
--
-- And keeps them off sequential scans: every query in them is a lookup by
-- key that an index serves, but on a small table (a workspace with few
-- accounts) the planner prefers to read the whole heap, and a busy
-- account's row leaves thousands of dead versions there until autovacuum
-- runs: each call then reads them all, and a cached plan is not re-planned
-- meanwhile (measured: a hot account's spends slowed fourfold in a
-- minute). Where no index applies, the planner still scans.
DO $migration$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = pg_catalog.current_schema()::regnamespace
           AND p.proname LIKE 'meterbase\_credit\_%'
           AND p.prolang = (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'plpgsql')
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = %I, pg_temp SET enable_seqscan = off', f, pg_catalog.current_schema());
    END LOOP;
END;
$migration$;
