-- Statements of the auth proxy (`queen proxy`) on its own schema queen_proxy.
-- Times are stored as UTC in the original's timestamp-without-time-zone columns.

-- name: ping
SELECT 1;

-- name: migration_lock
-- Instances starting together apply the proxy migrations one at a time.
SELECT pg_advisory_xact_lock($1);

-- name: migration_bookkeeping
CREATE SCHEMA IF NOT EXISTS queen_proxy;
CREATE TABLE IF NOT EXISTS queen_proxy.schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: recorded_migrations
SELECT version, checksum FROM queen_proxy.schema_migrations;

-- name: record_migration
INSERT INTO queen_proxy.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: user_by_username
SELECT id, username, password_hash, role, email FROM queen_proxy.users WHERE username = $1;

-- name: user_by_google_sub
SELECT id, username, password_hash, role, email FROM queen_proxy.users WHERE google_sub = $1;

-- name: user_by_email
SELECT id, username, password_hash, role, email FROM queen_proxy.users WHERE lower(email) = $1;

-- name: create_user
INSERT INTO queen_proxy.users (username, password_hash, role) VALUES ($1, $2, $3)
ON CONFLICT (username) DO NOTHING
RETURNING id;

-- name: link_google
UPDATE queen_proxy.users
SET google_sub = $2, email = COALESCE(email, $3), updated_at = (now() AT TIME ZONE 'utc')
WHERE id = $1;

-- name: provision_google_user
INSERT INTO queen_proxy.users (username, password_hash, role, email, google_sub, auth_provider)
VALUES ($1, NULL, $2, $1, $3, 'google')
RETURNING id, username, password_hash, role, email;

-- name: record_session
INSERT INTO queen_proxy.sessions (user_id, token_jti, expires_at) VALUES ($1, $2, $3);

-- name: session_active
SELECT EXISTS (
    SELECT 1 FROM queen_proxy.sessions
    WHERE token_jti = $1 AND expires_at > (now() AT TIME ZONE 'utc')
);

-- name: revoke_session
DELETE FROM queen_proxy.sessions WHERE token_jti = $1;

-- name: forget_expired_sessions
DELETE FROM queen_proxy.sessions WHERE expires_at <= (now() AT TIME ZONE 'utc');
