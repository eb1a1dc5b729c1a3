-- changes: forces row-level security on workspaces and memberships, and enables and forces it on users, so that the tables' owner is bound by the policies too (superusers and BYPASSRLS roles still are not); a bound role whose transaction sets none of meterbase.workspace_id, meterbase.operator, meterbase.directory now gets an error (SQLSTATE MB001) where it got no rows; users gets policies (a tenant reads its own members and the user it acts as, the operator reads every user, and only the meterbase.directory setting reads and writes the directory); the last-owner trigger sets the tenant setting for its own queries; a deferred constraint trigger refuses, at commit, a new workspace without an owner; a trigger refuses any change of a workspace's id.
-- locks: ACCESS EXCLUSIVE on users, then workspaces, then memberships, until the file commits (moments; no scan; reads and writes to the three tables wait).
-- rewrites: none.
-- scans: none; existing workspaces without an owner are left as they are, and the policies apply to later queries only.
-- large-table cost: constant to apply. Afterwards a tenant's read of users looks up a membership for each user row it considers (an index lookup on memberships_pkey), a new workspace costs two index lookups at commit, and the policies' helper reads up to three settings per row instead of one.
-- down loses data: no; the down migration drops the new policies, trigger and functions, puts back the version-4 functions and turns FORCE off on the three tables and row security off on users.
-- rollback: run the down migration; a host that only needs its owner unbound again can instead run ALTER TABLE ... NO FORCE ROW LEVEL SECURITY on users, workspaces and memberships and stay at version 5.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- The strongest locks first, parents before the child, so that the file
-- never waits for a lock while holding a weaker one on another table.
-- Until FORCE, the owner (the role of a one-role deployment) was exempt
-- from every policy; from here on only superusers and BYPASSRLS roles are.
ALTER TABLE users ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;

CREATE FUNCTION meterbase_directory() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(current_setting('meterbase.directory', true), '') <> '' $$;

-- A role that row-level security binds, with no context at all, used to
-- see empty tables: the symptom of a handle made WithoutRowLevelSecurity on
-- the wrong role, or of raw SQL that forgot the settings, looked like a
-- tenant without data. Now the tenant helper, which every tenant policy
-- calls, fails instead: MB001, which meterbase maps to ErrNoTenantContext.
--
-- The helper stays a plain SQL expression that the planner inlines (an
-- index serves workspace_id = meterbase_workspace_id()), and it raises only
-- when no setting at all admits the statement: with the operator's or the
-- directory's setting it is NULL, so the permissive policies ORed with the
-- tenant's (operator_read, directory) never fail on its account. The error
-- comes when a policy is evaluated: at planning (the estimate of the
-- equality evaluates it) and for every row the policy filters. A statement
-- whose other conditions leave no row to filter may still return nothing
-- without an error, and then row security hid nothing either.
--
-- The raising function is qualified with the schema this migration runs in
-- (the helper's body is resolved at every inlining, with the caller's
-- search_path), hence the dynamic SQL. It stays executable by everyone: the
-- policies call it as the querying role.
DO $migration$
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION %1$I.meterbase_no_tenant_context() RETURNS uuid
        LANGUAGE plpgsql STABLE PARALLEL SAFE
        AS $body$
        BEGIN
            RAISE EXCEPTION USING
                ERRCODE = 'MB001',
                MESSAGE = 'meterbase: row-level security binds this role and no tenant context is set',
                DETAIL = pg_catalog.format('Role %%I set none of meterbase.workspace_id, meterbase.operator, meterbase.directory in this transaction.', current_user),
                HINT = 'Use a tenancy handle, or do not use WithoutRowLevelSecurity on a role that does not bypass row-level security.';
        END;
        $body$
    $function$, pg_catalog.current_schema());

    -- A missing setting is NULL, and NULL <> '' is not true: an empty
    -- setting and a missing one are the same, as before.
    EXECUTE format($function$
        CREATE OR REPLACE FUNCTION %1$I.meterbase_workspace_id() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $body$ SELECT CASE
            WHEN pg_catalog.current_setting('meterbase.workspace_id', true) <> ''
                THEN pg_catalog.current_setting('meterbase.workspace_id', true)::uuid
            WHEN pg_catalog.current_setting('meterbase.operator', true) <> ''
              OR pg_catalog.current_setting('meterbase.directory', true) <> ''
                THEN NULL
            ELSE %1$I.meterbase_no_tenant_context()
        END $body$
    $function$, pg_catalog.current_schema());

    -- Under FORCE the trigger, which runs as the owner, sees only what the
    -- settings admit: the application's or a deleted user's cascade sets
    -- none for this workspace, so it took the workspace for one being
    -- deleted and let its last owner go. It now sets the tenant to the
    -- workspace it checks, for its own queries only, and puts back what it
    -- found before returning (an error rolls the setting back with the
    -- statement). The rest is 0003's: schema-qualified names, pinned
    -- search_path, the table guard.
    EXECUTE format($function$
        CREATE OR REPLACE FUNCTION %1$I.meterbase_keep_an_owner() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp
        AS $body$
        DECLARE
            previous text := pg_catalog.current_setting('meterbase.workspace_id', true);
            orphaned boolean := false;
        BEGIN
            -- It runs as the owner: refuse to serve any other table.
            IF TG_RELID <> '%1$I.memberships'::regclass THEN
                RAISE EXCEPTION 'meterbase_keep_an_owner is a trigger of memberships only';
            END IF;
            PERFORM pg_catalog.set_config('meterbase.workspace_id', OLD.workspace_id::text, true);
            -- Touching the workspace row queues concurrent removals of its
            -- owners behind each other: the second one waits for the first
            -- to commit, then (read committed) sees it, or (repeatable read
            -- and above) fails to serialize and may be retried. No row means
            -- the workspace itself is being deleted, and its memberships go
            -- with it.
            UPDATE %1$I.workspaces SET updated_at = pg_catalog.now() WHERE workspace_id = OLD.workspace_id;
            IF FOUND THEN
                orphaned := NOT EXISTS (SELECT 1 FROM %1$I.memberships WHERE workspace_id = OLD.workspace_id AND role = 'owner');
            END IF;
            PERFORM pg_catalog.set_config('meterbase.workspace_id', coalesce(previous, ''), true);
            IF orphaned THEN
                RAISE EXCEPTION 'workspace %% would be left without an owner', OLD.workspace_id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'memberships_keep_an_owner', TABLE = 'memberships';
            END IF;
            RETURN NULL;
        END;
        $body$
    $function$, pg_catalog.current_schema());

    -- The last-owner trigger guards removals; nothing guarded the start: a
    -- workspace inserted without an owner membership (raw SQL, or a host's
    -- own handle on workspaces) had none from birth. Checked at commit, so
    -- that the owner may be inserted after the workspace in the same
    -- transaction; a workspace deleted again by then needs none.
    EXECUTE format($function$
        CREATE FUNCTION %1$I.meterbase_workspace_has_an_owner() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp
        AS $body$
        DECLARE
            previous text := pg_catalog.current_setting('meterbase.workspace_id', true);
            ownerless boolean;
        BEGIN
            -- It runs as the owner: refuse to serve any other table.
            IF TG_RELID <> '%1$I.workspaces'::regclass THEN
                RAISE EXCEPTION 'meterbase_workspace_has_an_owner is a trigger of workspaces only';
            END IF;
            PERFORM pg_catalog.set_config('meterbase.workspace_id', NEW.workspace_id::text, true);
            ownerless := EXISTS (SELECT 1 FROM %1$I.workspaces WHERE workspace_id = NEW.workspace_id)
                AND NOT EXISTS (SELECT 1 FROM %1$I.memberships WHERE workspace_id = NEW.workspace_id AND role = 'owner');
            PERFORM pg_catalog.set_config('meterbase.workspace_id', coalesce(previous, ''), true);
            IF ownerless THEN
                RAISE EXCEPTION 'workspace %% has no owner', NEW.workspace_id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_have_an_owner', TABLE = 'workspaces',
                          HINT = 'Insert its owner''s membership in the same transaction, as tenancy.CreateWorkspace does.';
            END IF;
            RETURN NULL;
        END;
        $body$
    $function$, pg_catalog.current_schema());
