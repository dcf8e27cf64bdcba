//! Files over HTTP on both backends and both file stores (a directory; an
//! S3-compatible bucket on a real S3 server, moto, with the `s3` feature): tus 1.0.0
//! uploads (creation, resume after a broken connection, wrong offsets, termination,
//! limits and quotas, expiry) and downloads (owner only, ranges, caching, safe headers
//! for hostile names and types).

mod common;

use bytes::Bytes;
use chat_server::config::Config;
use chat_server::testing::TestDbKind;
use common::TestServer;
use common::s3::{Bucket, Moto};
use common::tus::{TUS, b64, create, download, head, location, offset, patch, terminate};
use http::{Method, StatusCode, header};
use http_body_util::Full;

/// Where a test server keeps its files.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Directory,
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    Bucket,
}

/// A test server with its file store (and the S3 server behind a bucket).
struct Files {
    s: TestServer,
    bucket: Option<(Moto, Bucket)>,
}

impl Files {
    async fn start(kind: TestDbKind, store: Store, tweak: impl FnOnce(&mut Config)) -> Self {
        let bucket = match store {
            Store::Directory => None,
            Store::Bucket => {
                let moto = Moto::start().await;
                let bucket = moto.bucket().await;
                Some((moto, bucket))
            }
        };
        let s = TestServer::start_with(kind, |c| {
            tweak(c);
            if let Some((_, b)) = &bucket {
                c.file_store = Some(b.setting.clone());
                c.file_store_options = b.options.clone();
            }
        })
        .await;
        Self { s, bucket }
    }

    /// Whether the store holds any bytes of upload `id`.
    async fn holds(&self, id: &str) -> bool {
        match &self.bucket {
            None => self
                .s
                .server
                .app
                .config()
                .data_dir
                .join("files")
                .join(id)
                .exists(),
            Some((moto, bucket)) => !moto.keys(bucket, &format!("files/{id}/")).await.is_empty(),
        }
    }
}

