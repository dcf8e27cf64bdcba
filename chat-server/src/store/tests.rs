//! One test suite, run against both backends: SQLite in a temporary directory and
//! PostgreSQL in a fresh schema (dropped afterwards).

use std::sync::Arc;

use chat_proto::body::Body;
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};

use super::append::Appender;
use super::*;
use crate::testing::{TestDb, TestDbKind};

/// A new account named `name` (shown as `NAME`), for the store's tests.
pub(super) fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        display_name: name.to_uppercase(),
        password_hash: "$argon2id$test".to_owned(),
        created_at: Timestamp(1_000),
    }
}

fn send(conversation: ConversationId, sender: UserId, key: u8, text: &str) -> NewEntry {
    NewEntry::message(
        conversation,
        sender,
        ClientMsgId::from_bytes([key; 16]),
        Body::Text(text.to_owned()),
        Timestamp(2_000 + i64::from(key)),
    )
}

async fn users(store: &Arc<dyn Store>, names: &[&str]) -> Vec<User> {
    let mut out = Vec::new();
    for n in names {
        out.push(store.create_user(new_user(n)).await.expect("created"));
    }
    out
}

async fn accounts_and_sessions(store: &Arc<dyn Store>) {
    let alice = store.create_user(new_user("alice")).await.expect("created");
    assert_eq!(alice.username, "alice");
    assert!(matches!(
        store.create_user(new_user("alice")).await,
        Err(StoreError::Conflict("username"))
    ));
    let creds = store
        .credentials("alice")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(creds.user, alice);
    assert_eq!(creds.password_hash, "$argon2id$test");
    assert!(store.credentials("bob").await.expect("query").is_none());

    // Search escapes LIKE metacharacters.
    users(store, &["al_x", "alfa", "bob"]).await;
    let found = store.search_users("al", None, 10).await.expect("query");
    let names: Vec<_> = found.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["al_x", "alfa", "alice"]);
    let page = store
        .search_users("al", Some("al_x"), 1)
        .await
        .expect("query");
    assert_eq!(page[0].username, "alfa");
    let literal = store.search_users("al_", None, 10).await.expect("query");
    assert_eq!(literal.len(), 1, "underscore matches itself only");
    assert!(
        store
            .search_users("%", None, 10)
            .await
            .expect("query")
            .is_empty()
    );

    let updated = store
        .update_profile(alice.id, Some("Alice A.".into()), None)
        .await
        .expect("query")
        .expect("found");
    assert_eq!(
        (updated.display_name.as_str(), updated.bio.as_str()),
        ("Alice A.", "")
    );

    // Sessions and refresh rotation.
    let t = Timestamp(10_000);
    let far = Timestamp(1_000_000);
    let session = store
        .create_session(alice.id, [1; 32], t, far, "test agent")
        .await
        .expect("session");
    assert_eq!(
        store
            .session_user(session, alice.id)
            .await
            .expect("q")
            .map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(
        store.refresh_session([1; 32]).await.expect("q"),
        Some(session)
    );
    assert_eq!(
        store
            .rotate_refresh([1; 32], [2; 32], t, far)
            .await
            .expect("rotate"),
        Rotation::Rotated {
            session_id: session,
            user_id: alice.id
        }
    );
    assert_eq!(
        store
            .rotate_refresh([9; 32], [3; 32], t, far)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    // Reusing the rotated token revokes the whole family, including the new token.
    assert_eq!(
        store
            .rotate_refresh([1; 32], [4; 32], t, far)
            .await
            .expect("rotate"),
        Rotation::Reused
    );
    assert!(
        store
            .session_user(session, alice.id)
            .await
            .expect("q")
            .is_none()
    );
    assert_eq!(
        store
            .rotate_refresh([2; 32], [5; 32], t, far)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );

    // Expired tokens do not rotate.
    let s2 = store
        .create_session(alice.id, [6; 32], t, Timestamp(t.0 + 1), "")
        .await
        .expect("session");
    assert_eq!(
        store
            .rotate_refresh([6; 32], [7; 32], Timestamp(t.0 + 2), far)
            .await
            .expect("r"),
        Rotation::Invalid
    );
    let s3 = store
        .create_session(alice.id, [8; 32], t, far, "")
        .await
        .expect("session");
    store
        .revoke_other_sessions(alice.id, s3, t)
        .await
        .expect("revoke");
    assert!(store.session_user(s2, alice.id).await.expect("q").is_none());
    assert!(store.session_user(s3, alice.id).await.expect("q").is_some());

    // Deleting frees the username and kills the sessions.
    store.delete_user(alice.id, t).await.expect("delete");
    assert!(store.user(alice.id).await.expect("q").is_none());
    assert!(store.session_user(s3, alice.id).await.expect("q").is_none());
    assert!(store.credentials("alice").await.expect("q").is_none());
    let again = store
        .create_user(new_user("alice"))
        .await
        .expect("name is free again");
    assert_ne!(again.id, alice.id);
}

async fn conversations_and_members(store: &Arc<dyn Store>) {
    let u = users(store, &["ann", "ben", "cat", "dan"]).await;
    let (ann, ben, cat, dan) = (u[0].id, u[1].id, u[2].id, u[3].id);
    let now = Timestamp(5_000);

    let (dm, created) = store
        .direct_conversation(ann, ben, false, now)
        .await
        .expect("dm");
    assert!(created);
    assert_eq!(dm.kind, ConversationKind::Direct);
    assert_eq!(dm.members.len(), 2);
    let (again, created) = store
        .direct_conversation(ben, ann, false, now)
        .await
        .expect("dm");
    assert!(!created, "one conversation per pair, either order");
    assert_eq!(again.id, dm.id);

    let group = store
        .create_group(ann, "Team".into(), vec![ben, cat, ann], false, now)
        .await
        .expect("group");
    assert_eq!(group.members.len(), 3);
    assert_eq!(
        group
            .members
            .iter()
            .filter(|m| m.role == Role::Owner)
            .count(),
        1
    );
    assert!(
        store
            .conversation(group.id, dan)
            .await
            .expect("q")
            .is_none(),
        "not a member"
    );
    assert!(
        store
            .conversation(group.id, cat)
            .await
            .expect("q")
            .is_some()
    );

    assert!(
        store
            .add_member(group.id, dan, Role::Member, now)
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_member(group.id, dan, Role::Member, now)
            .await
            .expect("add"),
        "already"
    );
    let ghost = UserId::new(999_999).expect("id");
    assert!(
        !store
            .add_member(group.id, ghost, Role::Member, now)
            .await
            .expect("add"),
        "no such user"
    );
    assert_eq!(
        store.member_ids(group.id).await.expect("q"),
        vec![ann, ben, cat, dan]
    );

    // The owner leaves: the longest-standing member becomes owner.
    assert!(store.remove_member(group.id, ann).await.expect("remove"));
    assert!(!store.remove_member(group.id, ann).await.expect("remove"));
    let g = store
        .conversation(group.id, ben)
        .await
        .expect("q")
        .expect("member");
    let owners: Vec<_> = g
        .members
        .iter()
        .filter(|m| m.role == Role::Owner)
        .map(|m| m.user.id)
        .collect();
    assert_eq!(owners.len(), 1);

    // Listing with last message and unread counts, most recent first.
    let r = store
        .append_batch(vec![
            send(dm.id, ben, 1, "hi ann"),
            send(dm.id, ben, 2, "are you there?"),
        ])
        .await
        .expect("append");
    assert!(matches!(&r[1], Appended::New(m) if m.seq == Seq::new(2).expect("seq")));
    let list = store.conversations(ann).await.expect("list");
    assert_eq!(
        list[0].conversation.id, dm.id,
        "the active conversation first"
    );
    assert_eq!(list[0].unread, 2);
    assert_eq!(
        store.conversations(ben).await.expect("list")[0].unread,
        0,
        "one's own messages are never unread"
    );
    assert_eq!(
        list[0].last_message.as_ref().and_then(|m| m.body.as_text()),
        Some("are you there?")
    );
    assert_eq!(
        store
            .mark_read(dm.id, ann, Seq::new(1).expect("seq"))
            .await
            .expect("read"),
        Some(Seq::new(1).expect("seq"))
    );
    assert_eq!(
        store
            .mark_read(dm.id, ann, Seq::new(1).expect("seq"))
            .await
            .expect("read"),
        None,
        "no move"
    );
    assert_eq!(
        store
            .mark_read(dm.id, ann, Seq::new(50).expect("seq"))
            .await
            .expect("read"),
        Some(Seq::new(2).expect("seq")),
        "capped at the newest message"
    );
    assert_eq!(store.conversations(ann).await.expect("list")[0].unread, 0);
}

async fn appends(store: &Arc<dyn Store>) {
    let u = users(store, &["eve", "fay"]).await;
    let (eve, fay) = (u[0].id, u[1].id);
    let now = Timestamp(7_000);
    let (a, _) = store
        .direct_conversation(eve, fay, false, now)
        .await
        .expect("dm");
    let b = store
        .create_group(eve, "B".into(), vec![fay], false, now)
        .await
        .expect("group");
    let seq = |n: u64| Seq::new(n).expect("seq");

    // One batch across two conversations, with a repeat and a conflict inside it.
    let results = store
        .append_batch(vec![
            send(a.id, eve, 1, "a1"),
            send(b.id, eve, 2, "b1"),
            send(a.id, fay, 3, "a2"),
            send(a.id, eve, 1, "a1"),
            send(b.id, eve, 1, "different"),
            send(ConversationId::new(987_654).expect("id"), eve, 4, "nowhere"),
        ])
        .await
        .expect("append");
    let seqs: Vec<_> = results
        .iter()
        .map(|r| match r {
            Appended::New(m) => format!("new {}:{}", m.conversation, m.seq),
            Appended::Duplicate(m) => format!("dup {}:{}", m.conversation, m.seq),
            Appended::Conflict => "conflict".into(),
            Appended::NoConversation => "missing".into(),
            Appended::Refused(r) => format!("refused {r:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        [
            format!("new {}:1", a.id),
            format!("new {}:1", b.id),
            format!("new {}:2", a.id),
            format!("dup {}:1", a.id),
            "conflict".to_owned(),
            "missing".to_owned(),
        ]
    );

    // A later retry of a stored send returns the original message.
    let again = store
        .append_batch(vec![send(a.id, eve, 1, "a1")])
        .await
        .expect("append");
    let Appended::Duplicate(original) = &again[0] else {
        panic!("duplicate expected")
    };
    let Appended::New(first) = &results[0] else {
        panic!("new expected")
    };
    assert_eq!(original, first);

    // Concurrent senders through the appender: gap-free seqs, every send stored once.
    let appender = Appender::spawn(store.clone(), 64, None);
    let mut tasks = Vec::new();
    for writer in 0..16u8 {
        let appender = appender.clone();
        let sender = if writer % 2 == 0 { eve } else { fay };
        let conversation = b.id;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20u8 {
                let mut key = [writer; 16];
                key[15] = i;
                key[14] = 0xee;
                let m = NewEntry::message(
                    conversation,
                    sender,
                    ClientMsgId::from_bytes(key),
                    Body::Text(format!("{writer}/{i}")),
                    Timestamp(8_000),
                );
                match appender.append(m).await.expect("committed") {
                    Appended::New(m) => seqs.push(m.seq.get()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a writer's sends keep their order"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (2..=321).collect::<Vec<u64>>(),
        "seqs 2..=321 without gaps"
    );

    // History pages, newest first, and sync pages, oldest first.
    let (page, more) = store.history(b.id, None, 5).await.expect("history");
    assert_eq!(
        page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        [321, 320, 319, 318, 317]
    );
    assert!(more);
    let (page, more) = store.history(b.id, Some(seq(3)), 5).await.expect("history");
    assert_eq!(page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [2, 1]);
    assert!(!more);
    let (page, more) = store
        .messages_after(b.id, seq(318), 10)
        .await
        .expect("after");
    assert_eq!(
        page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        [319, 320, 321]
    );
    assert!(!more);

    // Bodies come back exactly, including encrypted bytes and awkward text.
    let weird = "'; DROP TABLE messages; -- \u{0} \u{202e}evil 👩‍👩‍👧 \0";
    let enc = Body::Encrypted(vec![0u8, 255, 1, 2].into());
    let r = store
        .append_batch(vec![
            send(a.id, fay, 9, weird),
            NewEntry {
                content: Content::message(enc.clone()),
                ..send(a.id, fay, 10, "")
            },
        ])
        .await
        .expect("append");
    assert!(r.iter().all(|x| matches!(x, Appended::New(_))));
    let (page, _) = store.history(a.id, None, 2).await.expect("history");
    assert_eq!(page[0].content, Content::message(enc));
    assert_eq!(page[1].text(), Some(weird));
}

async fn devices(store: &Arc<dyn Store>) {
    use chat_crypto::e2e::DeviceSecret;
    let u = users(store, &["gil", "hal", "ivy"]).await;
    let (gil, hal, ivy) = (u[0].id, u[1].id, u[2].id);
    let now = Timestamp(9_000);
    let laptop = DeviceSecret::generate();
    let phone = DeviceSecret::generate();

    let (d, created) = store
        .add_device(gil, laptop.public_key().clone(), "laptop".into(), now)
        .await
        .expect("add");
    assert!(created);
    assert_eq!((d.user_id, d.name.as_str()), (gil, "laptop"));
    assert_eq!(d.public_key.id(), laptop.id());
    // The same key again is the same device, whatever the name.
    let (again, created) = store
        .add_device(gil, laptop.public_key().clone(), "renamed".into(), now)
        .await
        .expect("again");
    assert!(!created);
    assert_eq!(again, d);
    // Another user cannot claim it.
    assert!(matches!(
        store
            .add_device(hal, laptop.public_key().clone(), "mine".into(), now)
            .await,
        Err(StoreError::Conflict("device"))
    ));
    store
        .add_device(
            gil,
            phone.public_key().clone(),
            "phone".into(),
            Timestamp(9_001),
        )
        .await
        .expect("add");
    let hal_key = DeviceSecret::generate();
    store
        .add_device(hal, hal_key.public_key().clone(), String::new(), now)
        .await
        .expect("add");
    let mine: Vec<_> = store
        .devices(gil)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.public_key.id())
        .collect();
    assert_eq!(mine, vec![laptop.id(), phone.id()]);

    assert!(!store.share_conversation(gil, hal).await.expect("q"));
    let (dm, _) = store
        .direct_conversation(gil, hal, true, now)
        .await
        .expect("dm");
    assert!(dm.encrypted);
    let (plain, _) = store
        .direct_conversation(gil, hal, false, now)
        .await
        .expect("dm");
    assert!(!plain.encrypted);
    assert_ne!(
        plain.id, dm.id,
        "a pair has a plain and an encrypted conversation"
    );
    assert!(store.share_conversation(gil, hal).await.expect("q"));
    assert!(store.share_conversation(hal, gil).await.expect("q"));
    assert!(!store.share_conversation(gil, ivy).await.expect("q"));

    let all = store.conversation_devices(dm.id).await.expect("devices");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|d| d.user_id == gil || d.user_id == hal));

    assert!(
        !store.remove_device(hal, laptop.id()).await.expect("q"),
        "not hal's"
    );
    assert!(store.remove_device(gil, laptop.id()).await.expect("q"));
    assert!(!store.remove_device(gil, laptop.id()).await.expect("q"));
    assert_eq!(
        store
            .conversation_devices(dm.id)
            .await
            .expect("devices")
            .len(),
        2
    );
    // A removed member's devices are no longer the conversation's.
    store.delete_user(hal, now).await.expect("delete");
    assert!(store.devices(hal).await.expect("q").is_empty());
    assert_eq!(
        store
            .conversation_devices(dm.id)
            .await
            .expect("devices")
            .len(),
        1
    );
}

/// Runs SQL on the test database directly, as an older server's data would be.
async fn raw_sql(db: &TestDb, kind: TestDbKind, statements: &[&'static str]) {
    match kind {
        TestDbKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite");
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(*s))
                    .execute(&pool)
                    .await
                    .expect("statement");
            }
            pool.close().await;
        }
        #[cfg(feature = "postgres")]
        TestDbKind::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(*s))
                    .execute(&pool)
                    .await
                    .expect("statement");
            }
            pool.close().await;
        }
    }
}

