//! The message search index (migration 0007): what is indexed, kept in step with the
//! log inside the transaction that appends to it, queried per backend (SQLite FTS5,
//! PostgreSQL tsvector), and filled for messages older than the index.
//!
//! Both backends index the same words: `chat_api::search::document` makes them, and
//! neither engine's own parsing changes them (FTS5 splits the space-separated words
//! back; PostgreSQL gets a tsvector built here). Queries are rendered from one parsed
//! `chat_api::search::Query` into each engine's syntax, so one test suite holds for
//! both.

use std::collections::{BTreeMap, HashMap};

use chat_api::search::Query;
use chat_proto::body::Body;
use chat_proto::entry::Content;
use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};

use super::StoreFuture;

/// A stored message that matches a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    /// The message's id: newer messages have larger ones; the paging cursor.
    pub id: i64,
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its position there.
    pub seq: Seq,
    /// Its sender.
    pub sender: UserId,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// Its current text.
    pub text: String,
}

/// Searching messages.
pub trait SearchStore {
    /// Messages with an id below `before` in the conversations `user` is a member of
    /// (only `conversation`, if given) that match `query`, newest first, at most
    /// `limit`.
    fn search<'a>(
        &'a self,
        user: UserId,
        conversation: Option<ConversationId>,
        query: &'a Query,
        before: Option<i64>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<SearchHit>>;

    /// Indexes up to `batch` of the newest messages stored before the index existed;
    /// returns how many it looked at (0 once none are left).
    fn backfill_search(&self, batch: u32) -> StoreFuture<'_, usize>;
}

/// One message's row of the index.
#[derive(Clone, Debug)]
pub(crate) struct IndexRow {
    pub(crate) id: i64,
    pub(crate) conversation: i64,
    pub(crate) seq: i64,
    pub(crate) text: String,
}

