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

use chat_crypto::file::{FILE_CHUNK, FileKey, FileOpener, SEALED_CHUNK};
use chat_proto::body::{
    Attachments, Binary, Body, FileId, FileRef, ImageInfo, SealedAttachmentIds, SealedAttachments,
    SealedFile,
};
use chat_proto::frame::Ack;
use chat_proto::ids::ConversationId;

use crate::api::Auth;
use crate::driver::Outgoing;
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

/// What an upload sends: a file's bytes as they are, or sealed (PROTOCOL.md §5.3.1).
/// Sealing is deterministic for a key, so a sealed upload resumes at any offset.
pub(crate) enum Source<'a> {
    /// The file's bytes.
    Plain(&'a Path),
    /// The file sealed under `key`.
    Sealed {
        /// The plaintext.
        path: &'a Path,
        /// Its size.
        plain_len: u64,
        /// The file's key.
        key: &'a FileKey,
    },
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::Plain(path) | Source::Sealed { path, .. } => path,
        }
    }

    /// `want` bytes of what is uploaded, from `offset`.
    async fn read(&self, file: &mut tokio::fs::File, offset: u64, want: usize) -> Result<Bytes> {
        let failed = |e: std::io::Error| {
            Error::Config(format!(
                "{} changed while uploading: {e}",
                self.path().display()
            ))
        };
        match self {
            Source::Plain(_) => {
                let mut chunk = vec![0u8; want];
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(failed)?;
                file.read_exact(&mut chunk).await.map_err(failed)?;
                Ok(chunk.into())
            }
            Source::Sealed { plain_len, key, .. } => {
                // The plaintext chunks the range needs, read first, then sealed.
                let first = offset / SEALED_CHUNK as u64 * FILE_CHUNK as u64;
                let chunks = (want as u64).div_ceil(SEALED_CHUNK as u64) + 1;
                let len = (chunks * FILE_CHUNK as u64).min(plain_len - first) as usize;
                let mut plain = vec![0u8; len];
                file.seek(std::io::SeekFrom::Start(first))
                    .await
                    .map_err(failed)?;
                file.read_exact(&mut plain).await.map_err(failed)?;
                let sealed =
                    chat_crypto::file::sealed_range(key, *plain_len, offset, want, |at, buf| {
                        let at = (at - first) as usize;
                        let part = plain
                            .get(at..at + buf.len())
                            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                        buf.copy_from_slice(part);
                        Ok(())
                    })
                    .map_err(failed)?;
                Ok(sealed.into())
            }
        }
    }
}

