-- Search: the current text of each message of a conversation that is not end-to-end
-- encrypted (a text body, or the caption of one with files), with a tsvector of its
-- index words (chat_api::search::document) under a GIN index. The server builds the
-- tsvector itself (words and positions, no text search parser or dictionary), so the
-- index holds exactly the words SQLite's does whatever the database's locale. An edit
-- replaces a message's row and a deletion removes it. Messages stored before this
-- migration are indexed by the server after it starts, newest first:
-- `search_backfill.below` is the id below which that is still to do.
CREATE TABLE message_search (
    message_id      BIGINT   PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id BIGINT   NOT NULL,
    seq             BIGINT   NOT NULL,
    text            TEXT     NOT NULL,
    doc             TSVECTOR NOT NULL
);
CREATE INDEX message_search_doc ON message_search USING GIN (doc);
CREATE TABLE search_backfill (below BIGINT NOT NULL);
INSERT INTO search_backfill (below) SELECT COALESCE(MAX(id), 0) + 1 FROM messages;
