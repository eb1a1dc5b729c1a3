-- changes: enables row-level security on the tenant tables (workspaces, memberships), with policies keyed on the transaction-local settings meterbase.workspace_id, meterbase.user_id and meterbase.operator that the tenancy handles set. Roles that own the tables or have BYPASSRLS are not affected; the host's application role is.
-- locks: ACCESS EXCLUSIVE on workspaces, then memberships, while row security is enabled and policies are created, until the file commits (moments; no scan; reads and writes to both tables wait).
-- rewrites: none.
-- scans: none; policies apply to later queries only.
-- large-table cost: constant to apply; afterwards every query by a non-owner role is filtered by the policies, which the tenant indexes serve.
-- down loses data: no; the down migration drops the policies and disables row security.
-- rollback: run the down migration; the tables are then guarded by the tenant handle alone.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- An empty or missing setting is NULL, and NULL matches no row.
CREATE FUNCTION meterbase_workspace_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('meterbase.workspace_id', true), '')::uuid $$;

CREATE FUNCTION meterbase_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('meterbase.user_id', true), '')::uuid $$;

CREATE FUNCTION meterbase_operator() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(current_setting('meterbase.operator', true), '') <> '' $$;

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspaces_tenant ON workspaces
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
-- The operator handle reads across tenants, and only reads.
CREATE POLICY workspaces_operator_read ON workspaces FOR SELECT
    USING (meterbase_operator());

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant ON memberships
    USING (workspace_id = meterbase_workspace_id())
    WITH CHECK (workspace_id = meterbase_workspace_id());
CREATE POLICY memberships_operator_read ON memberships FOR SELECT
    USING (meterbase_operator());
