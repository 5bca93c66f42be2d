-- What the migration runner (queen/storage/migrations.py) knows about this database. Run at every
-- start, inside the runner's transaction, before it reads anything: idempotent.

CREATE SCHEMA IF NOT EXISTS queen;

-- Forward migrations (sql/migrations/NNN_name.sql) applied to this database, with the checksum
-- of the text that ran. A database created from sql/schema/ records every migration it already
-- contains.
CREATE TABLE IF NOT EXISTS queen.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row: the queen release that last migrated this database, and the checksum of each function
-- file (sql/functions/) whose text is in place.
CREATE TABLE IF NOT EXISTS queen.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    release text NOT NULL,
    functions jsonb NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);