/// Messages stored before the search index existed are indexed by the backfill, as
/// they read now (edited text, deleted ones left out), and then found.
async fn search_backfill(db: &TestDb, kind: TestDbKind) {
    let store = db.store.clone();
    let u = users(&store, &["sid", "tia"]).await;
    let (sid, tia) = (u[0].id, u[1].id);
    let (dm, _) = store
        .direct_conversation(sid, tia, false, Timestamp(9_000))
        .await
        .expect("dm");
    let seq = |n: u64| Seq::new(n).expect("seq");
    let relation = |key: u8, content: chat_proto::entry::Content| NewEntry {
        conversation: dm.id,
        sender: sid,
        client_msg_id: ClientMsgId::from_bytes([key; 16]),
        content,
        sent_at: Timestamp(9_100 + i64::from(key)),
        moderator: false,
    };
    let batch: Vec<NewEntry> = (1..=5)
        .map(|i| send(dm.id, sid, 100 + i, &format!("archive note {i}")))
        .collect();
    store.append_batch(batch).await.expect("appended");
    let batch = vec![
        relation(
            110,
            chat_proto::entry::Content::Edit {
                target: seq(2),
                body: Some(Body::Text("archive revised".into())),
            },
        ),
        relation(111, chat_proto::entry::Content::Delete { target: seq(3) }),
    ];
    let relations = store.append_batch(batch).await.expect("appended");
    assert!(
        relations.iter().all(|r| matches!(r, Appended::New(_))),
        "{relations:?}"
    );
    let query = chat_api::search::Query::parse("archive").expect("query");
    let texts = |hits: Vec<SearchHit>| hits.into_iter().map(|h| h.text).collect::<Vec<_>>();
    let expected = [
        "archive note 5",
        "archive note 4",
        "archive revised",
        "archive note 1",
    ];
    assert_eq!(
        texts(
            store
                .search(sid, None, &query, None, 10)
                .await
                .expect("search")
        ),
        expected
    );

    // As if the messages had been stored before the index: an empty index, all to do.
    raw_sql(
        db,
        kind,
        &[
            "DELETE FROM message_search",
            "UPDATE search_backfill SET below = (SELECT MAX(id) + 1 FROM messages)",
        ],
    )
    .await;
    assert!(
        store
            .search(sid, None, &query, None, 10)
            .await
            .expect("search")
            .is_empty()
    );
    // Every message of the database (earlier tests' too), a few at a time.
    let mut rounds = 0;
    while store.backfill_search(4).await.expect("backfill") > 0 {
        rounds += 1;
        assert!(rounds < 1000, "the backfill ends");
    }
    assert!(rounds >= 2, "in several batches: {rounds}");
    assert_eq!(
        texts(
            store
                .search(sid, None, &query, None, 10)
                .await
                .expect("search")
        ),
        expected
    );
    assert_eq!(
        store.backfill_search(2).await.expect("backfill"),
        0,
        "nothing left"
    );
}

async fn suite(kind: TestDbKind) {
    let db = TestDb::new(kind).await;
    let store = db.store.clone();
    store.ping().await.expect("ping");
    accounts_and_sessions(&store).await;
    conversations_and_members(&store).await;
    appends(&store).await;
    devices(&store).await;
    search_backfill(&db, kind).await;
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_store() {
    suite(TestDbKind::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store() {
    suite(TestDbKind::Postgres).await;
}
