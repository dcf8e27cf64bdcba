//! A standard tus client, unchanged, against the server: tuspy (the Python reference
//! client) uploads a file in chunks, stops partway, resumes with a new uploader from
//! the offset the server reports, and the download gives back the same bytes.
//!
//! The client runs from `target/py-venv` (scripts/test.sh creates it with tuspy; or
//! point `CHAT_TEST_PYTHON` at a Python that has tuspy).

mod common;

use chat_server::testing::TestDbKind;
use common::TestServer;
use http::StatusCode;

const SCRIPT: &str = r#"
import sys
from tusclient import client

base, token, path = sys.argv[1:4]
tus = client.TusClient(base + "/api/uploads", headers={"Authorization": "Bearer " + token})
first = tus.uploader(path, chunk_size=64 * 1024, metadata={"filename": "notes ü.txt", "filetype": "text/plain"})
first.upload(stop_at=200 * 1024)
assert first.offset == 200 * 1024, first.offset
# A new uploader for the same URL learns the offset from the server and goes on.
second = tus.uploader(path, url=first.url, chunk_size=64 * 1024)
assert second.get_offset() == 200 * 1024
second.upload()
print(first.url)
"#;

fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CHAT_TEST_PYTHON") {
        return p.into();
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test.sh creates it (python3 -m venv target/py-venv && \
         target/py-venv/bin/pip install tuspy)",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_and_resumes() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let ann = s.register("ann").await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("notes.txt");
    let content: Vec<u8> = (0..500_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    std::fs::write(&file, &content).expect("write");
    let out = tokio::process::Command::new(python())
        .args(["-c", SCRIPT])
        .arg(format!("http://{}", s.addr()))
        .arg(&ann.token)
        .arg(&file)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "tuspy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).expect("utf-8");
    let id = url.trim().rsplit('/').next().expect("id").to_owned();
    let r = s.get(&format!("/api/files/{id}"), &ann.token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.raw.len(), content.len());
    assert!(r.raw == content, "the bytes differ");
    assert_eq!(r.headers[http::header::CONTENT_TYPE], "text/plain");
    assert_eq!(
        r.headers[http::header::CONTENT_DISPOSITION],
        "inline; filename=\"notes _.txt\"; filename*=UTF-8''notes%20%C3%BC.txt"
    );
    s.stop().await;
}
