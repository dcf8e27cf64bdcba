-- Relations (protocol 1.3): every row of `messages` is an entry of its conversation's
-- log: a message (kind 0; `target` is the seq it replies to), an edit (1), a deletion
-- (2) or a reaction (3), with `target` the seq it applies to. A deletion purges the
-- content it deletes: `body` becomes NULL. SQLite cannot drop a NOT NULL constraint in
-- place, so the table is rebuilt with its rows, ids and constraints.

CREATE TABLE messages_v4 (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL CHECK (seq > 0),
    sender_id       INTEGER NOT NULL REFERENCES users (id),
    client_msg_id   BLOB    NOT NULL CHECK (length(client_msg_id) = 16),
    body_kind       INTEGER NOT NULL CHECK (body_kind IN (0, 1)),
    body            BLOB,
    created_at      INTEGER NOT NULL,
    kind            INTEGER NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2, 3)),
    target          INTEGER,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);
INSERT INTO messages_v4 (id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at)
    SELECT id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v4 RENAME TO messages;
-- The relations of an entry: its edits, deletion and reactions.
CREATE INDEX messages_target ON messages (conversation_id, target) WHERE target IS NOT NULL;
