//! Files over HTTP: resumable uploads by the tus 1.0.0 protocol (core, creation,
//! termination, expiration) and downloads with `Range`.
//!
//! An upload's bytes stream from the request body to the file store chunk by chunk,
//! so memory does not grow with a file; what was stored durably before a connection
//! broke counts, and the client resumes from `Upload-Offset`. A slow upload is never
//! cut while bytes keep coming: it is exempt from the request timeout and ends only
//! after [`IDLE`] without data.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chat_api::files::{OFFSET_OCTET_STREAM, TUS_EXTENSIONS, TUS_VERSION};
use chat_proto::ids::{Timestamp, UserId};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::error::ApiError;
use super::request;
use super::{Body, HandlerResult, Params, empty, full};
use crate::app::App;
use crate::store::{NewUpload, Upload, UploadRefusal};

/// How long an upload may send nothing before the server ends the request (what was
/// stored until then is kept).
pub const IDLE: Duration = Duration::from_secs(60);

/// Longest file name kept, in characters.
const MAX_NAME: usize = 255;

/// Uploads being written by a request right now: a second writer is refused.
static WRITING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Holds an upload's write slot until dropped.
struct Writing(String);

impl Writing {
    fn take(id: &str) -> Option<Self> {
        let mut set = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        set.get_or_insert_with(HashSet::new)
            .insert(id.to_owned())
            .then(|| Writing(id.to_owned()))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut set = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = set.as_mut() {
            set.remove(&self.0);
        }
    }
}

fn with_tus(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Every tus request but `OPTIONS` names the protocol version: without one it is a bad
/// request (400), with another one tus's 412.
fn require_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        None => Err(ApiError::bad_request(
            "tus_resumable_required",
            format!("send Tus-Resumable: {TUS_VERSION}"),
        )),
        Some(_) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
            format!("this server speaks tus {TUS_VERSION} (send Tus-Resumable: {TUS_VERSION})"),
        )),
    }
}

fn http_date(t: Timestamp) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(t.0).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

/// A client's file name made safe to keep and show: no control or direction-override
/// characters, no path separators, at most 255 characters.
pub fn clean_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .take(MAX_NAME)
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').to_owned();
    if trimmed.is_empty() {
        "file".into()
    } else {
        trimmed
    }
}

/// A client's media type if it is one (`type/subtype`, token characters), else empty.
fn clean_media_type(raw: &str) -> String {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => essence,
        _ => String::new(),
    }
}

/// The `Upload-Metadata` pairs (`key base64,key base64,key`).
fn metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = header_str(headers, "upload-metadata") else {
        return Ok(Vec::new());
    };
    let bad = || ApiError::bad_request("invalid_metadata", "Upload-Metadata is malformed");
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, ' ');
        let key = parts.next().ok_or_else(bad)?.to_owned();
        let value = match parts.next() {
            Some(v) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| bad())?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => String::new(),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// `OPTIONS /api/uploads`.
pub fn options(app: &App) -> HandlerResult {
    let mut response = with_tus(empty(StatusCode::NO_CONTENT));
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    if let Ok(v) = HeaderValue::from_str(&app.config().max_file_size.to_string()) {
        headers.insert("tus-max-size", v);
    }
    Ok(response)
}

/// `POST /api/uploads`: a new upload of `Upload-Length` bytes.
pub async fn create(app: App, req: Request<Incoming>) -> HandlerResult {
    require_tus(req.headers())?;
    let caller = request::authenticate(&app, &req).await?;
    let headers = req.headers();
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "length_required",
            "Upload-Length is required (creation-defer-length is not served)",
        ));
    }
    let length: u64 = header_str(headers, "upload-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("length_required", "Upload-Length is required"))?;
    let max = app.config().max_file_size;
    if length > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!("files may be at most {max} bytes"),
        ));
    }
    let meta = metadata(headers)?;
    let get = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let name = clean_name(get("filename").or_else(|| get("name")).unwrap_or("file"));
    let media_type = clean_media_type(get("filetype").or_else(|| get("type")).unwrap_or(""));
    let now = Timestamp::now();
    let ttl = app.config().upload_expiry_hours.saturating_mul(3_600_000);
    let upload = NewUpload {
        id: crate::blobs::new_id(),
        owner: caller.user.id,
        length,
        name,
        media_type,
        created_at: now,
        expires_at: Timestamp(now.0.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
    };
    let id = upload.id.clone();
    app.blobs().create(&id).await.map_err(ApiError::internal)?;
    let config = app.config();
    let created = match app
        .store()
        .create_upload(upload, config.file_quota, config.max_uploads)
        .await
    {
        Ok(Ok(created)) => created,
        refused => {
            let _ = app.blobs().delete(&id).await;
            return Err(match refused? {
                Err(UploadRefusal::Quota) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "quota_exceeded",
                    format!("your files may take at most {} bytes", config.file_quota),
                ),
                Err(UploadRefusal::TooManyInProgress) => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_uploads",
                    format!("at most {} unfinished uploads at once", config.max_uploads),
                ),
                Ok(_) => unreachable!("handled above"),
            });
        }
    };
    metrics::counter!(crate::metrics::UPLOADS, "event" => "created").increment(1);
    let mut response = with_tus(empty(StatusCode::CREATED));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/uploads/{}", created.id)) {
        headers.insert(header::LOCATION, v);
    }
    progress_headers(headers, &created);
    Ok(response)
}