/// Sends the rest of `source` to upload `upload`, chunk by chunk, telling `progress`
/// (bytes stored, total) after each; stops early when it says so.
pub(crate) async fn send(
    auth: &Auth,
    mut upload: FileUpload,
    source: &Source<'_>,
    mut progress: impl FnMut(u64, u64) -> ControlFlow<()>,
) -> Result<FileUpload> {
    let path = source.path();
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let mut failures = 0;
    while !upload.is_complete() {
        let want = usize::try_from(upload.length - upload.received)
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let chunk = source.read(&mut file, upload.received, want).await?;
        let token = auth.access_token().await?;
        let req = tus_headers(
            http::Request::builder()
                .method(Method::PATCH)
                .uri(auth.http.url(&format!("/api/uploads/{}", upload.id))),
            &token,
        )
        .header(header::CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header("upload-offset", upload.received.to_string());
        let sent = exchange(auth, req, chunk).await;
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
    let written = fetch(auth, id, out, None).await?;
    out.flush()
        .await
        .map_err(|e| Error::Config(format!("writing the file: {e}")))?;
    Ok(written)
}

async fn write(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .await
        .map_err(|e| Error::Config(format!("writing the file: {e}")))
}

/// Streams file `id` into `out`, through `opener` if it is sealed (whose last chunk
/// the caller takes); returns the number of bytes written.
async fn fetch(
    auth: &Auth,
    id: &str,
    out: &mut (impl AsyncWrite + Unpin),
    mut opener: Option<&mut FileOpener>,
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
            let plain;
            let bytes = match opener.as_mut() {
                Some(opener) => {
                    plain = opener
                        .push(&data)
                        .map_err(|e| Error::Protocol(format!("the file does not open: {e}")))?;
                    &plain[..]
                }
                None => &data[..],
            };
            write(out, bytes).await?;
            written += bytes.len() as u64;
        }
    }
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
        send(&self.inner.auth, upload, &Source::Plain(path), progress).await
    }

    /// Goes on with upload `id` of the file at `path` from where the server has it.
    pub async fn resume_upload(
        &self,
        id: &str,
        path: impl AsRef<std::path::Path>,
        progress: impl FnMut(u64, u64) -> ControlFlow<()>,
    ) -> Result<FileUpload> {
        let upload = status(&self.inner.auth, id).await?;
        send(
            &self.inner.auth,
            upload,
            &Source::Plain(path.as_ref()),
            progress,
        )
        .await
    }

    /// Streams finished file `id` into `out`; returns how many bytes it had.
    pub async fn download_file(
        &self,
        id: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64> {
        download(&self.inner.auth, id, out).await
    }

    /// Sends files in one message with a caption (which may be empty): uploads each
    /// (resumably, as [`Client::upload_file`](crate::Client::upload_file) does), then
    /// sends the message naming them. In an end-to-end encrypted conversation each file
    /// is sealed before it leaves this machine (PROTOCOL.md §5.3.1) under a fresh key
    /// that travels only inside the sealed message, and its upload carries no name or
    /// type; the server stores ciphertext. `progress(file index, stored, total)` hears
    /// of every chunk.
    pub async fn send_files(
        &self,
        conversation: ConversationId,
        caption: &str,
        files: &[FileToSend],
        mut progress: impl FnMut(usize, u64, u64),
    ) -> Result<Ack> {
        let auth = &self.inner.auth;
        if files.is_empty() || files.len() > chat_proto::limits::MAX_FILES {
            return Err(Error::Config(format!(
                "a message carries 1 to {} files",
                chat_proto::limits::MAX_FILES
            )));
        }
        let sealed = self.inner.crypto.encrypts(auth, conversation).await?;
        if sealed && self.inner.crypto.device().is_none() {
            return Err(Error::Config(
                "this conversation is end-to-end encrypted and the client has no device key".into(),
            ));
        }
        let mut plain = Vec::with_capacity(files.len());
        let mut secret = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let path = f.path.as_path();
            let size = tokio::fs::metadata(path)
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
                .len();
            let name = f.name.clone().unwrap_or_else(|| {
                path.file_name()
                    .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned())
            });
            let report = |stored, total| {
                progress(i, stored, total);
                ControlFlow::Continue(())
            };
            if sealed {
                let key = FileKey::generate();
                let source = Source::Sealed {
                    path,
                    plain_len: size,
                    key: &key,
                };
                let digest = sealed_digest(&source, size).await?;
                let length = chat_crypto::file::sealed_len(size);
                let upload = create(auth, length, "", "application/octet-stream").await?;
                let upload = send(auth, upload, &source, report).await?;
                let file = file_ref(upload.id, name, size, &f.media_type, f.image.clone());
                secret.push(SealedFile {
                    file,
                    key: Binary::from(key.as_bytes().to_vec()),
                    digest: Binary::from(digest.to_vec()),
                });
            } else {
                let upload = create(auth, size, &name, &f.media_type).await?;
                let upload = send(auth, upload, &Source::Plain(path), report).await?;
                plain.push(file_ref(
                    upload.id,
                    name,
                    size,
                    &f.media_type,
                    f.image.clone(),
                ));
            }
        }
        let client_msg_id = crate::new_client_msg_id();
        if !sealed {
            let body = Body::Attachments(Attachments {
                text: caption.into(),
                files: plain,
            });
            return self.send(conversation, client_msg_id, body).await;
        }
        let ids: Vec<FileId> = secret.iter().map(|f| f.file.id.clone()).collect();
        let document = serde_json::to_vec(&SealedAttachments {
            text: caption.into(),
            files: secret,
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        self.write_sealed(conversation, client_msg_id, &document, |envelope| {
            Outgoing::Body(Body::SealedAttachments(SealedAttachmentIds {
                envelope,
                files: ids.clone(),
            }))
        })
        .await
    }

    /// Streams a file of a message into `out`; returns how many bytes it wrote. A file
    /// of an end-to-end encrypted message (opened by this client) is opened as it
    /// arrives, each chunk checked, and the whole checked against the message's digest
    /// at the end: on any failure the call fails, and what was written must be thrown
    /// away.
    pub async fn download_attachment(
        &self,
        file: &FileRef,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64> {
        let Some((key, digest)) = self.inner.crypto.file_key(&file.id) else {
            return download(&self.inner.auth, file.id.as_str(), out).await;
        };
        let key = FileKey::from_bytes(&key).map_err(|e| Error::Protocol(e.to_string()))?;
        let sealed_len = chat_crypto::file::sealed_len(file.size);
        let mut opener =
            FileOpener::new(key, sealed_len, digest).map_err(|e| Error::Protocol(e.to_string()))?;
        let written = fetch(&self.inner.auth, file.id.as_str(), out, Some(&mut opener)).await?;
        let last = opener
            .finish()
            .map_err(|e| Error::Protocol(format!("the file does not open: {e}")))?;
        write(out, &last).await?;
        out.flush()
            .await
            .map_err(|e| Error::Config(format!("writing the file: {e}")))?;
        Ok(written + last.len() as u64)
    }
}

/// A file to send with [`Client::send_files`](crate::Client::send_files).
#[derive(Clone, Debug)]
pub struct FileToSend {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// The name people see; the path's file name when `None`.
    pub name: Option<String>,
    /// Its media type (`image/png`); `application/octet-stream` when unknown.
    pub media_type: String,
    /// For an image: its size in pixels and a small thumbnail (the SDK decodes no
    /// images).
    pub image: Option<ImageInfo>,
}

impl FileToSend {
    /// A file at `path` of type `media_type`, named after its file name.
    pub fn new(path: impl Into<std::path::PathBuf>, media_type: &str) -> Self {
        Self {
            path: path.into(),
            name: None,
            media_type: media_type.into(),
            image: None,
        }
    }
}

fn file_ref(
    id: String,
    name: String,
    size: u64,
    media_type: &str,
    image: Option<ImageInfo>,
) -> FileRef {
    FileRef {
        id: FileId(id),
        name,
        size,
        media_type: media_type.into(),
        image,
    }
}

/// SHA-256 of a sealed file, computed a chunk at a time.
async fn sealed_digest(source: &Source<'_>, plain_len: u64) -> Result<[u8; 32]> {
    use sha2::Digest as _;
    let path = source.path();
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let total = chat_crypto::file::sealed_len(plain_len);
    let mut hasher = sha2::Sha256::new();
    let mut at = 0;
    while at < total {
        let want = (total - at).min(CHUNK as u64) as usize;
        hasher.update(source.read(&mut file, at, want).await?);
        at += want as u64;
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a sealed upload sends from any offset (where a resumed upload starts,
    /// and every later `PATCH`) are exactly those of the whole file sealed at once.
    #[tokio::test]
    async fn a_sealed_upload_reads_the_same_bytes_from_any_offset() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("plain");
        let plain: Vec<u8> = (0..(2 * CHUNK + 70_000))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &plain).expect("write");
        let key = FileKey::generate();
        let (whole, _) = chat_crypto::file::seal_file(&key, &plain);
        let source = Source::Sealed {
            path: &path,
            plain_len: plain.len() as u64,
            key: &key,
        };
        let mut file = tokio::fs::File::open(&path).await.expect("open");
        let total = whole.len();
        let offsets = [
            0,
            1,
            SEALED_CHUNK - 1,
            SEALED_CHUNK,
            CHUNK,
            CHUNK + 12_345,
            total - 17,
            total - 1,
        ];
        for offset in offsets {
            let want = (total - offset).min(CHUNK);
            let got = source
                .read(&mut file, offset as u64, want)
                .await
                .expect("reads");
            assert!(got[..] == whole[offset..offset + want], "offset {offset}");
        }
    }
}
