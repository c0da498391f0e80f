-- Warm pool: one row per sandbox that is being warmed or is ready to claim.
CREATE TABLE pool_entries (
    id               TEXT PRIMARY KEY,
    status           TEXT NOT NULL CHECK (status IN ('warming', 'ready')),
    spec_hash        TEXT NOT NULL,
    sandbox_id       TEXT NOT NULL UNIQUE,
    endpoint         TEXT,
    agent_session    TEXT,
    created_at       BIGINT NOT NULL,
    ready_at         BIGINT,
    lease_expires_at BIGINT NOT NULL,
    owner            TEXT NOT NULL
);
CREATE INDEX pool_entries_claim ON pool_entries (spec_hash, status, ready_at, created_at);

CREATE TABLE apps (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    session_key    TEXT PRIMARY KEY,
    -- Deferred: a claim binds the session, then records its app, in one transaction.
    app_id         TEXT NOT NULL REFERENCES apps (id) DEFERRABLE INITIALLY DEFERRED,
    sandbox_id     TEXT,
    endpoint       TEXT,
    agent_session  TEXT,
    created_at     BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL
);
CREATE INDEX sessions_idle ON sessions (last_active_at) WHERE sandbox_id IS NOT NULL;
