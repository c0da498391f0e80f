-- Apps are the durable thing: an owner (the SHA-256 of the browser's key,
-- never the key), a name (from the first prompt, renamable), and the time of
-- the last change. Rows from before this migration have no owner and so
-- appear in nobody's list.
ALTER TABLE apps ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE apps SET updated_at = created_at;
CREATE INDEX apps_owner ON apps (owner, updated_at);

-- The conversation: every chat event of an app, one JSON object per row,
-- numbered by the app's one sequence (seq) across turns and restarts.
CREATE TABLE app_events (
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (app_id, seq)
);