/// `Upload-Offset`, `Upload-Length` and, unfinished, `Upload-Expires`.
fn progress_headers(headers: &mut HeaderMap, upload: &Upload) {
    if let Ok(v) = HeaderValue::from_str(&upload.received.to_string()) {
        headers.insert("upload-offset", v);
    }
    if let Ok(v) = HeaderValue::from_str(&upload.length.to_string()) {
        headers.insert("upload-length", v);
    }
    if upload.completed_at.is_none()
        && let Ok(v) = HeaderValue::from_str(&http_date(upload.expires_at))
    {
        headers.insert("upload-expires", v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The caller, and the upload the path names if there is one.
async fn named_upload(
    app: &App,
    req: &Request<Incoming>,
    params: &Params,
) -> Result<(UserId, Option<Upload>), ApiError> {
    let caller = request::authenticate(app, req).await?;
    let id = params.first().map(String::as_str).unwrap_or("");
    let upload = match crate::blobs::valid_id(id) {
        true => app.store().upload(id).await?,
        false => None,
    };
    Ok((caller.user.id, upload))
}

/// The caller's own upload named by the path, else 404 (whoever else asks).
async fn own_upload(
    app: &App,
    req: &Request<Incoming>,
    params: &Params,
) -> Result<Upload, ApiError> {
    match named_upload(app, req, params).await? {
        (caller, Some(u)) if u.owner == caller => Ok(u),
        _ => Err(ApiError::not_found("upload")),
    }
}

/// An unfinished upload past its expiry is gone, as tus's expiration says (410).
fn check_expiry(upload: &Upload) -> Result<(), ApiError> {
    if upload.completed_at.is_none() && upload.expires_at < Timestamp::now() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "upload_expired",
            "this upload expired; start a new one",
        ));
    }
    Ok(())
}

/// `HEAD /api/uploads/{id}`: how much is stored.
pub async fn status(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    require_tus(req.headers())?;
    let upload = own_upload(&app, &req, &params).await?;
    check_expiry(&upload)?;
    let mut response = with_tus(empty(StatusCode::OK));
    progress_headers(response.headers_mut(), &upload);
    Ok(response)
}

/// `PATCH /api/uploads/{id}`: appends the body at `Upload-Offset`.
pub async fn append(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    require_tus(req.headers())?;
    let upload = own_upload(&app, &req, &params).await?;
    check_expiry(&upload)?;
    let content_type = header_str(req.headers(), "content-type").unwrap_or("");
    if !content_type.eq_ignore_ascii_case(OFFSET_OCTET_STREAM) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be {OFFSET_OCTET_STREAM}"),
        ));
    }
    let offset: u64 = header_str(req.headers(), "upload-offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("offset_required", "Upload-Offset is required"))?;
    if offset != upload.received {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!("the upload is at {}, not {offset}", upload.received),
        )
        .into_response();
        progress_headers(e.headers_mut(), &upload);
        return Ok(with_tus(e));
    }
    if let Some(len) =
        header_str(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok())
        && offset.saturating_add(len) > upload.length
    {
        return Err(ApiError::bad_request(
            "past_upload_length",
            format!("the body would end past Upload-Length ({})", upload.length),
        ));
    }
    let Some(_slot) = Writing::take(&upload.id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "upload_busy",
            "another request is writing this upload",
        ));
    };
    let (reached, failure) = receive(&app, &upload, req.into_body()).await;
    if reached > upload.received
        && !app
            .store()
            .advance_upload(&upload.id, upload.received, reached, Timestamp::now())
            .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            "the upload moved on meanwhile",
        ));
    }
    metrics::counter!(crate::metrics::UPLOAD_BYTES).increment(reached - upload.received);
    if let Some(failure) = failure {
        return Err(failure);
    }
    let done = Upload {
        received: reached,
        completed_at: (reached == upload.length).then(Timestamp::now),
        ..upload
    };
    if done.completed_at.is_some() {
        metrics::counter!(crate::metrics::UPLOADS, "event" => "completed").increment(1);
    }
    let mut response = with_tus(empty(StatusCode::NO_CONTENT));
    progress_headers(response.headers_mut(), &done);
    Ok(response)
}

