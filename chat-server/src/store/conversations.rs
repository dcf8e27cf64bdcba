//! Conversations, their members and read positions (`conversations`, `members`): the
//! trait, and its SQL for both backends (one macro, expanded for each store type in
//! `sqlite.rs` and `postgres.rs`).

use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};

use super::*;

/// Conversations, their members and read positions (`conversations`, `members`).
pub trait ConversationStore {
    /// The direct conversation of a pair, plain or end-to-end encrypted (a pair has
    /// one of each), created if needed; `true` if created now.
    fn direct_conversation(
        &self,
        a: UserId,
        b: UserId,
        encrypted: bool,
        now: Timestamp,
    ) -> StoreFuture<'_, (Conversation, bool)>;
    /// Creates a group owned by `owner` with the given other members.
    fn create_group(
        &self,
        owner: UserId,
        title: String,
        members: Vec<UserId>,
        encrypted: bool,
        now: Timestamp,
    ) -> StoreFuture<'_, Conversation>;
    /// A conversation, if `user` is a member.
    fn conversation(
        &self,
        id: ConversationId,
        user: UserId,
    ) -> StoreFuture<'_, Option<Conversation>>;
    /// Every conversation of a user, most recent activity first.
    fn conversations(&self, user: UserId) -> StoreFuture<'_, Vec<ConversationSummary>>;
    /// The newest seq of every conversation `user` belongs to.
    fn heads(&self, user: UserId) -> StoreFuture<'_, Vec<chat_proto::frame::Cursor>>;
    /// The newest seq of each of these conversations (those that exist).
    fn last_seqs(
        &self,
        ids: Vec<ConversationId>,
    ) -> StoreFuture<'_, Vec<chat_proto::frame::Cursor>>;
    /// Whether a conversation is end-to-end encrypted, and its members; `None` if it
    /// does not exist.
    fn conversation_meta(&self, id: ConversationId) -> StoreFuture<'_, Option<ConversationMeta>>;
    /// Ids of a conversation's members.
    fn member_ids(&self, id: ConversationId) -> StoreFuture<'_, Vec<UserId>>;
    /// Whether two users are members of a common conversation.
    fn share_conversation(&self, a: UserId, b: UserId) -> StoreFuture<'_, bool>;
    /// Adds a member; `false` if already one.
    fn add_member(
        &self,
        id: ConversationId,
        user: UserId,
        role: Role,
        now: Timestamp,
    ) -> StoreFuture<'_, bool>;
    /// Removes a member; `false` if not one. An owner who leaves hands ownership to
    /// the longest-standing member.
    fn remove_member(&self, id: ConversationId, user: UserId) -> StoreFuture<'_, bool>;
    /// Moves a member's read position forward; returns it if it moved.
    fn mark_read(&self, id: ConversationId, user: UserId, seq: Seq)
    -> StoreFuture<'_, Option<Seq>>;
}

