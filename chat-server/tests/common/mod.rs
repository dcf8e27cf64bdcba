//! Starts a real server on an ephemeral port and talks HTTP to it.
#![allow(dead_code, unreachable_pub)]

/// The version the raw test clients announce unless a test says otherwise: 1.2, as
/// today's independent clients written from the 1.2 spec do. Every test of them is
/// thus also a check that such a client works against this 1.3 server, which sends it
/// each log entry as a message (PROTOCOL.md §2.1); `relations.rs` speaks 1.3.
pub const V1_2: chat_proto::version::ProtocolVersion =
    chat_proto::version::ProtocolVersion { major: 1, minor: 2 };

pub mod quic;
pub mod s3;
pub mod tus;
pub mod ws;

use std::net::SocketAddr;

use bytes::Bytes;
use chat_server::RunningServer;
use chat_server::config::Config;
use chat_server::testing::{TestDb, TestDbKind};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub struct TestServer {
    pub server: RunningServer,
    pub db: TestDb,
    config: Config,
    _dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestServer {
    pub async fn start(kind: TestDbKind) -> Self {
        Self::start_with(kind, |_| {}).await
    }

    pub async fn start_with(kind: TestDbKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = TestDb::new(kind).await;
        let mut config = Config::for_tests(dir.path());
        config.database_url = Some(db.url.clone());
        tweak(&mut config);
        let server = chat_server::Server::bind(config.clone())
            .await
            .expect("server starts")
            .spawn();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            server,
            db,
            config,
            _dir: dir,
            client,
        }
    }

    /// Stops the server cleanly and starts it again on the same data (new ports).
    pub async fn restarted(self) -> Self {
        self.server.stop().await.expect("clean shutdown");
        let server = chat_server::Server::bind(self.config.clone())
            .await
            .expect("server starts again")
            .spawn();
        Self { server, ..self }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.http_addr
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("clean shutdown");
        self.db.cleanup().await;
    }

    pub async fn raw(&self, req: Request<Full<Bytes>>) -> Reply {
        let response = self.client.request(req).await.expect("HTTP round trip");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr()))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.request(method, path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.raw(req.body(body).expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// The direct conversation of `a` and `b` (created by `a`); its id.
    pub async fn direct(&self, a: &Account, b: &Account) -> u64 {
        let r = self
            .post(
                "/api/conversations",
                Some(&a.token),
                json!({"kind": "direct", "members": [b.id]}),
            )
            .await;
        r.body["id"].as_u64().expect("conversation id")
    }

    /// A group titled "g" created by `owner` with `members`; its id.
    pub async fn group(&self, owner: &Account, members: &[&Account]) -> u64 {
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let r = self
            .post(
                "/api/conversations",
                Some(&owner.token),
                json!({"kind": "group", "title": "g", "members": ids}),
            )
            .await;
        r.body["id"].as_u64().expect("group id")
    }

    /// The end-to-end encrypted direct conversation of `a` and `b` (created by `a`):
    /// the answer to the request.
    pub async fn encrypted_direct(&self, a: &Account, b: &Account) -> Reply {
        self.post(
            "/api/conversations",
            Some(&a.token),
            json!({"kind": "direct", "members": [b.id], "encrypted": true}),
        )
        .await
    }

    /// Registers a user; returns (access token, refresh token, user id).
    pub async fn register(&self, username: &str) -> Account {
        let r = self
            .post(
                "/api/register",
                None,
                json!({"username": username, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.raw)
        );
        Account {
            token: r.body["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh: r.body["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
            id: r.body["user"]["id"].as_u64().expect("id"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Account {
    pub token: String,
    pub refresh: String,
    pub id: u64,
}