/// The searchable text of a message's body: a text, or the caption of files. Sealed
/// bodies never are (the server cannot read them and must not try).
pub(crate) fn searchable(body: &Body) -> Option<&str> {
    let text = match body {
        Body::Text(t) => t.as_str(),
        Body::Attachments(a) => a.text.as_str(),
        Body::Encrypted(_) | Body::SealedAttachments(_) => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}

/// A text as the index keeps it: PostgreSQL's text cannot hold NUL, so it becomes
/// U+FFFD on both backends (index words are letters and digits: they do not change).
pub(crate) fn index_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// What a batch of appended entries changes in the index, in log order: new rows
/// (messages, edits' new text) and rows to remove (deletions), by message id.
#[derive(Debug, Default)]
pub(crate) struct IndexChanges {
    rows: BTreeMap<i64, Option<IndexRow>>,
    /// Whether a row may exist already (an edited message's): replaced, not inserted.
    replaced: Vec<i64>,
}

impl IndexChanges {
    pub(crate) fn put(&mut self, row: IndexRow, replacing: bool) {
        if replacing {
            self.replaced.push(row.id);
        }
        self.rows.insert(row.id, Some(row));
    }

    pub(crate) fn remove(&mut self, id: i64) {
        self.replaced.push(id);
        self.rows.insert(id, None);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Ids whose rows go first (edited or deleted), then the rows to write.
    pub(crate) fn into_parts(self) -> (Vec<i64>, Vec<IndexRow>) {
        let mut stale = self.replaced;
        stale.sort_unstable();
        stale.dedup();
        (stale, self.rows.into_values().flatten().collect())
    }
}

/// The content of one appended entry, for [`IndexChanges`]: a message's text, an
/// edit's new text for `target_id`, or a deletion of `target_id`.
pub(crate) fn change_of(content: &Content) -> Option<Change<'_>> {
    match content {
        Content::Message { body: Some(b), .. } => searchable(b).map(Change::Text),
        Content::Edit {
            target,
            body: Some(b),
        } => searchable(b).map(|t| Change::Edit(*target, t)),
        Content::Delete { target } => Some(Change::Delete(*target)),
        _ => None,
    }
}

/// See [`change_of`].
pub(crate) enum Change<'a> {
    Text(&'a str),
    Edit(Seq, &'a str),
    Delete(Seq),
}

/// The FTS5 query for `query`: each term a quoted phrase of index words (they are
/// letters, digits and marks only, so nothing needs escaping), its last word a prefix.
pub(crate) fn fts5_query(query: &Query) -> String {
    let phrase = |words: &[String]| format!("\"{}\" *", words.join(" "));
    let positive: Vec<String> = query
        .terms
        .iter()
        .filter(|t| !t.negated)
        .map(|t| phrase(&t.words))
        .collect();
    let mut out = format!("({})", positive.join(" AND "));
    for t in query.terms.iter().filter(|t| t.negated) {
        out.push_str(" NOT ");
        out.push_str(&phrase(&t.words));
    }
    out
}

/// A tsquery literal for `query`: phrases with `<->`, the last word of each a prefix.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn tsquery(query: &Query) -> String {
    let phrase = |words: &[String]| {
        let n = words.len();
        let parts: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let quoted = lexeme(w);
                if i + 1 == n {
                    format!("{quoted}:*")
                } else {
                    quoted
                }
            })
            .collect();
        format!("({})", parts.join(" <-> "))
    };
    query
        .terms
        .iter()
        .map(|t| {
            if t.negated {
                format!("!{}", phrase(&t.words))
            } else {
                phrase(&t.words)
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

/// A tsvector literal of a text's index words with their positions (1-based; the
/// type keeps positions up to 16383, later words share that one).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn tsvector(text: &str) -> String {
    let mut positions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, word) in chat_api::search::tokens(text).into_iter().enumerate() {
        let p = (i as u32 + 1).min(16383);
        let list = positions.entry(word).or_default();
        if list.last() != Some(&p) && list.len() < 256 {
            list.push(p);
        }
    }
    positions
        .iter()
        .map(|(w, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!("{}:{}", lexeme(w), ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word quoted as a tsvector/tsquery lexeme.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn lexeme(w: &str) -> String {
    format!("'{}'", w.replace('\\', "\\\\").replace('\'', "''"))
}

/// The ids of messages by (conversation, seq), as the append's insertion returned them.
pub(crate) type Ids = HashMap<(i64, i64), i64>;

/// Implements [`SearchStore`] for a SQL store type, and the index upkeep its appends
/// call, over the backend's `index_rows`, `unindex` and `search_rows` hooks.
macro_rules! impl_search {
    ($ty:ty, $db:ty) => {
        impl $ty {
            /// A search result from a row of `id, conversation_id, seq, sender_id,
            /// created_at, text`.
            fn hit_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::store::search::SearchHit, $crate::store::StoreError> {
                use sqlx::Row as _;
                Ok($crate::store::search::SearchHit {
                    id: row.try_get("id")?,
                    conversation: $crate::store::conversation_id(row.try_get("conversation_id")?)?,
                    seq: $crate::store::seq(row.try_get("seq")?)?,
                    sender: $crate::store::user_id(row.try_get("sender_id")?)?,
                    sent_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                    text: row.try_get("text")?,
                })
            }

            /// The id of the message at `seq` of a conversation, from this batch or
            /// the log.
            async fn message_id(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                ids: &$crate::store::search::Ids,
                conversation: i64,
                seq: i64,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                if let Some(&id) = ids.get(&(conversation, seq)) {
                    return Ok(Some(id));
                }
                Ok(sqlx::query_scalar(
                    "SELECT id FROM messages WHERE conversation_id = $1 AND seq = $2 AND kind = 0",
                )
                .bind(conversation)
                .bind(seq)
                .fetch_optional(&mut **tx)
                .await?)
            }

            /// Brings the index in step with the entries a batch appended (inside its
            /// transaction): new messages' text, edits' new text, deletions.
            pub(crate) async fn index_appended(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                appended: &[(&$crate::store::NewEntry, i64)],
                ids: &$crate::store::search::Ids,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::search::{Change, IndexChanges, IndexRow, change_of, index_text};
                let mut changes = IndexChanges::default();
                for &(entry, seq) in appended {
                    let Some(change) = change_of(&entry.content) else { continue };
                    let conversation = i64::from(entry.conversation);
                    match change {
                        Change::Text(text) => {
                            if let Some(&id) = ids.get(&(conversation, seq)) {
                                changes.put(IndexRow { id, conversation, seq, text: index_text(text) }, false);
                            }
                        }
                        Change::Edit(target, text) => {
                            let target = i64::from(target);
                            if let Some(id) = Self::message_id(tx, ids, conversation, target).await? {
                                changes.put(
                                    IndexRow { id, conversation, seq: target, text: index_text(text) },
                                    true,
                                );
                            }
                        }
                        Change::Delete(target) => {
                            if let Some(id) = Self::message_id(tx, ids, conversation, i64::from(target)).await? {
                                changes.remove(id);
                            }
                        }
                    }
                }
                if changes.is_empty() {
                    return Ok(());
                }
                let (stale, rows) = changes.into_parts();
                if !stale.is_empty() {
                    Self::unindex(tx, &stale).await?;
                }
                if !rows.is_empty() {
                    Self::index_rows(tx, &rows).await?;
                }
                Ok(())
            }
        }

        impl $crate::store::search::SearchStore for $ty {
            fn search<'a>(
                &'a self,
                user: chat_proto::ids::UserId,
                conversation: Option<chat_proto::ids::ConversationId>,
                query: &'a chat_api::search::Query,
                before: Option<i64>,
                limit: u32,
            ) -> $crate::store::StoreFuture<'a, Vec<$crate::store::search::SearchHit>> {
                $crate::store::counted(async move {
                    self.search_rows(
                        i64::from(user),
                        conversation.map(i64::from),
                        query,
                        before.unwrap_or(i64::MAX),
                        i64::from(limit),
                    )
                    .await
                })
            }

            fn backfill_search(&self, batch: u32) -> $crate::store::StoreFuture<'_, usize> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    use $crate::store::search::{IndexRow, index_text, searchable};
                    let mut tx = self.begin_write().await?;
                    let below: i64 = sqlx::query_scalar("SELECT below FROM search_backfill")
                        .fetch_optional(&mut *tx)
                        .await?
                        .unwrap_or(0);
                    let rows = sqlx::query(
                        "SELECT id, conversation_id, seq, \
                         CAST(CASE WHEN body IS NULL THEN 1 ELSE 0 END AS BIGINT) AS purged \
                         FROM messages WHERE id < $1 AND kind = 0 ORDER BY id DESC LIMIT $2",
                    )
                    .bind(below)
                    .bind(i64::from(batch))
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(lowest) = rows.last().map(|r| r.try_get::<i64, _>("id")).transpose()? else {
                        return Ok(0);
                    };
                    let mut conversations: Vec<i64> =
                        rows.iter().map(|r| r.try_get("conversation_id")).collect::<Result<_, _>>()?;
                    conversations.sort_unstable();
                    conversations.dedup();
                    // Appends to these conversations wait, so an edit or a deletion
                    // cannot slip between reading a message and indexing it.
                    Self::lock_conversations(&mut tx, &conversations).await?;
                    let mut index = Vec::new();
                    for row in &rows {
                        let (id, conversation, seq): (i64, i64, i64) =
                            (row.try_get("id")?, row.try_get("conversation_id")?, row.try_get("seq")?);
                        if row.try_get::<i64, _>("purged")? == 1 {
                            continue;
                        }
                        // The message as it reads now: its body, or its latest edit's.
                        let current = sqlx::query(concat!(
                            "SELECT ",
                            $crate::store::entry_columns!(),
                            " FROM messages WHERE conversation_id = $1 AND (seq = $2 OR (target = $2 AND kind = 1)) \
                              ORDER BY seq DESC LIMIT 1"
                        ))
                        .bind(conversation)
                        .bind(seq)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some(current) = current.as_ref().map(Self::entry_from_row).transpose()? else {
                            continue;
                        };
                        let body = match &current.content {
                            chat_proto::entry::Content::Message { body: Some(b), .. }
                            | chat_proto::entry::Content::Edit { body: Some(b), .. } => b,
                            _ => continue,
                        };
                        if let Some(text) = searchable(body) {
                            index.push(IndexRow { id, conversation, seq, text: index_text(text) });
                        }
                    }
                    if !index.is_empty() {
                        let ids: Vec<i64> = index.iter().map(|r| r.id).collect();
                        Self::unindex(&mut tx, &ids).await?;
                        Self::index_rows(&mut tx, &index).await?;
                    }
                    sqlx::query("UPDATE search_backfill SET below = $1")
                        .bind(lowest)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(rows.len())
                })
            }
        }
    };
}

