-- changes: drops users, workspaces and memberships.
-- locks: ACCESS EXCLUSIVE on the three tables, for as long as the drop takes (moments).
-- rewrites: none.
-- large-table cost: constant; dropping does not scan.
-- down loses data: yes; every user, workspace and membership is deleted.
-- rollback: the up migration recreates the tables empty; restore rows from a backup.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TABLE memberships;
DROP TABLE workspaces;
DROP TABLE users;
