//! Files in messages (protocol 1.4) over real connections, on both backends: a message
//! takes its sender's finished uploads, its conversation's members may then download
//! them and nobody else may; the server's checks refuse foreign, unfinished, reused and
//! misdescribed files; 1.3 and 1.2 sessions read a text stand-in; deleting the message
//! purges its files; files never put in a message are collected.

mod common;

use chat_proto::body::{Attachments, Body, FileId, FileRef, ImageInfo, sealed_files_notice};
use chat_proto::entry::{Content, Relation};
use chat_proto::error::ErrorCode;
use chat_proto::frame::{ClientFrame, Relate, Send, ServerFrame};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Seq};
use chat_proto::version::ProtocolVersion;
use chat_server::testing::TestDbKind;
use common::tus::{download, upload};
use common::ws::{Sub, WsClient};
use common::{Account, TestServer, V1_2};
use http::{Method, StatusCode};

const V1_3: ProtocolVersion = ProtocolVersion { major: 1, minor: 3 };

fn file(id: &str, name: &str, size: u64, media_type: &str) -> FileRef {
    FileRef {
        id: FileId(id.into()),
        name: name.into(),
        size,
        media_type: media_type.into(),
        image: None,
    }
}

fn send(request: u32, conversation: u64, key: u8, body: Body) -> ClientFrame {
    ClientFrame::Send(Send {
        request_id: RequestId(request),
        conversation: ConversationId::new(conversation).expect("id"),
        client_msg_id: ClientMsgId::from_bytes([key; 16]),
        body,
    })
}

fn with_files(text: &str, files: Vec<FileRef>) -> Body {
    Body::Attachments(Attachments {
        text: text.into(),
        files,
    })
}

/// The answer to request `id`: the seq it was stored at, or the refusal's code.
async fn answer(ws: &mut WsClient, id: u32) -> Result<Seq, ErrorCode> {
    ws.until(|f| match f {
        ServerFrame::Ack(a) if a.request_id == RequestId(id) => Some(Ok(a.seq)),
        ServerFrame::Error(e) if e.request_id == Some(RequestId(id)) => Some(Err(e.code)),
        _ => None,
    })
    .await
}

/// The next `entry` frame a session receives.
async fn next_entry(ws: &mut WsClient) -> chat_proto::entry::Entry {
    ws.until(|f| match f {
        ServerFrame::Entry(e) => Some(e),
        _ => None,
    })
    .await
}

async fn live(s: &TestServer, who: &Account, version: ProtocolVersion) -> WsClient {
    let (mut ws, welcome) =
        WsClient::login_at(s.addr(), Sub::Json, &who.token, vec![], version).await;
    assert_eq!(welcome.version, version);
    ws.until_live().await;
    ws
}