/// Streams a body into the upload's file; returns the length stored durably, and why
/// it stopped early if it did. Whatever arrived before a failure is kept.
async fn receive(app: &App, upload: &Upload, mut body: Incoming) -> (u64, Option<ApiError>) {
    let mut writer = match app.blobs().writer(&upload.id, upload.received).await {
        Ok(w) => w,
        Err(e) => return (upload.received, Some(ApiError::internal(e))),
    };
    let mut failure = None;
    loop {
        let frame = match tokio::time::timeout(IDLE, body.frame()).await {
            Err(_) => {
                failure = Some(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "upload_idle",
                    "no data for a minute; resume from Upload-Offset",
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                // The client went away: keep what arrived.
                failure = Some(ApiError::bad_request(
                    "body_interrupted",
                    "the body ended early",
                ));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if writer.written() + chunk.len() as u64 > upload.length {
            failure = Some(ApiError::bad_request(
                "past_upload_length",
                format!("the body goes past Upload-Length ({})", upload.length),
            ));
            let keep = (upload.length - writer.written()) as usize;
            if let Err(e) = writer.write(chunk.slice(..keep)).await {
                failure = Some(ApiError::internal(e));
            }
            break;
        }
        if let Err(e) = writer.write(chunk).await {
            failure = Some(ApiError::internal(e));
            break;
        }
    }
    match writer.sync().await {
        Ok(reached) => (reached, failure),
        Err(e) => (upload.received, Some(ApiError::internal(e))),
    }
}

/// `DELETE /api/uploads/{id}`: ends an upload and deletes its bytes.
pub async fn end(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    require_tus(req.headers())?;
    let upload = own_upload(&app, &req, &params).await?;
    if upload.conversation.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "file_in_message",
            "this file is in a message; deleting the message deletes it",
        ));
    }
    app.store().delete_upload(&upload.id).await?;
    app.blobs()
        .delete(&upload.id)
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!(crate::metrics::UPLOADS, "event" => "terminated").increment(1);
    Ok(with_tus(empty(StatusCode::NO_CONTENT)))
}

/// How often uploads are collected.
const COLLECT_EVERY: Duration = Duration::from_secs(600);

/// How long a finished upload may wait to be put in a message before it is collected.
pub const UNATTACHED_TTL: Duration = Duration::from_secs(24 * 3600);

/// Deletes, now and then until the task is aborted, the rows and bytes of unfinished
/// uploads past their expiry, of finished ones no message took within
/// [`UNATTACHED_TTL`], and of those whose message was deleted.
pub async fn collect_expired(app: App) {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    loop {
        tick.tick().await;
        match collect_once(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "collected expired uploads"),
            Err(e) => tracing::warn!(error = ?e, "collecting expired uploads failed"),
        }
    }
}

/// One collection pass; returns how many uploads were deleted.
pub async fn collect_once(app: &App) -> Result<usize, ApiError> {
    let mut deleted = 0;
    loop {
        let now = Timestamp::now();
        let unattached_before = Timestamp(now.0 - UNATTACHED_TTL.as_millis() as i64);
        let expired = app
            .store()
            .collectable_uploads(now, unattached_before, 100)
            .await?;
        if expired.is_empty() {
            return Ok(deleted);
        }
        for id in expired {
            app.blobs().delete(&id).await.map_err(ApiError::internal)?;
            app.store().delete_upload(&id).await?;
            metrics::counter!(crate::metrics::UPLOADS, "event" => "collected").increment(1);
            deleted += 1;
        }
    }
}

/// Media types a browser could run or render as a page: always downloaded, never shown.
fn active_content(media_type: &str) -> bool {
    let inert = (media_type.starts_with("image/") && media_type != "image/svg+xml")
        || matches!(
            media_type,
            "text/plain" | "audio/mpeg" | "audio/ogg" | "video/mp4" | "video/webm"
        );
    !inert
}

/// `Content-Disposition` for a name: ASCII fallback and the UTF-8 name (RFC 6266).
fn disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// A finished file the caller may read (PROTOCOL.md §5.3): their own upload, or one in
/// a message of a conversation they are a member of; else 404, whoever asks.
async fn readable_file(
    app: &App,
    req: &Request<Incoming>,
    params: &Params,
) -> Result<Upload, ApiError> {
    let (caller, upload) = named_upload(app, req, params).await?;
    let Some(upload) = upload.filter(|u| u.completed_at.is_some() && !u.purged) else {
        return Err(ApiError::not_found("file"));
    };
    if upload.owner == caller {
        return Ok(upload);
    }
    let Some(conversation) = upload.conversation else {
        return Err(ApiError::not_found("file"));
    };
    match crate::services::conversations::member_view(app, caller, conversation).await {
        Ok(_) => Ok(upload),
        Err(crate::services::Denied::NotFound) => Err(ApiError::not_found("file")),
        Err(other) => Err(other.into()),
    }
}

