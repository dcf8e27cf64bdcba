//! Reading rows into the store's types, shared by every table family's SQL.

/// Inherent helpers on a SQL store type over `$db`: rows to types, pages, and the
/// queries several table families use.
macro_rules! impl_rows {
    ($ty:ty, $db:ty) => {
        impl $ty {
            fn user_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::store::User, $crate::store::StoreError> {
                use sqlx::Row as _;
                Ok($crate::store::User {
                    id: $crate::store::user_id(row.try_get("id")?)?,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    bio: row.try_get("bio")?,
                    created_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                    last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(chat_proto::ids::Timestamp),
                })
            }

            fn device_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::store::Device, $crate::store::StoreError> {
                use sqlx::Row as _;
                let key = chat_crypto::e2e::DevicePublicKey::from_bytes(row.try_get::<&[u8], _>("public_key")?)
                    .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                let id: &[u8] = row.try_get("id")?;
                if id != &key.id().as_bytes()[..] {
                    return Err($crate::store::StoreError::Corrupt("device id does not match its key".into()));
                }
                Ok($crate::store::Device {
                    public_key: key,
                    user_id: $crate::store::user_id(row.try_get("user_id")?)?,
                    name: row.try_get("name")?,
                    created_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                })
            }

            /// An entry from a row of `entry_columns!()`.
            fn entry_from_row(row: &<$db as sqlx::Database>::Row) -> Result<chat_proto::entry::Entry, $crate::store::StoreError> {
                use sqlx::Row as _;
                Ok(chat_proto::entry::Entry {
                    conversation: $crate::store::conversation_id(row.try_get("conversation_id")?)?,
                    seq: $crate::store::seq(row.try_get("seq")?)?,
                    id: chat_proto::ids::MessageId::try_from(row.try_get::<i64, _>("id")?)
                        .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?,
                    sender: $crate::store::user_id(row.try_get("sender_id")?)?,
                    client_msg_id: $crate::store::client_msg_id(row.try_get::<&[u8], _>("client_msg_id")?)?,
                    sent_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                    content: $crate::store::content_from(
                        row.try_get("kind")?,
                        row.try_get("target")?,
                        row.try_get("body_kind")?,
                        row.try_get("body")?,
                        row.try_get("files")?,
                    )?,
                })
            }

            /// A page from rows fetched with `LIMIT limit + 1`: the entries, and whether
            /// there were more.
            fn page(
                rows: &[<$db as sqlx::Database>::Row],
                limit: u32,
            ) -> Result<(Vec<chat_proto::entry::Entry>, bool), $crate::store::StoreError> {
                let entries = rows
                    .iter()
                    .take(limit as usize)
                    .map(Self::entry_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((entries, rows.len() > limit as usize))
            }

            /// A conversation's newest message as a preview shows it: the body of its
            /// latest edit, or the deletion text; and whether it was edited, deleted.
            async fn preview(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: i64,
            ) -> Result<(Option<chat_proto::frame::Message>, bool, bool), $crate::store::StoreError> {
                use sqlx::Row as _;
                let Some(row) = sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::entry_columns!(),
                    " FROM messages WHERE conversation_id = $1 AND kind = 0 ORDER BY seq DESC LIMIT 1"
                ))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                else {
                    return Ok((None, false, false));
                };
                let entry = Self::entry_from_row(&row)?;
                let mut message = entry.to_message();
                if entry.content.is_purged() {
                    return Ok((Some(message), false, true));
                }
                let edit = sqlx::query(
                    "SELECT body_kind, body FROM messages \
                     WHERE conversation_id = $1 AND target = $2 AND kind = 1 AND body IS NOT NULL \
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(id)
                .bind(i64::from(entry.seq))
                .fetch_optional(&mut *conn)
                .await?;
                let edited = match edit {
                    Some(edit) => {
                        message.body = $crate::store::body_from(edit.try_get("body_kind")?, edit.try_get("body")?)?;
                        true
                    }
                    None => false,
                };
                Ok((Some(message), edited, false))
            }

            async fn load_conversation(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: i64,
            ) -> Result<Option<$crate::store::Conversation>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let Some(row) = sqlx::query(
                    "SELECT id, kind, title, encrypted, created_by, created_at, last_seq, last_activity \
                     FROM conversations WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                else {
                    return Ok(None);
                };
                let rows = sqlx::query(
                    "SELECT u.id, u.username, u.display_name, u.bio, u.created_at, u.last_seen, \
                            m.role, m.last_read_seq, m.joined_at \
                     FROM members m JOIN users u ON u.id = m.user_id \
                     WHERE m.conversation_id = $1 ORDER BY m.joined_at, u.id",
                )
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
                let mut members = Vec::with_capacity(rows.len());
                for r in &rows {
                    members.push($crate::store::Member {
                        user: Self::user_from_row(r)?,
                        role: $crate::store::role(r.try_get("role")?)?,
                        last_read_seq: $crate::store::seq(r.try_get("last_read_seq")?)?,
                        joined_at: chat_proto::ids::Timestamp(r.try_get("joined_at")?),
                    });
                }
                Ok(Some($crate::store::Conversation {
                    id: $crate::store::conversation_id(row.try_get("id")?)?,
                    kind: $crate::store::conversation_kind(row.try_get("kind")?)?,
                    title: row.try_get("title")?,
                    encrypted: row.try_get("encrypted")?,
                    created_by: $crate::store::user_id(row.try_get("created_by")?)?,
                    created_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                    last_seq: $crate::store::seq(row.try_get("last_seq")?)?,
                    last_activity: chat_proto::ids::Timestamp(row.try_get("last_activity")?),
                    members,
                }))
            }

            /// Stored messages with any of the (sender, client_msg_id) keys. A row-value
            /// IN list plans as one unique-index probe per key on both backends.
            async fn stored_by_key(
                tx: &mut $crate::store::tx::WriteTx<$db>,
                keys: &[(i64, [u8; 16])],
            ) -> Result<Vec<<$db as sqlx::Database>::Row>, $crate::store::StoreError> {
                let mut rows = Vec::new();
                for chunk in keys.chunks(200) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                        "SELECT ",
                        $crate::store::entry_columns!(),
                        " FROM messages WHERE (sender_id, client_msg_id) IN ("
                    ));
                    let mut sep = q.separated(", ");
                    for (sender, key) in chunk {
                        sep.push("(");
                        sep.push_bind_unseparated(*sender);
                        sep.push_unseparated(", ");
                        sep.push_bind_unseparated(key.to_vec());
                        sep.push_unseparated(")");
                    }
                    q.push(")");
                    rows.extend(q.build().fetch_all(&mut **tx).await?);
                }
                Ok(rows)
            }

            async fn insert_member(
                conn: &mut <$db as sqlx::Database>::Connection,
                conversation: i64,
                user: i64,
                role: $crate::store::Role,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
                     SELECT $1, $2, $3, $4, 0 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND deleted_at IS NULL) \
                     ON CONFLICT (conversation_id, user_id) DO NOTHING",
                )
                .bind(conversation)
                .bind(user)
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use impl_rows;
