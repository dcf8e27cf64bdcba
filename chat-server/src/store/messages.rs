//! Messages: group-committed appends and pages of history (the `messages` table): the
//! trait, and its SQL for both backends (one macro, expanded for each store type in
//! `sqlite.rs` and `postgres.rs`).

use chat_proto::frame::Message;
use chat_proto::ids::{ConversationId, Seq};

use super::*;

/// Messages: group-committed appends and pages of history (the `messages` table).
pub trait MessageStore {
    /// Messages before `before` (or the newest), newest first, and whether older exist.
    fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Message>, bool)>;
    /// Messages after `after`, oldest first, and whether newer exist.
    fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> StoreFuture<'_, (Vec<Message>, bool)>;
    /// Stores a batch of sends in one transaction, assigning per-conversation seqs.
    fn append_batch(&self, batch: Vec<NewMessage>) -> StoreFuture<'_, Vec<Appended>>;
}

/// Implements [`MessageStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_messages {
    ($ty:ty, $db:ty) => {
        impl $crate::store::MessageStore for $ty {
            fn history(
                &self,
                id: chat_proto::ids::ConversationId,
                before: Option<chat_proto::ids::Seq>,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, (Vec<chat_proto::frame::Message>, bool)> {
                $crate::store::counted(async move {
                    let before = before.map_or(i64::MAX, i64::from);
                    let rows = sqlx::query(
                        "SELECT id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at \
                         FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                    )
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
            ) -> $crate::store::StoreFuture<'_, (Vec<chat_proto::frame::Message>, bool)> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at \
                         FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(i64::from(id))
                    .bind(i64::from(after))
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                    Self::page(&rows, limit)
                })
            }

            fn append_batch(&self, batch: Vec<$crate::store::NewMessage>) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Appended>> {
                $crate::store::counted(async move {
                    use std::collections::HashMap;
                    use sqlx::Row as _;
                    use $crate::store::Appended;
                    if batch.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut tx = self.begin_write().await?;

                    // 1. Idempotency: which (sender, key) pairs are stored already?
                    let mut existing: HashMap<(i64, [u8; 16]), chat_proto::frame::Message> = HashMap::new();
                    let keys: Vec<(i64, [u8; 16])> =
                        batch.iter().map(|m| (i64::from(m.sender), *m.client_msg_id.as_bytes())).collect();
                    for row in Self::stored_by_key(&mut tx, &keys).await? {
                        let m = Self::message_from_row(&row)?;
                        existing.insert((i64::from(m.sender), *m.client_msg_id.as_bytes()), m);
                    }

                    // 2. New sends, first occurrence of each key, grouped by conversation.
                    let mut outcome: Vec<Option<Appended>> = vec![None; batch.len()];
                    let mut first: HashMap<(i64, [u8; 16]), usize> = HashMap::new();
                    let mut per_conversation: Vec<(i64, Vec<usize>)> = Vec::new();
                    for (i, m) in batch.iter().enumerate() {
                        let key = (i64::from(m.sender), *m.client_msg_id.as_bytes());
                        if let Some(stored) = existing.get(&key) {
                            outcome[i] = Some(if stored.conversation == m.conversation && stored.body == m.body {
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
                        let conv = i64::from(m.conversation);
                        match per_conversation.iter_mut().find(|(c, _)| *c == conv) {
                            Some((_, list)) => list.push(i),
                            None => per_conversation.push((conv, vec![i])),
                        }
                    }

                    // 3. Reserve seqs per conversation (the row update serializes writers
                    //    of one conversation across nodes), then insert.
                    let mut rows_to_insert: Vec<(usize, i64)> = Vec::new();
                    let mut ids: Vec<i64> = per_conversation.iter().map(|(c, _)| *c).collect();
                    ids.sort_unstable();
                    Self::lock_conversations(&mut tx, &ids).await?;
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
                            let now = indices.iter().map(|&i| batch[i].sent_at.0).max().unwrap_or(0);
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
                            let (body_kind, body) = $crate::store::body_parts(&m.body);
                            $crate::store::NewRow {
                                conversation: i64::from(m.conversation),
                                seq,
                                sender: i64::from(m.sender),
                                client_msg_id: m.client_msg_id.as_bytes().to_vec(),
                                body_kind,
                                body,
                                created_at: m.sent_at.0,
                            }
                        })
                        .collect();
                    let ids = Self::insert_messages(&mut tx, &rows).await?;
                    for &(i, seq) in &rows_to_insert {
                        let m = &batch[i];
                        let id = ids.get(&(i64::from(m.conversation), seq)).copied().ok_or_else(|| {
                            $crate::store::StoreError::Corrupt("inserted row not returned".into())
                        })?;
                        outcome[i] = Some(Appended::New(chat_proto::frame::Message {
                            conversation: m.conversation,
                            seq: $crate::store::seq(seq)?,
                            id: chat_proto::ids::MessageId::try_from(id)
                                .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?,
                            sender: m.sender,
                            client_msg_id: m.client_msg_id,
                            sent_at: m.sent_at,
                            body: m.body.clone(),
                        }));
                    }
                    tx.commit().await?;

                    // 4. Repeats of a key within the batch get the first one's outcome.
                    let mut result = Vec::with_capacity(batch.len());
                    for (i, m) in batch.iter().enumerate() {
                        let resolved = match outcome[i].take() {
                            Some(o) => o,
                            None => {
                                let key = (i64::from(m.sender), *m.client_msg_id.as_bytes());
                                let j = first[&key];
                                match result.get(j) {
                                    Some(Appended::New(stored)) | Some(Appended::Duplicate(stored))
                                        if stored.conversation == m.conversation && stored.body == m.body =>
                                    {
                                        Appended::Duplicate(stored.clone())
                                    }
                                    Some(Appended::NoConversation) if batch[j].conversation == m.conversation => {
                                        Appended::NoConversation
                                    }
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
