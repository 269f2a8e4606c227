//! What every route that takes a body shares: the API key check, and reading a JSON body
//! (415 unless it says it is JSON, 413 past the size limit, 400 unless it parses, 422 for
//! what no store can hold).

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use serde_json::Value;
use warp::{Buf, Filter};

use super::ApiError;
use crate::storable;

/// Passes when no API key is configured, or the request carries it as a bearer token.
pub fn authorized(key: Option<Arc<str>>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |given: Option<String>| {
            let key = key.clone();
            async move {
                let Some(key) = key else { return Ok(()) };
                let token = given.as_deref().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
                if constant_time_eq(token.as_bytes(), key.as_bytes()) {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Compares without an early exit, so the time taken says nothing about the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Reads a JSON request body as a value: 415 unless it says it is JSON, 413 past `limit`
/// bytes, 400 unless it parses, and 422 (naming the place by JSON pointer) when it holds
/// what no store can ([`storable::check_json`]). Every route that takes a JSON body reads it
/// here (the enqueue routes read bytes for their batch fast path and check each task).
pub async fn read_json_value<S, B>(content_type: Option<&str>, body: S, limit: u64) -> Result<Value, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let bytes = read_json_body(content_type, body, limit).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    storable::check_json("", &value)?;
    Ok(value)
}

/// Reads a JSON request body: 415 unless it says it is JSON, 413 past `limit` bytes.
pub async fn read_json_body<S, B>(content_type: Option<&str>, body: S, limit: u64) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if !is_json(content_type) {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_body(body, limit).await
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes.
async fn read_body<S, B>(body: S, limit: u64) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::MalformedJson(format!("could not read the body: {e}")))?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/vnd.api+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }

    #[test]
    fn constant_time_eq_matches_only_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
