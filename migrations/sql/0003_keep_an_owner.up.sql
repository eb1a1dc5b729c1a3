-- changes: adds a trigger on memberships that refuses to remove or demote a workspace's last owner, whatever the path (the library, a deleted user's cascade, raw SQL).
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
-- Its search_path is pinned to the one this migration runs with, where the
-- tables are.
CREATE FUNCTION meterbase_keep_an_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- Touching the workspace row queues concurrent removals of its owners
    -- behind each other: the second one waits for the first to commit, then
    -- (read committed) sees it, or (repeatable read and above) fails to
    -- serialize and may be retried. No row means the workspace itself is
    -- being deleted, and its memberships go with it.
    UPDATE workspaces SET updated_at = now() WHERE workspace_id = OLD.workspace_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM memberships WHERE workspace_id = OLD.workspace_id AND role = 'owner') THEN
        RAISE EXCEPTION 'workspace % would be left without an owner', OLD.workspace_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'memberships_keep_an_owner', TABLE = 'memberships';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER memberships_keep_an_owner
    AFTER DELETE OR UPDATE OF role ON memberships
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION meterbase_keep_an_owner();
