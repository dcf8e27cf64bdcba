//! The hub's unit tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_proto::entry::{Content, Entry};
use chat_proto::frame::ServerFrame;
use chat_proto::ids::{ConversationId, Timestamp, UserId};
use tokio::sync::{Notify, mpsc};

use super::fanout::{FANOUT_SPLIT, FANOUT_YIELD};
use super::*;
use crate::outbox::Outbox;
use crate::store::{ConversationMeta, Store, StoreError};
use crate::wire::{Outbound, QueueLimits, Wire};

fn user(n: u64) -> UserId {
    UserId::new(n).unwrap_or_else(|_| unreachable!())
}

#[test]
fn shared_frames_encode_once_per_wire_and_share_the_buffer() {
    let frame = SharedFrame::new(ServerFrame::Ping(chat_proto::frame::Ping { nonce: 3 }));
    let a = frame.bytes(Wire::WsPostcard).unwrap_or_default();
    let b = frame.bytes(Wire::WsPostcard).unwrap_or_default();
    assert_eq!(
        a.as_ptr(),
        b.as_ptr(),
        "same allocation for every recipient"
    );
    let s = frame.bytes(Wire::Stream).unwrap_or_default();
    assert_eq!(&s[4..], &a[..]);
    assert_eq!(
        s[4..].as_ptr(),
        a.as_ptr(),
        "stream framing is a view of the same buffer"
    );
    assert_eq!(
        frame.bytes(Wire::WsJson).as_deref(),
        Some(&br#"{"ping":{"nonce":3}}"#[..])
    );
}

#[test]
fn an_entry_is_encoded_once_per_wire_and_generation() {
    let edit = Entry {
        content: Content::Edit {
            target: chat_proto::ids::Seq::new(1).unwrap_or_else(|_| unreachable!()),
            body: Some(chat_proto::body::Body::Text("fixed".into())),
        },
        ..message(7, 2)
    };
    let frame = SharedFrame::new(ServerFrame::Entry(edit.clone()));
    let new = frame
        .bytes_for(Wire::WsJson, View::Entries)
        .unwrap_or_default();
    let old = frame
        .bytes_for(Wire::WsJson, View::Messages)
        .unwrap_or_default();
    assert_eq!(
        chat_proto::codec::decode_json::<ServerFrame>(&new).ok(),
        Some(ServerFrame::Entry(edit.clone()))
    );
    assert_eq!(
        chat_proto::codec::decode_json::<ServerFrame>(&old).ok(),
        Some(ServerFrame::Message(edit.to_message())),
        "a 1.2 session gets the message view"
    );
    for view in View::ALL {
        for wire in [Wire::WsJson, Wire::WsPostcard] {
            let (a, b) = (frame.bytes_for(wire, view), frame.bytes_for(wire, view));
            assert_eq!(
                a.map(|x| x.as_ptr()),
                b.map(|x| x.as_ptr()),
                "one encoding per (wire, generation), shared"
            );
        }
    }
    // Frames that are the same for every version are encoded once for both.
    let ping = SharedFrame::new(ServerFrame::Ping(chat_proto::frame::Ping { nonce: 1 }));
    assert_eq!(
        ping.bytes_for(Wire::WsJson, View::Messages)
            .map(|b| b.as_ptr()),
        ping.bytes_for(Wire::WsJson, View::Entries)
            .map(|b| b.as_ptr())
    );
    // An entry without files is the same for 1.3 and 1.4 sessions: one encoding.
    assert_eq!(
        frame
            .bytes_for(Wire::WsJson, View::EntriesWithoutFiles)
            .map(|b| b.as_ptr()),
        frame
            .bytes_for(Wire::WsJson, View::Entries)
            .map(|b| b.as_ptr())
    );
}

#[tokio::test]
async fn sessions_of_each_generation_get_their_own_form_of_a_fan_out() {
    let hub = ungated_hub();
    let (new, new_out) = hub.new_session(user(2), Wire::WsJson);
    let (mut old, old_out) = hub.new_session(user(3), Wire::WsJson);
    old.view = View::Messages;
    hub.register(new);
    hub.register(old);
    // Conversation 8's members are users 2 and 3.
    let batch = vec![message(8, 1), message(8, 2)];
    hub.deliver(batch.clone()).await;
    let queued = |outbox: &Outbox| match futures_util::FutureExt::now_or_never(outbox.take(64)) {
        Some(crate::outbox::Taken::Frames(f)) => f
            .iter()
            .map(|o| chat_proto::codec::decode_json::<ServerFrame>(o.payload()).ok())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert_eq!(
        queued(&new_out),
        batch
            .iter()
            .map(|e| Some(ServerFrame::Entry(e.clone())))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        queued(&old_out),
        batch
            .iter()
            .map(|e| Some(ServerFrame::Message(e.to_message())))
            .collect::<Vec<_>>()
    );
}

#[test]
fn send_budget_refills_at_the_rate() {
    let store: Arc<dyn Store> = Arc::new(NoStore::default());
    let hub = Hub::new(store, QueueLimits::default());
    let t0 = Instant::now();
    for _ in 0..5 {
        assert!(hub.take_send_token(user(1), 10, 5, t0).is_ok());
    }
    let wait = hub
        .take_send_token(user(1), 10, 5, t0)
        .expect_err("burst spent");
    assert!(wait <= Duration::from_millis(100));
    assert!(hub.take_send_token(user(2), 10, 5, t0).is_ok(), "per user");
    assert!(
        hub.take_send_token(user(1), 10, 5, t0 + Duration::from_millis(100))
            .is_ok()
    );
}

/// Counts the writes made to it and keeps what they wrote.
#[derive(Default)]
struct CountingSocket {
    writes: AtomicUsize,
    wire: Mutex<Vec<u8>>,
}

impl crate::wire::DirectWrite for CountingSocket {
    fn encode(&self, frames: &[Outbound], buf: &mut Vec<u8>) {
        for item in frames {
            buf.extend_from_slice(item.payload());
        }
    }
    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.wire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
}

fn message(conversation: u64, seq: u64) -> Entry {
    Entry {
        conversation: ConversationId::new(conversation).unwrap_or_else(|_| unreachable!()),
        seq: chat_proto::ids::Seq::new(seq).unwrap_or_else(|_| unreachable!()),
        id: chat_proto::ids::MessageId::new(conversation * 100 + seq)
            .unwrap_or_else(|_| unreachable!()),
        sender: user(2),
        client_msg_id: chat_proto::ids::ClientMsgId::from_bytes([seq as u8; 16]),
        sent_at: Timestamp(1),
        content: Content::message(chat_proto::body::Body::Text(format!(
            "{conversation}/{seq}"
        ))),
    }
}

fn encoded(entries: &[Entry], wire: Wire) -> Vec<Bytes> {
    entries
        .iter()
        .map(|m| {
            SharedFrame::new(ServerFrame::Entry(m.clone()))
                .bytes(wire)
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn a_batch_reaches_each_member_in_order_with_one_write_per_conversation() {
    let hub = ungated_hub();
    // User 1 writes directly; user 2 (both conversations) and 3 queue for a writer.
    let (one, one_out) = hub.new_session(user(1), Wire::WsPostcard);
    let socket = Arc::new(CountingSocket::default());
    one_out.write_directly(socket.clone());
    let (two, two_out) = hub.new_session(user(2), Wire::WsJson);
    let (three, three_out) = hub.new_session(user(3), Wire::Stream);
    for handle in [one, two, three] {
        hub.register(handle);
    }

    let batch = vec![message(7, 1), message(8, 1), message(7, 2), message(8, 2)];
    let (seven, eight) = (
        vec![batch[0].clone(), batch[2].clone()],
        vec![batch[1].clone(), batch[3].clone()],
    );
    hub.deliver(batch).await;

    assert_eq!(
        socket.writes.load(Ordering::Acquire),
        1,
        "one write for both"
    );
    let wire = socket
        .wire
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(wire, encoded(&seven, Wire::WsPostcard).concat());
    assert_eq!(one_out.queued_bytes(), 0);

    let queued = |outbox: &Outbox| {
        let taken = futures_util::FutureExt::now_or_never(outbox.take(64));
        match taken {
            Some(crate::outbox::Taken::Frames(f)) => {
                f.iter().map(|o| o.payload().clone()).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        }
    };
    let mut want = encoded(&seven, Wire::WsJson);
    want.extend(encoded(&eight, Wire::WsJson));
    assert_eq!(
        queued(&two_out),
        want,
        "each conversation's messages in order"
    );
    assert_eq!(queued(&three_out), encoded(&eight, Wire::Stream));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_audience_split_across_workers_gets_every_frame_in_order() {
    let hub = ungated_hub();
    // One user with more devices than the split threshold; every other device
    // writes directly.
    let devices = devices(&hub, user(1), FANOUT_SPLIT + 44);
    let first = vec![message(7, 1), message(7, 2)];
    let second = vec![message(7, 3)];
    hub.deliver(first.clone()).await;
    hub.deliver(second.clone()).await;

    let want = encoded(&[first, second].concat(), Wire::WsPostcard).concat();
    for (outbox, socket) in &devices {
        assert_eq!(received(outbox, socket.as_ref()), want);
    }
}

/// What a session has received: written to its socket, or queued for its writer.
fn received(outbox: &Outbox, socket: Option<&Arc<CountingSocket>>) -> Vec<u8> {
    let mut got = match socket {
        Some(socket) => socket
            .wire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        None => Vec::new(),
    };
    if let Some(crate::outbox::Taken::Frames(f)) =
        futures_util::FutureExt::now_or_never(outbox.take(1024))
    {
        got.extend(f.iter().flat_map(|o| o.payload().to_vec()));
    }
    got
}

/// `n` sessions of `user`, every other one writing directly to a counting socket.
fn devices(hub: &Hub, who: UserId, n: usize) -> Vec<(Arc<Outbox>, Option<Arc<CountingSocket>>)> {
    (0..n)
        .map(|i| {
            let (handle, outbox) = hub.new_session(who, Wire::WsPostcard);
            let socket = (i % 2 == 0).then(|| {
                let socket = Arc::new(CountingSocket::default());
                outbox.write_directly(socket.clone());
                socket
            });
            hub.register(handle);
            (outbox, socket)
        })
        .collect()
}

#[tokio::test]
async fn messages_committed_during_a_fan_out_join_it_in_order() {
    let hub = ungated_hub();
    // Conversation 7: user 1 (150 devices, one share) and user 2; 8: users 2, 3.
    let ones = devices(&hub, user(1), 150);
    let two = devices(&hub, user(2), 1).remove(0);
    // Committed while the first batch goes out (taken in after the first
    // FANOUT_YIELD sessions): 7/3 joins it; 8/1 waits, and so does 7/4,
    // committed after it.
    let (tx, mut rx) = mpsc::channel(8);
    for batch in [
        vec![message(7, 3)],
        vec![message(8, 1)],
        vec![message(7, 4)],
    ] {
        tx.send(batch).await.unwrap_or_else(|_| unreachable!());
    }
    hub.deliver_from(vec![message(7, 1), message(7, 2)], Some(&mut rx))
        .await;

    let seven: Vec<Entry> = (1..=4).map(|seq| message(7, seq)).collect();
    let want = encoded(&seven, Wire::WsPostcard).concat();
    for (i, (outbox, socket)) in ones.iter().enumerate() {
        assert_eq!(
            received(outbox, socket.as_ref()),
            want,
            "all of 7, in order"
        );
        if let Some(socket) = socket {
            // Reached before 7/3 was taken in: 7/1-2, then 7/3 in one more pass,
            // then 7/4. Reached after: 7/1-3 in one write, then 7/4.
            let writes = if i < FANOUT_YIELD { 3 } else { 2 };
            assert_eq!(socket.writes.load(Ordering::Acquire), writes, "device {i}");
        }
    }
    let both = [&seven[..3], &[message(8, 1)][..], &seven[3..]].concat();
    assert_eq!(
        received(&two.0, two.1.as_ref()),
        encoded(&both, Wire::WsPostcard).concat(),
        "7/4 after 8/1, committed before it"
    );
    assert!(rx.try_recv().is_err(), "everything was taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_fan_out_taking_in_messages_keeps_every_session_in_order() {
    let hub = ungated_hub();
    // Two shares, each catching up with what the other takes in (or not, when
    // the other share finished first): every session gets everything in order.
    let ones = devices(&hub, user(1), FANOUT_SPLIT + 44);
    for round in 0..20u64 {
        let base = round * 6;
        let (tx, mut rx) = mpsc::channel(8);
        for seq in base + 3..=base + 6 {
            tx.send(vec![message(7, seq)])
                .await
                .unwrap_or_else(|_| unreachable!());
        }
        let first = vec![message(7, base + 1), message(7, base + 2)];
        hub.deliver_from(first, Some(&mut rx)).await;
        assert!(rx.try_recv().is_err(), "everything was taken");
    }
    let all: Vec<Entry> = (1..=120).map(|seq| message(7, seq)).collect();
    let want = encoded(&all, Wire::WsPostcard).concat();
    for (outbox, socket) in &ones {
        assert_eq!(received(outbox, socket.as_ref()), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_takes_nothing_in_once_sessions_or_members_changed() {
    let store = Arc::new(NoStore::default());
    let hub = Arc::new(Hub::new(store.clone(), QueueLimits::default()));
    let ones = devices(&hub, user(1), 150);
    let (tx, mut rx) = mpsc::channel(8);
    tx.send(vec![message(7, 3)])
        .await
        .unwrap_or_else(|_| unreachable!());
    let fan_out = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.deliver_from(vec![message(7, 1), message(7, 2)], Some(&mut rx))
                .await;
        }
    });
    // A device connects while the audience is looked up.
    while store.reads.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    let late = devices(&hub, user(1), 1).remove(0);
    store.gate.notify_one();
    fan_out.await.unwrap_or_else(|_| unreachable!());

    let want = encoded(
        &(1..=3).map(|s| message(7, s)).collect::<Vec<_>>(),
        Wire::WsPostcard,
    )
    .concat();
    assert_eq!(received(&late.0, late.1.as_ref()), want);
    for (outbox, socket) in &ones {
        assert_eq!(received(outbox, socket.as_ref()), want);
        if let Some(socket) = socket {
            assert_eq!(
                socket.writes.load(Ordering::Acquire),
                2,
                "7/3 went out on its own, after the first fan-out"
            );
        }
    }
}

#[tokio::test]
async fn a_broadcast_to_a_big_audience_leaves_the_writing_to_the_writers() {
    let hub = Hub::new(Arc::new(NoStore::default()), QueueLimits::default());
    let frame = SharedFrame::new(ServerFrame::Ping(chat_proto::frame::Ping { nonce: 1 }));
    let connect = |n: usize| -> Vec<(Arc<Outbox>, Arc<CountingSocket>)> {
        (0..n)
            .map(|_| {
                let (handle, outbox) = hub.new_session(user(1), Wire::WsPostcard);
                let socket = Arc::new(CountingSocket::default());
                outbox.write_directly(socket.clone());
                hub.register(handle);
                (outbox, socket)
            })
            .collect()
    };

    // A few sessions: written at once.
    let few = connect(3);
    assert_eq!(hub.broadcast(&[user(1)], &frame), 3);
    for (outbox, socket) in &few {
        assert_eq!(socket.writes.load(Ordering::Acquire), 1);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    // Enough of them to split a fan-out: queued for each session's writer.
    let many = connect(FANOUT_SPLIT);
    assert_eq!(hub.broadcast(&[user(1)], &frame), FANOUT_SPLIT + 3);
    let size = frame.bytes(Wire::WsPostcard).map_or(0, |b| b.len());
    for (outbox, socket) in few.iter().chain(&many) {
        assert_eq!(outbox.queued_bytes(), size);
        assert!(
            socket.writes.load(Ordering::Acquire) <= 1,
            "not written here"
        );
    }
}

#[test]
fn registration_tracks_first_and_last_session() {
    let hub = Hub::new(Arc::new(NoStore::default()), QueueLimits::default());
    let (a, _qa) = hub.new_session(user(1), Wire::WsJson);
    let (b, _qb) = hub.new_session(user(1), Wire::Stream);
    assert!(hub.register(a.clone()));
    assert!(!hub.register(b.clone()));
    assert!(hub.is_online(user(1)));
    assert!(!hub.unregister(user(1), a.id));
    assert!(hub.unregister(user(1), b.id));
    assert!(!hub.is_online(user(1)));
}

#[tokio::test]
async fn a_lookup_that_raced_an_invalidation_is_not_cached() {
    let store = Arc::new(NoStore::default());
    let hub = Arc::new(Hub::new(store.clone(), QueueLimits::default()));
    let id = ConversationId::new(7).unwrap_or_else(|_| unreachable!());
    // The lookup reads the store while the membership changes and is invalidated.
    let lookup = tokio::spawn({
        let hub = hub.clone();
        async move { hub.conversation(id).await }
    });
    while store.reads.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    hub.invalidate(id);
    store.gate.notify_one();
    let first = lookup.await.ok().and_then(Result::ok).flatten();
    assert!(first.is_some_and(|c| c.has(user(1))));
    // Not cached: the next lookup reads the store again, and that one is cached.
    store.gate.notify_one();
    assert!(hub.conversation(id).await.is_ok_and(|c| c.is_some()));
    assert_eq!(store.reads.load(Ordering::Acquire), 2);
    assert!(hub.conversation(id).await.is_ok_and(|c| c.is_some()));
    assert_eq!(store.reads.load(Ordering::Acquire), 2);
}

/// A store for tests: membership reads wait for `gate` (unless `ungated`) and are
/// counted; nothing else is ever used. Conversation 8 has users 2 and 3, every
/// other one users 1 and 2.
#[derive(Debug, Default)]
struct NoStore {
    gate: Notify,
    reads: AtomicUsize,
    ungated: bool,
}

/// A hub whose store answers every membership read at once.
fn ungated_hub() -> Hub {
    let store = Arc::new(NoStore {
        ungated: true,
        ..NoStore::default()
    });
    Hub::new(store, QueueLimits::default())
}

macro_rules! unused {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $(_: $arg),*) -> crate::store::StoreFuture<'_, $ret> {
            Box::pin(async { Err(StoreError::Closed) })
        })*
    };
}

impl Store for NoStore {
    fn backend(&self) -> &'static str {
        "none"
    }
    unused! {
        ping() -> ();
        probe_write() -> ();
    }
}

impl crate::store::ConversationStore for NoStore {
    fn conversation_meta(
        &self,
        id: ConversationId,
    ) -> crate::store::StoreFuture<'_, Option<ConversationMeta>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::AcqRel);
            if !self.ungated {
                self.gate.notified().await;
            }
            let members = if id.get() == 8 {
                vec![user(2), user(3)]
            } else {
                vec![user(1), user(2)]
            };
            Ok(Some(ConversationMeta {
                encrypted: false,
                members,
            }))
        })
    }
    unused! {
        direct_conversation(UserId, UserId, bool, chat_proto::ids::Timestamp) -> (crate::store::Conversation, bool);
        share_conversation(UserId, UserId) -> bool;
        create_group(UserId, String, Vec<UserId>, bool, chat_proto::ids::Timestamp) -> crate::store::Conversation;
        conversation(ConversationId, UserId) -> Option<crate::store::Conversation>;
        conversations(UserId) -> Vec<crate::store::ConversationSummary>;
        heads(UserId) -> Vec<chat_proto::frame::Cursor>;
        last_seqs(Vec<ConversationId>) -> Vec<chat_proto::frame::Cursor>;
        member_ids(ConversationId) -> Vec<UserId>;
        add_member(ConversationId, UserId, crate::store::Role, chat_proto::ids::Timestamp) -> bool;
        remove_member(ConversationId, UserId) -> bool;
        mark_read(ConversationId, UserId, chat_proto::ids::Seq) -> Option<chat_proto::ids::Seq>;
    }
}

impl crate::store::UserStore for NoStore {
    unused! {
        create_user(crate::store::NewUser) -> crate::store::User;
        user(UserId) -> Option<crate::store::User>;
        credentials(&str) -> Option<crate::store::Credentials>;
        search_users(&str, Option<&str>, u32) -> Vec<crate::store::User>;
        update_profile(UserId, Option<String>, Option<String>) -> Option<crate::store::User>;
        set_password(UserId, String) -> ();
        delete_user(UserId, chat_proto::ids::Timestamp) -> ();
        set_last_seen(UserId, chat_proto::ids::Timestamp) -> ();
    }
}

impl crate::store::SessionStore for NoStore {
    unused! {
        create_session(UserId, [u8; 32], chat_proto::ids::Timestamp, chat_proto::ids::Timestamp, &str) -> i64;
        rotate_refresh([u8; 32], [u8; 32], chat_proto::ids::Timestamp, chat_proto::ids::Timestamp) -> crate::store::Rotation;
        refresh_session([u8; 32]) -> Option<i64>;
        session_user(i64, UserId) -> Option<crate::store::User>;
        revoke_session(i64, chat_proto::ids::Timestamp) -> ();
        revoke_other_sessions(UserId, i64, chat_proto::ids::Timestamp) -> ();
    }
}

impl crate::store::DeviceStore for NoStore {
    unused! {
        add_device(UserId, chat_crypto::e2e::DevicePublicKey, String, chat_proto::ids::Timestamp) -> (crate::store::Device, bool);
        devices(UserId) -> Vec<crate::store::Device>;
        conversation_devices(ConversationId) -> Vec<crate::store::Device>;
        remove_device(UserId, chat_crypto::e2e::DeviceId) -> bool;
    }
}

impl crate::store::MessageStore for NoStore {
    unused! {
        history(ConversationId, Option<chat_proto::ids::Seq>, u32) -> (Vec<Entry>, bool);
        messages_after(ConversationId, chat_proto::ids::Seq, u32) -> (Vec<Entry>, bool);
        append_batch(Vec<crate::store::NewEntry>) -> Vec<crate::store::Appended>;
    }
}

impl crate::store::SearchStore for NoStore {
    fn search<'a>(
        &'a self,
        _: UserId,
        _: Option<ConversationId>,
        _: &'a chat_api::search::Query,
        _: Option<i64>,
        _: u32,
    ) -> crate::store::StoreFuture<'a, Vec<crate::store::SearchHit>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
    unused! {
        backfill_search(u32) -> usize;
    }
}

impl crate::store::UploadStore for NoStore {
    unused! {
        create_upload(crate::store::NewUpload, u64, u32) -> Result<crate::store::Upload, crate::store::UploadRefusal>;
        upload(&str) -> Option<crate::store::Upload>;
        advance_upload(&str, u64, u64, chat_proto::ids::Timestamp) -> bool;
        delete_upload(&str) -> bool;
        collectable_uploads(chat_proto::ids::Timestamp, chat_proto::ids::Timestamp, u32) -> Vec<String>;
    }
}
