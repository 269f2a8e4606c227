//! Handlers: the code that runs a task of a given `type`, and the registry that finds it.
//!
//! To add a task type, implement [`Handler`] and register it in [`Registry::builtin`] (or
//! on a registry you build yourself). A handler gets a [`TaskContext`]: the payload, the
//! attempt number, and a cancellation token it should watch in any long wait. Everything
//! a handler logs with `tracing` lands in its task's `log.txt`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::task::TaskId;

/// What a handler sees of the task it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub id: TaskId,
    pub attempt: i32,
    pub payload: Value,
    /// Cancelled when the daemon stops past its grace period or the task is cancelled:
    /// a handler should return soon after.
    pub cancel: CancellationToken,
}

/// Why an attempt failed, in words for `last_error` and `output.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(msg: impl Into<String>) -> Self {
        HandlerError(msg.into())
    }
}

/// Runs tasks of one type.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt; the value is stored as the task's `result`.
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError>;
}

/// Handlers by task type.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in handlers: `echo`, `sleep`, `fail`.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register("echo", Echo);
        r.register("sleep", Sleep);
        r.register("fail", Fail);
        r
    }

    pub fn register(&mut self, task_type: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(task_type.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, task_type: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(task_type)
    }

    pub fn contains(&self, task_type: &str) -> bool {
        self.handlers.contains_key(task_type)
    }

    /// The registered types, sorted.
    pub fn types(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }
}

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
