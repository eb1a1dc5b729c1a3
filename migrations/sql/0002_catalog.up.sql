-- changes: creates the global catalog: operation_types (the kinds of AI operation the usage history records, seeded with built-ins) and features (a feature key mapped to an operation type and a price in credit units).
-- locks: none on existing tables; the new tables are created and seeded in this transaction.
-- rewrites: none.
-- scans: none; the tables are new, and only the seed rows are written.
-- large-table cost: constant; nothing existing is read or written.
-- down loses data: yes; the down migration drops both tables, with every feature, every host-defined operation type and any change made to the built-in ones.
-- rollback: before features are defined, run the down migration; afterwards roll forward with a new migration instead.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A reference table rather than a Postgres enum: hosts add their own
-- operation types with an INSERT, without a library migration.
CREATE TABLE operation_types (
    operation_type text        NOT NULL,
    description    text        NOT NULL DEFAULT '',
    -- What one unit of the operation measures: tokens, images, seconds...
    unit           text        NOT NULL,
    builtin        boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operation_types_pkey PRIMARY KEY (operation_type),
    CONSTRAINT operation_types_key_check CHECK (operation_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(operation_type) <= 64),
    CONSTRAINT operation_types_unit_check CHECK (unit ~ '^[a-z][a-z_]*$' AND length(unit) <= 32),
    CONSTRAINT operation_types_description_check CHECK (length(description) <= 500)
);

INSERT INTO operation_types (operation_type, description, unit, builtin) VALUES
    ('chat.completion',     'Chat or text completion by a language model', 'tokens',     true),
    ('embedding',           'Text or image embedding',                     'tokens',     true),
    ('image.generation',    'Image generated from a prompt',               'images',     true),
    ('image.edit',          'Image edited or varied from an input image',  'images',     true),
    ('audio.transcription', 'Speech to text',                              'seconds',    true),
    ('audio.speech',        'Text to speech',                              'characters', true),
    ('video.generation',    'Video generated from a prompt',               'seconds',    true),
    ('moderation',          'Content moderation check',                    'requests',   true),
    ('rerank',              'Reranking of documents against a query',      'requests',   true),
    ('tool.call',           'Call of an external tool by an agent',        'requests',   true);

CREATE TABLE features (
    feature_key    text        NOT NULL,
    operation_type text        NOT NULL,
    description    text        NOT NULL DEFAULT '',
    -- Exact integer credit units charged per unit_quantity units of usage.
    price_credits  bigint      NOT NULL,
    unit_quantity  bigint      NOT NULL DEFAULT 1,
    active         boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT features_pkey PRIMARY KEY (feature_key),
    CONSTRAINT features_key_check CHECK (feature_key ~ '^[a-z][a-z0-9_]*([.-][a-z0-9_]+)*$' AND length(feature_key) <= 64),
    CONSTRAINT features_price_check CHECK (price_credits >= 0),
    CONSTRAINT features_unit_quantity_check CHECK (unit_quantity > 0),
    CONSTRAINT features_description_check CHECK (length(description) <= 500),
    -- An operation type in use by a feature cannot be deleted from under it.
    CONSTRAINT features_operation_type_fkey FOREIGN KEY (operation_type)
        REFERENCES operation_types (operation_type) ON DELETE RESTRICT
);

CREATE INDEX features_operation_type_idx ON features (operation_type);
