//! What every route that takes a body shares: reading a JSON body
//! (415 unless it says it is JSON, 413 past the size limit, 400 unless it parses, 422 for
//! what no store can hold).

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use warp::Buf;

use super::ApiError;
use crate::fields::{self, FieldError};
use crate::storable;

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

/// Reads a JSON request body into `T`: 415, 413 and 400 as [`read_json_value`], then 422
/// naming the field (its path) that is not what `T` wants, or where a NUL is.
pub async fn read_json<T, S, B>(content_type: Option<&str>, body: S, limit: u64) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let bytes = read_json_body(content_type, body, limit).await?;
    // A NUL can stand in a JSON text only as the escape `\u0000`: a body without one goes
    // straight into `T` (the hot path of complete and fail); one with it is read as a tree
    // first, so the answer names where the NUL is.
    if has_nul_escape(&bytes) {
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        storable::check_json("", &value)?;
    }
    fields::from_slice(&bytes).map_err(|e| match e {
        FieldError::Syntax(reason) => ApiError::MalformedJson(reason),
        data => ApiError::InvalidField(data.to_string()),
    })
}

/// Whether the JSON text holds the escape of a NUL (`\u0000`, any case of hex digits).
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w[0] == b'\\' && w[1] == b'u' && w[2..].iter().all(|b| *b == b'0'))
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
}
