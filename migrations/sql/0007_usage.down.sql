-- changes: drops the usage history: usage_retention, usage_adjustments, usage_rollups and usage_events, with their triggers, policies and the rollup trigger function.
-- locks: ACCESS EXCLUSIVE on usage_retention, usage_adjustments, usage_rollups and usage_events as they are dropped, and on workspaces and operation_types while the foreign keys to them (their triggers) go, until the file commits (moments; every query on these tables waits meanwhile).
-- rewrites: none.
-- scans: none; dropping reads no rows.
-- large-table cost: constant; dropping a table does not scan it, and its files are removed at commit.
-- down loses data: yes; every usage event, rollup, adjustment and retention horizon is deleted.
-- rollback: the up migration recreates the tables empty; restore the usage history from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A down migration drops what its up created; the header says what is lost.
-- squawk-ignore ban-drop-table
DROP TABLE usage_retention;
-- squawk-ignore ban-drop-table
DROP TABLE usage_adjustments;
-- squawk-ignore ban-drop-table
DROP TABLE usage_rollups;
-- squawk-ignore ban-drop-table
DROP TABLE usage_events;
DROP FUNCTION meterbase_usage_rollup();
