//! Reading requests: bounded JSON bodies, query strings, bearer tokens, cookies.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::App;
pub use crate::auth::Caller;

/// Largest JSON request body accepted by the API.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads and parses a JSON body: 415 without `application/json`, 413 past
/// [`MAX_BODY`] (checked on `Content-Length` before reading, and while reading),
/// 400 for malformed JSON, 422 for well-formed JSON of the wrong shape.
pub async fn json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = body(req).await?;
    parse_json(&bytes)
}

/// Reads a body that must be JSON, without parsing it.
pub async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > MAX_BODY as u64
    {
        return Err(too_large());
    }
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::bad_request("bad_body", "the request body could not be read")
            }
        })
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds {MAX_BODY} bytes"),
    )
}

/// Parses JSON with the API's error classification. Every request body is an object:
/// serde would otherwise also accept a struct written as an array of its fields.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(ApiError::invalid(
                "invalid_request",
                "the body must be a JSON object",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body is not JSON",
            ));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid("invalid_request", e.to_string()),
        _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")),
    })
}

/// Decoded `name=value` pairs of the query string.
pub fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The value of a query parameter, parsed; 400 if present but unparsable.
pub fn query_param<T: std::str::FromStr>(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<T>, ApiError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter {name} is invalid"),
            )
        }),
    }
}

/// The value of a cookie.
pub fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Checks the bearer token: signature and claims, then that its session is active and
/// its user not deleted.
pub async fn authenticate(app: &App, req: &Request<Incoming>) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "an access token is required",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(ApiError::invalid_token)?;
    Ok(app.authenticate_token(token.trim()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Pair {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(parse_json::<Pair>(br#" {"a": 1}"#).is_ok());
        for (body, status) in [
            (&b"[1, 2]"[..], StatusCode::UNPROCESSABLE_ENTITY),
            (b"[null, null]", StatusCode::UNPROCESSABLE_ENTITY),
            (b"null", StatusCode::UNPROCESSABLE_ENTITY),
            (b"42", StatusCode::UNPROCESSABLE_ENTITY),
            (b"", StatusCode::BAD_REQUEST),
            (b"<xml/>", StatusCode::BAD_REQUEST),
            (b"{\"a\": ", StatusCode::BAD_REQUEST),
        ] {
            let err = parse_json::<Pair>(body).expect_err("refused");
            assert_eq!(err.status, status, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
