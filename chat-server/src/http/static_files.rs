//! Serving the built web UI, from the binary itself (feature `embedded-web`, the
//! default) or from `--web-dir`: files by path, `index.html` for the app's own routes,
//! long-lived caching for content-hashed assets, and the security headers a browser
//! app needs (a strict Content-Security-Policy above all).

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

pub use crate::web::{WebUi, embedded};

use super::error::ApiError;
use super::{Body, HandlerResult};

/// Largest file served.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The policy for the UI: scripts, styles and connections only from this origin
/// (WebSocket included), no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The file a request path names inside `root`, or `None` for anything that could
/// leave it (`..`, absolute or Windows-style components, NUL, backslashes).
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded: String = percent_decode(request_path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let relative = decoded.trim_start_matches('/');
    let mut path = root.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Headers every UI response carries.
fn secure(response: &mut Response<Body>) {
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
}

/// Serves `path` of the web UI. Paths without a file extension that match no file get
/// `index.html`, so the app's own routes survive a reload.
pub async fn serve(ui: &WebUi, path: &str) -> HandlerResult {
    match ui {
        WebUi::Dir(root) => serve_dir(root, path).await,
        WebUi::Embedded => serve_embedded(path),
    }
}

fn serve_embedded(path: &str) -> HandlerResult {
    let Some(relative) = resolve(Path::new(""), path) else {
        return Err(ApiError::not_found("file"));
    };
    let name = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    // As from a directory: the file, else a directory's index.html, else (for the
    // app's own routes, which have no extension) the app's index.html.
    let directory_index = if name.is_empty() {
        "index.html".to_owned()
    } else {
        format!("{name}/index.html")
    };
    let mut candidates = vec![name, directory_index];
    if Path::new(path).extension().is_none() {
        candidates.push("index.html".to_owned());
    }
    let found = candidates
        .into_iter()
        .find_map(|name| embedded::get(&name).map(|bytes| (name, bytes)));
    let Some((name, bytes)) = found else {
        return Err(ApiError::not_found("file"));
    };
    Ok(respond(
        Bytes::from_static(bytes),
        Path::new(&name),
        name.starts_with("assets/"),
    ))
}

async fn serve_dir(root: &Path, path: &str) -> HandlerResult {
    let Some(mut file) = resolve(root, path) else {
        return Err(ApiError::not_found("file"));
    };
    let mut meta = tokio::fs::metadata(&file).await.ok();
    if meta.as_ref().is_some_and(std::fs::Metadata::is_dir) {
        file.push("index.html");
        meta = tokio::fs::metadata(&file).await.ok();
    }
    if meta.is_none() && Path::new(path).extension().is_none() {
        file = root.join("index.html");
        meta = tokio::fs::metadata(&file).await.ok();
    }
    let Some(meta) = meta.filter(std::fs::Metadata::is_file) else {
        return Err(ApiError::not_found("file"));
    };
    if meta.len() > MAX_FILE {
        return Err(ApiError::not_found("file"));
    }
    let bytes = tokio::fs::read(&file).await.map_err(ApiError::internal)?;
    // Vite names built assets by content hash: they never change under one name.
    let immutable = file
        .strip_prefix(root)
        .is_ok_and(|p| p.starts_with("assets"));
    Ok(respond(Bytes::from(bytes), &file, immutable))
}

/// A UI file's response: its type, caching and the security headers.
fn respond(bytes: Bytes, file: &Path, immutable: bool) -> Response<Body> {
    let mut response = Response::new(super::full(bytes));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    secure(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(
            resolve(root, "/assets/app.js"),
            Some(PathBuf::from("/srv/web/assets/app.js"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/web")));
        assert_eq!(
            resolve(root, "/a%20b.txt"),
            Some(PathBuf::from("/srv/web/a b.txt"))
        );
        for evil in [
            "/../etc/passwd",
            "/assets/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/..%2fetc",
            "/a\\b",
            "/x%00y",
            "/%zz",
            "/%c3",
        ] {
            assert_eq!(resolve(root, evil), None, "{evil}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
