-- changes: drops features and operation_types.
-- locks: ACCESS EXCLUSIVE on the two tables, for as long as the drop takes (moments).
-- rewrites: none.
-- large-table cost: constant; dropping does not scan.
-- down loses data: yes; every feature and every host-defined operation type is deleted.
-- rollback: the up migration recreates the tables with the built-in operation types; restore host rows from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TABLE features;
DROP TABLE operation_types;