async fn files_in_messages(kind: TestDbKind) {
    let s = TestServer::start_with(kind, |c| c.file_quota = 6000).await;
    let (ann, bob, eve) = (
        s.register("ann").await,
        s.register("bob").await,
        s.register("eve").await,
    );
    let chat = s.direct(&ann, &bob).await;
    let photo_bytes: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
    let photo = upload(&s, &ann, "view.jpg", &photo_bytes).await;
    let notes = upload(&s, &ann, "notes.txt", b"remember the milk").await;

    let mut a = live(&s, &ann, ProtocolVersion::CURRENT).await;
    let mut b = live(&s, &bob, ProtocolVersion::CURRENT).await;
    let mut b13 = live(&s, &bob, V1_3).await;
    let mut b12 = live(&s, &bob, V1_2).await;

    // Before the message, only the uploader reads the file.
    assert_eq!(
        download(&s, &bob, &photo, None).await.status,
        StatusCode::NOT_FOUND
    );

    let mut image = file(&photo, "view.jpg", 5000, "image/jpeg");
    image.image = Some(ImageInfo {
        width: 40,
        height: 30,
        thumbnail: Some(vec![0xff, 0xd8, 0xff].into()),
    });
    let body = with_files(
        "Our view",
        vec![image, file(&notes, "notes.txt", 17, "text/plain")],
    );
    a.send(&send(1, chat, 1, body.clone())).await;
    let at = answer(&mut a, 1).await.expect("stored");

    // A 1.4 session reads the files; 1.3 and 1.2 sessions a text stand-in, same seq.
    let entry = next_entry(&mut b).await;
    assert_eq!(
        (entry.seq, entry.content.clone()),
        (at, Content::message(body.clone()))
    );
    let stand_in = "Our view\n📎 view.jpg (5.0 KB)\n📎 notes.txt (17 B)";
    let old = next_entry(&mut b13).await;
    assert_eq!(
        (old.seq, old.content),
        (at, Content::message(Body::Text(stand_in.into())))
    );
    let older = b12
        .until(|f| match f {
            ServerFrame::Message(m) => Some(m),
            _ => None,
        })
        .await;
    assert_eq!((older.seq, older.body), (at, Body::Text(stand_in.into())));

    // Now the members read it, with ranges; anyone else gets 404, no token 401.
    let r = download(&s, &bob, &photo, None).await;
    assert_eq!(
        (r.status, r.raw.as_ref()),
        (StatusCode::OK, &photo_bytes[..])
    );
    let r = download(&s, &bob, &photo, Some("bytes=10-19")).await;
    assert_eq!(
        (r.status, r.raw.as_ref()),
        (StatusCode::PARTIAL_CONTENT, &photo_bytes[10..20])
    );
    assert_eq!(
        download(&s, &eve, &photo, None).await.status,
        StatusCode::NOT_FOUND
    );
    let anonymous = s
        .raw(
            s.request(Method::GET, &format!("/api/files/{photo}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // The HTTP history: entries as they are, messages as the stand-in.
    let r = s
        .get(&format!("/api/conversations/{chat}/entries"), &bob.token)
        .await;
    assert_eq!(
        r.body["entries"][0]["content"]["message"]["body"]["attachments"]["files"][0]["id"],
        photo.as_str()
    );
    let r = s
        .get(&format!("/api/conversations/{chat}/messages"), &bob.token)
        .await;
    assert_eq!(r.body["messages"][0]["body"]["text"], stand_in);

    // The server's checks.
    let unfinished = {
        let r = common::tus::create(&s, &ann, 10, "").await;
        common::tus::location(&r)
            .rsplit('/')
            .next()
            .expect("id")
            .to_owned()
    };
    let bobs = upload(&s, &bob, "b.txt", b"bob's").await;
    let fresh = upload(&s, &ann, "c.txt", b"0123456789").await;
    let cases = [
        (file(&bobs, "b.txt", 5, "text/plain"), ErrorCode::NotFound),
        (
            file(&"0".repeat(32), "x.txt", 5, "text/plain"),
            ErrorCode::NotFound,
        ),
        (
            file(&unfinished, "u.txt", 10, "text/plain"),
            ErrorCode::InvalidRequest,
        ),
        (
            file(&notes, "notes.txt", 17, "text/plain"),
            ErrorCode::InvalidRequest,
        ),
        (
            file(&fresh, "c.txt", 11, "text/plain"),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (i, (f, code)) in cases.into_iter().enumerate() {
        let request = 10 + i as u32;
        a.send(&send(request, chat, 10 + i as u8, with_files("", vec![f])))
            .await;
        assert_eq!(answer(&mut a, request).await, Err(code), "case {i}");
    }
    // A refused message takes none of its files: the good one is free for the next.
    a.send(&send(
        20,
        chat,
        20,
        with_files(
            "",
            vec![
                file(&fresh, "c.txt", 10, "text/plain"),
                file(&bobs, "b.txt", 5, "text/plain"),
            ],
        ),
    ))
    .await;
    assert_eq!(answer(&mut a, 20).await, Err(ErrorCode::NotFound));
    a.send(&send(
        21,
        chat,
        21,
        with_files("", vec![file(&fresh, "c.txt", 10, "text/plain")]),
    ))
    .await;
    let second = answer(&mut a, 21).await.expect("stored");
    // The same request again is the same message (idempotent), not a reuse.
    a.send(&send(
        22,
        chat,
        21,
        with_files("", vec![file(&fresh, "c.txt", 10, "text/plain")]),
    ))
    .await;
    assert_eq!(answer(&mut a, 22).await, Ok(second));
    // A file in a message cannot be ended by its uploader; deleting the message does.
    let end = common::tus::terminate(&s, &ann, &format!("/api/uploads/{fresh}")).await;
    assert_eq!(end.status, StatusCode::CONFLICT);
    // Edits change the caption only; a 1.3 session cannot send files.
    a.send(&ClientFrame::Relate(Relate {
        request_id: RequestId(23),
        conversation: ConversationId::new(chat).expect("id"),
        client_msg_id: ClientMsgId::from_bytes([23; 16]),
        relation: Relation::Edit {
            target: at,
            body: with_files("x", vec![file(&fresh, "c.txt", 10, "text/plain")]),
        },
    }))
    .await;
    assert_eq!(answer(&mut a, 23).await, Err(ErrorCode::InvalidRequest));
    let other = upload(&s, &bob, "d.txt", b"d").await;
    b13.send(&send(
        1,
        chat,
        1,
        with_files("", vec![file(&other, "d.txt", 1, "text/plain")]),
    ))
    .await;
    assert_eq!(answer(&mut b13, 1).await, Err(ErrorCode::BadFrame));

    // Plain files cannot go to an encrypted conversation.
    let sealed_chat = s.encrypted_direct(&ann, &eve).await;
    let sealed_chat = sealed_chat.body["id"].as_u64().expect("id");
    let mut a2 = live(&s, &ann, ProtocolVersion::CURRENT).await;
    a2.send(&send(
        1,
        sealed_chat,
        30,
        with_files("", vec![file(&notes, "n", 17, "text/plain")]),
    ))
    .await;
    assert_eq!(answer(&mut a2, 1).await, Err(ErrorCode::EncryptionRequired));

    // Deleting the message purges its files: gone for everyone, bytes collected.
    a.send(&ClientFrame::Relate(Relate {
        request_id: RequestId(24),
        conversation: ConversationId::new(chat).expect("id"),
        client_msg_id: ClientMsgId::from_bytes([24; 16]),
        relation: Relation::Delete { target: at },
    }))
    .await;
    answer(&mut a, 24).await.expect("deleted");
    for who in [&ann, &bob] {
        assert_eq!(
            download(&s, who, &photo, None).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            download(&s, who, &notes, None).await.status,
            StatusCode::NOT_FOUND
        );
    }
    // They no longer count against the quota, even before the collector runs.
    upload(&s, &ann, "again.jpg", &photo_bytes).await;
    let dir = s.server.app.config().data_dir.join("files");
    assert!(dir.join(&photo).exists(), "the collector removes the bytes");
    let collected = chat_server::http::files::collect_once(&s.server.app)
        .await
        .expect("collects");
    assert!(collected >= 2, "{collected}");
    assert!(!dir.join(&photo).exists() && !dir.join(&notes).exists());
    // The other message's file stays.
    assert_eq!(
        download(&s, &bob, &fresh, None).await.status,
        StatusCode::OK
    );
    let r = s
        .get(&format!("/api/conversations/{chat}/entries"), &bob.token)
        .await;
    let purged = r.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["seq"] == at.get())
        .expect("the deleted message")
        .clone();
    assert!(purged["content"]["message"]["body"].is_null(), "{purged}");

    // Deleting her account removes her files, those in messages too.
    let r = s
        .call(
            Method::DELETE,
            "/api/me",
            Some(&ann.token),
            Some(serde_json::json!({"password": "correct horse battery"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        download(&s, &bob, &fresh, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(dir.join(&fresh).exists());
    chat_server::http::files::collect_once(&s.server.app)
        .await
        .expect("collects");
    assert!(
        !dir.join(&fresh).exists(),
        "the collector removes the bytes"
    );
    s.stop().await;
}

#[tokio::test]
async fn sqlite_files_in_messages() {
    files_in_messages(TestDbKind::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_files_in_messages() {
    files_in_messages(TestDbKind::Postgres).await;
}

/// A sealed message with files: a 1.3 session reads a notice that it cannot open it
/// (the server cannot read the caption).
#[test]
fn the_sealed_stand_in_names_the_number_of_files() {
    assert_eq!(
        sealed_files_notice(2),
        "📎 an encrypted message with 2 files; this app is too old to open it"
    );
}

/// A finished upload that no message took within a day is collected; one in a message
/// is not.
#[tokio::test]
async fn unattached_files_are_collected_after_a_day() {
    use chat_proto::ids::Timestamp;
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let (ann, bob) = (s.register("ann").await, s.register("bob").await);
    let chat = s.direct(&ann, &bob).await;
    let loose = upload(&s, &ann, "loose.txt", b"loose").await;
    let kept = upload(&s, &ann, "kept.txt", b"kept").await;
    let mut a = live(&s, &ann, ProtocolVersion::CURRENT).await;
    a.send(&send(
        1,
        chat,
        1,
        with_files("", vec![file(&kept, "kept.txt", 4, "text/plain")]),
    ))
    .await;
    answer(&mut a, 1).await.expect("stored");
    let store = s.server.app.store();
    let now = Timestamp::now();
    assert!(
        store
            .collectable_uploads(now, Timestamp(now.0 - 86_400_000), 10)
            .await
            .expect("query")
            .is_empty()
    );
    let tomorrow = Timestamp(now.0 + 1);
    assert_eq!(
        store
            .collectable_uploads(now, tomorrow, 10)
            .await
            .expect("query"),
        vec![loose]
    );
    s.stop().await;
}
