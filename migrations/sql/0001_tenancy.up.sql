-- changes: creates the tenancy tables: users (global), workspaces (one row per tenant) and memberships (who belongs to which workspace, with a role).
-- locks: none on existing tables; the new tables are created empty.
-- rewrites: none.
-- scans: none; the tables are new and empty.
-- large-table cost: constant; nothing existing is read or written.
-- down loses data: yes; the down migration drops these tables with every user, workspace and membership in them.
-- rollback: before any tenant data is written, run the down migration; afterwards roll forward with a new migration instead.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE users (
    user_id      uuid        NOT NULL,
    email        text        NOT NULL,
    display_name text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (user_id),
    -- Emails are stored trimmed and lower-cased by the library, so a plain
    -- unique constraint is enough to make them unique case-insensitively.
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_check CHECK (email = lower(btrim(email)) AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND length(email) <= 320),
    CONSTRAINT users_display_name_check CHECK (length(display_name) <= 200)
);

-- The tenant key is called workspace_id here too, so that every tenant table,
-- this one included, is found, filtered and distributed by the same column.
CREATE TABLE workspaces (
    workspace_id uuid        NOT NULL,
    name         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspaces_pkey PRIMARY KEY (workspace_id),
    CONSTRAINT workspaces_name_check CHECK (length(btrim(name)) BETWEEN 1 AND 200)
);

CREATE TABLE memberships (
    workspace_id uuid        NOT NULL,
    user_id      uuid        NOT NULL,
    role         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_pkey PRIMARY KEY (workspace_id, user_id),
    CONSTRAINT memberships_role_check CHECK (role IN ('owner', 'admin', 'member')),
    CONSTRAINT memberships_workspace_fkey FOREIGN KEY (workspace_id)
        REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    -- A deleted user leaves every workspace they belonged to.
    CONSTRAINT memberships_user_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE
);

-- Supports the users foreign key (a user's deletion) and "my workspaces".
CREATE INDEX memberships_user_idx ON memberships (user_id, workspace_id);
