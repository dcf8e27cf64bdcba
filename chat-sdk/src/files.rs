//! Files: resumable uploads over tus 1.0.0 and streaming downloads.
//!
//! An upload goes in chunks (one `PATCH` each), so memory stays at one chunk whatever
//! the file's size; after a failed chunk the client asks the server where the upload
//! stands (`HEAD`) and goes on from there. A caller can pause an upload from its
//! progress callback and resume it later, even from another process, with its id.

use std::ops::ControlFlow;
use std::path::Path;

use bytes::Bytes;
use chat_api::files::{OFFSET_OCTET_STREAM, TUS_VERSION};
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::api::Auth;
use crate::error::{Error, Result};

/// Bytes sent per `PATCH`.
pub const CHUNK: usize = 4 * 1024 * 1024;

/// Attempts at one chunk before the upload fails.
const ATTEMPTS: u32 = 5;

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUpload {
    /// The upload's id; the finished file downloads under it (`GET /api/files/{id}`).
    pub id: String,
    /// Bytes the server has stored.
    pub received: u64,
    /// The file's size.
    pub length: u64,
}

impl FileUpload {
    /// Whether every byte is stored.
    pub fn is_complete(&self) -> bool {
        self.received == self.length
    }
}

fn tus_headers(req: http::request::Builder, token: &str) -> http::request::Builder {
    req.header("tus-resumable", TUS_VERSION)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::USER_AGENT,
            concat!("chat-sdk/", env!("CARGO_PKG_VERSION")),
        )
}

fn number(headers: &HeaderMap, name: &str) -> Result<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("the server's answer has no {name}")))
}

/// One request with a body of bytes; the status, headers and (JSON error) body.
async fn exchange(
    auth: &Auth,
    req: http::request::Builder,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    let req = req
        .body(Full::new(body))
        .map_err(|e| Error::Config(format!("bad request: {e}")))?;
    let response = auth.http.raw(req).await?;
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok((parts.status, parts.headers, bytes))
}

/// The error an unsuccessful answer stands for.
fn refused(status: StatusCode, body: &[u8]) -> Error {
    if status == StatusCode::UNAUTHORIZED {
        return Error::Unauthorized;
    }
    match serde_json::from_slice::<chat_api::ErrorResponse>(body) {
        Ok(r) => Error::Api {
            status: status.as_u16(),
            code: r.error.code,
            message: r.error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: "http_error".into(),
            message: status.canonical_reason().unwrap_or("error").into(),
        },
    }
}

/// Starts an upload of `length` bytes named `name`.
pub(crate) async fn create(
    auth: &Auth,
    length: u64,
    name: &str,
    media_type: &str,
) -> Result<FileUpload> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let token = auth.access_token().await?;
    let req = tus_headers(
        http::Request::builder().method(Method::POST).uri(
            auth.http
                .url(<chat_api::files::CreateUpload as chat_api::Endpoint>::PATH),
        ),
        &token,
    )
    .header("upload-length", length.to_string())
    .header(
        "upload-metadata",
        format!("filename {},filetype {}", b64(name), b64(media_type)),
    );
    let (status, headers, body) = exchange(auth, req, Bytes::new()).await?;
    if status != StatusCode::CREATED {
        return Err(refused(status, &body));
    }
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol("the server's answer has no Location".into()))?;
    let id = location.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(FileUpload {
        id,
        received: 0,
        length,
    })
}

/// Where upload `id` stands on the server.
pub(crate) async fn status(auth: &Auth, id: &str) -> Result<FileUpload> {
    let token = auth.access_token().await?;
    let req = tus_headers(
        http::Request::builder()
            .method(Method::HEAD)
            .uri(auth.http.url(&format!("/api/uploads/{id}"))),
        &token,
    );
    let (status, headers, body) = exchange(auth, req, Bytes::new()).await?;
    if status != StatusCode::OK {
        return Err(refused(status, &body));
    }
    Ok(FileUpload {
        id: id.to_owned(),
        received: number(&headers, "upload-offset")?,
        length: number(&headers, "upload-length")?,
    })
}

