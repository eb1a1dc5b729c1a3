-- changes: drops the last-owner trigger on memberships and its function.
-- locks: ACCESS EXCLUSIVE on memberships while the trigger is dropped, until the file commits (moments; reads and writes to memberships wait).
-- rewrites: none.
-- scans: none.
-- large-table cost: constant.
-- down loses data: no.
-- rollback: the up migration recreates the trigger.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER memberships_keep_an_owner ON memberships;
DROP FUNCTION meterbase_keep_an_owner();
