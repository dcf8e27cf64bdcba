//! Relations through the SDK against a real server: reply, edit, delete, react and
//! unreact, their events, the `Timeline` fold on both sides, and the same in an
//! end-to-end encrypted conversation, where the server stores none of the text or emoji.

mod common;

use chat_sdk::chat_proto::error::ErrorCode;
use chat_sdk::chat_proto::prelude::*;
use chat_sdk::chat_proto::timeline::Timeline;
use chat_sdk::{Error, Event, Events};
use common::{PASSWORD, TestServer, contains, next_event, user};

/// Folds the next `n` entries of `conversation` into `timeline`; returns them.
async fn fold(
    events: &mut Events,
    conversation: ConversationId,
    timeline: &mut Timeline,
    n: usize,
) -> Vec<Entry> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Event::Entry(e) = next_event(
            events,
            |e| matches!(e, Event::Entry(x) if x.conversation == conversation),
        )
        .await
        {
            timeline.apply(e.clone());
            got.push(e);
        }
    }
    got
}

fn server_code(e: Error) -> ErrorCode {
    match e {
        Error::Server { code, .. } => code,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_edit_react_and_delete_fold_the_same_on_both_sides() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = user(&server, "alice", None).await;
    let (bob, mut bob_events) = user(&server, "bob", None).await;
    let dm = alice.create_direct(bob.user_id()).await.expect("dm").id;
    let (mut at_alice, mut at_bob) = (Timeline::default(), Timeline::default());

    let hello = alice.send_text(dm, "hello bob").await.expect("sent").seq;
    let reply = bob.reply(dm, hello, "hi alice").await.expect("replied").seq;
    let edit = alice.edit(dm, hello, "hello, Bob").await.expect("edited");
    let eyes = bob.react(dm, hello, "👀").await.expect("reacted");
    let again = bob.react(dm, hello, "👀").await.expect("same reaction");
    assert_eq!(
        again.seq, eyes.seq,
        "reacting twice is answered with the first"
    );
    let party = alice.react(dm, hello, "🎉").await.expect("reacted");
    alice.unreact(dm, party.seq).await.expect("taken back");
    for (events, timeline) in [
        (&mut alice_events, &mut at_alice),
        (&mut bob_events, &mut at_bob),
    ] {
        fold(events, dm, timeline, 6).await;
    }
    let views = |t: &Timeline| t.messages().collect::<Vec<_>>();
    assert_eq!(views(&at_alice), views(&at_bob));
    let first = at_bob.message(hello).expect("hello");
    assert_eq!(first.body, Some(Body::Text("hello, Bob".into())));
    assert!(first.edited);
    assert_eq!(first.edited_at, Some(edit.sent_at));
    assert_eq!(first.reactions.len(), 1, "🎉 was taken back");
    assert_eq!(first.reactions[0].reaction, Reaction::Emoji("👀".into()));
    assert_eq!(first.reactions[0].of(bob.user_id()), Some(eyes.seq));
    assert_eq!(
        at_alice.message(reply).expect("reply").reply_to,
        Some(hello)
    );

    // Refusals are typed: not the author, not a message, not a reaction.
    assert_eq!(
        server_code(bob.edit(dm, hello, "mine").await.unwrap_err()),
        ErrorCode::Forbidden
    );
    assert_eq!(
        server_code(bob.delete(dm, hello).await.unwrap_err()),
        ErrorCode::Forbidden,
        "in a direct conversation nobody moderates"
    );
    assert_eq!(
        server_code(bob.react(dm, hello, "two words").await.unwrap_err()),
        ErrorCode::InvalidRequest
    );

    // A deletion folds into a tombstone on both sides and stays one through history.
    alice.delete(dm, hello).await.expect("deleted");
    for (events, timeline) in [
        (&mut alice_events, &mut at_alice),
        (&mut bob_events, &mut at_bob),
    ] {
        fold(events, dm, timeline, 1).await;
        let gone = timeline.message(hello).expect("tombstone");
        assert!(gone.deleted && gone.body.is_none() && gone.reactions.is_empty());
    }
    assert_eq!(
        server_code(alice.edit(dm, hello, "undo").await.unwrap_err()),
        ErrorCode::Deleted
    );
    let page = bob.history(dm, None, 50).await.expect("history");
    let mut from_history = Timeline::default();
    for e in page.entries {
        from_history.apply(e);
    }
    assert_eq!(views(&from_history), views(&at_bob));
}

/// In an encrypted conversation the relation's text and emoji travel sealed, open on
/// the other side, and never reach the database in the clear; a plain emoji is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_relations_are_sealed_and_opened() {
    let server = TestServer::start().await;
    let keys = tempfile::tempdir().expect("key dir");
    let (carol, mut carol_events) =
        user(&server, "carol", Some(&keys.path().join("carol.key"))).await;
    let (dave, mut dave_events) = user(&server, "dave", Some(&keys.path().join("dave.key"))).await;
    let dm = carol
        .create_encrypted_direct(dave.user_id())
        .await
        .expect("encrypted dm")
        .id;
    let (mut at_carol, mut at_dave) = (Timeline::default(), Timeline::default());
    let secret = "meet at the lighthouse";
    let m = carol.send_text(dm, secret).await.expect("sent").seq;
    let edited = "meet at the old lighthouse, nine sharp";
    carol.edit(dm, m, edited).await.expect("edited");
    let answer = "bringing the lantern";
    dave.reply(dm, m, answer).await.expect("replied");
    dave.react(dm, m, "🕯️").await.expect("reacted");
    for (events, timeline) in [
        (&mut carol_events, &mut at_carol),
        (&mut dave_events, &mut at_dave),
    ] {
        let got = fold(events, dm, timeline, 4).await;
        // Opened for this device: texts and the emoji, in place.
        assert_eq!(got[2].text(), Some(answer));
        let view = timeline.message(m).expect("message");
        assert_eq!(view.body, Some(Body::Text(edited.into())));
        assert_eq!(view.reactions[0].reaction, Reaction::Emoji("🕯️".into()));
    }

    // What the server stored and serves: sealed content only, kinds and targets in the
    // clear (a session of Dave's without his device key cannot open anything).
    let keyless = server
        .ws("dave")
        .login("dave", PASSWORD)
        .connect()
        .await
        .expect("connects");
    let page = keyless.history(dm, None, 50).await.expect("history");
    let kinds: Vec<&str> = page
        .entries
        .iter()
        .map(|e| match &e.content {
            Content::Message {
                body: Some(Body::Encrypted(_)),
                reply_to: None,
            } => "message",
            Content::Edit {
                body: Some(Body::Encrypted(_)),
                target,
            } if *target == m => "edit",
            Content::Message {
                body: Some(Body::Encrypted(_)),
                reply_to: Some(target),
            } if *target == m => "reply",
            Content::Reaction {
                reaction: Some(Reaction::Encrypted(_)),
                target,
            } if *target == m => "reaction",
            other => panic!("not sealed as expected: {other:?}"),
        })
        .collect();
    assert_eq!(kinds, vec!["reaction", "reply", "edit", "message"]);
    let db = server.stored_bytes();
    for plain in [secret, edited, answer, "🕯️"] {
        assert!(!contains(&db, plain), "{plain:?} is in the database");
    }
}
