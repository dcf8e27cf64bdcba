//! The HTTP API end to end: a real server on an ephemeral port, real HTTP.

mod common;

use bytes::Bytes;
use chat_proto::body::Body;
use chat_proto::ids::{ClientMsgId, ConversationId, Timestamp, UserId};
use chat_server::store::{Appended, NewEntry};
use chat_server::testing::TestDbKind;
use common::{Account, TestServer};
use http::{Method, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn send_message(server: &TestServer, conversation: u64, sender: u64, key: u8, text: &str) {
    let appended = server
        .server
        .app
        .appender()
        .append(NewEntry::message(
            ConversationId::new(conversation).expect("id"),
            UserId::new(sender).expect("id"),
            ClientMsgId::from_bytes([key; 16]),
            Body::Text(text.to_owned()),
            Timestamp::now(),
        ))
        .await
        .expect("committed");
    assert!(matches!(appended, Appended::New(_)));
}

async fn happy_path(kind: TestDbKind) {
    let s = TestServer::start(kind).await;
    assert_eq!(
        s.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );

    // Register (username case-folded, display name defaulted), then log in.
    let r = s
        .post(
            "/api/register",
            None,
            json!({"username": "Alice", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["user"]["username"], "alice");
    assert_eq!(r.body["user"]["display_name"], "alice");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    let alice_id = r.body["user"]["id"].as_u64().expect("id");
    let r = s
        .post(
            "/api/login",
            None,
            json!({"username": "ALICE", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let alice = Account {
        token: r.body["access_token"].as_str().expect("token").to_owned(),
        refresh: r.body["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
        id: alice_id,
    };
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;

    // Profile.
    let me = s.get("/api/me", &alice.token).await;
    assert_eq!(
        (me.status, me.body["id"].as_u64()),
        (StatusCode::OK, Some(alice.id))
    );
    let r = s
        .call(
            Method::PATCH,
            "/api/me",
            Some(&alice.token),
            Some(json!({"display_name": "Alice 🦀", "bio": "hi\nthere"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["display_name"].as_str(), r.body["bio"].as_str()),
        (Some("Alice 🦀"), Some("hi\nthere"))
    );
    let r = s.get(&format!("/api/users/{}", alice.id), &bob.token).await;
    assert_eq!(r.body["display_name"], "Alice 🦀");
    assert!(r.body.get("password_hash").is_none());
    let r = s.get("/api/users?q=b", &alice.token).await;
    assert_eq!(r.body["users"][0]["username"], "bob");
    assert_eq!(r.body["next"], Value::Null);
    let r = s.get("/api/users?limit=2", &alice.token).await;
    assert_eq!(r.body["users"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.body["next"], "bob");
    let r = s.get("/api/users?limit=2&after=bob", &alice.token).await;
    assert_eq!(r.body["users"][0]["username"], "carol");

    // A direct conversation, idempotent in either direction.
    let r = s
        .post(
            "/api/conversations",
            Some(&alice.token),
            json!({"kind": "direct", "members": [bob.id]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dm = r.body["id"].as_u64().expect("id");
    let r = s
        .post(
            "/api/conversations",
            Some(&bob.token),
            json!({"kind": "direct", "members": [alice.id]}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["id"].as_u64()),
        (StatusCode::OK, Some(dm))
    );

    // A group.
    let r = s
        .post(
            "/api/conversations",
            Some(&alice.token),
            json!({"kind": "group", "title": "Team", "members": [bob.id]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let group = r.body["id"].as_u64().expect("id");
    assert_eq!(r.body["members"].as_array().map(Vec::len), Some(2));

    // History, listing with unread counts and last message.
    for i in 1..=5u8 {
        send_message(&s, dm, bob.id, i, &format!("message {i}")).await;
    }
    let r = s.get("/api/conversations", &alice.token).await;
    let list = r.body["conversations"].as_array().expect("list");
    assert_eq!(
        list[0]["id"].as_u64(),
        Some(dm),
        "most recent activity first"
    );
    assert_eq!(list[0]["unread"], 5);
    assert_eq!(list[0]["last_message"]["body"]["text"], "message 5");
    assert_eq!(list[1]["last_message"], Value::Null);
    let r = s
        .get(
            &format!("/api/conversations/{dm}/messages?limit=2"),
            &alice.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seqs: Vec<u64> = r.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [5, 4]);
    assert_eq!(r.body["has_more"], true);
    let r = s
        .get(
            &format!("/api/conversations/{dm}/messages?before=4&limit=10"),
            &alice.token,
        )
        .await;
    let seqs: Vec<u64> = r.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 2, 1]);
    assert_eq!(r.body["has_more"], false);
    assert_eq!(
        r.body["messages"][0]["client_msg_id"],
        "03030303-0303-0303-0303-030303030303"
    );

    // Non-members see nothing: 404, exactly like a conversation that does not exist.
    let hidden = s
        .get(&format!("/api/conversations/{dm}/messages"), &carol.token)
        .await;
    let missing = s
        .get("/api/conversations/999999/messages", &carol.token)
        .await;
    assert_eq!(
        (hidden.status, hidden.body.clone()),
        (missing.status, missing.body.clone())
    );
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get(&format!("/api/conversations/{dm}"), &carol.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Members: only the owner adds and removes; anyone leaves.
    let r = s
        .post(
            &format!("/api/conversations/{group}/members"),
            Some(&bob.token),
            json!({"user_id": carol.id}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = s
        .post(
            &format!("/api/conversations/{group}/members"),
            Some(&alice.token),
            json!({"user_id": carol.id}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["members"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(3))
    );
    let r = s
        .post(
            &format!("/api/conversations/{dm}/members"),
            Some(&alice.token),
            json!({"user_id": carol.id}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "direct_conversation")
    );
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/conversations/{group}/members/{}", carol.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/conversations/{group}/members/{}", carol.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get(&format!("/api/conversations/{group}"), &carol.token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = s
        .call(
            Method::POST,
            &format!("/api/conversations/{group}/leave"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .get(&format!("/api/conversations/{group}"), &bob.token)
        .await;
    assert_eq!(r.body["members"][0]["role"], "owner", "ownership passed on");
    let r = s
        .call(
            Method::POST,
            &format!("/api/conversations/{dm}/leave"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    s.stop().await;
}

#[tokio::test]
async fn api_happy_path_on_sqlite() {
    happy_path(TestDbKind::Sqlite).await;
}

#[tokio::test]
async fn api_happy_path_on_postgres() {
    #[cfg(feature = "postgres")]
    happy_path(TestDbKind::Postgres).await;
}

#[tokio::test]
async fn tokens_rotate_revoke_and_expire_with_their_session() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let a = s.register("dave").await;

    // Rotation: the new pair works, the old refresh token is single-use, and reusing
    // it revokes the whole session (including the pair it was exchanged for).
    let r = s
        .post("/api/refresh", None, json!({"refresh_token": a.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let access2 = r.body["access_token"].as_str().expect("token").to_owned();
    let refresh2 = r.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(refresh2, a.refresh);
    assert_eq!(s.get("/api/me", &access2).await.status, StatusCode::OK);
    let r = s
        .post("/api/refresh", None, json!({"refresh_token": a.refresh}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert_eq!(
        s.get("/api/me", &access2).await.status,
        StatusCode::UNAUTHORIZED,
        "family revoked"
    );
    assert_eq!(
        s.post("/api/refresh", None, json!({"refresh_token": refresh2}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for junk in ["", "x", "not-a-token-at-all-but-forty-three-chars-xx"] {
        assert_eq!(
            s.post("/api/refresh", None, json!({"refresh_token": junk}))
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }

    // Logout kills the access token at once.
    let b = s.register("erin").await;
    let r = s
        .call(Method::POST, "/api/logout", Some(&b.token), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/api/me", &b.token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.post("/api/refresh", None, json!({"refresh_token": b.refresh}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.call(Method::POST, "/api/logout", None, None).await.code(),
        "missing_token"
    );

    // Changing the password keeps this session and ends the others.
    let c = s.register("frank").await;
    let other = s
        .post(
            "/api/login",
            None,
            json!({"username": "frank", "password": "correct horse battery"}),
        )
        .await;
    let other_token = other.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = s
        .call(
            Method::PUT,
            "/api/me/password",
            Some(&c.token),
            Some(json!({"old_password": "wrong password", "new_password": "new password 123"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "wrong_password")
    );
    let r = s
        .call(Method::PUT, "/api/me/password", Some(&c.token), Some(json!({"old_password": "correct horse battery", "new_password": "new password 123"})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/api/me", &c.token).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/api/me", &other_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let old = s
        .post(
            "/api/login",
            None,
            json!({"username": "frank", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = s
        .post(
            "/api/login",
            None,
            json!({"username": "frank", "password": "new password 123"}),
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);

    // A deleted user's tokens stop working and the name is free again.
    let r = s
        .call(
            Method::DELETE,
            "/api/me",
            Some(&c.token),
            Some(json!({"password": "new password 123"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/api/me", &c.token).await.code(), "invalid_token");
    assert_eq!(
        s.get(&format!("/api/users/{}", c.id), &a.token)
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "a's session was revoked above"
    );
    let again = s.register("frank").await;
    assert_ne!(again.id, c.id);
    s.stop().await;
}

#[tokio::test]
async fn refresh_cookie_for_browsers() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let r = s
        .post(
            "/api/register",
            None,
            json!({"username": "gina", "password": "correct horse battery", "cookie": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body.get("refresh_token").is_none(), "not in the body");
    let cookie = r.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cookie.starts_with("chat_refresh="), "{cookie}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api",
        "Max-Age=2592000",
    ] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP in tests");
    let pair = cookie.split(';').next().expect("pair").to_owned();

    let req = s
        .request(Method::POST, "/api/refresh")
        .header(header::COOKIE, &pair)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let r = s.raw(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("refresh_token").is_none());
    let rotated = r.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(rotated.split(';').next(), Some(pair.as_str()));

    // Logout through the cookie clears it.
    let pair2 = rotated.split(';').next().expect("pair").to_owned();
    let req = s
        .request(Method::POST, "/api/logout")
        .header(header::COOKIE, &pair2)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let r = s.raw(req).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let req = s
        .request(Method::POST, "/api/refresh")
        .header(header::COOKIE, &pair2)
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(s.raw(req).await.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let a = s.register("henry").await;

    // Malformed JSON, missing fields, wrong types.
    let bad_json = s
        .request(Method::POST, "/api/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{\"username\": ")))
        .expect("req");
    let r = s.raw(bad_json).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let r = s
        .post("/api/register", None, json!({"username": "ivy"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("password")
    );
    let r = s
        .post(
            "/api/register",
            None,
            json!({"username": 5, "password": "xxxxxxxxxx"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Wrong content type.
    let req = s
        .request(Method::POST, "/api/login")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    let r = s.raw(req).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    // Oversized, announced by Content-Length...
    let big = json!({"username": "jack", "password": "x".repeat(70_000)});
    let r = s.post("/api/register", None, big).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // ...and streamed in chunks without a length.
    let mut tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let head = "POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let chunk = "a".repeat(16 * 1024);
    for _ in 0..6 {
        let _ = tcp
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await;
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Validation of values.
    for (username, code) in [
        ("ab", "invalid_username"),
        ("bad name", "invalid_username"),
        ("x'; DROP TABLE users;--", "invalid_username"),
    ] {
        let r = s
            .post(
                "/api/register",
                None,
                json!({"username": username, "password": "long enough"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, code),
            "{username}"
        );
    }
    let r = s
        .post(
            "/api/register",
            None,
            json!({"username": "kate", "password": "short"}),
        )
        .await;
    assert_eq!(r.code(), "invalid_password");
    let r = s
        .post(
            "/api/register",
            None,
            json!({"username": "HENRY", "password": "long enough"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "username_taken")
    );

    // Tokens: missing, malformed, forged, alg none.
    assert_eq!(
        s.call(Method::GET, "/api/me", None, None).await.code(),
        "missing_token"
    );
    for token in [
        "garbage",
        "a.b.c",
        &a.token[..a.token.len() - 2],
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    ] {
        let r = s.get("/api/me", token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{token}"
        );
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }

    // Conversation input.
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "direct", "members": [a.id]}),
        )
        .await;
    assert_eq!(r.code(), "invalid_members");
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "direct", "members": [123456]}),
        )
        .await;
    assert_eq!(r.code(), "unknown_user");
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "channel", "members": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "group", "title": "  "}),
        )
        .await;
    assert_eq!(r.code(), "invalid_title");
    let crowd: Vec<u64> = (1000..1256).collect();
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "group", "title": "crowd", "members": crowd}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_members"),
        "256 invitees at creation"
    );
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "direct", "members": [0]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "ids start at 1");
    let r = s
        .get("/api/conversations/1/messages?limit=500", &a.token)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let r = s.get("/api/conversations/not-a-number", &a.token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Routing.
    let r = s.call(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = s.call(Method::DELETE, "/api/login", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "POST");
    s.stop().await;
}

#[tokio::test]
async fn failed_logins_are_indistinguishable_and_throttled() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    s.register("lena").await;
    let unknown = s
        .post(
            "/api/login",
            None,
            json!({"username": "nobody", "password": "whatever123"}),
        )
        .await;
    let wrong = s
        .post(
            "/api/login",
            None,
            json!({"username": "lena", "password": "whatever123"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (unknown.status, &unknown.raw),
        (wrong.status, &wrong.raw),
        "identical answers"
    );
    assert_eq!(wrong.code(), "invalid_credentials");

    // Ten failures per username within the window, then 429 with Retry-After, even
    // with the right password.
    for _ in 0..9 {
        let r = s
            .post(
                "/api/login",
                None,
                json!({"username": "lena", "password": "wrong guess"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = s
        .post(
            "/api/login",
            None,
            json!({"username": "lena", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry));
    s.stop().await;
}

#[tokio::test]
async fn awkward_names_are_stored_exactly_or_refused() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let a = s.register("mona").await;
    for name in [
        "Robert'); DROP TABLE users;--",
        "Zoë 👩‍👩‍👧 𝕏",
        "%_\\ LIKE me",
        "日本語の名前",
    ] {
        let r = s
            .call(
                Method::PATCH,
                "/api/me",
                Some(&a.token),
                Some(json!({"display_name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(s.get("/api/me", &a.token).await.body["display_name"], name);
    }
    for name in ["nul\u{0}byte", "evil\u{202E}txt.exe", "\u{2066}isolate"] {
        let r = s
            .call(
                Method::PATCH,
                "/api/me",
                Some(&a.token),
                Some(json!({"display_name": name})),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_display_name"),
            "{name:?}"
        );
    }
    // Search treats LIKE metacharacters literally.
    let r = s.get("/api/users?q=%25", &a.token).await;
    assert_eq!(r.body["users"].as_array().map(Vec::len), Some(0));
    s.stop().await;
}

/// Every route the server answers is described in openapi.yaml, and nothing else is.
#[test]
fn openapi_describes_every_route() {
    let spec = chat_server::http::OPENAPI;
    let mut described = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in spec.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ")
            && !m.starts_with(' ')
            && let Some(method) = m.strip_suffix(':')
            && ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method)
        {
            described.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut routed: Vec<String> = chat_server::http::ROUTES
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    described.sort();
    routed.sort();
    assert_eq!(routed, described);
}

#[tokio::test]
async fn openapi_is_served() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let r = s.call(Method::GET, "/api/openapi.yaml", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.raw.starts_with(b"openapi: 3.1.0"));
    s.stop().await;
}

#[tokio::test]
async fn the_web_ui_is_served_with_security_headers() {
    let web = tempfile::tempdir().expect("dir");
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>chat</title>",
    )
    .expect("write");
    std::fs::create_dir(web.path().join("assets")).expect("mkdir");
    std::fs::write(web.path().join("assets/app-1a2b3c.js"), "console.log(1)").expect("write");
    let outside = tempfile::tempdir().expect("dir");
    std::fs::write(outside.path().join("secret.txt"), "nope").expect("write");
    let root = web.path().to_path_buf();
    let s = TestServer::start_with(TestDbKind::Sqlite, move |c| c.web_dir = Some(root)).await;

    let r = s.call(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.raw.starts_with(b"<!doctype html>"));
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    let csp = r.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");

    let r = s
        .call(Method::GET, "/assets/app-1a2b3c.js", None, None)
        .await;
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        r.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );

    // The app's own routes fall back to index.html; missing files do not.
    let r = s.call(Method::GET, "/conversations/42", None, None).await;
    assert!(r.raw.starts_with(b"<!doctype html>"));
    assert_eq!(
        s.call(Method::GET, "/assets/missing.js", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // No way out of the web directory, and the API keeps its JSON 404s.
    let escape = format!(
        "/../{}/secret.txt",
        outside
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
    );
    for evil in [
        escape.as_str(),
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2fsecret.txt",
    ] {
        let r = s.call(Method::GET, evil, None, None).await;
        assert!(!String::from_utf8_lossy(&r.raw).contains("nope"), "{evil}");
        assert!(!String::from_utf8_lossy(&r.raw).contains("root:"), "{evil}");
    }
    assert_eq!(
        s.call(Method::GET, "/api/nope", None, None).await.code(),
        "not_found"
    );
    s.stop().await;
}

/// With no `--web-dir`, the binary serves the UI it was built with, whatever the
/// working directory (the test runs in `chat-server/`, where there is no `web/dist`).
#[tokio::test]
async fn the_built_in_web_ui_is_served_without_a_web_dir() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    assert!(
        !std::path::Path::new("web/dist").exists(),
        "the test must not run where a web/dist lies"
    );
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let r = s.call(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let index = std::fs::read(dist.join("index.html")).expect("web/dist/index.html");
    assert_eq!(r.raw.as_ref(), index.as_slice());
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    assert!(r.headers.contains_key("content-security-policy"));
    // Every built asset, byte for byte, cached for good.
    for entry in std::fs::read_dir(dist.join("assets")).expect("assets") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let r = s
            .call(Method::GET, &format!("/assets/{name}"), None, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(
            r.raw.as_ref(),
            std::fs::read(&path).expect("read").as_slice()
        );
        assert_eq!(
            r.headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
    }
    // The app's routes get index.html; missing files and escapes get 404.
    let r = s.call(Method::GET, "/conversations/42", None, None).await;
    assert_eq!(r.raw.as_ref(), index.as_slice());
    for missing in ["/assets/missing.js", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        assert_eq!(
            s.call(Method::GET, missing, None, None).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
    s.stop().await;
}

async fn read_some(tcp: &mut tokio::net::TcpStream, wait: std::time::Duration) -> Option<usize> {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(_)) => Some(0),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| c.http_idle_timeout = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let n = read_some(&mut tcp, std::time::Duration::from_secs(2))
        .await
        .expect("a response");
    assert!(n > 0, "the request was answered");
    // Kept alive, then closed once idle for a second.
    assert_eq!(
        read_some(&mut tcp, std::time::Duration::from_secs(3)).await,
        Some(0)
    );
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| c.max_http_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(s.addr())
            .await
            .expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(
            read_some(&mut tcp, std::time::Duration::from_secs(2))
                .await
                .is_some_and(|n| n > 0)
        );
        held.push(tcp);
    }
    let mut extra = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("the kernel accepts");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(
        read_some(&mut extra, std::time::Duration::from_secs(2)).await,
        Some(0),
        "closed unanswered"
    );
    drop(held);
    // Capacity comes back once the held connections are gone.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_some(&mut again, std::time::Duration::from_secs(2))
            .await
            .is_some_and(|n| n > 0)
    );
    s.stop().await;
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn device_keys_are_registered_and_shown_to_contacts_only() {
    use chat_crypto::e2e::DeviceSecret;
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let (ann, ben, cy) = (
        s.register("ann").await,
        s.register("ben").await,
        s.register("cyd").await,
    );
    let key = DeviceSecret::generate();
    let body = json!({"public_key": b64(key.public_key().as_bytes()), "name": "laptop"});

    let r = s.post("/api/devices", Some(&ann.token), body.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.raw)
    );
    assert_eq!(r.body["id"], key.id().to_string());
    assert_eq!(r.body["user_id"], ann.id);
    assert_eq!(r.body["name"], "laptop");
    assert_eq!(r.body["public_key"], b64(key.public_key().as_bytes()));
    // Registering again is idempotent; another account cannot claim the key.
    assert_eq!(
        s.post("/api/devices", Some(&ann.token), body.clone())
            .await
            .status,
        StatusCode::OK
    );
    let r = s.post("/api/devices", Some(&ben.token), body.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));

    // Keys that are not X25519 public keys are refused.
    for (bad, code) in [
        (json!({"public_key": "not base64!"}), "invalid_public_key"),
        (json!({"public_key": b64(&[7; 31])}), "invalid_public_key"),
        (json!({"public_key": b64(&[0; 32])}), "invalid_public_key"),
        (
            json!({"public_key": b64(DeviceSecret::generate().public_key().as_bytes()), "name": "a\u{202e}b"}),
            "invalid_device_name",
        ),
    ] {
        let r = s.post("/api/devices", Some(&ann.token), bad).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, code)
        );
    }
    let r = s.post("/api/devices", None, body.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // At most ten devices: nine more fit, the eleventh does not.
    for n in 2..=11 {
        let k = DeviceSecret::generate();
        let r = s
            .post(
                "/api/devices",
                Some(&ann.token),
                json!({"public_key": b64(k.public_key().as_bytes())}),
            )
            .await;
        if n <= 10 {
            assert_eq!(r.status, StatusCode::CREATED);
        } else {
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::CONFLICT, "too_many_devices")
            );
        }
    }
    assert_eq!(
        s.get("/api/devices", &ann.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(10)
    );

    // Contacts see each other's devices; strangers do not.
    let path = format!("/api/users/{}/devices", ann.id);
    assert_eq!(s.get(&path, &ben.token).await.status, StatusCode::NOT_FOUND);
    let r = s.encrypted_direct(&ann, &ben).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["encrypted"], true);
    let dm = r.body["id"].as_u64().expect("id");
    let r = s.get(&path, &ben.token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body[0]["id"], key.id().to_string());
    assert_eq!(s.get(&path, &cy.token).await.status, StatusCode::NOT_FOUND);
    let conv_path = format!("/api/conversations/{dm}/devices");
    assert_eq!(
        s.get(&conv_path, &ben.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(10)
    );
    assert_eq!(
        s.get(&conv_path, &cy.token).await.status,
        StatusCode::NOT_FOUND
    );

    // Removing a device takes it out of the conversation's set.
    let del = format!("/api/devices/{}", key.id());
    assert_eq!(
        s.call(Method::DELETE, &del, Some(&ben.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.call(Method::DELETE, &del, Some(&ann.token), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.call(Method::DELETE, &del, Some(&ann.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.call(Method::DELETE, "/api/devices/xyz", Some(&ann.token), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = s.get(&conv_path, &ben.token).await;
    assert!(
        r.body
            .as_array()
            .expect("list")
            .iter()
            .all(|d| d["id"] != key.id().to_string())
    );

    // Encrypted groups are bounded so every device fits in one envelope.
    let many: Vec<u64> = {
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(s.register(&format!("member{i:02}")).await.id);
        }
        ids
    };
    let r = s
        .post(
            "/api/conversations",
            Some(&ann.token),
            json!({"kind": "group", "title": "Big", "members": many, "encrypted": true}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_members")
    );
    let r = s
        .post(
            "/api/conversations",
            Some(&ann.token),
            json!({"kind": "group", "title": "Big", "members": &many[..39], "encrypted": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let group = r.body["id"].as_u64().expect("id");
    let r = s
        .post(
            &format!("/api/conversations/{group}/members"),
            Some(&ann.token),
            json!({"user_id": many[39]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_members")
    );
    s.stop().await;
}