/// Implements [`ConversationStore`] for a SQL store type over `$db` (see `sql.rs`).
macro_rules! impl_conversations {
    ($ty:ty, $db:ty) => {
        impl $crate::store::ConversationStore for $ty {
            fn direct_conversation(
                &self,
                a: chat_proto::ids::UserId,
                b: chat_proto::ids::UserId,
                encrypted: bool,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, ($crate::store::Conversation, bool)> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let (low, high) = if a < b { (a, b) } else { (b, a) };
                    // A pair has one plain and one end-to-end encrypted conversation.
                    let key = if encrypted { format!("{low}:{high}:e2e") } else { format!("{low}:{high}") };
                    let mut tx = self.begin_write().await?;
                    let created = sqlx::query(
                        "INSERT INTO conversations (kind, title, direct_key, encrypted, created_by, created_at, last_activity) \
                         VALUES ('direct', '', $1, $2, $3, $4, $4) ON CONFLICT (direct_key) DO NOTHING RETURNING id",
                    )
                    .bind(&key)
                    .bind(encrypted)
                    .bind(i64::from(a))
                    .bind(now.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let (id, is_new) = match created {
                        Some(row) => {
                            let id: i64 = row.try_get("id")?;
                            for user in [low, high] {
                                Self::insert_member(&mut tx, id, i64::from(user), $crate::store::Role::Member, now.0).await?;
                            }
                            (id, true)
                        }
                        None => {
                            let row = sqlx::query("SELECT id FROM conversations WHERE direct_key = $1")
                                .bind(&key)
                                .fetch_one(&mut *tx)
                                .await?;
                            (row.try_get("id")?, false)
                        }
                    };
                    let conversation = Self::load_conversation(&mut tx, id)
                        .await?
                        .ok_or_else(|| $crate::store::StoreError::Corrupt("direct conversation vanished".into()))?;
                    tx.commit().await?;
                    Ok((conversation, is_new))
                })
            }

            fn create_group(
                &self,
                owner: chat_proto::ids::UserId,
                title: String,
                members: Vec<chat_proto::ids::UserId>,
                encrypted: bool,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, $crate::store::Conversation> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(
                        "INSERT INTO conversations (kind, title, encrypted, created_by, created_at, last_activity) \
                         VALUES ('group', $1, $2, $3, $4, $4) RETURNING id",
                    )
                    .bind(&title)
                    .bind(encrypted)
                    .bind(i64::from(owner))
                    .bind(now.0)
                    .fetch_one(&mut *tx)
                    .await?;
                    let id: i64 = row.try_get("id")?;
                    Self::insert_member(&mut tx, id, i64::from(owner), $crate::store::Role::Owner, now.0).await?;
                    for user in members {
                        if user != owner {
                            Self::insert_member(&mut tx, id, i64::from(user), $crate::store::Role::Member, now.0).await?;
                        }
                    }
                    let conversation = Self::load_conversation(&mut tx, id)
                        .await?
                        .ok_or_else(|| $crate::store::StoreError::Corrupt("group vanished".into()))?;
                    tx.commit().await?;
                    Ok(conversation)
                })
            }

            fn conversation(
                &self,
                id: chat_proto::ids::ConversationId,
                user: chat_proto::ids::UserId,
            ) -> $crate::store::StoreFuture<'_, Option<$crate::store::Conversation>> {
                $crate::store::counted(async move {
                    let mut conn = self.pool.acquire().await?;
                    let conversation = Self::load_conversation(&mut conn, i64::from(id)).await?;
                    Ok(conversation.filter(|c| c.members.iter().any(|m| m.user.id == user)))
                })
            }

            fn conversations(&self, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Vec<$crate::store::ConversationSummary>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut conn = self.pool.acquire().await?;
                    let rows = sqlx::query(
                        "SELECT c.id, c.last_seq, m.last_read_seq FROM members m \
                         JOIN conversations c ON c.id = m.conversation_id \
                         WHERE m.user_id = $1 ORDER BY c.last_activity DESC, c.id DESC",
                    )
                    .bind(i64::from(user))
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for row in rows {
                        let id: i64 = row.try_get("id")?;
                        let last_seq: i64 = row.try_get("last_seq")?;
                        let last_read: i64 = row.try_get("last_read_seq")?;
                        // The user's own messages are never unread to them.
                        let unread: i64 = if last_seq > last_read {
                            // Relations (edits, reactions, deletions) and deleted messages
                            // are not unread messages.
                            sqlx::query_scalar(
                                "SELECT COUNT(*) FROM messages \
                                 WHERE conversation_id = $1 AND seq > $2 AND sender_id <> $3 \
                                 AND kind = 0 AND body IS NOT NULL",
                            )
                            .bind(id)
                            .bind(last_read)
                            .bind(i64::from(user))
                            .fetch_one(&mut *conn)
                            .await?
                        } else {
                            0
                        };
                        let Some(conversation) = Self::load_conversation(&mut conn, id).await? else {
                            continue;
                        };
                        let (last_message, edited, deleted) = Self::preview(&mut conn, id).await?;
                        out.push($crate::store::ConversationSummary {
                            conversation,
                            last_message,
                            last_message_edited: edited,
                            last_message_deleted: deleted,
                            unread: u64::try_from(unread).unwrap_or(0),
                        });
                    }
                    Ok(out)
                })
            }

            fn heads(&self, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Vec<chat_proto::frame::Cursor>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let rows = sqlx::query(
                        "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id \
                         WHERE m.user_id = $1 ORDER BY c.id",
                    )
                    .bind(i64::from(user))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(chat_proto::frame::Cursor {
                                conversation: $crate::store::conversation_id(r.try_get("id")?)?,
                                seq: $crate::store::seq(r.try_get("last_seq")?)?,
                            })
                        })
                        .collect()
                })
            }

            fn last_seqs(
                &self,
                ids: Vec<chat_proto::ids::ConversationId>,
            ) -> $crate::store::StoreFuture<'_, Vec<chat_proto::frame::Cursor>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut out = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, last_seq FROM conversations WHERE id IN (");
                        let mut list = q.separated(", ");
                        for id in chunk {
                            list.push_bind(i64::from(*id));
                        }
                        q.push(")");
                        for r in q.build().fetch_all(&self.pool).await? {
                            out.push(chat_proto::frame::Cursor {
                                conversation: $crate::store::conversation_id(r.try_get("id")?)?,
                                seq: $crate::store::seq(r.try_get("last_seq")?)?,
                            });
                        }
                    }
                    Ok(out)
                })
            }

            fn conversation_meta(
                &self,
                id: chat_proto::ids::ConversationId,
            ) -> $crate::store::StoreFuture<'_, Option<$crate::store::ConversationMeta>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let Some(row) = sqlx::query("SELECT encrypted FROM conversations WHERE id = $1")
                        .bind(i64::from(id))
                        .fetch_optional(&self.pool)
                        .await?
                    else {
                        return Ok(None);
                    };
                    let members = <Self as $crate::store::ConversationStore>::member_ids(self, id).await?;
                    Ok(Some($crate::store::ConversationMeta {
                        encrypted: row.try_get("encrypted")?,
                        members,
                    }))
                })
            }

            fn member_ids(&self, id: chat_proto::ids::ConversationId) -> $crate::store::StoreFuture<'_, Vec<chat_proto::ids::UserId>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let rows = sqlx::query("SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY user_id")
                        .bind(i64::from(id))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(|r| $crate::store::user_id(r.try_get("user_id")?)).collect()
                })
            }

            fn share_conversation(
                &self,
                a: chat_proto::ids::UserId,
                b: chat_proto::ids::UserId,
            ) -> $crate::store::StoreFuture<'_, bool> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "SELECT 1 AS shared FROM members x JOIN members y ON x.conversation_id = y.conversation_id \
                         WHERE x.user_id = $1 AND y.user_id = $2 LIMIT 1",
                    )
                    .bind(i64::from(a))
                    .bind(i64::from(b))
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.is_some())
                })
            }

            fn add_member(
                &self,
                id: chat_proto::ids::ConversationId,
                user: chat_proto::ids::UserId,
                role: $crate::store::Role,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, bool> {
                $crate::store::counted(async move {
                    let mut conn = self.pool.acquire().await?;
                    Self::insert_member(&mut conn, i64::from(id), i64::from(user), role, now.0).await
                })
            }

            fn remove_member(&self, id: chat_proto::ids::ConversationId, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, bool> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    let removed = sqlx::query(
                        "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2 RETURNING role",
                    )
                    .bind(i64::from(id))
                    .bind(i64::from(user))
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(removed) = removed else {
                        tx.rollback().await?;
                        return Ok(false);
                    };
                    if removed.try_get::<&str, _>("role")? == "owner" {
                        let owners = sqlx::query(
                            "SELECT COUNT(*) AS n FROM members WHERE conversation_id = $1 AND role = 'owner'",
                        )
                        .bind(i64::from(id))
                        .fetch_one(&mut *tx)
                        .await?;
                        if owners.try_get::<i64, _>("n")? == 0 {
                            sqlx::query(
                                "UPDATE members SET role = 'owner' WHERE conversation_id = $1 AND user_id = \
                                 (SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY joined_at, user_id LIMIT 1)",
                            )
                            .bind(i64::from(id))
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(true)
                })
            }

            fn mark_read(
                &self,
                id: chat_proto::ids::ConversationId,
                user: chat_proto::ids::UserId,
                seq: chat_proto::ids::Seq,
            ) -> $crate::store::StoreFuture<'_, Option<chat_proto::ids::Seq>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    // Never past the newest message, never backwards.
                    let row = sqlx::query(
                        "UPDATE members SET last_read_seq = \
                           (SELECT CASE WHEN $1 < c.last_seq THEN $1 ELSE c.last_seq END FROM conversations c WHERE c.id = $2) \
                         WHERE conversation_id = $2 AND user_id = $3 AND last_read_seq < $1 \
                           AND last_read_seq < (SELECT c.last_seq FROM conversations c WHERE c.id = $2) \
                         RETURNING last_read_seq",
                    )
                    .bind(i64::from(seq))
                    .bind(i64::from(id))
                    .bind(i64::from(user))
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(r) => Ok(Some($crate::store::seq(r.try_get("last_read_seq")?)?)),
                        None => Ok(None),
                    }
                })
            }
        }
    };
}

pub(crate) use impl_conversations;
