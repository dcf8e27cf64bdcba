-- Files in messages (protocol 1.4). A message's files are stored with it: `files` holds
-- their descriptions (a plain message's) or ids (a sealed one's), postcard-encoded, and
-- is purged with the body. An upload in a message names it (`conversation_id`, `seq`):
-- the conversation's members may then download it. A deletion of the message marks its
-- uploads purged; the collector removes their bytes and rows.
ALTER TABLE messages ADD COLUMN files BLOB;
ALTER TABLE uploads ADD COLUMN conversation_id INTEGER;
ALTER TABLE uploads ADD COLUMN seq INTEGER;
ALTER TABLE uploads ADD COLUMN purged_at INTEGER;
CREATE INDEX uploads_message ON uploads (conversation_id, seq) WHERE conversation_id IS NOT NULL;
CREATE INDEX uploads_unattached ON uploads (completed_at) WHERE conversation_id IS NULL AND completed_at IS NOT NULL;
CREATE INDEX uploads_purged ON uploads (purged_at) WHERE purged_at IS NOT NULL;
