//! Conversation logs: group-committed appends of messages and relations, the rules of
//! relations and the purge of deleted content (PROTOCOL.md §5.2), and pages of entries
//! (the `messages` table): the trait, and its SQL for both backends (one macro,
//! expanded for each store type in `sqlite.rs` and `postgres.rs`).

use std::collections::{HashMap, HashSet};

use chat_proto::entry::Entry;
use chat_proto::ids::{ConversationId, Seq};

use super::*;

/// Conversation logs: group-committed appends and pages of entries.
pub trait MessageStore {
    /// Entries before `before` (or the newest), newest first, and whether older exist.
    fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Entry>, bool)>;
    /// Entries after `after`, oldest first, and whether newer exist.
    fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Entry>, bool)>;
    /// Stores a batch of entries in one transaction, assigning per-conversation seqs,
    /// checking relations against the log and purging what deletions delete.
    fn append_batch(&self, batch: Vec<NewEntry>) -> StoreFuture<'_, Vec<Appended>>;
}

/// Whether a stored entry is what `new` asks to store again under its key. An entry
/// whose content a deletion purged since matches any retry of its key.
pub(crate) fn same_entry(stored: &Entry, new: &NewEntry) -> bool {
    stored.conversation == new.conversation
        && (stored.content == new.content || stored.content.is_purged())
}

/// What a relation's target is, as the checks need it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) kind: i16,
    pub(crate) sender: i64,
    /// Its content was purged (a deleted message or reaction).
    pub(crate) purged: bool,
}

/// The outcome of checking one entry of a batch.
#[derive(Debug)]
pub(crate) enum Check {
    /// Store it.
    Accept,
    /// Store nothing: it repeats a stored entry.
    Stored(Entry),
    /// Store nothing: it repeats the entry at this index of the batch.
    InBatch(usize),
    /// Refuse it.
    Refuse(Refusal),
}

/// What the entries accepted so far in a batch change for the ones after them.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Targets read, by (conversation, seq).
    pub(crate) targets: HashMap<(i64, i64), Target>,
    /// Deletions accepted in this batch, by target: the index of the first.
    pub(crate) deleted: HashMap<(i64, i64), usize>,
    /// Plain reactions accepted in this batch, by (conversation, target, sender, emoji).
    pub(crate) reacted: HashMap<(i64, i64, i64, Vec<u8>), usize>,
    /// Distinct plain emoji on a message, by (conversation, target).
    pub(crate) distinct: HashMap<(i64, i64), HashSet<Vec<u8>>>,
    /// Live reactions of a user on a message, by (conversation, target, sender).
    pub(crate) per_user: HashMap<(i64, i64, i64), i64>,
    /// Indices of the batch's messages that took files.
    pub(crate) attached: Vec<usize>,
}

