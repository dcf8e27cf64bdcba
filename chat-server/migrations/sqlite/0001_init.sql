-- Accounts, sessions, conversations and messages (SQLite).
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT    NOT NULL,
    display_name    TEXT    NOT NULL,
    bio             TEXT    NOT NULL DEFAULT '',
    password_hash   TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen       INTEGER,
    deleted_at      INTEGER
);
-- Usernames are stored lower-cased, so this is case-insensitive uniqueness.
CREATE UNIQUE INDEX users_username ON users (username);

-- One row per login: the family of rotating refresh tokens, and the `sid` claim of
-- every access token issued for it.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    user_agent  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  BLOB    PRIMARY KEY,
    session_id  INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE conversations (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title           TEXT    NOT NULL DEFAULT '',
    -- "low:high" user ids of a direct conversation: one conversation per pair.
    direct_key      TEXT    UNIQUE,
    encrypted       INTEGER NOT NULL DEFAULT 0,
    created_by      INTEGER NOT NULL REFERENCES users (id),
    created_at      INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_activity   INTEGER NOT NULL
);

CREATE TABLE members (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at       INTEGER NOT NULL,
    last_read_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members (user_id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL CHECK (seq > 0),
    sender_id       INTEGER NOT NULL REFERENCES users (id),
    client_msg_id   BLOB    NOT NULL CHECK (length(client_msg_id) = 16),
    body_kind       INTEGER NOT NULL CHECK (body_kind IN (0, 1)),
    body            BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);
