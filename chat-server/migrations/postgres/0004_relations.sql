-- Relations (protocol 1.3): every row of `messages` is an entry of its conversation's
-- log: a message (kind 0; `target` is the seq it replies to), an edit (1), a deletion
-- (2) or a reaction (3), with `target` the seq it applies to. A deletion purges the
-- content it deletes: `body` becomes NULL.

ALTER TABLE messages
    ADD COLUMN kind SMALLINT NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2, 3)),
    ADD COLUMN target BIGINT,
    ALTER COLUMN body DROP NOT NULL;
-- The relations of an entry: its edits, deletion and reactions.
CREATE INDEX messages_target ON messages (conversation_id, target) WHERE target IS NOT NULL;