/// Sends the rest of `path` to upload `upload`, chunk by chunk, telling `progress`
/// (bytes stored, total) after each; stops early when it says so.
pub(crate) async fn send(
    auth: &Auth,
    mut upload: FileUpload,
    path: &Path,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<FileUpload> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let mut chunk = vec![0u8; CHUNK];
    let mut failures = 0;
    while !upload.is_complete() {
        file.seek(std::io::SeekFrom::Start(upload.received))
            .await
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let want = usize::try_from(upload.length - upload.received)
            .unwrap_or(CHUNK)
            .min(CHUNK);
        file.read_exact(&mut chunk[..want]).await.map_err(|e| {
            Error::Config(format!("{} changed while uploading: {e}", path.display()))
        })?;
        let token = auth.access_token().await?;
        let req = tus_headers(
            http::Request::builder()
                .method(Method::PATCH)
                .uri(auth.http.url(&format!("/api/uploads/{}", upload.id))),
            &token,
        )
        .header(header::CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header("upload-offset", upload.received.to_string());
        let sent = exchange(auth, req, Bytes::copy_from_slice(&chunk[..want])).await;
        match sent {
            Ok((StatusCode::NO_CONTENT, headers, _)) => {
                upload.received = number(&headers, "upload-offset")?;
                failures = 0;
            }
            Ok((status, _, body)) if status.is_client_error() && status != StatusCode::CONFLICT => {
                return Err(refused(status, &body));
            }
            // A lost connection, a server error or a conflict: ask where it stands.
            Ok(_) | Err(_) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(match sent {
                        Err(e) => e,
                        Ok((status, _, body)) => refused(status, &body),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(failures)))
                    .await;
                upload = status(auth, &upload.id).await?;
            }
        }
        if progress(upload.received, upload.length).is_break() {
            break;
        }
    }
    Ok(upload)
}

/// Streams finished file `id` into `out`; returns the number of bytes.
pub(crate) async fn download(
    auth: &Auth,
    id: &str,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64> {
    let token = auth.access_token().await?;
    let req = http::Request::builder()
        .method(Method::GET)
        .uri(auth.http.url(&format!("/api/files/{id}")))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::Config(format!("bad request: {e}")))?;
    let response = auth.http.raw(req).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = http_body_util::Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(refused(status, &bytes));
    }
    let mut written = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Unreachable(format!("reading the file: {e}")))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .await
                .map_err(|e| Error::Config(format!("writing the file: {e}")))?;
            written += data.len() as u64;
        }
    }
    out.flush()
        .await
        .map_err(|e| Error::Config(format!("writing the file: {e}")))?;
    Ok(written)
}

impl crate::Client {
    /// Uploads a file with the tus resumable-upload protocol, in chunks of
    /// [`CHUNK`] bytes so memory stays small whatever its size, retrying a chunk
    /// after a lost connection from where the server says the upload stands.
    /// `progress(stored, total)` hears of every chunk and may pause the upload
    /// ([`ControlFlow::Break`]); resume it with
    /// [`Client::resume_upload`](crate::Client::resume_upload) and the returned id.
    /// The finished file downloads
    /// under its id.
    pub async fn upload_file(
        &self,
        path: impl AsRef<std::path::Path>,
        media_type: &str,
        progress: impl FnMut(u64, u64) -> ControlFlow<()>,
    ) -> Result<FileUpload> {
        let path = path.as_ref();
        let length = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            .len();
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let upload = create(&self.inner.auth, length, &name, media_type).await?;
        send(&self.inner.auth, upload, path, progress).await
    }

    /// Goes on with upload `id` of the file at `path` from where the server has it.
    pub async fn resume_upload(
        &self,
        id: &str,
        path: impl AsRef<std::path::Path>,
        progress: impl FnMut(u64, u64) -> ControlFlow<()>,
    ) -> Result<FileUpload> {
        let upload = status(&self.inner.auth, id).await?;
        send(&self.inner.auth, upload, path.as_ref(), progress).await
    }

    /// Streams finished file `id` into `out`; returns how many bytes it had.
    pub async fn download_file(
        &self,
        id: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64> {
        download(&self.inner.auth, id, out).await
    }
}
