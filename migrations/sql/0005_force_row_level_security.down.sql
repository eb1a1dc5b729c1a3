-- changes: turns FORCE ROW LEVEL SECURITY off on users, workspaces and memberships and row security off on users, drops the users policies, the deferred owner check and the fixed-id trigger on workspaces and the MB001 function, and puts back the version-4 tenant helper and the version-3 last-owner trigger function.
-- locks: ACCESS EXCLUSIVE on users, then workspaces, then memberships, until the file commits (moments; no scan; reads and writes to the three tables wait).
-- rewrites: none.
-- scans: none.
-- large-table cost: constant.
-- down loses data: no.
-- rollback: the up migration forces row security again.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

ALTER TABLE users NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces NO FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;

DROP POLICY users_tenant_read ON users;
DROP POLICY users_operator_read ON users;
DROP POLICY users_directory ON users;

DROP TRIGGER workspaces_have_an_owner ON workspaces;
DROP FUNCTION meterbase_workspace_has_an_owner();
DROP TRIGGER workspaces_id_is_fixed ON workspaces;
DROP FUNCTION meterbase_workspace_id_is_fixed();

-- Version 4's helper, word for word: its text is what a version-4 schema
-- compares equal on.
CREATE OR REPLACE FUNCTION meterbase_workspace_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('meterbase.workspace_id', true), '')::uuid $$;

DROP FUNCTION meterbase_no_tenant_context();
DROP FUNCTION meterbase_directory();

-- Version 3's trigger function, word for word (without FORCE the owner
-- sees every row, and it needs no setting).
DO $migration$
BEGIN
    EXECUTE format($function$
        CREATE OR REPLACE FUNCTION %1$I.meterbase_keep_an_owner() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp
        AS $body$
        BEGIN
            -- It runs as the owner: refuse to serve any other table.
            IF TG_RELID <> '%1$I.memberships'::regclass THEN
                RAISE EXCEPTION 'meterbase_keep_an_owner is a trigger of memberships only';
            END IF;
            -- Touching the workspace row queues concurrent removals of its
            -- owners behind each other: the second one waits for the first
            -- to commit, then (read committed) sees it, or (repeatable read
            -- and above) fails to serialize and may be retried. No row means
            -- the workspace itself is being deleted, and its memberships go
            -- with it.
            UPDATE %1$I.workspaces SET updated_at = pg_catalog.now() WHERE workspace_id = OLD.workspace_id;
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM %1$I.memberships WHERE workspace_id = OLD.workspace_id AND role = 'owner') THEN
                RAISE EXCEPTION 'workspace %% would be left without an owner', OLD.workspace_id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'memberships_keep_an_owner', TABLE = 'memberships';
            END IF;
            RETURN NULL;
        END;
        $body$
    $function$, pg_catalog.current_schema());
END;
$migration$;
