//! Relations in the store, on both backends: every rule of PROTOCOL.md §5.2, the purge
//! of deleted content, relations inside one batch, previews and unread counts.

use std::sync::Arc;

use chat_proto::body::{Body, Envelope};
use chat_proto::entry::{Content, Entry, Reaction};
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};
use chat_proto::limits::MAX_REACTIONS;

use super::*;
use crate::testing::{TestDb, TestDbKind};

/// Writes entries with fresh keys.
struct Writer {
    store: Arc<dyn Store>,
    conversation: ConversationId,
    next_key: u32,
}

impl Writer {
    fn entry(&mut self, sender: UserId, content: Content, moderator: bool) -> NewEntry {
        self.next_key += 1;
        let mut key = [0x5a; 16];
        key[..4].copy_from_slice(&self.next_key.to_be_bytes());
        NewEntry {
            conversation: self.conversation,
            sender,
            client_msg_id: ClientMsgId::from_bytes(key),
            content,
            sent_at: Timestamp(10_000 + i64::from(self.next_key)),
            moderator,
        }
    }

    async fn write(&mut self, sender: UserId, content: Content) -> Appended {
        self.write_as(sender, content, false).await
    }

    async fn write_as(&mut self, sender: UserId, content: Content, moderator: bool) -> Appended {
        let entry = self.entry(sender, content, moderator);
        let mut results = self.store.append_batch(vec![entry]).await.expect("append");
        results.remove(0)
    }

    /// Writes and expects a new entry; returns its seq.
    async fn stored(&mut self, sender: UserId, content: Content) -> Seq {
        match self.write(sender, content.clone()).await {
            Appended::New(e) => {
                assert_eq!(e.content, content);
                e.seq
            }
            other => panic!("{content:?} was not stored: {other:?}"),
        }
    }

    async fn entries(&self) -> Vec<Entry> {
        let (page, more) = self
            .store
            .messages_after(self.conversation, Seq::ZERO, 1_000)
            .await
            .expect("entries");
        assert!(!more);
        page
    }

    async fn at(&self, seq: Seq) -> Entry {
        self.entries()
            .await
            .into_iter()
            .find(|e| e.seq == seq)
            .expect("stored")
    }
}

fn text(t: &str) -> Body {
    Body::Text(t.into())
}

fn emoji(e: &str) -> Reaction {
    Reaction::Emoji(e.into())
}

fn react(target: Seq, e: &str) -> Content {
    Content::Reaction {
        target,
        reaction: Some(emoji(e)),
    }
}

fn edit(target: Seq, t: &str) -> Content {
    Content::Edit {
        target,
        body: Some(text(t)),
    }
}

fn refused(r: Refusal) -> Appended {
    Appended::Refused(r)
}

async fn user(store: &Arc<dyn Store>, name: &str) -> UserId {
    store
        .create_user(super::tests::new_user(name))
        .await
        .expect("user")
        .id
}

