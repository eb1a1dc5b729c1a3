-- changes: drops the row-level security policies and their functions, and disables row security on workspaces and memberships.
-- locks: ACCESS EXCLUSIVE on memberships, then workspaces, until the file commits (moments; no scan; reads and writes to both tables wait).
-- rewrites: none.
-- scans: none.
-- large-table cost: constant.
-- down loses data: no.
-- rollback: the up migration restores the policies.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP POLICY memberships_operator_read ON memberships;
DROP POLICY memberships_tenant ON memberships;
ALTER TABLE memberships DISABLE ROW LEVEL SECURITY;

DROP POLICY workspaces_operator_read ON workspaces;
DROP POLICY workspaces_tenant ON workspaces;
ALTER TABLE workspaces DISABLE ROW LEVEL SECURITY;

DROP FUNCTION meterbase_operator();
DROP FUNCTION meterbase_user_id();
DROP FUNCTION meterbase_workspace_id();
