//! The SQL both backends share. Every statement is portable between SQLite and
//! PostgreSQL; placeholders are `$1, $2, …` in order of first appearance, which both
//! drivers bind positionally.

/// Implements [`Store`](super::Store) for a type with a `pool: sqlx::Pool<$db>` field.
macro_rules! impl_store {
    ($ty:ty, $db:ty, $name:literal, $write_concurrency:literal) => {
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

            fn message_from_row(row: &<$db as sqlx::Database>::Row) -> Result<chat_proto::frame::Message, $crate::store::StoreError> {
                use sqlx::Row as _;
                Ok(chat_proto::frame::Message {
                    conversation: $crate::store::conversation_id(row.try_get("conversation_id")?)?,
                    seq: $crate::store::seq(row.try_get("seq")?)?,
                    id: chat_proto::ids::MessageId::try_from(row.try_get::<i64, _>("id")?)
                        .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?,
                    sender: $crate::store::user_id(row.try_get("sender_id")?)?,
                    client_msg_id: $crate::store::client_msg_id(row.try_get::<&[u8], _>("client_msg_id")?)?,
                    sent_at: chat_proto::ids::Timestamp(row.try_get("created_at")?),
                    body: $crate::store::body_from(row.try_get("body_kind")?, row.try_get("body")?)?,
                })
            }

            /// A page from rows fetched with `LIMIT limit + 1`: the messages, and whether
            /// there were more.
            fn page(
                rows: &[<$db as sqlx::Database>::Row],
                limit: u32,
            ) -> Result<(Vec<chat_proto::frame::Message>, bool), $crate::store::StoreError> {
                let messages = rows
                    .iter()
                    .take(limit as usize)
                    .map(Self::message_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((messages, rows.len() > limit as usize))
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
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at \
                         FROM messages WHERE (sender_id, client_msg_id) IN (",
                    );
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

        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }

            fn write_concurrency(&self) -> usize {
                $write_concurrency
            }

            fn ping(&self) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn probe_write(&self) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let mut tx = self.begin_write().await?;
                    sqlx::query("UPDATE write_probe SET probed_at = $1 WHERE id = 1")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                })
            }

            fn create_user(&self, user: $crate::store::NewUser) -> $crate::store::StoreFuture<'_, $crate::store::User> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "INSERT INTO users (username, display_name, bio, password_hash, created_at) \
                         VALUES ($1, $2, '', $3, $4) ON CONFLICT (username) DO NOTHING \
                         RETURNING id, username, display_name, bio, created_at, last_seen",
                    )
                    .bind(&user.username)
                    .bind(&user.display_name)
                    .bind(&user.password_hash)
                    .bind(user.created_at.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Self::user_from_row(&row),
                        None => Err($crate::store::StoreError::Conflict("username")),
                    }
                })
            }

            fn user(&self, id: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen FROM users \
                         WHERE id = $1 AND deleted_at IS NULL",
                    )
                    .bind(i64::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn credentials(&self, username: &str) -> $crate::store::StoreFuture<'_, Option<$crate::store::Credentials>> {
                let username = username.to_owned();
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen, password_hash FROM users \
                         WHERE username = $1 AND deleted_at IS NULL",
                    )
                    .bind(&username)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Ok(Some($crate::store::Credentials {
                            user: Self::user_from_row(&row)?,
                            password_hash: row.try_get("password_hash")?,
                        })),
                        None => Ok(None),
                    }
                })
            }

            fn search_users(
                &self,
                prefix: &str,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreFuture<'_, Vec<$crate::store::User>> {
                // LIKE metacharacters in the prefix are escaped, so `_` and `%` match
                // themselves.
                let mut pattern = String::with_capacity(prefix.len() + 1);
                for c in prefix.chars() {
                    if matches!(c, '%' | '_' | '\\') {
                        pattern.push('\\');
                    }
                    pattern.push(c);
                }
                pattern.push('%');
                let after = after.unwrap_or("").to_owned();
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT id, username, display_name, bio, created_at, last_seen FROM users \
                         WHERE username LIKE $1 ESCAPE '\\' AND username > $2 AND deleted_at IS NULL \
                         ORDER BY username LIMIT $3",
                    )
                    .bind(&pattern)
                    .bind(&after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::user_from_row).collect()
                })
            }

            fn update_profile(
                &self,
                id: chat_proto::ids::UserId,
                display_name: Option<String>,
                bio: Option<String>,
            ) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "UPDATE users SET display_name = COALESCE($1, display_name), bio = COALESCE($2, bio) \
                         WHERE id = $3 AND deleted_at IS NULL \
                         RETURNING id, username, display_name, bio, created_at, last_seen",
                    )
                    .bind(display_name)
                    .bind(bio)
                    .bind(i64::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn set_password(&self, id: chat_proto::ids::UserId, password_hash: String) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                        .bind(password_hash)
                        .bind(i64::from(id))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn delete_user(&self, id: chat_proto::ids::UserId, now: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    let mut tx = self.begin_write().await?;
                    // The username is freed (an impossible name takes its place) and the
                    // profile emptied; messages stay, attributed to a deleted account.
                    sqlx::query(
                        "UPDATE users SET deleted_at = $1, username = '#deleted-' || id, \
                         display_name = 'Deleted account', bio = '', password_hash = '' WHERE id = $2",
                    )
                    .bind(now.0)
                    .bind(i64::from(id))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                        .bind(now.0)
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM members WHERE user_id = $1")
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM devices WHERE user_id = $1")
                        .bind(i64::from(id))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn set_last_seen(&self, id: chat_proto::ids::UserId, at: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE users SET last_seen = $1 WHERE id = $2")
                        .bind(at.0)
                        .bind(i64::from(id))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn create_session(
                &self,
                user: chat_proto::ids::UserId,
                token_hash: [u8; 32],
                now: chat_proto::ids::Timestamp,
                expires_at: chat_proto::ids::Timestamp,
                user_agent: &str,
            ) -> $crate::store::StoreFuture<'_, i64> {
                let user_agent: String = user_agent.chars().take(200).collect();
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(
                        "INSERT INTO sessions (user_id, created_at, user_agent) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(i64::from(user))
                    .bind(now.0)
                    .bind(&user_agent)
                    .fetch_one(&mut *tx)
                    .await?;
                    let session: i64 = row.try_get("id")?;
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&token_hash[..])
                    .bind(session)
                    .bind(now.0)
                    .bind(expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(session)
                })
            }

            fn rotate_refresh(
                &self,
                old_hash: [u8; 32],
                new_hash: [u8; 32],
                now: chat_proto::ids::Timestamp,
                expires_at: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, $crate::store::Rotation> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let mut tx = self.begin_write().await?;
                    // Claim the token: only one concurrent refresh can win.
                    let claimed = sqlx::query(
                        "UPDATE refresh_tokens SET used_at = $1 \
                         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                         RETURNING session_id",
                    )
                    .bind(now.0)
                    .bind(&old_hash[..])
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(claimed) = claimed else {
                        // Used before (reuse: revoke the family) or unknown/expired.
                        let used = sqlx::query(
                            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
                        )
                        .bind(&old_hash[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                        let outcome = match used {
                            Some(row) => {
                                let session: i64 = row.try_get("session_id")?;
                                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                                    .bind(now.0)
                                    .bind(session)
                                    .execute(&mut *tx)
                                    .await?;
                                $crate::store::Rotation::Reused
                            }
                            None => $crate::store::Rotation::Invalid,
                        };
                        tx.commit().await?;
                        return Ok(outcome);
                    };
                    let session: i64 = claimed.try_get("session_id")?;
                    let owner = sqlx::query(
                        "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.id = $1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL",
                    )
                    .bind(session)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(owner) = owner else {
                        tx.rollback().await?;
                        return Ok($crate::store::Rotation::Invalid);
                    };
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&new_hash[..])
                    .bind(session)
                    .bind(now.0)
                    .bind(expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok($crate::store::Rotation::Rotated {
                        session_id: session,
                        user_id: $crate::store::user_id(owner.try_get("user_id")?)?,
                    })
                })
            }

            fn refresh_session(&self, token_hash: [u8; 32]) -> $crate::store::StoreFuture<'_, Option<i64>> {
                $crate::store::counted(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                        .bind(&token_hash[..])
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(match row {
                        Some(r) => Some(r.try_get("session_id")?),
                        None => None,
                    })
                })
            }

            fn session_user(&self, session_id: i64, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Option<$crate::store::User>> {
                $crate::store::counted(async move {
                    let row = sqlx::query(
                        "SELECT u.id, u.username, u.display_name, u.bio, u.created_at, u.last_seen \
                         FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND u.deleted_at IS NULL",
                    )
                    .bind(session_id)
                    .bind(i64::from(user))
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(Self::user_from_row).transpose()
                })
            }

            fn revoke_session(&self, session_id: i64, now: chat_proto::ids::Timestamp) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(now.0)
                        .bind(session_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn revoke_other_sessions(
                &self,
                user: chat_proto::ids::UserId,
                keep: i64,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, ()> {
                $crate::store::counted(async move {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                    )
                    .bind(now.0)
                    .bind(i64::from(user))
                    .bind(keep)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

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
                            sqlx::query_scalar(
                                "SELECT COUNT(*) FROM messages \
                                 WHERE conversation_id = $1 AND seq > $2 AND sender_id <> $3",
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
                        let last_message = sqlx::query(
                            "SELECT id, conversation_id, seq, sender_id, client_msg_id, body_kind, body, created_at \
                             FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT 1",
                        )
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                        out.push($crate::store::ConversationSummary {
                            conversation,
                            last_message: last_message.as_ref().map(Self::message_from_row).transpose()?,
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
                    let members = <Self as $crate::store::Store>::member_ids(self, id).await?;
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

            fn add_device(
                &self,
                user: chat_proto::ids::UserId,
                key: chat_crypto::e2e::DevicePublicKey,
                name: String,
                now: chat_proto::ids::Timestamp,
            ) -> $crate::store::StoreFuture<'_, ($crate::store::Device, bool)> {
                $crate::store::counted(async move {
                    let id = key.id();
                    let inserted = sqlx::query(
                        "INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT DO NOTHING RETURNING id",
                    )
                    .bind(&id.as_bytes()[..])
                    .bind(i64::from(user))
                    .bind(&key.as_bytes()[..])
                    .bind(&name)
                    .bind(now.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    let row = sqlx::query("SELECT id, user_id, public_key, name, created_at FROM devices WHERE id = $1")
                        .bind(&id.as_bytes()[..])
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or($crate::store::StoreError::Conflict("device"))?;
                    let device = Self::device_from_row(&row)?;
                    if device.user_id != user {
                        return Err($crate::store::StoreError::Conflict("device"));
                    }
                    Ok((device, inserted.is_some()))
                })
            }

            fn devices(&self, user: chat_proto::ids::UserId) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Device>> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT id, user_id, public_key, name, created_at FROM devices WHERE user_id = $1 ORDER BY created_at, id",
                    )
                    .bind(i64::from(user))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::device_from_row).collect()
                })
            }

            fn conversation_devices(
                &self,
                id: chat_proto::ids::ConversationId,
            ) -> $crate::store::StoreFuture<'_, Vec<$crate::store::Device>> {
                $crate::store::counted(async move {
                    let rows = sqlx::query(
                        "SELECT d.id, d.user_id, d.public_key, d.name, d.created_at FROM devices d \
                         JOIN members m ON m.user_id = d.user_id WHERE m.conversation_id = $1 \
                         ORDER BY d.user_id, d.created_at, d.id",
                    )
                    .bind(i64::from(id))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(Self::device_from_row).collect()
                })
            }

            fn remove_device(
                &self,
                user: chat_proto::ids::UserId,
                id: chat_crypto::e2e::DeviceId,
            ) -> $crate::store::StoreFuture<'_, bool> {
                $crate::store::counted(async move {
                    let done = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
                        .bind(&id.as_bytes()[..])
                        .bind(i64::from(user))
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
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

pub(crate) use impl_store;
