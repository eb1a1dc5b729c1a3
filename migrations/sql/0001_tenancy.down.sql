-- changes: drops users, workspaces and memberships.
-- locks: ACCESS EXCLUSIVE on memberships, workspaces and users until the file commits (moments); every query on them waits meanwhile.
-- rewrites: none.
-- scans: none; dropping reads no rows.
-- large-table cost: constant; dropping does not scan.
-- down loses data: yes; every user, workspace and membership is deleted.
-- rollback: the up migration recreates the tables empty; restore rows from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A down migration drops what its up created; the header says what is lost.
-- squawk-ignore ban-drop-table
DROP TABLE memberships;
-- squawk-ignore ban-drop-table
DROP TABLE workspaces;
-- squawk-ignore ban-drop-table
DROP TABLE users;
