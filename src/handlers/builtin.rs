//! The built-in handlers: `echo`, `sleep`, `fail` (for trying the queue and its retries).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{Handler, HandlerError, TaskContext};

/// `echo`: the result is the payload.
pub struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        tracing::debug!("echoing the payload");
        Ok(ctx.payload)
    }
}

/// `sleep`: `{"ms": N}` waits N milliseconds, or less if cancelled.
pub struct Sleep;

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let ms = ctx
            .payload
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| HandlerError::new("sleep needs a payload {\"ms\": N} with N a whole number"))?;
        tracing::info!(ms, "sleeping");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                tracing::info!(ms, "woke up");
                Ok(serde_json::json!({ "slept_ms": ms }))
            }
            _ = ctx.cancel.cancelled() => {
                tracing::warn!(ms, "sleep cancelled");
                Err(HandlerError::new("cancelled while sleeping"))
            }
        }
    }
}

/// `fail`: `{"message": "…"}` always fails with that message.
pub struct Fail;

#[async_trait]
impl Handler for Fail {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let message = ctx
            .payload
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("fail handler: failing on purpose")
            .to_string();
        tracing::warn!(attempt = ctx.attempt, "failing on purpose");
        Err(HandlerError(message))
    }
}
