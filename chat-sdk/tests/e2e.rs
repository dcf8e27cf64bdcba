//! End-to-end encryption through the SDK against a real server: device keys, sealed
//! sends, opened deliveries, what the server stores, and what must not open.

mod common;

use chat_crypto::e2e::EnvelopeHeader;
use chat_sdk::chat_proto::error::ErrorCode;
use chat_sdk::chat_proto::prelude::*;
use chat_sdk::{Client, DecryptError, DeviceExt as _, Error, Event, Events};
use common::{PASSWORD, TestServer, contains, next_event, next_message, text, user};

async fn device(server: &TestServer, name: &str, key: &std::path::Path) -> (Client, Events) {
    let client = server
        .ws(name)
        .login(name, PASSWORD)
        .device_key(key)
        .connect()
        .await
        .expect("connects");
    let events = client.events();
    (client, events)
}

async fn undecryptable(events: &mut Events) -> (Entry, DecryptError) {
    match next_event(events, |e| matches!(e, Event::Undecryptable { .. })).await {
        Event::Undecryptable {
            entry: message,
            reason,
        } => (message, reason),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_direct_chat_across_devices_never_stores_plaintext() {
    let server = TestServer::start().await;
    let keys = tempfile::tempdir().expect("key dir");
    let (alice, _) = user(
        &server,
        "alice",
        Some(&keys.path().join("alice-laptop.key")),
    )
    .await;
    let (bob, mut bob_events) = user(&server, "bob", Some(&keys.path().join("bob.key"))).await;
    let (_alice_phone, mut phone_events) =
        device(&server, "alice", &keys.path().join("alice-phone.key")).await;

    // Keys: created owner-only, registered, listed for contacts, the same after a restart.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keys.path().join("bob.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let laptop = alice.device_key().expect("device key");
    let mine = alice.devices().await.expect("devices");
    assert_eq!(mine.len(), 2, "laptop and phone");
    assert!(mine.iter().any(|d| d.key().expect("valid key") == laptop));
    assert_eq!(mine[0].name, "alice");

    let dm = alice
        .create_encrypted_direct(bob.user_id())
        .await
        .expect("encrypted dm");
    assert!(dm.encrypted);
    let plain = alice.create_direct(bob.user_id()).await.expect("plain dm");
    assert!(!plain.encrypted);
    assert_ne!(plain.id, dm.id);
    // Bob sees Alice's devices with the fingerprints Alice's own client shows.
    let seen_by_bob = bob
        .user_devices(alice.user_id())
        .await
        .expect("contact devices");
    assert!(
        seen_by_bob
            .iter()
            .any(|d| d.key().expect("key").fingerprint() == laptop.fingerprint())
    );

    let secret = "the vault code is 7261";
    let ack = alice.send_text(dm.id, secret).await.expect("sealed send");
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.id, got.sender, text(&got)),
        (ack.id, alice.user_id(), secret)
    );
    let echoed = next_message(&mut phone_events).await;
    assert_eq!(
        text(&echoed),
        secret,
        "the sender's other device reads it too"
    );
    let reply = bob.send_text(dm.id, "got it").await.expect("reply");
    let got = next_message(&mut phone_events).await;
    assert_eq!((got.id, text(&got)), (reply.id, "got it"));

    // History comes opened too.
    let page = bob.history(dm.id, None, 10).await.expect("history");
    assert_eq!(
        page.entries.iter().map(text).collect::<Vec<_>>(),
        ["got it", secret]
    );

    // The server stored only ciphertext; the same check finds plain messages.
    let control = "this one is not encrypted 5531";
    alice
        .send_text(plain.id, control)
        .await
        .expect("plain send");
    let stored = server.stored_bytes();
    assert!(
        contains(&stored, control),
        "the check finds plaintext when it is there"
    );
    assert!(!contains(&stored, secret));
    assert!(!contains(&stored, "got it"));

    // Restarting with the same key file is the same device.
    let again = server
        .ws("bob")
        .login("bob", PASSWORD)
        .device_key(keys.path().join("bob.key"))
        .connect()
        .await
        .expect("reconnects");
    assert_eq!(again.device_key(), bob.device_key());
    assert_eq!(bob.devices().await.expect("devices").len(), 1);
    again.close().await;

    // A key file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let path = keys.path().join("bob.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = server
            .ws("bob")
            .login("bob", PASSWORD)
            .device_key(&path)
            .connect()
            .await;
        assert!(
            matches!(refused, Err(Error::Config(ref m)) if m.contains("chmod 600")),
            "{refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_open_does_not() {
    let server = TestServer::start().await;
    let keys = tempfile::tempdir().expect("key dir");
    let (alice, _) = user(&server, "alice", Some(&keys.path().join("alice.key"))).await;
    let (bob, mut bob_events) = user(&server, "bob", Some(&keys.path().join("bob.key"))).await;
    let (carol, mut carol_events) =
        user(&server, "carol", Some(&keys.path().join("carol.key"))).await;
    let (dave, mut dave_events) = user(&server, "dave", None).await;

    let group = alice
        .create_encrypted_group("Secrets", &[bob.user_id(), carol.user_id(), dave.user_id()])
        .await
        .expect("group");
    assert!(group.encrypted);

    // A member without a device key cannot send plain text, and gets the envelope
    // as an undecryptable message.
    let refused = dave.send_text(group.id, "plain").await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Server {
                code: ErrorCode::EncryptionRequired,
                ..
            }
        ),
        "{refused:?}"
    );
    let first = alice.send_text(group.id, "first").await.expect("send");
    assert_eq!(text(&next_message(&mut bob_events).await), "first");
    assert_eq!(text(&next_message(&mut carol_events).await), "first");
    let (message, reason) = undecryptable(&mut dave_events).await;
    assert_eq!((message.id, reason), (first.id, DecryptError::NoDeviceKey));
    let Some(Body::Encrypted(envelope)) = message.body().cloned() else {
        panic!("the envelope stays")
    };

    // In the encrypted group the server refuses what is not a well-formed envelope from
    // one of the sender's own devices: another member cannot replay Alice's envelope.
    for forged in [envelope.clone(), Envelope(vec![9u8; 40].into())] {
        let refused = bob
            .send(
                group.id,
                chat_sdk::new_client_msg_id(),
                Body::Encrypted(forged),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Server {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{refused:?}"
        );
    }
    // Where the server does not check (a plain conversation), the receivers do:
    // Alice's envelope replayed under Bob's name fails authentication, garbage is
    // malformed, and neither is a crash.
    let plain = bob
        .create_group("Plain", &[carol.user_id()])
        .await
        .expect("plain group");
    for (forged, expected) in [
        (envelope.clone(), DecryptError::Rejected),
        (Envelope(vec![9u8; 40].into()), DecryptError::Malformed),
    ] {
        bob.send(
            plain.id,
            chat_sdk::new_client_msg_id(),
            Body::Encrypted(forged),
        )
        .await
        .expect("forwarded unread");
        let (message, reason) = undecryptable(&mut carol_events).await;
        assert_eq!((message.conversation, reason), (plain.id, expected));
    }

    // Carol is removed: the next message is not sealed for her device.
    alice
        .remove_member(group.id, carol.user_id())
        .await
        .expect("remove");
    let after = alice
        .send_text(group.id, "after carol left")
        .await
        .expect("send");
    assert_eq!(
        text(&next_message(&mut bob_events).await),
        "after carol left"
    );
    let page = dave.history(group.id, None, 1).await.expect("history");
    assert_eq!(page.entries[0].id, after.id);
    let Some(Body::Encrypted(sealed)) = page.entries[0].body() else {
        panic!("dave cannot open it")
    };
    let header = EnvelopeHeader::parse(&sealed.0).expect("envelope");
    let carol_device = carol.device_key().expect("key").id();
    assert!(!header.recipients.contains(&carol_device));
    assert!(
        header
            .recipients
            .contains(&bob.device_key().expect("key").id())
    );
    assert_eq!(header.sender_device, alice.device_key().expect("key").id());
    // An envelope still sealed for Carol's device is refused: the devices changed.
    let stale = alice
        .send(
            group.id,
            chat_sdk::new_client_msg_id(),
            Body::Encrypted(envelope.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::Server {
                code: ErrorCode::DevicesChanged,
                ..
            }
        ),
        "{stale:?}"
    );

    // A device added later cannot read what was sent before it existed.
    let (bob_tablet, _) = device(&server, "bob", &keys.path().join("bob-tablet.key")).await;
    let page = bob_tablet
        .history(group.id, None, 50)
        .await
        .expect("history");
    let first_seen = page
        .entries
        .iter()
        .find(|m| m.id == first.id)
        .expect("first is in history");
    assert!(
        matches!(first_seen.body(), Some(Body::Encrypted(_))),
        "sealed before the tablet existed"
    );
    // ... but reads what is sent after, at once: Alice's cached device list is stale,
    // the server says so, and her client seals again for the new list.
    let later = alice
        .send_text(group.id, "hello tablet")
        .await
        .expect("send");
    let page = bob_tablet
        .history(group.id, None, 1)
        .await
        .expect("history");
    assert_eq!(
        (page.entries[0].id, text(&page.entries[0])),
        (later.id, "hello tablet")
    );
}
