//! Searching messages over HTTP, on both backends with one suite: words, prefixes,
//! phrases, exclusions, scripts without spaces; only the caller's conversations and
//! never an encrypted one; the index follows edits and deletions; paging; clear errors.
//! And the index of messages stored before it existed is filled after a start.

mod common;

use chat_proto::body::{Attachments, Body};
use chat_proto::entry::Content;
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, Timestamp, UserId};
use chat_server::store::{Appended, NewEntry};
use chat_server::testing::TestDbKind;
use common::{Account, TestServer};
use http::StatusCode;

/// Appends an entry through the store (what a session's send does after its checks);
/// the seq it got.
async fn append(s: &TestServer, conversation: u64, who: &Account, content: Content) -> u64 {
    let entry = NewEntry {
        conversation: ConversationId::new(conversation).expect("id"),
        sender: UserId::new(who.id).expect("id"),
        client_msg_id: ClientMsgId::from_bytes(rand::random()),
        content,
        sent_at: Timestamp::now(),
        moderator: false,
    };
    match s
        .server
        .app
        .store()
        .append_batch(vec![entry])
        .await
        .expect("appended")
        .remove(0)
    {
        Appended::New(e) => u64::from(e.seq),
        other => panic!("not appended: {other:?}"),
    }
}

async fn say(s: &TestServer, conversation: u64, who: &Account, text: &str) -> u64 {
    let body = Body::Text(text.into());
    append(s, conversation, who, Content::message(body)).await
}

/// The texts the search finds for `who`, newest first.
async fn found(s: &TestServer, who: &Account, query: &str) -> Vec<String> {
    let r = search(s, who, &format!("q={}", encode(query))).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {:?}", r.body);
    r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["text"].as_str().expect("text").to_owned())
        .collect()
}

fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

async fn search(s: &TestServer, who: &Account, params: &str) -> common::Reply {
    s.get(&format!("/api/search?{params}"), &who.token).await
}

