-- Model-gateway spend, in tokens, one row per scope (`session:<key>`,
-- `global:<UTC day>`): `spent` is settled usage, `reserved` is held for
-- requests in flight. A reservation fits only if spent + reserved + its
-- tokens stays within the scope's cap (checked in the same transaction).
CREATE TABLE model_spend (
    scope      TEXT PRIMARY KEY,
    spent      INTEGER NOT NULL DEFAULT 0,
    reserved   INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

-- One row per (request in flight, scope): settling deletes it, so a settle
-- counts once; the holds of a server process that died are charged in full
-- when its instance starts again. No keys or request contents are stored.
CREATE TABLE model_spend_holds (
    id         TEXT NOT NULL,
    scope      TEXT NOT NULL,
    tokens     INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (id, scope)
);
CREATE INDEX model_spend_holds_holder ON model_spend_holds (holder);
