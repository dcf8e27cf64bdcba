//! tus 1.0.0 requests and downloads over raw HTTP, for the file tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::Full;

use super::{Account, Reply, TestServer};

pub const TUS: &str = "1.0.0";

pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `POST /api/uploads` of `length` bytes; the reply.
pub async fn create(s: &TestServer, who: &Account, length: u64, metadata: &str) -> Reply {
    let req = s
        .request(Method::POST, "/api/uploads")
        .header("tus-resumable", TUS)
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
        .header("upload-length", length.to_string())
        .header("upload-metadata", metadata)
        .body(Full::new(Bytes::new()))
        .expect("request");
    s.raw(req).await
}

/// The upload's path from a creation reply.
pub fn location(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.headers[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned()
}

pub async fn patch(s: &TestServer, who: &Account, path: &str, offset: u64, bytes: &[u8]) -> Reply {
    let req = s
        .request(Method::PATCH, path)
        .header("tus-resumable", TUS)
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
        .header(header::CONTENT_TYPE, "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(Full::new(Bytes::copy_from_slice(bytes)))
        .expect("request");
    s.raw(req).await
}

/// `DELETE` of an upload (tus termination).
pub async fn terminate(s: &TestServer, who: &Account, path: &str) -> Reply {
    let req = s
        .request(Method::DELETE, path)
        .header("tus-resumable", TUS)
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
        .body(Full::new(Bytes::new()))
        .expect("request");
    s.raw(req).await
}

pub async fn head(s: &TestServer, who: &Account, path: &str) -> Reply {
    let req = s
        .request(Method::HEAD, path)
        .header("tus-resumable", TUS)
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token))
        .body(Full::new(Bytes::new()))
        .expect("request");
    s.raw(req).await
}

pub fn offset(r: &Reply) -> u64 {
    r.headers["upload-offset"]
        .to_str()
        .expect("offset")
        .parse()
        .expect("number")
}

pub async fn download(s: &TestServer, who: &Account, id: &str, range: Option<&str>) -> Reply {
    let mut req = s
        .request(Method::GET, &format!("/api/files/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", who.token));
    if let Some(r) = range {
        req = req.header(header::RANGE, r);
    }
    s.raw(req.body(Full::new(Bytes::new())).expect("request"))
        .await
}

/// Uploads `bytes` as `who` in one request; the new file's id.
pub async fn upload(s: &TestServer, who: &Account, name: &str, bytes: &[u8]) -> String {
    let path = location(
        &create(
            s,
            who,
            bytes.len() as u64,
            &format!("filename {}", b64(name)),
        )
        .await,
    );
    if !bytes.is_empty() {
        let r = patch(s, who, &path, 0, bytes).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    }
    path.rsplit('/').next().expect("id").to_owned()
}