END;
$migration$;

-- Nobody but the owner may attach it to a table of their own and so run it
-- as the owner. Firing an existing trigger needs no EXECUTE privilege.
REVOKE EXECUTE ON FUNCTION meterbase_workspace_has_an_owner() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER workspaces_have_an_owner
    AFTER INSERT ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION meterbase_workspace_has_an_owner();

-- A workspace's id is its tenant key in every table, and both owner rules
-- look a workspace up by it: an id changed in the same statement as its
-- owners' removal (or after an ownerless insert) slipped past both. It
-- never changes. (Nothing here reads a table, so the function runs as the
-- caller.)
CREATE FUNCTION meterbase_workspace_id_is_fixed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.workspace_id IS DISTINCT FROM OLD.workspace_id THEN
        RAISE EXCEPTION 'a workspace''s id never changes (% to %)', OLD.workspace_id, NEW.workspace_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_id_is_fixed', TABLE = 'workspaces';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER workspaces_id_is_fixed
    BEFORE UPDATE OF workspace_id ON workspaces
    FOR EACH ROW EXECUTE FUNCTION meterbase_workspace_id_is_fixed();

-- users is global, but a tenant context reaches a user only through its own
-- workspace's memberships, or as the user it acts as; the operator reads
-- every user; the directory (tenancy.Users: sign-up, sign-in, deletion) is
-- the only writer. The tenant's policy calls the helper before anything
-- else, so that a role without any context fails on the first user row
-- (and, with the operator's or the directory's setting, gets NULL there and
-- no error, whatever order Postgres ORs the policies in). The memberships
-- it looks in are filtered by their own policies, to the same workspace.
-- With the directory's setting the directory reads and writes users.
-- Without it, the policy still calls the helper, so that a write with no
-- context at all fails with MB001 rather than changing no row in silence
-- (UPDATE and DELETE are governed by this policy alone): with no context
-- the helper raises, whichever operand of the AND Postgres tries first;
-- with a tenant's or the operator's context it admits nothing.
CREATE POLICY users_directory ON users
    USING (CASE WHEN meterbase_directory() THEN true ELSE meterbase_workspace_id() IS NULL AND NOT meterbase_operator() END)
    WITH CHECK (meterbase_directory());
CREATE POLICY users_operator_read ON users FOR SELECT
    USING (meterbase_operator());
CREATE POLICY users_tenant_read ON users FOR SELECT
    USING (meterbase_workspace_id() IS NOT NULL AND (
        user_id = meterbase_user_id()
        OR EXISTS (SELECT 1 FROM memberships m WHERE m.workspace_id = meterbase_workspace_id() AND m.user_id = users.user_id)));
