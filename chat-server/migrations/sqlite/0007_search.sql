-- Search: the current text of each message of a conversation that is not end-to-end
-- encrypted (a text body, or the caption of one with files), in an FTS5 index of its
-- index words (chat_api::search::document: lowercased words, and overlapping pairs of
-- characters of scripts written without spaces), keyed by the message's id. An edit
-- replaces a message's row and a deletion removes it; with secure-delete FTS5 takes a
-- deleted row's words out of the index at once rather than at the next merge. `text`
-- is what a result shows. Messages stored before this migration are indexed by the
-- server after it starts, newest first: `search_backfill.below` is the id below which
-- that is still to do.
CREATE VIRTUAL TABLE message_search USING fts5(
    doc,
    text UNINDEXED,
    conversation_id UNINDEXED,
    seq UNINDEXED,
    tokenize = "unicode61 remove_diacritics 0 categories 'L* N* Co M*'"
);
INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', 1);
CREATE TABLE search_backfill (below INTEGER NOT NULL);
INSERT INTO search_backfill (below) SELECT COALESCE(MAX(id), 0) + 1 FROM messages;