async fn rules(store: &Arc<dyn Store>) {
    let (ada, bea, cy) = (
        user(store, "rel_ada").await,
        user(store, "rel_bea").await,
        user(store, "rel_cy").await,
    );
    let group = store
        .create_group(
            ada,
            "Relations".into(),
            vec![bea, cy],
            false,
            Timestamp(2_000),
        )
        .await
        .expect("group");
    let mut w = Writer {
        store: store.clone(),
        conversation: group.id,
        next_key: 0,
    };
    let hello = w.stored(ada, Content::message(text("hello"))).await;
    let theirs = w.stored(bea, Content::message(text("bea's"))).await;

    // Edits: the author only, of a message that exists.
    let edited = w.stored(ada, edit(hello, "hello, all")).await;
    assert_eq!(
        w.write(bea, edit(hello, "mine now")).await,
        refused(Refusal::Forbidden)
    );
    let nowhere = Seq::new(999).expect("seq");
    assert_eq!(
        w.write(ada, edit(nowhere, "x")).await,
        refused(Refusal::NoTarget)
    );
    assert_eq!(
        w.write(ada, edit(edited, "an edit of an edit")).await,
        refused(Refusal::WrongTarget)
    );
    // A target must be in the same conversation.
    let (dm, _) = store
        .direct_conversation(ada, bea, false, Timestamp(2_000))
        .await
        .expect("dm");
    let mut elsewhere = Writer {
        store: store.clone(),
        conversation: dm.id,
        next_key: 1_000,
    };
    assert_eq!(
        elsewhere.write(ada, edit(hello, "x")).await,
        refused(Refusal::NoTarget)
    );

    // A reply is a message naming its target.
    let reply = w
        .stored(
            cy,
            Content::Message {
                body: Some(text("welcome")),
                reply_to: Some(hello),
            },
        )
        .await;

    // Reactions: one per user and emoji (again answers the first), on messages only.
    let thumbs = w.stored(bea, react(hello, "👍")).await;
    match w.write(bea, react(hello, "👍")).await {
        Appended::Duplicate(first) => assert_eq!(first.seq, thumbs),
        other => panic!("a second 👍 by the same user: {other:?}"),
    }
    w.stored(cy, react(hello, "👍")).await;
    assert_eq!(
        w.write(cy, react(thumbs, "👍")).await,
        refused(Refusal::WrongTarget)
    );

    // At most MAX_REACTIONS distinct emoji on a message, and as many per user.
    let pool: Vec<String> = (0..MAX_REACTIONS as u32 + 1)
        .map(|i| char::from_u32(0x1F600 + i).expect("emoji").to_string())
        .collect();
    let half = MAX_REACTIONS / 2;
    let mut beas_first = None;
    for e in &pool[..half] {
        let seq = w.stored(bea, react(theirs, e)).await;
        beas_first.get_or_insert(seq);
    }
    for e in &pool[half..MAX_REACTIONS] {
        w.stored(cy, react(theirs, e)).await;
    }
    assert_eq!(
        w.write(ada, react(theirs, &pool[MAX_REACTIONS])).await,
        refused(Refusal::ReactionLimit),
        "a distinct emoji past the cap"
    );
    w.stored(ada, react(theirs, &pool[0])).await;
    for e in &pool[half..MAX_REACTIONS] {
        w.stored(bea, react(theirs, e)).await;
    }
    let beas_first = beas_first.expect("reacted");
    assert_eq!(
        w.write(bea, react(theirs, &pool[0])).await,
        Appended::Duplicate(w.at(beas_first).await),
        "bea's own first reaction with that emoji"
    );
    // Sealed reactions cannot be compared, but count against the per-user cap.
    let sealed = Content::Reaction {
        target: theirs,
        reaction: Some(Reaction::Encrypted(Envelope(vec![7u8; 40].into()))),
    };
    assert_eq!(
        w.write(bea, sealed.clone()).await,
        refused(Refusal::ReactionLimit),
        "bea has as many reactions on it as allowed"
    );
    w.stored(cy, sealed).await;

    // Taking a reaction back deletes it: its emoji is purged; again is idempotent.
    let taken_back = w.stored(bea, Content::Delete { target: thumbs }).await;
    assert_eq!(
        w.at(thumbs).await.content,
        Content::Reaction {
            target: hello,
            reaction: None
        }
    );
    match w.write(bea, Content::Delete { target: thumbs }).await {
        Appended::Duplicate(first) => assert_eq!(first.seq, taken_back),
        other => panic!("deleting twice: {other:?}"),
    }
    // Deleted, bea's 👍 may be given again.
    w.stored(bea, react(hello, "👍")).await;

    // Deleting: the author, or a group's owner as moderator; nobody else.
    assert_eq!(
        w.write(cy, Content::Delete { target: theirs }).await,
        refused(Refusal::Forbidden)
    );
    assert_eq!(
        w.write(cy, Content::Delete { target: hello }).await,
        refused(Refusal::Forbidden)
    );
    assert_eq!(
        w.write_as(ada, Content::Delete { target: reply }, false)
            .await,
        refused(Refusal::Forbidden),
        "without the moderator's right"
    );
    let moderated = match w
        .write_as(ada, Content::Delete { target: theirs }, true)
        .await
    {
        Appended::New(e) => e.seq,
        other => panic!("the owner moderates: {other:?}"),
    };
    assert_eq!(
        w.write(ada, Content::Delete { target: moderated }).await,
        refused(Refusal::WrongTarget),
        "a deletion is not deletable"
    );

    // The author deletes: the body, the edits' bodies and the reactions are purged.
    let deleted = w.stored(ada, Content::Delete { target: hello }).await;
    for e in w.entries().await {
        match e.content {
            Content::Message { body, reply_to } if e.seq == hello => {
                assert_eq!((body, reply_to), (None, None));
            }
            Content::Edit { target, body } if target == hello => assert_eq!(body, None),
            Content::Reaction { target, reaction } if target == hello || target == theirs => {
                assert_eq!(reaction, None, "reaction {} kept its emoji", e.seq)
            }
            _ => {}
        }
    }
    // The reply to it is a message of its own and stays.
    assert_eq!(w.at(reply).await.text(), Some("welcome"));
    for late in [
        edit(hello, "too late"),
        react(hello, "🎉"),
        Content::Message {
            body: Some(text("to a ghost")),
            reply_to: Some(hello),
        },
    ] {
        assert_eq!(w.write(ada, late).await, refused(Refusal::Deleted));
    }
    match w.write(ada, Content::Delete { target: hello }).await {
        Appended::Duplicate(first) => assert_eq!(first.seq, deleted),
        other => panic!("deleting twice: {other:?}"),
    }

    // A retried edit whose content was purged since is still its own duplicate.
    let retry = NewEntry {
        client_msg_id: ClientMsgId::from_bytes({
            let mut key = [0x5a; 16];
            key[..4].copy_from_slice(&3u32.to_be_bytes());
            key
        }),
        ..w.entry(ada, edit(hello, "hello, all"), false)
    };
    match store
        .append_batch(vec![retry])
        .await
        .expect("append")
        .remove(0)
    {
        Appended::Duplicate(e) => assert_eq!(e.seq, edited),
        other => panic!("retried edit: {other:?}"),
    }

    // Seqs stay gap-free: refusals took none.
    let all = w.entries().await;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq.get(), i as u64 + 1);
    }
}

