-- The original proxy's tables, created only where missing: a database the original proxy used
-- keeps its users and their bcrypt hashes (spec §4.3).
CREATE TABLE IF NOT EXISTS queen_proxy.users (
    id SERIAL PRIMARY KEY,
    username VARCHAR(255) UNIQUE NOT NULL,
    password_hash VARCHAR(255),
    role VARCHAR(50) NOT NULL CHECK (role IN ('admin', 'read-write', 'read-only')),
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),
    email VARCHAR(255),
    google_sub VARCHAR(255),
    auth_provider VARCHAR(50) NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS idx_users_username ON queen_proxy.users (username);
CREATE UNIQUE INDEX IF NOT EXISTS idx_users_email ON queen_proxy.users (email)
    WHERE email IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_users_google_sub ON queen_proxy.users (google_sub)
    WHERE google_sub IS NOT NULL;

CREATE TABLE IF NOT EXISTS queen_proxy.sessions (
    id SERIAL PRIMARY KEY,
    user_id INTEGER REFERENCES queen_proxy.users (id) ON DELETE CASCADE,
    token_jti VARCHAR(255) UNIQUE NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_sessions_token_jti ON queen_proxy.sessions (token_jti);
CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON queen_proxy.sessions (user_id);