pub(crate) use impl_search;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_render_for_each_engine() {
        let q = Query::parse(r#"lunch "on fri" -pizza 北京"#).expect("query");
        assert_eq!(
            fts5_query(&q),
            r#"("lunch" * AND "on fri" * AND "北京" *) NOT "pizza" *"#
        );
        assert_eq!(
            tsquery(&q),
            "('lunch':*) & ('on' <-> 'fri':*) & !('pizza':*) & ('北京':*)"
        );
    }

    #[test]
    fn tsvectors_list_each_word_with_its_positions() {
        assert_eq!(
            tsvector("Lunch, lunch and 北京"),
            "'and':3 'lunch':1,2 '京':5 '北京':4"
        );
        assert_eq!(tsvector(""), "");
    }

    #[test]
    fn index_changes_keep_the_last_state_of_each_message() {
        let row = |id, text: &str| IndexRow {
            id,
            conversation: 1,
            seq: id,
            text: text.into(),
        };
        let mut c = IndexChanges::default();
        c.put(row(1, "first"), false);
        c.put(row(1, "first, edited"), true);
        c.put(row(2, "second"), false);
        c.remove(2);
        c.put(row(3, "third"), false);
        let (stale, rows) = c.into_parts();
        assert_eq!(stale, [1, 2]);
        let texts: Vec<(i64, String)> = rows.into_iter().map(|r| (r.id, r.text)).collect();
        assert_eq!(texts, [(1, "first, edited".into()), (3, "third".into())]);
    }
}
