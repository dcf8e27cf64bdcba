-- Resumable uploads (tus 1.0): one row per upload, its bytes in the file store under
-- the same id. `received` is the offset every byte before which is stored durably.
CREATE TABLE uploads (
    id           TEXT    PRIMARY KEY CHECK (length(id) = 32),
    owner_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    length       INTEGER NOT NULL CHECK (length >= 0),
    received     INTEGER NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    name         TEXT    NOT NULL DEFAULT '',
    media_type   TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    completed_at INTEGER
);
CREATE INDEX uploads_owner ON uploads (owner_id);
CREATE INDEX uploads_expiry ON uploads (expires_at) WHERE completed_at IS NULL;