async fn uploads(kind: TestDbKind, store: Store) {
    let files = Files::start(kind, store, |c| {
        c.max_file_size = 4096;
        c.file_quota = 6000;
        c.max_uploads = 2;
    })
    .await;
    let s = &files.s;
    let (ann, bob) = (s.register("ann").await, s.register("bob").await);

    // Discovery without a token.
    let r = s
        .raw(
            s.request(Method::OPTIONS, "/api/uploads")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers["tus-version"], TUS);
    assert_eq!(
        r.headers["tus-extension"],
        "creation,termination,expiration"
    );
    assert_eq!(r.headers["tus-max-size"], "4096");

    // A file in three pieces, the second one repeated at a stale offset.
    let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let meta = format!(
        "filename {},filetype {}",
        b64("holiday.png"),
        b64("image/png")
    );
    let created = create(s, &ann, content.len() as u64, &meta).await;
    let path = location(&created);
    assert!(created.headers.contains_key("upload-expires"));
    let id = path.rsplit('/').next().expect("id").to_owned();
    assert_eq!(offset(&head(s, &ann, &path).await), 0);
    let r = patch(s, &ann, &path, 0, &content[..1000]).await;
    assert_eq!((r.status, offset(&r)), (StatusCode::NO_CONTENT, 1000));
    let r = patch(s, &ann, &path, 500, &content[500..1500]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "offset_mismatch")
    );
    assert_eq!(offset(&r), 1000, "a conflict says where the upload is");
    let r = patch(s, &ann, &path, 1000, &content[1000..2500]).await;
    assert_eq!(offset(&r), 2500);
    // Not finished: not downloadable yet, and nobody else sees it at all.
    assert_eq!(
        download(s, &ann, &id, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(head(s, &bob, &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        patch(s, &bob, &path, 2500, b"x").await.status,
        StatusCode::NOT_FOUND
    );
    // More than announced is refused; what fits is kept.
    let mut over = content[2500..].to_vec();
    over.extend_from_slice(b"extra bytes past the end");
    let r = patch(s, &ann, &path, 2500, &over).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "past_upload_length")
    );
    let status = head(s, &ann, &path).await;
    assert_eq!(
        offset(&status),
        2500,
        "a body that says it goes past the end stores nothing"
    );
    let r = patch(s, &ann, &path, 2500, &content[2500..]).await;
    assert_eq!(offset(&r), 3000);
    assert!(
        !r.headers.contains_key("upload-expires"),
        "finished uploads do not expire"
    );

    // Downloads: the bytes, a range, caching, an inline image.
    let r = download(s, &ann, &id, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.raw[..], &content[..]);
    assert_eq!(r.headers[header::CONTENT_TYPE], "image/png");
    assert!(
        r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("disposition")
            .starts_with("inline; filename=\"holiday.png\"")
    );
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(
        r.headers[header::CACHE_CONTROL]
            .to_str()
            .expect("cc")
            .contains("immutable")
    );
    let etag = r.headers[header::ETAG].clone();
    let r = download(s, &ann, &id, Some("bytes=100-199")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.raw[..], &content[100..200]);
    assert_eq!(r.headers[header::CONTENT_RANGE], "bytes 100-199/3000");
    let r = download(s, &ann, &id, Some("bytes=5000-")).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = s
        .raw(
            s.request(Method::GET, &format!("/api/files/{id}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", ann.token))
                .header(header::IF_NONE_MATCH, etag)
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        download(s, &bob, &id, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = s
        .raw(
            s.request(Method::GET, &format!("/api/files/{id}"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A hostile name and an active type: stored as text, served as a download.
    let meta = format!(
        "filename {},filetype {}",
        b64(&format!(
            "../../x\u{202e}lmth.{}\r\n.html",
            "a".repeat(10_000)
        )),
        b64("text/html")
    );
    let hostile = location(&create(s, &ann, 5, &meta).await);
    let hid = hostile.rsplit('/').next().expect("id").to_owned();
    patch(s, &ann, &hostile, 0, b"<b>x").await;
    patch(s, &ann, &hostile, 4, b">").await;
    let r = download(s, &ann, &hid, None).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
    let disposition = r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"_.._x"),
        "{disposition}"
    );
    assert!(!disposition.contains('\r') && !disposition.contains('/'));

    // Limits: too large before any byte (413), the quota, unfinished uploads at once.
    let r = create(s, &ann, 4097, "").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
    );
    let r = create(s, &ann, 3000, "").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded")
    );
    let first = location(&create(s, &bob, 10, "").await);
    location(&create(s, &bob, 10, "").await);
    let r = create(s, &bob, 10, "").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads")
    );
    // Termination frees the slot and the bytes.
    let r = terminate(s, &bob, &first).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(head(s, &bob, &first).await.status, StatusCode::NOT_FOUND);
    assert!(!files.holds(first.rsplit('/').next().expect("id")).await);
    location(&create(s, &bob, 10, "").await);

    // The protocol version is required (400 without, 412 for another); the body type
    // too; a token always.
    for (version, status) in [
        (None, StatusCode::BAD_REQUEST),
        (Some("0.2.2"), StatusCode::PRECONDITION_FAILED),
    ] {
        let mut req = s
            .request(Method::POST, "/api/uploads")
            .header(header::AUTHORIZATION, format!("Bearer {}", ann.token))
            .header("upload-length", "1");
        if let Some(v) = version {
            req = req.header("tus-resumable", v);
        }
        let r = s
            .raw(req.body(Full::new(Bytes::new())).expect("request"))
            .await;
        assert_eq!(r.status, status);
    }
    let r = s
        .raw(
            s.request(Method::PATCH, &path)
                .header("tus-resumable", TUS)
                .header(header::AUTHORIZATION, format!("Bearer {}", ann.token))
                .header(header::CONTENT_TYPE, "application/json")
                .header("upload-offset", "0")
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .raw(
            s.request(Method::POST, "/api/uploads")
                .header("tus-resumable", TUS)
                .header("upload-length", "1")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    files.s.stop().await;
}

#[tokio::test]
async fn sqlite_uploads() {
    uploads(TestDbKind::Sqlite, Store::Directory).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_uploads() {
    uploads(TestDbKind::Postgres, Store::Directory).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_uploads_in_a_bucket() {
    uploads(TestDbKind::Sqlite, Store::Bucket).await;
}

#[cfg(all(feature = "s3", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_uploads_in_a_bucket() {
    uploads(TestDbKind::Postgres, Store::Bucket).await;
}

/// A file of several parts in a bucket (the server puts one per 4 MiB it receives):
/// uploaded in pieces that do not line up with the parts, read whole and by ranges
/// that cross them, deleted with all its parts.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_in_a_bucket() {
    const MIB: usize = 1024 * 1024;
    let files = Files::start(TestDbKind::Sqlite, Store::Bucket, |c| {
        c.max_file_size = 64 * MIB as u64;
    })
    .await;
    let s = &files.s;
    let ann = s.register("ann").await;
    let content: Vec<u8> = (0..11 * MIB + 123).map(|i| (i % 241) as u8).collect();
    let path = location(&create(s, &ann, content.len() as u64, "").await);
    let id = path.rsplit('/').next().expect("id").to_owned();
    let mut at = 0;
    for piece in [3 * MIB, 5 * MIB + 17, content.len()] {
        let r = patch(s, &ann, &path, at as u64, &content[at..piece]).await;
        assert_eq!(offset(&r), piece as u64);
        at = piece;
    }
    let (moto, bucket) = files.bucket.as_ref().expect("bucket");
    let parts = moto.keys(bucket, &format!("files/{id}/")).await;
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert_eq!(&download(s, &ann, &id, None).await.raw[..], &content[..]);
    for (first, last) in [
        (0, 9),
        (3 * MIB - 5, 3 * MIB + 5),
        (MIB, 9 * MIB),
        (11 * MIB, 11 * MIB + 122),
    ] {
        let r = download(s, &ann, &id, Some(&format!("bytes={first}-{last}"))).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.raw[..], &content[first..=last], "{first}-{last}");
    }
    let r = terminate(s, &ann, &path).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!files.holds(&id).await, "every part is deleted");
    files.s.stop().await;
}

