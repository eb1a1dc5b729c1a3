-- changes: adds a trigger on memberships that refuses to remove, demote or move away a workspace's last owner, whatever the path (the library, a deleted user's cascade, raw SQL; TRUNCATE, a deliberate act of the owner, is not a row change and is not checked).
-- locks: SHARE ROW EXCLUSIVE on memberships while the trigger is created, until the file commits (moments; writes to memberships wait, reads do not).
-- rewrites: none.
-- scans: none; existing memberships are not checked.
-- large-table cost: constant; creating a trigger neither scans nor rewrites, and existing workspaces without an owner are left as they are. Afterwards, removing or demoting an owner also touches its workspace row and looks for another owner (an index lookup).
-- down loses data: no; the down migration drops the trigger and its function only.
-- rollback: run the down migration; nothing else depends on the trigger.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- SECURITY DEFINER: the trigger runs as the tables' owner, whom row-level
-- security does not filter, so it sees the workspace and its owners even
-- when the statement that fired it could not (a user deleted by the
-- application role, whose cascade reaches every workspace of the user's).
-- A function that runs as its owner must not let its caller choose what its
-- names mean: the tables are qualified with the schema this migration runs
-- in, and its search_path is pinned to that schema with pg_temp last, so a
-- caller's temporary table or function cannot stand in for them. The
-- schema is only known here, hence the dynamic SQL.
DO $migration$
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION %1$I.meterbase_keep_an_owner() RETURNS trigger
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

-- Nobody but the owner may attach it to a table of their own (a temporary
-- one, say) and so run it as the owner. Firing an existing trigger needs no
-- EXECUTE privilege.
REVOKE EXECUTE ON FUNCTION meterbase_keep_an_owner() FROM PUBLIC;

-- Moving an owner's membership to another workspace takes the owner from
-- this one, so workspace_id counts as much as role.
CREATE TRIGGER memberships_keep_an_owner
    AFTER DELETE OR UPDATE OF role, workspace_id ON memberships
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION meterbase_keep_an_owner();