/// `GET /api/files/{id}`: a finished file's bytes, for its uploader and the members of
/// the conversation whose message holds it. `Range` gives one part (206); the id
/// names immutable content, so it is cached for long.
pub async fn download(app: App, req: Request<Incoming>, params: Params) -> HandlerResult {
    let upload = readable_file(&app, &req, &params).await?;
    let etag = format!("\"{}\"", upload.id);
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let media = if upload.media_type.is_empty() {
        "application/octet-stream"
    } else {
        upload.media_type.as_str()
    };
    let kind = if active_content(media) {
        "attachment"
    } else {
        "inline"
    };
    if let Ok(v) = HeaderValue::from_str(&disposition(kind, &upload.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // What could run in a page is served as bytes, whatever its type was said to be.
    let served = if kind == "attachment" {
        "application/octet-stream"
    } else {
        media
    };
    if let Ok(v) = HeaderValue::from_str(served) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if header_str(req.headers(), "if-none-match") == Some(etag.as_str()) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let (start, end) = match range(req.headers(), upload.length) {
        Ok(r) => r,
        Err(()) => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "the range lies outside the file",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", upload.length)) {
                e.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(e);
        }
    };
    let partial = (start, end) != (0, upload.length);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {start}-{}/{}",
            end.saturating_sub(1),
            upload.length
        )) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    if req.method() == http::Method::HEAD {
        return Ok(response);
    }
    let bytes = app
        .blobs()
        .read(&upload.id, start, end)
        .await
        .map_err(ApiError::internal)?;
    // A body must be `Sync`; the stream is only ever polled through `&mut`.
    let bytes = sync_wrapper::SyncStream::new(bytes);
    let frames = futures_util::TryStreamExt::map_ok(bytes, hyper::body::Frame::data);
    *response.body_mut() = http_body_util::StreamBody::new(frames).boxed();
    Ok(response)
}

/// The byte range `[start, end)` a `Range` header asks for (one range of bytes), the
/// whole file without one; `Err` when it cannot be satisfied.
fn range(headers: &HeaderMap, length: u64) -> Result<(u64, u64), ()> {
    let Some(spec) = header_str(headers, "range").and_then(|r| r.strip_prefix("bytes=")) else {
        return Ok((0, length));
    };
    if spec.contains(',') {
        // Several ranges: answered with the whole file, as RFC 9110 allows.
        return Ok((0, length));
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (length.saturating_sub(n), length)
        }
        (first, "") => (first.parse().map_err(|_| ())?, length),
        (first, last) => {
            let last: u64 = last.parse().map_err(|_| ())?;
            (
                first.parse().map_err(|_| ())?,
                last.saturating_add(1).min(length),
            )
        }
    };
    if start >= length || start >= end {
        return Err(());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_safe() {
        assert_eq!(clean_name("report.pdf"), "report.pdf");
        assert_eq!(clean_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(clean_name("a\u{0}b\u{202e}fdp.exe"), "abfdp.exe");
        assert_eq!(clean_name("\u{7}\n"), "file");
        assert_eq!(clean_name(&"x".repeat(10_000)).chars().count(), MAX_NAME);
        assert_eq!(clean_media_type("image/PNG; charset=x"), "image/png");
        assert_eq!(clean_media_type("text/html\r\nx: y"), "");
        assert_eq!(clean_media_type("nonsense"), "");
    }

    #[test]
    fn dispositions_quote_nothing_they_should_not() {
        assert_eq!(
            disposition("attachment", "a \"b\"\\c.html"),
            "attachment; filename=\"a _b__c.html\"; filename*=UTF-8''a%20%22b%22%5Cc.html"
        );
        assert_eq!(
            disposition("inline", "café.png"),
            "inline; filename=\"caf_.png\"; filename*=UTF-8''caf%C3%A9.png"
        );
        assert!(active_content("text/html"));
        assert!(active_content("image/svg+xml"));
        assert!(active_content("application/octet-stream"));
        assert!(!active_content("image/png"));
    }

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("range", HeaderValue::from_str(v).expect("header"));
            m
        };
        assert_eq!(range(&HeaderMap::new(), 10), Ok((0, 10)));
        assert_eq!(range(&h("bytes=2-4"), 10), Ok((2, 5)));
        assert_eq!(range(&h("bytes=7-"), 10), Ok((7, 10)));
        assert_eq!(range(&h("bytes=-3"), 10), Ok((7, 10)));
        assert_eq!(range(&h("bytes=5-100"), 10), Ok((5, 10)));
        assert_eq!(range(&h("bytes=10-"), 10), Err(()));
        assert_eq!(range(&h("bytes=x-1"), 10), Err(()));
        assert_eq!(range(&h("bytes=0-1,3-4"), 10), Ok((0, 10)));
    }
}
