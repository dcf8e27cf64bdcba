//! Arbitrary JSON bodies (and ids, query strings, tokens) sent to every route of the
//! server's table through its own HTTP stack, parsing and validation, over an
//! in-memory connection. Whatever arrives, the answer is a well-formed HTTP response, never a
//! 500, and every error is the documented `{"error":{"code","message"}}` object.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use chat_server::app::App;
use chat_server::config::Config;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Index into the server's route table.
    route: u8,
    id: u64,
    other: u64,
    query: String,
    authenticated: bool,
    body: Vec<u8>,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: App,
    token: String,
    _server: chat_server::Server,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = runtime
            .block_on(chat_server::Server::bind(Config::for_tests(dir.path())))
            .expect("server");
        let app = server.app().clone();
        let body = br#"{"username":"fuzzer","password":"fuzzing password"}"#;
        let (status, reply) = runtime
            .block_on(call(
                &app,
                Method::POST,
                "/api/register".into(),
                None,
                body.to_vec(),
            ))
            .expect("a valid request");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
        let token = reply["access_token"].as_str().expect("token").to_owned();
        Fixture {
            runtime,
            app,
            token,
            // Bound but never run: requests go straight to its HTTP stack.
            _server: server,
            _dir: dir,
        }
    })
}

/// One request over a fresh in-memory HTTP/1.1 connection to the server's handler.
async fn call(
    app: &App,
    method: Method,
    path: String,
    token: Option<&str>,
    body: Vec<u8>,
) -> Option<(u16, Bytes)> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let app = app.clone();
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let service = service_fn(move |req| chat_server::http::handle(app.clone(), peer, req));
    let serving = tokio::spawn(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service),
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "fuzz")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    // A path the HTTP client itself refuses never reaches a server.
    let req = req.body(Full::new(Bytes::from(body))).ok()?;
    let response = sender.send_request(req).await.expect("a response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    drop(sender);
    let _ = serving.await;
    Some((status, bytes))
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let (id, other) = (input.id % 1000, input.other % 1000);
    let query: String = input
        .query
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '#')
        .take(200)
        .collect();
    // Every route of the server's own table, so new routes are fuzzed as they come.
    let routes = chat_server::http::ROUTES;
    let (method, pattern, _) = &routes[usize::from(input.route) % routes.len()];
    let mut path = pattern
        .replace("{id}", &id.to_string())
        .replace("{user_id}", &other.to_string());
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let method = method.clone();
    // Answers to HEAD carry no body, errors included (RFC 9110 §9.3.2).
    let head = method == Method::HEAD;
    let token = input.authenticated.then_some(f.token.as_str());
    let Some((status, body)) = f
        .runtime
        .block_on(call(&f.app, method, path, token, input.body))
    else {
        return;
    };
    assert!(
        status < 500,
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 && !head {
        let error: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("HTTP {status} without a JSON error ({e}): {body:?}"));
        assert!(error["error"]["code"].is_string(), "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
});