/// A connection that breaks mid-body keeps what arrived: the client asks where it
/// stands and resumes from there.
async fn a_broken_connection_keeps_what_arrived_and_resumes(store: Store) {
    use tokio::io::AsyncWriteExt as _;
    let files = Files::start(TestDbKind::Sqlite, store, |_| {}).await;
    let s = &files.s;
    let ann = s.register("ann").await;
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let path = location(&create(s, &ann, content.len() as u64, "").await);
    // Announce the whole body, send 120,000 bytes, and drop the connection.
    let mut tcp = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let head_text = format!(
        "PATCH {path} HTTP/1.1\r\nhost: x\r\ntus-resumable: 1.0.0\r\nauthorization: Bearer {}\r\n\
         content-type: application/offset+octet-stream\r\nupload-offset: 0\r\ncontent-length: {}\r\n\r\n",
        ann.token,
        content.len()
    );
    tcp.write_all(head_text.as_bytes()).await.expect("head");
    tcp.write_all(&content[..120_000]).await.expect("part");
    tcp.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(tcp);
    // The server stored what arrived (durably, then recorded it).
    let mut at = 0;
    for _ in 0..50 {
        at = offset(&head(s, &ann, &path).await);
        if at == 120_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(at, 120_000);
    let r = patch(s, &ann, &path, at, &content[at as usize..]).await;
    assert_eq!(offset(&r), content.len() as u64);
    let id = path.rsplit('/').next().expect("id");
    assert_eq!(&download(s, &ann, id, None).await.raw[..], &content[..]);
    files.s.stop().await;
}

#[tokio::test]
async fn a_broken_connection_keeps_what_arrived_and_resumes_in_a_directory() {
    a_broken_connection_keeps_what_arrived_and_resumes(Store::Directory).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_keeps_what_arrived_and_resumes_in_a_bucket() {
    a_broken_connection_keeps_what_arrived_and_resumes(Store::Bucket).await;
}

/// An unfinished upload past its expiry answers 410 and is collected with its bytes; a
/// finished one stays.
async fn expired_uploads_are_gone_and_collected(store: Store) {
    let files = Files::start(TestDbKind::Sqlite, store, |c| c.upload_expiry_hours = 0).await;
    let s = &files.s;
    let ann = s.register("ann").await;
    let unfinished = location(&create(s, &ann, 10, "").await);
    // Bytes in the store (it expired at once, so not through a PATCH), so that there
    // is something to collect in every store.
    let mut writer = s
        .server
        .app
        .blobs()
        .writer(unfinished.rsplit('/').next().expect("id"), 0)
        .await
        .expect("writer");
    writer
        .write(Bytes::from_static(b"half"))
        .await
        .expect("write");
    writer.sync().await.expect("sync");
    // An empty file is finished when created.
    let finished = location(&create(s, &ann, 0, "").await);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = head(s, &ann, &unfinished).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(
        patch(s, &ann, &unfinished, 0, b"late").await.status,
        StatusCode::GONE
    );
    let id = |p: &str| p.rsplit('/').next().expect("id").to_owned();
    assert!(files.holds(&id(&unfinished)).await);
    let collected = chat_server::http::files::collect_once(&s.server.app)
        .await
        .expect("collects");
    assert_eq!(collected, 1);
    assert!(
        !files.holds(&id(&unfinished)).await,
        "its bytes are deleted"
    );
    assert_eq!(
        head(s, &ann, &unfinished).await.status,
        StatusCode::NOT_FOUND
    );
    let r = download(s, &ann, &id(&finished), None).await;
    assert_eq!((r.status, r.raw.len()), (StatusCode::OK, 0));
    files.s.stop().await;
}

#[tokio::test]
async fn expired_uploads_are_gone_and_collected_in_a_directory() {
    expired_uploads_are_gone_and_collected(Store::Directory).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_uploads_are_gone_and_collected_in_a_bucket() {
    expired_uploads_are_gone_and_collected(Store::Bucket).await;
}