async fn searching(kind: TestDbKind) {
    let s = TestServer::start(kind).await;
    let (ann, bob, cat) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("cat").await,
    );
    let ab = s.direct(&ann, &bob).await;
    let bc = s.direct(&bob, &cat).await;
    let lunch = say(&s, ab, &ann, "Shall we meet for lunch on Friday?").await;
    say(&s, ab, &bob, "Yes! The pizza place, at noon.").await;
    say(&s, ab, &ann, "我爱北京天安门, see https://example.org/menu").await;
    say(&s, bc, &cat, "Lunch with Ann? Not this week.").await;
    // A caption is searched like a text.
    let caption = Body::Attachments(Attachments {
        text: "Sunset at the beach".into(),
        files: vec![],
    });
    append(&s, ab, &bob, Content::message(caption)).await;

    // Words match as prefixes, case aside; all words must match.
    assert_eq!(
        found(&s, &ann, "lunch").await,
        ["Shall we meet for lunch on Friday?"]
    );
    assert_eq!(
        found(&s, &ann, "LUN fri").await,
        ["Shall we meet for lunch on Friday?"]
    );
    assert_eq!(found(&s, &ann, "lunch pizza").await, Vec::<String>::new());
    assert_eq!(found(&s, &ann, "sunset").await, ["Sunset at the beach"]);
    // Bob sees his two conversations' lunches, newest first; Cat only hers.
    assert_eq!(
        found(&s, &bob, "lunch").await,
        [
            "Lunch with Ann? Not this week.",
            "Shall we meet for lunch on Friday?"
        ]
    );
    assert_eq!(
        found(&s, &cat, "lunch").await,
        ["Lunch with Ann? Not this week."]
    );
    // Phrases and exclusions.
    assert_eq!(found(&s, &bob, "\"lunch on\"").await.len(), 1);
    assert_eq!(found(&s, &bob, "\"on lunch\"").await.len(), 0);
    assert_eq!(
        found(&s, &bob, "lunch -friday").await,
        ["Lunch with Ann? Not this week."]
    );
    // Scripts without spaces, and words inside punctuation.
    for q in ["北京", "京", "天安门", "example", "menu"] {
        assert_eq!(found(&s, &ann, q).await.len(), 1, "{q}");
    }
    assert_eq!(found(&s, &ann, "京北").await.len(), 0);

    // A result says where it is, with a snippet that marks the match.
    let r = search(&s, &ann, "q=friday").await;
    let hit = &r.body["results"][0];
    assert_eq!(
        (hit["conversation"].as_u64(), hit["seq"].as_u64()),
        (Some(ab), Some(lunch))
    );
    assert_eq!(hit["sender"].as_u64(), Some(ann.id));
    let marked: Vec<(&str, bool)> = hit["snippet"]
        .as_array()
        .expect("snippet")
        .iter()
        .map(|p| {
            (
                p["text"].as_str().expect("text"),
                p["matched"].as_bool().expect("flag"),
            )
        })
        .collect();
    assert_eq!(
        marked,
        [
            ("Shall we meet for lunch on ", false),
            ("Friday", true),
            ("?", false)
        ]
    );

    // The index follows an edit (the old text no longer matches) and a deletion.
    let target = Seq::new(lunch).expect("seq");
    append(
        &s,
        ab,
        &ann,
        Content::Edit {
            target,
            body: Some(Body::Text("Dinner on Saturday instead?".into())),
        },
    )
    .await;
    assert_eq!(found(&s, &ann, "friday").await, Vec::<String>::new());
    assert_eq!(
        found(&s, &ann, "saturday").await,
        ["Dinner on Saturday instead?"]
    );
    append(&s, ab, &ann, Content::Delete { target }).await;
    assert_eq!(found(&s, &ann, "saturday").await, Vec::<String>::new());

    // Encrypted conversations are never searched: the server holds only envelopes.
    let secret = s.encrypted_direct(&ann, &cat).await.body["id"]
        .as_u64()
        .expect("id");
    append(
        &s,
        secret,
        &ann,
        Content::message(Body::Encrypted(vec![1; 80].into())),
    )
    .await;
    assert_eq!(
        found(&s, &cat, "lunch").await,
        ["Lunch with Ann? Not this week."]
    );

    // One conversation only; someone else's is not found.
    let r = search(&s, &bob, &format!("q=lunch&conversation={bc}")).await;
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(1));
    let r = search(&s, &cat, &format!("q=lunch&conversation={ab}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Paging, newest first, by cursor.
    for i in 0..5 {
        say(&s, bc, &bob, &format!("page test {i}")).await;
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(c) => format!("q=page&limit=2&before={c}"),
            None => "q=page&limit=2".to_owned(),
        };
        let r = search(&s, &bob, &params).await;
        let texts: Vec<String> = r.body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| h["text"].as_str().expect("text").to_owned())
            .collect();
        pages.push(texts);
        match r.body["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        pages.concat(),
        [
            "page test 4",
            "page test 3",
            "page test 2",
            "page test 1",
            "page test 0"
        ]
    );

    // Clear errors.
    for (params, code) in [
        ("q=", "empty_query"),
        ("q=%20%3F%21", "empty_query"),
        ("q=-lunch", "empty_query"),
        (&*format!("q={}", "a".repeat(300)), "query_too_long"),
        ("q=lunch&limit=0", "invalid_query"),
        ("q=lunch&before=x", "invalid_query"),
    ] {
        let r = search(&s, &ann, params).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code),
            "{params}"
        );
    }
    let r = s
        .call(http::Method::GET, "/api/search?q=lunch", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Someone who leaves a group no longer finds its messages.
    let group = s.group(&ann, &[&bob]).await;
    say(&s, group, &ann, "quarterly numbers").await;
    assert_eq!(found(&s, &bob, "quarterly").await.len(), 1);
    let r = s
        .post(
            &format!("/api/conversations/{group}/leave"),
            Some(&bob.token),
            serde_json::json!({}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(found(&s, &bob, "quarterly").await.len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn sqlite_search() {
    searching(TestDbKind::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_search() {
    searching(TestDbKind::Postgres).await;
}
