-- Quick mode: one single-file HTML app per session (no sandbox). Its id is
-- the public, unguessable part of /q/<id>; the session key stays private.
CREATE TABLE quick_apps (
    session_key TEXT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