/// Implements [`MessageStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_messages {
    ($ty:ty, $db:ty) => {
        impl $ty {
            /// The entry at `seq` of a conversation, as a relation's target.
            async fn target(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                overlay: &mut $crate::store::messages::Overlay,
                conversation: i64,
                seq: i64,
            ) -> Result<Option<$crate::store::messages::Target>, $crate::store::StoreError> {
                use sqlx::Row as _;
                if let Some(t) = overlay.targets.get(&(conversation, seq)) {
                    return Ok(Some(*t));
                }
                let row = sqlx::query(
                    "SELECT kind, sender_id, CAST(CASE WHEN body IS NULL THEN 1 ELSE 0 END AS BIGINT) AS purged \
                     FROM messages WHERE conversation_id = $1 AND seq = $2",
                )
                .bind(conversation)
                .bind(seq)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let target = $crate::store::messages::Target {
                    kind: row.try_get("kind")?,
                    sender: row.try_get("sender_id")?,
                    purged: row.try_get::<i64, _>("purged")? == 1,
                };
                overlay.targets.insert((conversation, seq), target);
                Ok(Some(target))
            }

            /// The first deletion of the entry at `target`.
            async fn first_deletion(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                conversation: i64,
                target: i64,
            ) -> Result<Option<chat_proto::entry::Entry>, $crate::store::StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::entry_columns!(),
                    " FROM messages WHERE conversation_id = $1 AND target = $2 AND kind = 2 ORDER BY seq LIMIT 1"
                ))
                .bind(conversation)
                .bind(target)
                .fetch_optional(&mut **tx)
                .await?
                .as_ref()
                .map(Self::entry_from_row)
                .transpose()
            }

            /// `sender`'s live plain reaction with `emoji` on the message at `target`.
            async fn same_reaction(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                conversation: i64,
                target: i64,
                sender: i64,
                emoji: &[u8],
            ) -> Result<Option<chat_proto::entry::Entry>, $crate::store::StoreError> {
                sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::entry_columns!(),
                    " FROM messages WHERE conversation_id = $1 AND target = $2 AND kind = 3 \
                     AND sender_id = $3 AND body_kind = 0 AND body = $4 ORDER BY seq LIMIT 1"
                ))
                .bind(conversation)
                .bind(target)
                .bind(sender)
                .bind(emoji)
                .fetch_optional(&mut **tx)
                .await?
                .as_ref()
                .map(Self::entry_from_row)
                .transpose()
            }

            /// Checks one entry of a batch against the log and what the batch accepted
            /// before it (PROTOCOL.md §5.2, "Rules"), and takes the files of a message
            /// for it (§5.3).
            async fn check_entry(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                overlay: &mut $crate::store::messages::Overlay,
                index: usize,
                entry: &$crate::store::NewEntry,
            ) -> Result<$crate::store::messages::Check, $crate::store::StoreError> {
                use $crate::store::messages::Check;
                let check = Self::check_relation(tx, overlay, index, entry).await?;
                let chat_proto::entry::Content::Message { body: Some(body), .. } = &entry.content else {
                    return Ok(check);
                };
                if !matches!(check, Check::Accept) || !body.has_files() {
                    return Ok(check);
                }
                Ok(match Self::attach_files(tx, entry, body).await? {
                    Some(refusal) => Check::Refuse(refusal),
                    None => {
                        overlay.attached.push(index);
                        Check::Accept
                    }
                })
            }

            /// Marks the files of a new message as its conversation's, if each is a
            /// finished upload of the sender's in no other message (and, described in
            /// the clear, of the size it states); else takes none and says why. The
            /// conditional update locks each row, so two batches never both take one.
            async fn attach_files(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                entry: &$crate::store::NewEntry,
                body: &chat_proto::body::Body,
            ) -> Result<Option<$crate::store::Refusal>, $crate::store::StoreError> {
                use sqlx::Row as _;
                use $crate::store::Refusal;
                let sizes: Vec<(String, i64)> = match body {
                    chat_proto::body::Body::Attachments(a) => a
                        .files
                        .iter()
                        .map(|f| (f.id.0.clone(), $crate::store::uploads::to_signed(f.size)))
                        .collect(),
                    other => other.file_ids().into_iter().map(|id| (id.0.clone(), -1)).collect(),
                };
                let conversation = i64::from(entry.conversation);
                let sender = i64::from(entry.sender);
                let mut taken: Vec<&str> = Vec::new();
                let mut refusal = None;
                for (id, size) in &sizes {
                    let done = sqlx::query(
                        "UPDATE uploads SET conversation_id = $1 WHERE id = $2 AND owner_id = $3 \
                         AND conversation_id IS NULL AND purged_at IS NULL AND completed_at IS NOT NULL \
                         AND ($4 < 0 OR length = $4)",
                    )
                    .bind(conversation)
                    .bind(id)
                    .bind(sender)
                    .bind(*size)
                    .execute(&mut **tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        taken.push(id);
                        continue;
                    }
                    let row = sqlx::query(
                        "SELECT owner_id, length, completed_at, conversation_id, purged_at FROM uploads WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    refusal = Some(match row {
                        Some(r) if r.try_get::<i64, _>("owner_id")? == sender => {
                            if r.try_get::<Option<i64>, _>("conversation_id")?.is_some()
                                || r.try_get::<Option<i64>, _>("purged_at")?.is_some()
                            {
                                Refusal::FileInUse
                            } else if r.try_get::<Option<i64>, _>("completed_at")?.is_none() {
                                Refusal::FileUnfinished
                            } else {
                                Refusal::FileSize
                            }
                        }
                        _ => Refusal::NoFile,
                    });
                    break;
                }
                if refusal.is_some() {
                    for id in taken {
                        sqlx::query("UPDATE uploads SET conversation_id = NULL WHERE id = $1")
                            .bind(id)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                Ok(refusal)
            }

            /// Records the seq of the message holding each file a stored message took,
            /// and gives back those a message that was not stored took.
            async fn settle_files(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                entry: &$crate::store::NewEntry,
                seq: Option<i64>,
            ) -> Result<(), $crate::store::StoreError> {
                let chat_proto::entry::Content::Message { body: Some(body), .. } = &entry.content else {
                    return Ok(());
                };
                for id in body.file_ids() {
                    let q = match seq {
                        Some(seq) => sqlx::query("UPDATE uploads SET seq = $2 WHERE id = $1").bind(&id.0).bind(seq),
                        None => sqlx::query("UPDATE uploads SET conversation_id = NULL WHERE id = $1 AND seq IS NULL")
                            .bind(&id.0),
                    };
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Checks a relation against its target (an entry without one passes).
            async fn check_relation(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                overlay: &mut $crate::store::messages::Overlay,
                index: usize,
                entry: &$crate::store::NewEntry,
            ) -> Result<$crate::store::messages::Check, $crate::store::StoreError> {
                use chat_proto::entry::{Content, Reaction};
                use sqlx::Row as _;
                use $crate::store::messages::Check;
                use $crate::store::{Refusal, kind};
                let conversation = i64::from(entry.conversation);
                let sender = i64::from(entry.sender);
                let Some(target_seq) = entry.content.target().map(i64::from) else {
                    return Ok(Check::Accept);
                };
                let Some(target) = Self::target(tx, overlay, conversation, target_seq).await? else {
                    return Ok(Check::Refuse(Refusal::NoTarget));
                };
                let deleted = target.purged || overlay.deleted.contains_key(&(conversation, target_seq));
                let on_message = |check: Check| {
                    if target.kind != kind::MESSAGE {
                        Check::Refuse(Refusal::WrongTarget)
                    } else if deleted {
                        Check::Refuse(Refusal::Deleted)
                    } else {
                        check
                    }
                };
                Ok(match &entry.content {
                    Content::Message { .. } => on_message(Check::Accept),
                    Content::Edit { .. } => {
                        if target.kind == kind::MESSAGE && target.sender != sender {
                            Check::Refuse(Refusal::Forbidden)
                        } else {
                            on_message(Check::Accept)
                        }
                    }
                    Content::Delete { .. } => {
                        let allowed = target.sender == sender
                            || (entry.moderator && target.kind == kind::MESSAGE);
                        if target.kind != kind::MESSAGE && target.kind != kind::REACTION {
                            Check::Refuse(Refusal::WrongTarget)
                        } else if !allowed {
                            Check::Refuse(Refusal::Forbidden)
                        } else if let Some(&first) = overlay.deleted.get(&(conversation, target_seq)) {
                            Check::InBatch(first)
                        } else if target.purged {
                            match Self::first_deletion(tx, conversation, target_seq).await? {
                                Some(first) => Check::Stored(first),
                                // A reaction purged with its message: nothing to delete.
                                None => Check::Refuse(Refusal::Deleted),
                            }
                        } else {
                            overlay.deleted.insert((conversation, target_seq), index);
                            Check::Accept
                        }
                    }
                    Content::Reaction { reaction, .. } => {
                        let check = on_message(Check::Accept);
                        if !matches!(check, Check::Accept) {
                            return Ok(check);
                        }
                        let emoji = match reaction {
                            Some(Reaction::Emoji(e)) => Some(e.as_bytes().to_vec()),
                            Some(Reaction::Encrypted(_)) => None,
                            None => return Ok(Check::Refuse(Refusal::WrongTarget)),
                        };
                        let at = (conversation, target_seq);
                        if let Some(e) = &emoji {
                            let key = (conversation, target_seq, sender, e.clone());
                            if let Some(&first) = overlay.reacted.get(&key) {
                                return Ok(Check::InBatch(first));
                            }
                            if let Some(same) =
                                Self::same_reaction(tx, conversation, target_seq, sender, e).await?
                            {
                                return Ok(Check::Stored(same));
                            }
                        }
                        if !overlay.distinct.contains_key(&at) {
                            let rows = sqlx::query(
                                "SELECT DISTINCT body FROM messages WHERE conversation_id = $1 AND target = $2 \
                                 AND kind = 3 AND body_kind = 0 AND body IS NOT NULL",
                            )
                            .bind(conversation)
                            .bind(target_seq)
                            .fetch_all(&mut **tx)
                            .await?;
                            let set = rows
                                .iter()
                                .map(|r| r.try_get::<Vec<u8>, _>("body"))
                                .collect::<Result<_, _>>()?;
                            overlay.distinct.insert(at, set);
                        }
                        let mine = (conversation, target_seq, sender);
                        if !overlay.per_user.contains_key(&mine) {
                            let n: i64 = sqlx::query_scalar(
                                "SELECT COUNT(*) FROM messages WHERE conversation_id = $1 AND target = $2 \
                                 AND kind = 3 AND sender_id = $3 AND body IS NOT NULL",
                            )
                            .bind(conversation)
                            .bind(target_seq)
                            .bind(sender)
                            .fetch_one(&mut **tx)
                            .await?;
                            overlay.per_user.insert(mine, n);
                        }
                        let cap = chat_proto::limits::MAX_REACTIONS;
                        let distinct = &overlay.distinct[&at];
                        let new_emoji = emoji.as_ref().is_some_and(|e| !distinct.contains(e));
                        if (new_emoji && distinct.len() >= cap)
                            || overlay.per_user[&mine] >= cap as i64
                        {
                            return Ok(Check::Refuse(Refusal::ReactionLimit));
                        }
                        if let Some(e) = emoji {
                            overlay.reacted.insert((conversation, target_seq, sender, e.clone()), index);
                            overlay.distinct.entry(at).or_default().insert(e);
                        }
                        *overlay.per_user.entry(mine).or_default() += 1;
                        Check::Accept
                    }
                })
            }

            /// Removes the content a deletion deletes: a message's body and reply
            /// reference with its edits' bodies and its reactions, or a reaction.
            async fn purge(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                conversation: i64,
                target: i64,
                target_kind: i16,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE messages SET body = NULL, files = NULL, \
                     target = CASE WHEN kind = 0 THEN NULL ELSE target END \
                     WHERE conversation_id = $1 AND seq = $2",
                )
                .bind(conversation)
                .bind(target)
                .execute(&mut **tx)
                .await?;
                // Its files are no longer served; the collector removes their bytes.
                sqlx::query(
                    "UPDATE uploads SET purged_at = $3 \
                     WHERE conversation_id = $1 AND seq = $2 AND purged_at IS NULL",
                )
                .bind(conversation)
                .bind(target)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                if target_kind == $crate::store::kind::MESSAGE {
                    sqlx::query(
                        "UPDATE messages SET body = NULL \
                         WHERE conversation_id = $1 AND target = $2 AND kind IN (1, 3) AND body IS NOT NULL",
                    )
                    .bind(conversation)
                    .bind(target)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }

        impl $crate::store::MessageStore for $ty {
            fn history(
                &self,
                id: chat_proto::ids::ConversationId,
                before: Option<chat_proto::ids::Seq>,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, (Vec<chat_proto::entry::Entry>, bool)> {
                $crate::store::counted(async move {
                    let before = before.map_or(i64::MAX, i64::from);
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        $crate::store::entry_columns!(),
                        " FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                    ))
                        .bind(i64::from(id))
                        .bind(before)
                        .bind(i64::from(limit) + 1)
                        .fetch_all(&self.pool)
                        .await?;
                    Self::page(&rows, limit)
                })
            }

            fn messages_after(
                &self,
                id: chat_proto::ids::ConversationId,
                after: chat_proto::ids::Seq,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, (Vec<chat_proto::entry::Entry>, bool)> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        $crate::store::entry_columns!(),
                        " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                    ))
                        .bind(i64::from(id))
                        .bind(i64::from(after))
                        .bind(i64::from(limit) + 1)
                        .fetch_all(&self.pool)
                        .await?;
                    Self::page(&rows, limit)
                })
            }

            fn append_batch(&self, batch: Vec<$crate::store::NewEntry>) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Appended>> {
                $crate::store::counted(async move {
                    use std::collections::HashMap;
                    use sqlx::Row as _;
                    use $crate::store::Appended;
                    use $crate::store::messages::{Check, Overlay, same_entry};
                    if batch.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut tx = self.begin_write().await?;

                    // 1. Idempotency: which (sender, key) pairs are stored already?
                    let mut existing: HashMap<(i64, [u8; 16]), chat_proto::entry::Entry> = HashMap::new();
                    let keys: Vec<(i64, [u8; 16])> =
                        batch.iter().map(|m| (i64::from(m.sender), *m.client_msg_id.as_bytes())).collect();
                    for row in Self::stored_by_key(&mut tx, &keys).await? {
                        let m = Self::entry_from_row(&row)?;
                        existing.insert((i64::from(m.sender), *m.client_msg_id.as_bytes()), m);
                    }

                    // 2. New entries: the first occurrence of each key.
                    let mut outcome: Vec<Option<Appended>> = vec![None; batch.len()];
                    let mut first: HashMap<(i64, [u8; 16]), usize> = HashMap::new();
                    let mut candidates: Vec<usize> = Vec::new();
                    for (i, m) in batch.iter().enumerate() {
                        let key = (i64::from(m.sender), *m.client_msg_id.as_bytes());
                        if let Some(stored) = existing.get(&key) {
                            outcome[i] = Some(if same_entry(stored, m) {
                                Appended::Duplicate(stored.clone())
                            } else {
                                Appended::Conflict
                            });
                            continue;
                        }
                        if first.contains_key(&key) {
                            continue; // resolved after insertion
                        }
                        first.insert(key, i);
                        candidates.push(i);
                    }

                    // 3. Lock the conversations (the row update serializes writers of one
                    //    conversation across nodes), then check relations against the
                    //    log as it stands and as this batch changes it.
                    let mut ids: Vec<i64> = candidates.iter().map(|&i| i64::from(batch[i].conversation)).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    Self::lock_conversations(&mut tx, &ids).await?;
                    let mut overlay = Overlay::default();
                    let mut repeats: Vec<(usize, usize)> = Vec::new();
                    let mut per_conversation: Vec<(i64, Vec<usize>)> = Vec::new();
                    for &i in &candidates {
                        match Self::check_entry(&mut tx, &mut overlay, i, &batch[i]).await? {
                            Check::Accept => {
                                let conv = i64::from(batch[i].conversation);
                                match per_conversation.iter_mut().find(|(c, _)| *c == conv) {
                                    Some((_, list)) => list.push(i),
                                    None => per_conversation.push((conv, vec![i])),
                                }
                            }
                            Check::Stored(entry) => outcome[i] = Some(Appended::Duplicate(entry)),
                            Check::InBatch(j) => repeats.push((i, j)),
                            Check::Refuse(r) => outcome[i] = Some(Appended::Refused(r)),
                        }
                    }

                    // 4. Reserve seqs per conversation, then insert. Only messages move a
                    //    conversation's last activity.
                    let mut rows_to_insert: Vec<(usize, i64)> = Vec::new();
                    let mut last_seqs: HashMap<i64, i64> = HashMap::new();
                    for chunk in per_conversation.chunks(100) {
                        // One statement reserves the seqs of every conversation in the
                        // chunk; SQLite and PostgreSQL both name VALUES columns columnN.
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "UPDATE conversations SET last_seq = last_seq + v.n, \
                             last_activity = CASE WHEN last_activity > v.at THEN last_activity ELSE v.at END \
                             FROM (SELECT column1 AS id, column2 AS n, column3 AS at FROM (",
                        );
                        q.push_values(chunk, |mut b, (conv, indices)| {
                            let now = indices
                                .iter()
                                .filter(|&&i| batch[i].content.is_message())
                                .map(|&i| batch[i].sent_at.0)
                                .max()
                                .unwrap_or(0);
                            b.push_bind(*conv).push_bind(indices.len() as i64).push_bind(now);
                        });
                        q.push(") AS vals) AS v WHERE conversations.id = v.id RETURNING conversations.id, conversations.last_seq");
                        for row in q.build().fetch_all(&mut *tx).await? {
                            last_seqs.insert(row.try_get("id")?, row.try_get("last_seq")?);
                        }
                    }
                    for (conv, indices) in &per_conversation {
                        let Some(&last) = last_seqs.get(conv) else {
                            for &i in indices {
                                outcome[i] = Some(Appended::NoConversation);
                            }
                            continue;
                        };
                        let n = indices.len() as i64;
                        for (k, &i) in indices.iter().enumerate() {
                            rows_to_insert.push((i, last - n + 1 + k as i64));
                        }
                    }
                    let rows: Vec<$crate::store::NewRow> = rows_to_insert
                        .iter()
                        .map(|&(i, seq)| {
                            let m = &batch[i];
                            let parts = $crate::store::content_parts(&m.content);
                            $crate::store::NewRow {
                                conversation: i64::from(m.conversation),
                                seq,
                                sender: i64::from(m.sender),
                                client_msg_id: m.client_msg_id.as_bytes().to_vec(),
                                kind: parts.kind,
                                target: parts.target,
                                body_kind: parts.body_kind,
                                body: parts.body,
                                files: parts.files,
                                created_at: m.sent_at.0,
                            }
                        })
                        .collect();
                    let ids = Self::insert_messages(&mut tx, &rows).await?;
                    for &i in &overlay.attached {
                        let seq = rows_to_insert.iter().find(|(j, _)| *j == i).map(|&(_, seq)| seq);
                        Self::settle_files(&mut tx, &batch[i], seq).await?;
                    }
                    for &(i, seq) in &rows_to_insert {
                        let m = &batch[i];
                        let id = ids.get(&(i64::from(m.conversation), seq)).copied().ok_or_else(|| {
                            $crate::store::StoreError::Corrupt("inserted row not returned".into())
                        })?;
                        if let chat_proto::entry::Content::Delete { target } = m.content {
                            let conv = i64::from(m.conversation);
                            let target = i64::from(target);
                            let target_kind = overlay.targets.get(&(conv, target)).map_or(0, |t| t.kind);
                            Self::purge(&mut tx, conv, target, target_kind, m.sent_at.0).await?;
                        }
                        outcome[i] = Some(Appended::New(chat_proto::entry::Entry {
                            conversation: m.conversation,
                            seq: $crate::store::seq(seq)?,
                            id: chat_proto::ids::MessageId::try_from(id)
                                .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?,
                            sender: m.sender,
                            client_msg_id: m.client_msg_id,
                            sent_at: m.sent_at,
                            content: m.content.clone(),
                        }));
                    }
                    let appended: Vec<(&$crate::store::NewEntry, i64)> =
                        rows_to_insert.iter().map(|&(i, seq)| (&batch[i], seq)).collect();
                    Self::index_appended(&mut tx, &appended, &ids).await?;
                    tx.commit().await?;

                    // 5. An idempotent relation repeating one of this batch gets its entry.
                    for (i, j) in repeats {
                        outcome[i] = Some(match &outcome[j] {
                            Some(Appended::New(e) | Appended::Duplicate(e)) => Appended::Duplicate(e.clone()),
                            Some(other) => other.clone(),
                            None => Appended::NoConversation,
                        });
                    }

                    // 6. Repeats of a key within the batch get the first one's outcome.
                    let mut result = Vec::with_capacity(batch.len());
                    for (i, m) in batch.iter().enumerate() {
                        let resolved = match outcome[i].take() {
                            Some(o) => o,
                            None => {
                                let key = (i64::from(m.sender), *m.client_msg_id.as_bytes());
                                let j = first[&key];
                                match result.get(j) {
                                    Some(Appended::New(stored)) | Some(Appended::Duplicate(stored))
                                        if same_entry(stored, m) =>
                                    {
                                        Appended::Duplicate(stored.clone())
                                    }
                                    Some(Appended::NoConversation) if batch[j].conversation == m.conversation => {
                                        Appended::NoConversation
                                    }
                                    Some(Appended::Refused(r)) if batch[j] == *m => Appended::Refused(*r),
                                    _ => Appended::Conflict,
                                }
                            }
                        };
                        result.push(resolved);
                    }
                    Ok(result)
                })
            }
        }
    };
}

pub(crate) use impl_messages;
