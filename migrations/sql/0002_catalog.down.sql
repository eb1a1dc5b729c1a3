-- changes: drops features and operation_types.
-- locks: ACCESS EXCLUSIVE on features and operation_types until the file commits (moments); every query on them waits meanwhile.
-- rewrites: none.
-- scans: none; dropping reads no rows.
-- large-table cost: constant; dropping does not scan.
-- down loses data: yes; every feature and every host-defined operation type is deleted.
-- rollback: the up migration recreates the tables with the built-in operation types; restore host rows from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A down migration drops what its up created; the header says what is lost.
-- squawk-ignore ban-drop-table
DROP TABLE features;
-- squawk-ignore ban-drop-table
DROP TABLE operation_types;
