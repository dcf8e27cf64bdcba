//! A real S3-compatible server for the file store tests: moto in server mode, from the
//! Python venv scripts/test.sh makes (`target/py-venv`, or `CHAT_TEST_MOTO` naming a
//! `moto_server`). Each test starts its own on a free port and makes its own bucket.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

pub struct Moto {
    port: u16,
    _child: Child,
}

/// A bucket's settings for the server: `--file-store` and the S3 options.
pub struct Bucket {
    pub name: String,
    pub setting: String,
    pub options: Vec<(String, String)>,
    /// The same as `AWS_*` environment variables, for a server in its own process.
    pub env: Vec<(String, String)>,
}

fn moto_server() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CHAT_TEST_MOTO") {
        return p.into();
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/moto_server");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test.sh creates it (python3 -m venv target/py-venv && \
         target/py-venv/bin/pip install 'moto[server]')",
        venv.display()
    );
    venv
}

impl Moto {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server starts");
        let moto = Self {
            port,
            _child: child,
        };
        for _ in 0..300 {
            if let Ok((status, _)) = moto.request(Method::GET, "/").await
                && status.is_success()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer within 30 s");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn request(&self, method: Method, path: &str) -> Result<(StatusCode, Bytes), String> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint()))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = client.request(req).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// A new bucket, its files under `files/`.
    pub async fn bucket(&self) -> Bucket {
        let name = format!("chat-test-{:016x}", rand::random::<u64>());
        let (status, body) = self
            .request(Method::PUT, &format!("/{name}"))
            .await
            .expect("bucket request");
        assert!(status.is_success(), "creating {name}: {status} {body:?}");
        let settings = [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", "chat-test".into()),
            ("aws_secret_access_key", "chat-test-secret".into()),
        ];
        Bucket {
            setting: format!("s3://{name}/files"),
            options: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            env: settings
                .iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                .collect(),
            name,
        }
    }

    /// The keys in `bucket` under `prefix`.
    pub async fn keys(&self, bucket: &Bucket, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request(
                Method::GET,
                &format!("/{}?list-type=2&prefix={prefix}", bucket.name),
            )
            .await
            .expect("list request");
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let xml = String::from_utf8_lossy(&body);
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}
