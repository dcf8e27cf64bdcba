-- End-to-end encryption: each device's X25519 public key. The id is derived from the
-- key (chat-crypto's DeviceId), so it cannot collide with another key's.
CREATE TABLE devices (
    id          BYTEA   PRIMARY KEY CHECK (length(id) = 16),
    user_id     BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_key  BYTEA   NOT NULL UNIQUE CHECK (length(public_key) = 32),
    name        TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL
);
CREATE INDEX devices_user ON devices (user_id);