/// Relations that meet inside one batch see each other.
async fn one_batch(store: &Arc<dyn Store>) {
    let (dee, eli) = (user(store, "rel_dee").await, user(store, "rel_eli").await);
    let (dm, _) = store
        .direct_conversation(dee, eli, false, Timestamp(2_000))
        .await
        .expect("dm");
    let mut w = Writer {
        store: store.clone(),
        conversation: dm.id,
        next_key: 5_000,
    };
    let m = w.stored(dee, Content::message(text("batch"))).await;
    let batch = vec![
        w.entry(dee, react(m, "🎉"), false),
        w.entry(dee, react(m, "🎉"), false),
        w.entry(dee, Content::Delete { target: m }, false),
        w.entry(dee, edit(m, "after the deletion"), false),
        w.entry(dee, Content::Delete { target: m }, false),
    ];
    let r = store.append_batch(batch).await.expect("append");
    let Appended::New(first) = &r[0] else {
        panic!("{:?}", r[0])
    };
    assert_eq!(r[1], Appended::Duplicate(first.clone()));
    let Appended::New(deletion) = &r[2] else {
        panic!("{:?}", r[2])
    };
    assert_eq!(r[3], refused(Refusal::Deleted));
    assert_eq!(r[4], Appended::Duplicate(deletion.clone()));
    // The reaction committed in the batch was purged with its message.
    assert_eq!(
        w.at(first.seq).await.content,
        Content::Reaction {
            target: m,
            reaction: None
        }
    );
}

/// Previews show the latest edit or the deletion; unread counts only messages.
async fn previews(store: &Arc<dyn Store>) {
    let (fay, gus) = (user(store, "rel_fay").await, user(store, "rel_gus").await);
    let (dm, _) = store
        .direct_conversation(fay, gus, false, Timestamp(2_000))
        .await
        .expect("dm");
    let mut w = Writer {
        store: store.clone(),
        conversation: dm.id,
        next_key: 9_000,
    };
    let summary = |store: Arc<dyn Store>| async move {
        store
            .conversations(gus)
            .await
            .expect("list")
            .into_iter()
            .find(|s| s.conversation.id == dm.id)
            .expect("listed")
    };
    let m = w.stored(fay, Content::message(text("first draft"))).await;
    w.stored(fay, edit(m, "final text")).await;
    w.stored(fay, react(m, "👍")).await;
    let s = summary(store.clone()).await;
    let last = s.last_message.expect("a last message");
    assert_eq!((last.seq, last.body), (m, text("final text")));
    assert!(s.last_message_edited && !s.last_message_deleted);
    assert_eq!(s.unread, 1, "the edit and the reaction are not unread");

    w.stored(fay, Content::Delete { target: m }).await;
    let s = summary(store.clone()).await;
    let last = s.last_message.expect("a last message");
    assert_eq!(last.body, text(chat_proto::entry::DELETED_TEXT));
    assert!(s.last_message_deleted && !s.last_message_edited);
}

async fn suite(kind: TestDbKind) {
    let db = TestDb::new(kind).await;
    rules(&db.store).await;
    one_batch(&db.store).await;
    previews(&db.store).await;
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_relations() {
    suite(TestDbKind::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_relations() {
    suite(TestDbKind::Postgres).await;
}

/// A deleted message's text is gone from the SQLite files themselves, not only from
/// query results: secure deletion overwrites the freed space.
#[tokio::test]
async fn sqlite_purge_leaves_no_trace_in_the_files() {
    use sqlx::Connection as _;
    let db = TestDb::new(TestDbKind::Sqlite).await;
    let store = db.store.clone();
    let (hal, ivy) = (user(&store, "hal").await, user(&store, "ivy").await);
    let (dm, _) = store
        .direct_conversation(hal, ivy, false, Timestamp(2_000))
        .await
        .expect("dm");
    let mut w = Writer {
        store: store.clone(),
        conversation: dm.id,
        next_key: 0,
    };
    let secret = "the vault code is 7-3-1-9-quartz";
    let m = w.stored(hal, Content::message(text(secret))).await;
    w.stored(hal, edit(m, &format!("{secret}, edited"))).await;
    let files = || {
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            all.extend(std::fs::read(format!("{path}{suffix}")).unwrap_or_default());
        }
        all
    };
    let found = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    let checkpoint = || async {
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("connect");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .expect("checkpoint");
        conn.close().await.expect("close");
    };
    checkpoint().await;
    assert!(
        found(&files()),
        "the test must see the text before deletion"
    );

    w.stored(hal, Content::Delete { target: m }).await;
    checkpoint().await;
    assert!(
        !found(&files()),
        "the deleted text is still in the database files"
    );
    db.cleanup().await;
}
