-- changes: drops the credit ledger: its functions, the append-only trigger function, and the tables credit_idempotency, credit_entry_lots, credit_entries, credit_hold_lots, credit_holds, credit_grants and credit_accounts.
-- locks: ACCESS EXCLUSIVE on credit_idempotency, credit_entry_lots, credit_entries, credit_hold_lots, credit_holds, credit_grants and credit_accounts, and on workspaces and users while the foreign keys to them are dropped, until the file commits (moments; no scan; every query on those tables waits meanwhile).
-- rewrites: none.
-- scans: none; dropping reads no rows.
-- large-table cost: constant; dropping does not scan.
-- down loses data: yes; every credit account, grant, hold, journal entry and idempotency record is deleted.
-- rollback: the up migration recreates the tables empty; restore the ledger from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP FUNCTION meterbase_credit_sweep(uuid, uuid, integer, timestamptz);
DROP FUNCTION meterbase_credit_void(uuid, uuid, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_refund(uuid, uuid, bigint, text, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_release(uuid, uuid, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_capture(uuid, uuid, bigint, text, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit__check_active(credit_holds);
DROP FUNCTION meterbase_credit__hold_account(uuid, uuid);
DROP FUNCTION meterbase_credit_hold(uuid, uuid, bigint, bigint, text, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_spend(uuid, uuid, bigint, text, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_grant(uuid, uuid, bigint, bigint, timestamptz, timestamptz, text, jsonb, text, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit_set_limit(uuid, uuid, bigint, timestamptz);
DROP FUNCTION meterbase_credit_open_account(uuid, uuid, uuid, bigint, timestamptz);
DROP FUNCTION meterbase_credit__begin(uuid, uuid, text, bytea, timestamptz);
DROP FUNCTION meterbase_credit__settle(uuid, uuid, timestamptz);
DROP FUNCTION meterbase_credit__free(uuid, uuid, uuid, timestamptz, timestamptz);
DROP FUNCTION meterbase_credit__kill(uuid, uuid, uuid, bigint, timestamptz, timestamptz);
DROP FUNCTION meterbase_credit__append(uuid, uuid, text, bigint, bigint, bigint, uuid, uuid, uuid, text, timestamptz, timestamptz, timestamptz);
DROP FUNCTION meterbase_credit__lock(uuid, uuid);
DROP FUNCTION meterbase_credit__queue(uuid);
DROP FUNCTION meterbase_credit__finish(uuid, text, text, bytea, jsonb, timestamptz);
DROP FUNCTION meterbase_credit__replay(uuid, text, bytea);
DROP FUNCTION meterbase_credit__hold_json(uuid, credit_holds);
DROP FUNCTION meterbase_credit__grant_json(uuid, uuid, uuid, timestamptz);
DROP FUNCTION meterbase_credit_lots(uuid, uuid, uuid, timestamptz);
DROP FUNCTION meterbase_credit__entry_json(credit_entries, jsonb);
DROP FUNCTION meterbase_credit__raise(text, text, jsonb);
DROP FUNCTION meterbase_credit__time(timestamptz);
DROP FUNCTION meterbase_credit__uuid();

-- A down migration drops what its up created; the header says what is lost.
-- squawk-ignore ban-drop-table
DROP TABLE credit_idempotency;
-- squawk-ignore ban-drop-table
DROP TABLE credit_entry_lots;
-- squawk-ignore ban-drop-table
DROP TABLE credit_entries;
-- squawk-ignore ban-drop-table
DROP TABLE credit_hold_lots;
-- squawk-ignore ban-drop-table
DROP TABLE credit_holds;
-- squawk-ignore ban-drop-table
DROP TABLE credit_grants;
-- squawk-ignore ban-drop-table
DROP TABLE credit_accounts;

DROP FUNCTION meterbase_credit_append_only();
