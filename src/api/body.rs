//! What every route that takes a body shares: reading a JSON body
//! (415 unless it says it is JSON, 413 past the size limit, 400 unless it parses, 422 for
//! what no store can hold).

use futures_util::{Stream, StreamExt};
use serde_json::Value;
use warp::Buf;

use super::ApiError;
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
